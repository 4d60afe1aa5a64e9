"""What the offline-to-online envs share: a simulator stepped in chunks of ``h`` primitive actions.

:class:`~torchrl_sacflow.robomimic.RobomimicEnv` and :class:`~torchrl_sacflow.ogbench.OGBenchEnv`
differ in the simulator they wrap and in how they read success and reward from it; the TorchRL side
(specs, the transition a step returns, pickling by rebuilding, closing) is this base class.
"""
from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

__all__ = ["ChunkedSuccessEnv"]


def _rebuild(cls: type, kwargs: dict) -> EnvBase:
    return cls(**kwargs)


class ChunkedSuccessEnv(EnvBase):
    """Base of a single (unbatched) env whose action is a flat chunk of ``h`` primitive actions.

    A step outputs ``"observation"`` (float32 ``[D]``), ``"reward"`` (float32 ``[1]``: the
    discounted sum over the primitive steps run), ``"success"`` and the done flags (bool ``[1]``).
    The action spec is the primitive bounds tiled ``h`` times (``[h·d]``).

    Subclasses set ``self._env`` (the simulator, closed by :meth:`close`), ``self._init_kwargs``
    (their constructor arguments: the instance pickles by rebuilding itself from them, a fresh
    episode, so it can be handed to multi-process collectors), ``self._episode_steps``, call
    :meth:`_set_specs` once the observation size and action bounds are known, and build their
    outputs with :meth:`_transition`.
    """

    action_chunk: int

    @property
    def episode_steps(self) -> int:
        """Primitive steps executed since the last reset."""
        return self._episode_steps

    def _set_specs(self, observation_dim: int, action_low: np.ndarray, action_high: np.ndarray) -> None:
        """Specs for ``[observation_dim]`` observations and primitive actions in ``[low, high]``."""
        self._action_low = np.asarray(action_low, dtype=np.float64)
        self._action_high = np.asarray(action_high, dtype=np.float64)
        self.primitive_action_dim = int(self._action_low.shape[0])
        flag = Categorical(2, shape=(1,), dtype=torch.bool, device=self.device)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(int(observation_dim),), dtype=torch.float32, device=self.device),
            success=flag.clone(), shape=())
        self.action_spec = Bounded(
            low=torch.as_tensor(np.tile(self._action_low, self.action_chunk), dtype=torch.float32),
            high=torch.as_tensor(np.tile(self._action_high, self.action_chunk), dtype=torch.float32),
            shape=(self.action_chunk * self.primitive_action_dim,), dtype=torch.float32, device=self.device)
        self.reward_spec = Unbounded(shape=(1,), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(), shape=())

    def _primitive_actions(self, action: torch.Tensor) -> np.ndarray:
        """The chunk as ``[h, d]`` float64 primitive actions, clipped to the simulator's bounds."""
        flat = action.detach().to("cpu", torch.float64).numpy()
        return np.clip(flat.reshape(self.action_chunk, self.primitive_action_dim), self._action_low, self._action_high)

    def _flag(self, value: bool) -> torch.Tensor:
        return torch.full((1,), bool(value), dtype=torch.bool, device=self.device)

    def _transition(self, observation: torch.Tensor, *, reward: float | None = None, success: bool = False,
                    terminated: bool = False, truncated: bool = False) -> TensorDict:
        """A step's output; without ``reward`` (and the other defaults) a reset's."""
        out = {"observation": observation, "success": self._flag(success), "done": self._flag(terminated or truncated),
               "terminated": self._flag(terminated), "truncated": self._flag(truncated)}
        if reward is not None:
            out["reward"] = torch.full((1,), float(reward), dtype=torch.float32, device=self.device)
        return TensorDict(out, batch_size=self.batch_size, device=self.device)

    def close(self, *, raise_if_closed: bool = True) -> None:
        env = self.__dict__.get("_env")
        if env is not None:
            env.close()
        super().close(raise_if_closed=raise_if_closed)

    def __reduce__(self):
        return (_rebuild, (type(self), self._init_kwargs))
