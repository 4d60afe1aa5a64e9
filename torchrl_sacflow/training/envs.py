"""Gymnasium tasks as TorchRL environments, with the transforms every SAC recipe wants."""
from __future__ import annotations

import functools
import importlib
import os
from typing import Callable, Sequence

from torchrl.envs import (
    CatTensors,
    Compose,
    DoubleToFloat,
    EnvBase,
    RewardSum,
    StepCounter,
    TransformedEnv,
)
from torchrl.envs.libs.gym import set_gym_backend
from torchrl.record import VideoRecorder
from torchrl.record.loggers import Logger

from torchrl_sacflow._fast.gym_env import DirectGymEnv
from torchrl_sacflow.training.errors import ConfigError

__all__ = [
    "DirectGymEnv", "make_env", "env_maker", "load_env_factory", "check_env_id", "observation_dim", "action_dim",
]


def check_env_id(env_id: str) -> None:
    """Raise :class:`ConfigError` unless gymnasium knows ``env_id`` (cheap: no env is built)."""
    import gymnasium

    if env_id not in gymnasium.envs.registry:
        family = env_id.rsplit("-v", 1)[0]
        twins = sorted(k for k in gymnasium.envs.registry if k.rsplit("-v", 1)[0] == family)
        hint = f"; registered versions: {', '.join(twins)}" if twins else ""
        raise ConfigError(f"unknown env id {env_id!r} (not in gymnasium's registry){hint}")


def load_env_factory(path: str | Callable[..., EnvBase]) -> Callable[..., EnvBase]:
    """The callable named by ``"package.module:function"`` (or ``"package.module.function"``).

    Raises:
        ConfigError: (one line) if the module cannot be imported, has no such attribute, or the
            attribute is not callable.
    """
    if callable(path):
        return path
    module_name, sep, attr = str(path).partition(":")
    if not sep:
        module_name, _, attr = str(path).rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"env.make={path!r} is not an import path like 'my_package.my_envs:make_env'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"env.make={path!r}: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"env.make={path!r}: {module_name!r} has no callable {attr!r}")
    return factory


def make_env(
    env_id: str | None = None,
    *,
    factory: str | Callable[..., EnvBase] | None = None,
    observation_keys: Sequence[str] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    max_episode_steps: int | None = None,
    from_pixels: bool = False,
    video_logger: Logger | None = None,
    video_tag: str = "eval/video",
) -> TransformedEnv:
    """A :class:`DirectGymEnv` with ``StepCounter``, ``DoubleToFloat`` and ``RewardSum``.

    MuJoCo observations are float64; ``DoubleToFloat`` makes them match the float32 networks.
    ``RewardSum`` writes the running ``episode_reward`` the training loop logs, and
    ``StepCounter`` the ``step_count`` (and a truncation if ``max_episode_steps`` is given;
    otherwise gymnasium's own time limit applies). No ``InitTracker``: no policy here reads
    ``is_init`` (none is recurrent) and it costs a share of every step (``docs/fast_paths.md``);
    :func:`~torchrl_sacflow.training.make_collector` lets TorchRL add it (with the primers) for a
    policy that needs it.

    Args:
        env_id (str, optional): a gymnasium id, e.g. ``"Hopper-v4"``; ignored with ``factory``.

    Keyword Args:
        factory (str or callable, optional): your own task instead of a gymnasium id: a
            zero-argument callable returning a TorchRL :class:`~torchrl.envs.EnvBase` (or its
            import path ``"module:function"``, which keeps :func:`env_maker` picklable). It must
            have a bounded continuous ``"action"``, a ``"reward"`` and the done flags; its
            observation entries are named by ``observation_keys``.
        observation_keys (sequence of str, optional): observation entries of the env to feed the
            networks; several are concatenated (TorchRL's ``CatTensors``) into ``"observation"``,
            one other than ``"observation"`` is renamed to it. Default: the env's ``"observation"``.
        seed (int, optional): seeds the env once built.
        device (str): env device. Default ``"cpu"``.
        max_episode_steps (int, optional): extra truncation on top of gymnasium's time limit.
        from_pixels (bool): also render ``"pixels"`` (needed for video). Without a display and
            without ``MUJOCO_GL`` set, MuJoCo is told to render with EGL.
        video_logger (Logger, optional): if given (and ``from_pixels``), a ``VideoRecorder``
            writing to it is appended; call ``env.transform.dump()`` (see
            :func:`torchrl_sacflow.training.evaluate`) to write the video.
    """
    transforms = []
    if factory is not None:
        base = load_env_factory(factory)()
        if not isinstance(base, EnvBase):
            raise ConfigError(f"env.make={factory!r} returned a {type(base).__name__}, not a TorchRL EnvBase")
    else:
        base = _make_gym_env(env_id, device=device, from_pixels=from_pixels)
    keys = list(observation_keys or [])
    if keys and keys != ["observation"]:
        missing = [k for k in keys if k not in base.observation_spec.keys()]
        if missing:
            raise ConfigError(
                f"env.observation_keys {missing} are not observation entries of the env "
                f"(it has {sorted(map(str, base.observation_spec.keys()))})"
            )
        # (the entries stay: an env may read its own state back from the step input)
        transforms.append(CatTensors(in_keys=keys, out_key="observation", del_keys=False))
    transforms += [
        StepCounter(max_steps=max_episode_steps),
        DoubleToFloat(),
        RewardSum(),
    ]
    if from_pixels and video_logger is not None:
        transforms.append(VideoRecorder(video_logger, tag=video_tag, in_keys=["pixels"]))
    env = TransformedEnv(base, Compose(*transforms))
    if seed is not None:
        env.set_seed(seed)
    return env


def _make_gym_env(env_id: str, *, device, from_pixels: bool) -> DirectGymEnv:
    check_env_id(env_id)
    import gymnasium

    if from_pixels and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # headless: MuJoCo's default (glfw) needs a display
    try:
        with set_gym_backend("gymnasium"):
            return DirectGymEnv(env_id, device=device, from_pixels=from_pixels, pixels_only=False)
    except gymnasium.error.DependencyNotInstalled as err:
        raise ConfigError(f"{env_id}{' with rendering' if from_pixels else ''}: {err}") from None


def env_maker(env_id: str | None = None, **kwargs) -> Callable[[], EnvBase]:
    """A picklable zero-argument constructor of :func:`make_env` (what collector workers need).

    Checks the gymnasium id (or, with ``factory=``, that the factory can be imported) first.
    """
    if kwargs.get("factory") is None:
        check_env_id(env_id)
    else:
        load_env_factory(kwargs["factory"])
    return functools.partial(make_env, env_id, **kwargs)


def observation_dim(env: EnvBase, key: str = "observation") -> int:
    """Size of the flat observation entry ``key``."""
    return int(env.observation_spec[key].shape[-1])


def action_dim(env: EnvBase) -> int:
    return int(env.action_spec.shape[-1])
