"""The OGBench singletask cube envs as TorchRL environments, with optional action chunking.

A thin :class:`~torchrl.envs.EnvBase` around ``gymnasium.make("cube-double-singletask-task2-v0")``
(OGBench's own env, unchanged) that exposes what the offline-to-online recipe reads from the
Robomimic env (:class:`~torchrl_sacflow.robomimic.RobomimicEnv`): a flat float32
``"observation"``, a boolean ``"success"`` entry, ``action_chunk``/``max_episode_steps``
attributes and a chunked action whose step returns the discounted reward sum, so a transition
collected online has the same meaning as one read by
:func:`~torchrl_sacflow.ogbench.load_ogbench_dataset`.
"""
from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDictBase

from torchrl_sacflow.envs.chunked import ChunkedSuccessEnv
from torchrl_sacflow.errors import ConfigError
from torchrl_sacflow.ogbench.tasks import ACTION_DIM, import_ogbench, observation_dim, singletask_env_id

__all__ = ["OGBenchEnv", "make_ogbench_env"]


class OGBenchEnv(ChunkedSuccessEnv):
    """An OGBench singletask env (``<task>-singletask-task<k>-v0``) as a TorchRL env.

    Each step outputs ``"observation"`` (float32 ``[D]``, OGBench's state observation),
    ``"reward"`` (OGBench's singletask reward ``#cubes at goal - #cubes`` of the state the
    action is taken in, or its discounted sum over a chunk), ``"terminated"`` (the task is
    complete in that state, as the env reports it), ``"truncated"`` (the time limit),
    ``"done"`` and ``"success"`` (bool, ``info["success"]``; what
    :func:`~torchrl_sacflow.training.offline_online.evaluate_success` counts).

    OGBench's singletask envs (>= 1.2) compute reward, success and termination from the state
    *before* the action (``success_timing="pre"``): reaching the goal shows up one step later,
    with reward 0, ``success`` and ``terminated``. The dataset loader labels transitions the same way.

    With ``action_chunk=h > 1`` the action is a flat ``5h`` vector of ``h`` primitive actions
    run in order; the step returns ``sum_{j<k} gamma^j r_j`` over the ``k <= h`` actions run and
    stops early when the episode ends inside the chunk.

    The instance pickles by rebuilding itself from its constructor arguments (a fresh episode),
    so it can be handed to multi-process collectors.

    Args:
        task (str): a cube environment, e.g. ``"cube-double"``. Defaults to ``"cube-double"``.

    Keyword Args:
        task_id (int, optional): the singletask goal, 1..5; ``None`` (default) is OGBench's default task.
        action_chunk (int): primitive actions per step. Defaults to ``1``.
        gamma (float): discount of the in-chunk reward sum. Defaults to ``0.99``.
        max_episode_steps (int, optional): episode limit in primitive steps. Defaults to the
            registered one (``cube-double``: 500).
        seed (int, optional): seed of the env's generator (initial arm and cube poses), applied at
            the first reset. Defaults to ``None`` (random).
        device (torch.device or str): device of the outputs. Defaults to ``"cpu"``.

    Raises:
        ConfigError: an unknown task or task id, a bad ``action_chunk``/``max_episode_steps``, or
            ``ogbench`` not installed.
    """

    def __init__(
        self,
        task: str = "cube-double",
        *,
        task_id: int | None = None,
        action_chunk: int = 1,
        gamma: float = 0.99,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        device: torch.device | str = "cpu",
    ):
        if int(action_chunk) != action_chunk or action_chunk < 1:
            raise ConfigError(f"action_chunk must be a positive integer, got {action_chunk!r}")
        if max_episode_steps is not None and (int(max_episode_steps) != max_episode_steps or max_episode_steps < 1):
            raise ConfigError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
        import gymnasium

        env_id = singletask_env_id(task, task_id)
        import_ogbench()
        self._init_kwargs = {"task": task, "task_id": task_id, "action_chunk": int(action_chunk),
                             "gamma": float(gamma), "max_episode_steps": max_episode_steps, "seed": seed,
                             "device": str(device)}
        super().__init__(device=device, batch_size=torch.Size([]))
        limit = {} if max_episode_steps is None else {"max_episode_steps": int(max_episode_steps)}
        self._env = gymnasium.make(env_id, **limit)
        self.env_id = env_id
        self.task = task
        self.task_id = int(self._env.unwrapped._reward_task_id)
        self.action_chunk = int(action_chunk)
        self.gamma = float(gamma)
        self.max_episode_steps = int(self._env.spec.max_episode_steps)
        self._pending_seed = seed
        self._episode_steps = 0
        space = self._env.action_space
        if tuple(space.low.shape) != (ACTION_DIM,):
            raise ConfigError(f"{env_id} has actions of shape {tuple(space.low.shape)}, expected ({ACTION_DIM},)")
        self._set_specs(observation_dim(task), space.low, space.high)

    @property
    def gym_env(self):
        """The wrapped gymnasium env (OGBench's, with its time limit)."""
        return self._env

    def _observation(self, ob: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ob), dtype=torch.float32, device=self.device)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        seed, self._pending_seed = self._pending_seed, None
        ob, _ = self._env.reset(seed=seed)
        self._episode_steps = 0
        expected = self.observation_spec["observation"].shape[-1]
        if ob.shape != (expected,):
            raise ConfigError(f"{self.env_id} returned observations of shape {ob.shape}, expected ({expected},)")
        return self._transition(self._observation(ob))

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = self._primitive_actions(tensordict.get("action"))
        reward, success, terminated, truncated = 0.0, False, False, False
        ob = None
        for j in range(self.action_chunk):
            ob, r, terminated, truncated, info = self._env.step(actions[j])
            self._episode_steps += 1
            reward += (self.gamma**j) * float(r)
            success = success or bool(info.get("success", False))
            if terminated or truncated:
                break
        return self._transition(self._observation(ob), reward=reward, success=success, terminated=bool(terminated),
                                truncated=bool(truncated) and not terminated)

    def _set_seed(self, seed: int | None) -> None:
        # gymnasium seeds the env's generator at reset: apply it to the next one
        self._pending_seed = None if seed is None else int(seed)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(env_id={self.env_id!r}, action_chunk={self.action_chunk}, "
                f"max_episode_steps={self.max_episode_steps}, device={self.device})")


def make_ogbench_env(task: str = "cube-double", **kwargs) -> OGBenchEnv:
    """Builds the online TorchRL env matching an OGBench dataset of ``task`` loaded with the same ``task_id``, ``h``, ``gamma``.

    A module-level function so ``functools.partial(make_ogbench_env, "cube-double", action_chunk=5)``
    can be passed as ``create_env_fn`` to (multi-process) collectors.

    Args:
        task (str): a cube environment. Defaults to ``"cube-double"``.

    Keyword Args:
        task_id, action_chunk, gamma, max_episode_steps, seed, device: see :class:`OGBenchEnv`.

    Raises:
        ConfigError: as :class:`OGBenchEnv` does.

    Examples:
        >>> env = make_ogbench_env("cube-double", task_id=2, action_chunk=5)
        >>> td = env.rollout(10)
    """
    return OGBenchEnv(task, **kwargs)
