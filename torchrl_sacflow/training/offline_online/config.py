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


def _probability(cfg: Mapping[str, Any], key: str) -> None:
    if not 0.0 <= _number(cfg, key) <= 1.0:
        raise ConfigError(f"{key} must be in [0, 1], got {cfg[key]!r}")


def check_offline_online_config(cfg: Mapping[str, Any]) -> None:
    """Check a ``train_offline_online`` / ``train_robomimic`` config (plain dict, interpolations resolved).

    Raises:
        ConfigError: the first bad setting, in one line.
    """
    check_policy_config(cfg["policy"])
    check_critic_config(cfg["critic"])
    if cfg["policy"]["kind"] != "flow":
        raise ConfigError(f"policy={cfg['policy']['name']}: offline-to-online needs a flow policy (flow_t, flow_g, flow_mlp)")
    if cfg["policy"]["noise_std"] is None:
        raise ConfigError("policy.noise_std (σ, fixed sampling noise) must be set for offline-to-online, got null")
    _int(cfg["action_chunk"], "action_chunk (h, actions per chunk)", 1)
    _check_algo(cfg)
    for key, options in (("terminal_rule", ("success", "dones")), ("action_out_of_bounds", ("error", "clip"))):
        if cfg.get(key, options[0]) not in options:
            raise ConfigError(f"unknown {key} {cfg.get(key)!r}: expected one of {', '.join(options)}")
    _probability(cfg, "offline_fraction")
    gamma = _number(cfg, "gamma")
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {cfg['gamma']!r}")
    for key in ("pretrain_steps", "offline_steps", "online_frames"):
        _int(cfg[key], key, 0)
    for key in ("batch_size", "frames_per_batch", "scripted_episodes"):
        _int(cfg[key], key, 1)
    if cfg["max_episode_steps"] is not None:
        _int(cfg["max_episode_steps"], "max_episode_steps", 1)
    if not _number(cfg, "updates_per_frame") >= 0:
        raise ConfigError(f"updates_per_frame must be >= 0, got {cfg['updates_per_frame']!r}")
    beta = cfg["beta"]
    for key in ("offline", "online_start", "online_end"):
        if _number(beta, key) < 0:
            raise ConfigError(f"beta.{key} (proximity coefficient) must be >= 0, got {beta[key]!r}")
    _int(beta["online_anneal_frames"], "beta.online_anneal_frames", 0)
    if beta.get("loss", "l2") not in ("l2", "flow_matching"):
        raise ConfigError(f"beta.loss must be 'l2' or 'flow_matching', got {beta['loss']!r}")
    if beta.get("loss") == "flow_matching" and cfg["policy"]["kind"] != "flow":
        raise ConfigError("beta.loss=flow_matching needs a flow policy (policy=flow_t, flow_g or flow_mlp)")
    if beta.get("rows", "all") not in ("all", "offline"):
        raise ConfigError(f"beta.rows must be 'all' or 'offline', got {beta['rows']!r}")
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
    _check_dataset(cfg)


def _check_algo(cfg: Mapping[str, Any]) -> None:
    """``algo`` and, for FQL / QC-FQL, its chunking, critic and ``fql`` block."""
    from torchrl_sacflow.training.offline_online.learners import ALGORITHMS

    algo = cfg.get("algo", "sac_flow")
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algo {algo!r}: expected one of {', '.join(ALGORITHMS)}")
    if algo not in ("fql", "qc_fql"):
        return
    h = cfg["action_chunk"]
    if algo == "fql" and h != 1:
        raise ConfigError(f"algo=fql acts one action at a time: set action_chunk=1 (got {h}), or algo=qc_fql for chunks")
    if algo == "qc_fql" and h == 1:
        raise ConfigError("algo=qc_fql needs action_chunk > 1 (action_chunk=1 is algo=fql)")
    if cfg["critic"]["name"] != "sac":
        raise ConfigError(f"algo={algo} needs critic=sac (MLP critics with a Polyak target), got critic={cfg['critic']['name']}")
    fql = cfg["fql"]
    for key in ("alpha", "lr"):
        if not _number(fql, key) >= 0:
            raise ConfigError(f"fql.{key} must be >= 0, got {fql[key]!r}")
    if fql["q_agg"] not in ("mean", "min"):
        raise ConfigError(f"fql.q_agg must be 'mean' or 'min', got {fql['q_agg']!r}")
    _int(fql["flow_steps"], "fql.flow_steps", 1)
    cells = fql["actor_cells"]
    if not isinstance(cells, (list, tuple)) or not cells or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in cells):
        raise ConfigError(f"fql.actor_cells must be a non-empty list of positive integers, got {cells!r}")


def _check_dataset(cfg: Mapping[str, Any]) -> None:
    """The dataset family's settings: its task, and no setting of the other family."""
    from torchrl_sacflow.training.offline_online.families import DATASET_FAMILIES, parse_dataset

    family, file = parse_dataset(cfg["dataset"])
    task = cfg["task"] or DATASET_FAMILIES[family]["task"]
    if family == "robomimic":
        from torchrl_sacflow.robomimic.scripted_demos import ROBOMIMIC_TASKS, SCRIPTED_TASKS

        if task not in ROBOMIMIC_TASKS:
            raise ConfigError(f"unknown Robomimic task {task!r}: expected one of {', '.join(ROBOMIMIC_TASKS)}")
        if file is None and task not in SCRIPTED_TASKS:
            raise ConfigError(
                f"no scripted demonstrations for task {task!r} (only {', '.join(map(repr, SCRIPTED_TASKS))}): "
                f"pass dataset=robomimic:/path/to/{task}/mh/low_dim.hdf5"
            )
        if cfg["task_id"] is not None:
            raise ConfigError(f"task_id={cfg['task_id']!r} selects an OGBench singletask goal: "
                              f"not used with Robomimic data (set task_id=null)")
        if not _number(cfg, "scripted_action_noise") >= 0:
            raise ConfigError(f"scripted_action_noise must be >= 0, got {cfg['scripted_action_noise']!r}")
        _probability(cfg, "scripted_p_early_stop")
        _probability(cfg, "scripted_failed_fraction")
        return
    from torchrl_sacflow.ogbench.tasks import singletask_env_id

    singletask_env_id(task, cfg["task_id"])  # an unknown task or task_id: one line
    for key, default in (("terminal_rule", "success"), ("filter_key", None)):
        if cfg[key] != default:
            raise ConfigError(f"{key}={cfg[key]!r} applies to Robomimic files only: OGBench's terminal flags "
                              f"are the singletask goal's (set {key}={default if default else 'null'})")
    _int(cfg["ogbench"]["transitions"], "ogbench.transitions", 1)
