"""TorchRL's ``GymEnv`` with a direct step for the single continuous-action case."""
from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Unbounded
from torchrl.data import tensor_specs as _tensor_specs
from torchrl.envs.common import _cache_value
from torchrl.envs.libs.gym import GymEnv

from torchrl_sacflow import _fast

__all__ = ["DirectGymEnv"]

_DONE_KEYS = {"done", "terminated", "truncated"}


class DirectGymEnv(GymEnv):
    """A :class:`~torchrl.envs.GymEnv` whose step builds its output directly for the common case.

    ``GymEnv._step`` reads the action, observation, reward and done flags through the specs'
    generic converters (``to_numpy``, ``encode``), then moves the result to the env's device even
    when it is already there, several times the cost of a MuJoCo step (``docs/fast_paths.md``). For a
    single (unbatched) gymnasium env with one continuous action, one ``"observation"`` array,
    a scalar reward and the three done flags, no frame skip and no info readers, this step makes
    the same tensors with plain ``torch`` calls. Anything else (pixels, dict observations, an
    observation whose dtype or shape differs from its spec) goes through the parent's readers,
    so the output is always what :class:`GymEnv` returns. Constructed exactly like ``GymEnv``.

    Examples:
        >>> env = DirectGymEnv("Pendulum-v1")
        >>> td = env.rollout(3)
        >>> td["next", "observation"].shape, td["next", "reward"].dtype
        (torch.Size([3, 3]), torch.float32)
    """

    @_cache_value
    def _direct_specs(self):
        """``(observation leaf spec, reward leaf spec)`` when the spec layout allows the direct
        step, else ``None``; cached by TorchRL's spec cache (cleared whenever a spec is set)."""
        if self.wrapper_frame_skip != 1 or not self._convert_actions_to_numpy or self.batch_size \
                or (self.device is not None and self.device.type != "cpu"):
            return None
        if self.action_keys != ["action"] or self.reward_keys != ["reward"] or set(self.done_keys) != _DONE_KEYS:
            return None
        action = self.action_spec
        if not isinstance(action, (Bounded, Unbounded)) or not action.dtype.is_floating_point:
            return None
        obs = self.observation_spec
        leaf = obs["observation"] if list(obs.keys()) == ["observation"] else None
        reward = self.reward_spec
        return (leaf, reward) if reward.shape == (1,) else None

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        specs = None
        if _fast.enabled() and not self.info_dict_reader and not _tensor_specs._CHECK_SPEC_ENCODE:
            specs = self._direct_specs()
        if specs is None:
            return super()._step(tensordict)
        obs_spec, reward_spec = specs
        action = tensordict.get("action").detach().cpu().numpy()
        obs, reward, terminated, truncated, done, info = self._output_transform(self._env.step(action))
        if isinstance(terminated, (bool, np.bool_)) and isinstance(truncated, (bool, np.bool_)):
            terminated, truncated = torch.tensor([bool(terminated)]), torch.tensor([bool(truncated)])
            done = terminated | truncated if done is None else torch.tensor([bool(done)])
        else:  # whatever else an env returns: the parent's reader decides what it means
            terminated, truncated, done, _ = self.read_done(terminated=terminated, truncated=truncated, done=done)
        # the parent's encoder shares the array's memory too (torch.as_tensor); it copies arrays
        # with non-positive strides, which from_numpy rejects: those go through it
        value = None
        if obs_spec is not None and isinstance(obs, np.ndarray) and obs.ndim and min(obs.strides) > 0:
            value = torch.from_numpy(obs)
        if value is not None and value.dtype == obs_spec.dtype and value.shape == obs_spec.shape:
            out = {"observation": value}
        else:
            out = dict(self.read_obs(obs))
        if isinstance(reward, (float, int, np.floating, np.integer)) and not isinstance(reward, bool):
            out["reward"] = torch.tensor([float(reward)], dtype=reward_spec.dtype)
        else:
            out["reward"] = self.read_reward(reward)
        out["done"], out["terminated"], out["truncated"] = done, terminated, truncated
        return TensorDict._new_unsafe(out, batch_size=self.batch_size, device=self.device)
