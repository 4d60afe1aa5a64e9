"""One-line errors (:class:`ConfigError`) for a bad offline-to-online config."""
from __future__ import annotations

import math
from typing import Any, Mapping


from torchrl_sacflow.training.config import check_collector_backend, check_compile_setting, check_critic_config
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.policies import check_policy_config
from torchrl_sacflow.training.threads import resolve_device


def _int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _number(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return float(value)


def check_offline_online_config(cfg: Mapping[str, Any]) -> None:
    """Check a ``train_robomimic`` config (plain dict, interpolations resolved)."""
    check_policy_config(cfg["policy"])
    check_critic_config(cfg["critic"])
    if cfg["policy"]["kind"] != "flow":
        raise ConfigError(f"policy={cfg['policy']['name']}: offline-to-online needs a flow policy (flow_t, flow_g, flow_mlp)")
    if cfg["policy"]["noise_std"] is None:
        raise ConfigError("policy.noise_std (σ, fixed sampling noise) must be set for offline-to-online, got null")
    _int(cfg["action_chunk"], "action_chunk (h, actions per chunk)", 1)
    for key, options in (("terminal_rule", ("success", "dones")), ("action_out_of_bounds", ("error", "clip"))):
        if cfg.get(key, options[0]) not in options:
            raise ConfigError(f"unknown {key} {cfg.get(key)!r}: expected one of {', '.join(options)}")
    frac = _number(cfg, "offline_fraction")
    if not 0.0 <= frac <= 1.0:
        raise ConfigError(f"offline_fraction must be in [0, 1], got {cfg['offline_fraction']!r}")
    gamma = _number(cfg, "gamma")
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {cfg['gamma']!r}")
    for key in ("pretrain_steps", "offline_steps", "online_frames"):
        _int(cfg[key], key, 0)
    for key in ("batch_size", "frames_per_batch", "max_episode_steps", "scripted_episodes"):
        _int(cfg[key], key, 1)
    if not _number(cfg, "updates_per_frame") >= 0:
        raise ConfigError(f"updates_per_frame must be >= 0, got {cfg['updates_per_frame']!r}")
    beta = cfg["beta"]
    for key in ("offline", "online_start", "online_end"):
        if _number(beta, key) < 0:
            raise ConfigError(f"beta.{key} (proximity coefficient) must be >= 0, got {beta[key]!r}")
    _int(beta["online_anneal_frames"], "beta.online_anneal_frames", 0)
    device = resolve_device(cfg.get("device", "cpu"))
    check_compile_setting(cfg.get("compile_policy", False), "compile_policy", device)
    col = cfg["collector"]
    _int(col["num_workers"], "collector.num_workers", 1)
    check_collector_backend(col["backend"], sync=col["sync"], ray_address=col["ray_address"], device=device)
    if col["sync"] and cfg["frames_per_batch"] % col["num_workers"]:  # each worker's share of a batch
        raise ConfigError(f"frames_per_batch ({cfg['frames_per_batch']}) must be a multiple of "
                          f"collector.num_workers ({col['num_workers']})")
    _int(cfg["eval"]["num_episodes"], "eval.num_episodes", 1)
    _int(cfg["eval"]["interval"], "eval.interval", 0)
    _int(cfg["checkpoint"]["interval"], "checkpoint.interval", 0)
    from torchrl_sacflow.robomimic.scripted_demos import ROBOMIMIC_TASKS

    if cfg["task"] not in ROBOMIMIC_TASKS:
        raise ConfigError(f"unknown task {cfg['task']!r}: expected one of {', '.join(ROBOMIMIC_TASKS)}")
    if cfg["dataset"] is None and cfg["task"] != "lift":
        raise ConfigError(
            f"no scripted demonstrations for task {cfg['task']!r} (only 'lift'): "
            f"pass dataset=/path/to/{cfg['task']}/mh/low_dim.hdf5"
        )
