"""Checks of a training config before anything is built, and the fingerprint resume compares
(the run folder itself: :mod:`torchrl_sacflow.training.run_dir`).

Everything here raises :class:`~torchrl_sacflow.training.ConfigError` with a one-line message;
the recipe turns it into ``error: ...`` on stderr and exit code 2.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from torchrl_sacflow.training.envs import check_env_id, load_env_factory
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.loggers import LOGGER_BACKENDS
from torchrl_sacflow.training.losses import CRITICS
from torchrl_sacflow.training.policies import check_policy_config
from torchrl_sacflow.training.threads import resolve_device, resolve_num_threads

__all__ = [
    "COLLECTOR_BACKENDS",
    "FINGERPRINT_GROUPS",
    "check_collector_backend",
    "config_fingerprint",
    "fingerprint_groups",
    "check_group_choices",
    "validate_train_config",
]

# What must match between a checkpoint and the run resuming from it: the task and every
# setting that shapes the networks or the loss. Budgets, logging and eval may change.
# The offline-to-online recipe's `algo` and its `fql` block shape the networks too; they count where
# the config has them (so the MuJoCo recipe's fingerprints are unchanged).
FINGERPRINT_GROUPS = ("env", "policy", "critic")
_OPTIONAL_FINGERPRINT_KEYS = ("algo", "fql")


def _fingerprint_payload(cfg: Mapping[str, Any]) -> dict[str, Any]:
    payload = {group: cfg.get(group) for group in FINGERPRINT_GROUPS}
    payload.update({key: cfg[key] for key in _OPTIONAL_FINGERPRINT_KEYS if key in cfg})
    return payload


def fingerprint_groups(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`config_fingerprint` hashes, for a checkpoint's metadata (names the differences on resume)."""
    return _fingerprint_payload(cfg)


def config_fingerprint(cfg: Mapping[str, Any]) -> str:
    """A short hash of the ``env``, ``policy`` and ``critic`` groups (and, where the config has them,
    the offline-to-online ``algo`` and ``fql`` settings), resolved, as plain data."""
    payload = json.dumps(_fingerprint_payload(cfg), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_group_choices(argv: Iterable[str], config_dir: str | os.PathLike) -> None:
    """Reject ``group=option`` overrides naming a YAML that does not exist in ``config_dir/group``.

    Hydra would report these with a multi-line error and exit code 1; checking the command line
    first gives the one-line message and exit code 2 the other bad inputs get.
    """
    config_dir = Path(config_dir)
    for arg in argv:
        if "=" not in arg or arg.startswith(("hydra.", "hydra/", "-")):
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+~")
        if "." in group or "@" in group or not (config_dir / group).is_dir():
            continue
        options = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        if value not in options:
            raise ConfigError(f"unknown {group} {value!r}: expected one of {', '.join(options)}")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], limit: int = 3) -> str:
    a, b = _flatten(saved), _flatten(current)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    text = ", ".join(f"{k}={a.get(k)!r} (now {b.get(k)!r})" for k in keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_compile_setting(value: Any, name: str, device: Any = None) -> None:
    """``true``/``false`` or one of ``torch.compile``'s modes (``optim.compile``, ``collector.compile_policy``).

    With a CPU ``device`` and compilation asked for, also checks that inductor finds the C++
    compiler it builds CPU kernels with: without one, ``torch.compile`` would fail deep inside
    the first compiled call, minutes into a run.
    """
    if not isinstance(value, bool):
        from torch._inductor import list_mode_options

        try:
            valid = isinstance(value, str) and list_mode_options(value) is not None
        except RuntimeError:  # inductor's "Unrecognized mode"
            valid = False
        if not valid:
            modes = "default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"
            raise ConfigError(f"{name} must be true, false or a torch.compile mode ({modes}), got {value!r}")
    if value and device is not None and torch.device(device).type == "cpu":
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except exc.InvalidCxxCompiler:
            raise ConfigError(
                f"{name}={'true' if value is True else value} needs a C++ compiler for torch.compile on CPU "
                f"and none was found (install g++, or point $CXX at one), or set {name}=false"
            ) from None


COLLECTOR_BACKENDS = ("local", "ray")
RAY_INSTALL_HINT = 'pip install -e ".[ray]"'


def check_collector_backend(
    backend: Any, *, sync: Any = True, ray_address: Any = None, device: Any = "cpu"
) -> None:
    """The ``collector.backend`` settings (both recipes, and :func:`~torchrl_sacflow.training.make_collector`).

    Args:
        backend (str): ``"local"`` (TorchRL's ``Collector`` / ``MultiSyncCollector`` on this
            machine) or ``"ray"`` (TorchRL's ``RayCollector``).

    Keyword Args:
        sync (bool): ``False`` (batches from whichever worker is ready first) needs ``backend="ray"``.
        ray_address (str, optional): a Ray cluster to join; only with ``backend="ray"``.
        device: the learner's device; ``backend="ray"`` ships a CPU policy to its workers, so
            it needs ``"cpu"``.

    Raises:
        ConfigError: for any other value, or for ``backend="ray"`` without Ray installed (the
            message names the optional extra to install).
    """
    if backend not in COLLECTOR_BACKENDS:
        raise ConfigError(f"unknown collector.backend {backend!r}: expected one of {', '.join(COLLECTOR_BACKENDS)}")
    if not isinstance(sync, bool):
        raise ConfigError(f"collector.sync must be true or false, got {sync!r}")
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address.strip()):
        raise ConfigError(f"collector.ray_address must be a Ray cluster address (host:port or auto) or null, "
                          f"got {ray_address!r}")
    if backend == "local":
        if not sync:
            raise ConfigError("collector.sync=false (asynchronous collection) needs collector.backend=ray")
        if ray_address is not None:
            raise ConfigError(f"collector.ray_address={ray_address} needs collector.backend=ray")
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"collector.backend=ray needs Ray, an optional dependency of torchrl_sacflow: {RAY_INSTALL_HINT}"
        ) from None
    if torch.device(device).type != "cpu":
        raise ConfigError(
            f"collector.backend=ray runs its workers' policy on CPU and needs device=cpu, got device={device}"
        )


def check_critic_config(critic: Mapping[str, Any]) -> None:
    """The ``critic`` group (both recipes): a known critic name and a policy delay of at least 1."""
    if critic.get("name") not in CRITICS:
        raise ConfigError(f"unknown critic {critic.get('name')!r}: expected one of {sorted(CRITICS)}")
    _positive_int(critic.get("policy_delay", 1), "critic.policy_delay")


def validate_train_config(cfg: Mapping[str, Any]) -> None:
    """Check a ``train_mujoco``-style config (plain dict, interpolations resolved)."""
    if cfg["env"].get("make"):
        load_env_factory(cfg["env"]["make"])
    else:
        check_env_id(cfg["env"]["id"])
    check_policy_config(cfg["policy"])
    check_critic_config(cfg["critic"])
    col = cfg["collector"]
    _positive_int(col["total_frames"], "collector.total_frames")
    _positive_int(col["frames_per_batch"], "collector.frames_per_batch")
    _positive_int(col["init_random_frames"], "collector.init_random_frames", minimum=0)
    _positive_int(col["num_workers"], "collector.num_workers")
    device = resolve_device(cfg.get("device", "cpu"))
    check_collector_backend(col["backend"], sync=col["sync"], ray_address=col["ray_address"], device=device)
    if col["sync"] and col["frames_per_batch"] % col["num_workers"]:  # each worker's share of a batch
        raise ConfigError(
            f"collector.frames_per_batch ({col['frames_per_batch']}) must be a multiple of "
            f"collector.num_workers ({col['num_workers']})"
        )
    check_compile_setting(col.get("compile_policy", False), "collector.compile_policy", device)
    check_compile_setting(cfg["optim"].get("compile", False), "optim.compile", device)
    if cfg["optim"].get("autocast") not in (None, "bf16"):
        raise ConfigError(f"optim.autocast must be null or bf16, got {cfg['optim']['autocast']!r}")
    if cfg["optim"].get("alpha_objective", "log_alpha") not in ("log_alpha", "alpha"):
        raise ConfigError(f"optim.alpha_objective must be log_alpha or alpha, got {cfg['optim']['alpha_objective']!r}")
    if cfg["optim"].get("alpha_entropy", "action") not in ("action", "pre_tanh"):
        raise ConfigError(f"optim.alpha_entropy must be action or pre_tanh, got {cfg['optim']['alpha_entropy']!r}")
    if cfg["optim"].get("alpha_entropy", "action") == "pre_tanh" and cfg["policy"].get("kind") != "flow":
        raise ConfigError(f"optim.alpha_entropy=pre_tanh needs a flow policy, got policy={cfg['policy'].get('name')}")
    _positive_int(cfg["replay_buffer"]["size"], "replay_buffer.size")
    _positive_int(cfg["optim"]["batch_size"], "optim.batch_size")
    if not cfg["optim"]["utd_ratio"] > 0:
        raise ConfigError(f"optim.utd_ratio must be > 0, got {cfg['optim']['utd_ratio']!r}")
    _positive_int(cfg["eval"]["num_episodes"], "eval.num_episodes")
    _positive_int(cfg["eval"]["interval"], "eval.interval", minimum=0)
    _positive_int(cfg["checkpoint"]["interval"], "checkpoint.interval", minimum=0)
    if cfg["logger"]["backend"] not in LOGGER_BACKENDS:
        raise ConfigError(f"unknown logger.backend {cfg['logger']['backend']!r}: expected one of {LOGGER_BACKENDS}")
    resolve_num_threads(cfg["threads"], col["num_workers"], col.get("backend", "local"))
