"""Gymnasium tasks as TorchRL environments, with the transforms every SAC recipe wants."""
from __future__ import annotations

import functools
import os
from typing import Callable

from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    InitTracker,
    RewardSum,
    StepCounter,
    TransformedEnv,
)
from torchrl.envs.libs.gym import GymEnv, set_gym_backend
from torchrl.record import VideoRecorder
from torchrl.record.loggers import Logger

from torchrl_sacflow.training.errors import ConfigError

__all__ = ["make_env", "env_maker", "check_env_id", "observation_dim", "action_dim"]


def check_env_id(env_id: str) -> None:
    """Raise :class:`ConfigError` unless gymnasium knows ``env_id`` (cheap: no env is built)."""
    import gymnasium

    if env_id not in gymnasium.envs.registry:
        family = env_id.rsplit("-v", 1)[0]
        twins = sorted(k for k in gymnasium.envs.registry if k.rsplit("-v", 1)[0] == family)
        hint = f"; registered versions: {', '.join(twins)}" if twins else ""
        raise ConfigError(f"unknown env id {env_id!r} (not in gymnasium's registry){hint}")


def make_env(
    env_id: str,
    *,
    seed: int | None = None,
    device: str = "cpu",
    max_episode_steps: int | None = None,
    from_pixels: bool = False,
    video_logger: Logger | None = None,
    video_tag: str = "eval/video",
) -> TransformedEnv:
    """A ``GymEnv`` with ``InitTracker``, ``StepCounter``, ``DoubleToFloat`` and ``RewardSum``.

    MuJoCo observations are float64; ``DoubleToFloat`` makes them match the float32 networks.
    ``RewardSum`` writes the running ``episode_reward`` the training loop logs, and
    ``StepCounter`` the ``step_count`` (and a truncation if ``max_episode_steps`` is given;
    otherwise gymnasium's own time limit applies).

    Args:
        env_id (str): a gymnasium id, e.g. ``"Hopper-v4"``.

    Keyword Args:
        seed (int, optional): seeds the env once built.
        device (str): env device. Default ``"cpu"``.
        max_episode_steps (int, optional): extra truncation on top of gymnasium's time limit.
        from_pixels (bool): also render ``"pixels"`` (needed for video). Without a display and
            without ``MUJOCO_GL`` set, MuJoCo is told to render with EGL.
        video_logger (Logger, optional): if given (and ``from_pixels``), a ``VideoRecorder``
            writing to it is appended; call ``env.transform.dump()`` (see
            :func:`torchrl_sacflow.training.evaluate`) to write the video.
    """
    check_env_id(env_id)
    import gymnasium

    if from_pixels and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # headless: MuJoCo's default (glfw) needs a display
    try:
        with set_gym_backend("gymnasium"):
            base = GymEnv(env_id, device=device, from_pixels=from_pixels, pixels_only=False)
    except gymnasium.error.DependencyNotInstalled as err:
        raise ConfigError(f"{env_id}{' with rendering' if from_pixels else ''}: {err}") from None
    transforms = [
        InitTracker(),
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


def env_maker(env_id: str, **kwargs) -> Callable[[], EnvBase]:
    """A picklable zero-argument constructor of :func:`make_env` (what collector workers need)."""
    check_env_id(env_id)
    return functools.partial(make_env, env_id, **kwargs)


def observation_dim(env: EnvBase, key: str = "observation") -> int:
    """Size of the flat observation entry ``key``."""
    return int(env.observation_spec[key].shape[-1])


def action_dim(env: EnvBase) -> int:
    return int(env.action_spec.shape[-1])
