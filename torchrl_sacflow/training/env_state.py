"""The state of a running env that an exact resume needs, saved and restored through a checkpoint.

A checkpoint taken mid-episode must carry more than the networks, optimisers, replay buffer and
RNGs: the simulator's state, the env's own random generator, the step counters of its wrappers,
and the collector's "carrier" (the observation, step count and running return of the step it is
about to take). Without them a resumed run re-seeds its env and starts a new episode, and every
transition after the resume differs from the run left alone (MushroomRL issue 139,
pranz24/pytorch-soft-actor-critic issue 35 report the same).

TorchRL's ``Collector.state_dict()`` holds the transforms' state and the frame counters, not the
simulator, so :class:`EnvState` reads the gymnasium env under a TorchRL ``GymEnv`` directly:

- a MuJoCo env (``gymnasium.envs.mujoco.MujocoEnv``): the full integration state
  (``mujoco.mj_getState(..., mjSTATE_INTEGRATION)``: time, qpos, qvel, act, warm start, ...);
- any gymnasium env: the ``np_random`` generator's state, and every plain attribute
  (bool / int / float / ``None`` / numpy array) of the env and of each wrapper around it, which
  holds ``TimeLimit``'s elapsed steps and a classic-control env's ``state`` (Pendulum);
- optionally a collector's carrier (``Collector._carrier``, a TensorDict; TorchRL has no public
  accessor for it).

What this cannot capture, and so where a resume is not bit-exact (it restarts the episodes in
flight, with the env re-seeded): collectors with worker processes (``collector.num_workers > 1``,
``collector.backend=ray``: their envs live in other processes), and envs that are not gymnasium
envs or keep state in objects other than the above (robosuite's Robomimic tasks, OGBench's
manipulation envs: see :func:`supports_exact_state`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase, TransformedEnv

__all__ = ["EnvState", "gym_env_of", "supports_exact_state"]

_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic)


def gym_env_of(env: EnvBase) -> Any | None:
    """The gymnasium env under a (transformed) TorchRL ``GymEnv``, or ``None`` if there is none."""
    while isinstance(env, TransformedEnv):
        env = env.base_env
    inner = getattr(env, "_env", None)
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return None
    return inner if isinstance(inner, gymnasium.Env) else None


def _mujoco_env(gym_env: Any) -> Any | None:
    try:
        from gymnasium.envs.mujoco import MujocoEnv
    except ImportError:  # pragma: no cover - mujoco is a dependency
        return None
    unwrapped = gym_env.unwrapped
    return unwrapped if isinstance(unwrapped, MujocoEnv) else None


def supports_exact_state(env: EnvBase) -> bool:
    """Whether :class:`EnvState` captures everything ``env`` carries between steps.

    ``True`` for gymnasium's MuJoCo tasks and for gymnasium envs whose state is plain attributes
    (classic control: Pendulum, ...); ``False`` otherwise (no gymnasium env, or an env whose state
    lives in other objects, e.g. robosuite's).
    """
    gym_env = gym_env_of(env)
    if gym_env is None:
        return False
    if _mujoco_env(gym_env) is not None:
        return True
    unwrapped = gym_env.unwrapped
    return type(unwrapped).__module__.startswith("gymnasium.envs.classic_control")


def _chain(gym_env: Any) -> list[Any]:
    """The wrappers from the outside in, then the unwrapped env."""
    out, env = [], gym_env
    while True:
        out.append(env)
        inner = getattr(env, "env", None)
        if inner is None or inner is env:
            return out
        env = inner


def _plain_attrs(obj: Any) -> dict[str, Any]:
    out = {}
    for name, value in vars(obj).items():
        if name in ("np_random", "_np_random", "spec", "metadata") or not isinstance(value, _PLAIN):
            continue
        # torch-loadable with weights_only (TorchRL's checkpoint loader): arrays as tensors, numpy scalars as Python
        out[name] = torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else (
            value.item() if isinstance(value, np.generic) else value)
    return out


def _restore_attr(env: Any, name: str, value: Any) -> None:
    current = vars(env)[name]
    if isinstance(value, torch.Tensor):  # saved from a numpy array (_plain_attrs)
        value = value.numpy().copy()
    elif isinstance(current, np.generic):
        value = type(current)(value)
    setattr(env, name, value)


def _rng_state(gym_env: Any) -> dict | None:
    rng = getattr(gym_env.unwrapped, "_np_random", None)
    return None if rng is None else rng.bit_generator.state


def _set_rng_state(gym_env: Any, state: dict | None) -> None:
    if state is None:
        return
    unwrapped = gym_env.unwrapped
    if getattr(unwrapped, "_np_random", None) is None:
        unwrapped.np_random  # noqa: B018 - gymnasium creates the generator on first access
    unwrapped._np_random.bit_generator.state = state


class EnvState:
    """A checkpointable view of one env's (and optionally its collector's) between-step state.

    Registered on a :class:`~torchrl.checkpoint.Checkpoint` like any stateful component: its
    ``state_dict()`` reads the env when the checkpoint is saved, ``load_state_dict()`` writes it
    back. Restore it after the env (collector) was built and seeded: the restored state replaces
    whatever the seeding and the collector's first reset left.

    Args:
        env (EnvBase): a TorchRL env over a gymnasium env (``GymEnv`` / ``DirectGymEnv``, possibly
            transformed): the eval env, or the in-process collector's ``collector.env``.

    Keyword Args:
        collector (optional): the in-process ``Collector`` that steps ``env``; its carrier (the
            TensorDict of the step it takes next) is saved and restored too.

    Raises:
        ValueError: if ``env`` has no gymnasium env inside (check :func:`supports_exact_state`).

    Examples:
        >>> import torch
        >>> from torchrl_sacflow.training import make_env
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> td = env.reset()
        >>> state = EnvState(env)
        >>> saved = state.state_dict()
        >>> a = env.step(td.clone().set("action", torch.ones(1)))["next", "observation"]
        >>> state.load_state_dict(saved)  # back to the moment of the save
        >>> b = env.step(td.clone().set("action", torch.ones(1)))["next", "observation"]
        >>> torch.equal(a, b)
        True
    """

    def __init__(self, env: EnvBase, *, collector: Any | None = None) -> None:
        self.gym_env = gym_env_of(env)
        if self.gym_env is None:
            raise ValueError(f"EnvState needs a TorchRL env over a gymnasium env, got {type(env).__name__}")
        self.env = env
        self.collector = collector

    def state_dict(self) -> dict[str, Any]:
        chain = _chain(self.gym_env)
        state: dict[str, Any] = {
            "attrs": [_plain_attrs(env) for env in chain],
            "np_random": _rng_state(self.gym_env),
            "mujoco": None,
            "carrier": None,
        }
        mj = _mujoco_env(self.gym_env)
        if mj is not None:
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            buf = np.empty(mujoco.mj_stateSize(mj.model, spec), dtype=np.float64)
            mujoco.mj_getState(mj.model, mj.data, buf, spec)
            state["mujoco"] = torch.from_numpy(buf)
        carrier = getattr(self.collector, "_carrier", None) if self.collector is not None else None
        if isinstance(carrier, TensorDictBase):
            state["carrier"] = carrier.clone().to_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        chain = _chain(self.gym_env)
        for env, attrs in zip(chain, state["attrs"]):
            for name, value in attrs.items():
                if name in vars(env):  # the same env class, rebuilt from the same config
                    _restore_attr(env, name, value)
        _set_rng_state(self.gym_env, state["np_random"])
        mj = _mujoco_env(self.gym_env)
        if state.get("mujoco") is not None and mj is not None:
            import mujoco

            buf = state["mujoco"].numpy().astype(np.float64, copy=True)
            mujoco.mj_setState(mj.model, mj.data, buf, mujoco.mjtState.mjSTATE_INTEGRATION)
            mujoco.mj_forward(mj.model, mj.data)
        carrier = state.get("carrier")
        if carrier is not None and self.collector is not None:
            current = self.collector._carrier
            restored = TensorDict(carrier, batch_size=current.batch_size, device=current.device)
            self.collector._carrier = restored
