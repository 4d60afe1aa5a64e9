"""Checkpoints that a killed run can resume from, built on ``torchrl.checkpoint.Checkpoint``.

TorchRL's ``Checkpoint`` already does what a training run needs: one named component per
stateful object, a manifest with free-form metadata, and an atomic publish (the whole checkpoint
is written to a staging directory, its manifest last, and renamed into place). Model and
optimiser states use the plain ``torch.save`` payload (one file per component), the replay buffer
its own ``dump``/``load`` (memory-mapped tensors), the RNG states ``GlobalRNGState`` (python,
numpy, torch), the envs' between-step state :class:`~torchrl_sacflow.training.env_state.EnvState`,
and progress counters / config are JSON.

Layout: ``<run_dir>/checkpoint/`` (the latest one; each save replaces it). The publish moves the
old ``checkpoint/`` aside to ``.checkpoint.backup-<id>`` before moving the new one in, then deletes
the backup: a kill between the two renames leaves no ``checkpoint/`` but a complete backup (and a
complete ``.checkpoint.stage-<id>``), a kill during the deletion a partial backup.
:func:`recover_checkpoint` (run by every resume) adopts the newest *complete* one of these and
removes the rest; complete means a valid manifest and every file it lists present
(:func:`is_complete_checkpoint`).
"""
from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torchrl.checkpoint import (
    Checkpoint,
    GlobalRNGState,
    JSONCheckpointAdapter,
    StateDictCheckpointAdapter,
)
from torchrl.data import ReplayBuffer
from torchrl.objectives import LossModule

__all__ = [
    "CHECKPOINT_DIRNAME",
    "checkpoint_path",
    "has_checkpoint",
    "is_complete_checkpoint",
    "recover_checkpoint",
    "read_checkpoint_metadata",
    "make_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_trained_policy",
]

CHECKPOINT_DIRNAME = "checkpoint"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIRNAME


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint directory whose manifest is valid and lists only files that exist.

    TorchRL writes the manifest after every component, so a staging folder killed mid-save has none;
    a backup killed while being deleted has files missing. Either is incomplete.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        manifest = Checkpoint.manifest(path)
    except Exception:  # noqa: BLE001 - any unreadable manifest means "not a usable checkpoint"
        return False
    for record in manifest.get("components", {}).values():
        root = path / record.get("path", "")
        if not root.is_dir() or not all((root / name).is_file() for name in record.get("files", [])):
            return False
    return True


def _candidates(run_dir: Path) -> list[Path]:
    """``checkpoint/`` and the backup / staging folders TorchRL's publish can leave beside it."""
    names = [CHECKPOINT_DIRNAME] + sorted(
        p.name for p in run_dir.glob(f".{CHECKPOINT_DIRNAME}.*-*")
        if p.name.startswith((f".{CHECKPOINT_DIRNAME}.backup-", f".{CHECKPOINT_DIRNAME}.stage-")))
    return [run_dir / n for n in names if (run_dir / n).exists()]


def _rank(path: Path) -> tuple:
    manifest = Checkpoint.manifest(path)
    # newest first: most frames, then latest creation; checkpoint/ itself wins a tie
    return (manifest.get("metadata", {}).get("frames", -1), manifest.get("created_at", ""),
            path.name == CHECKPOINT_DIRNAME)


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint: ``checkpoint/``, or one that
    :func:`recover_checkpoint` would adopt (a complete backup left by a kill mid-publish)."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(is_complete_checkpoint(p) for p in _candidates(run_dir))


def recover_checkpoint(run_dir: str | os.PathLike, *, verbose: bool = True) -> Path | None:
    """Make ``<run_dir>/checkpoint`` the newest complete checkpoint the folder holds; remove the rest.

    A kill inside TorchRL's publish window can leave the latest checkpoint as
    ``.checkpoint.backup-<id>`` (or as a complete ``.checkpoint.stage-<id>``) with no
    ``checkpoint/``; a kill while a backup is deleted leaves a partial one. The newest complete
    candidate (most frames, then latest ``created_at``) becomes ``checkpoint/``; every other
    backup / staging folder, complete or not, is deleted. Each change is reported on stderr in one
    line (``verbose``).

    Returns:
        the path of ``checkpoint/``, or ``None`` when no complete checkpoint exists (then nothing is
        deleted).
    """
    run_dir = Path(run_dir)
    complete = [p for p in _candidates(run_dir) if is_complete_checkpoint(p)]
    if not complete:
        return None
    best = max(complete, key=_rank)
    target = checkpoint_path(run_dir)

    def note(message: str) -> None:
        if verbose:
            print(f"checkpoint: {message}", file=sys.stderr, flush=True)

    if best != target:
        if target.exists():  # an older (or broken) checkpoint/ that the adopted one supersedes
            shutil.rmtree(target, ignore_errors=True)
        os.replace(best, target)
        note(f"adopted {best.name} (frames {read_checkpoint_metadata(run_dir).get('frames')}) as {target}")
    for stale in _candidates(run_dir):
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
            note(f"removed the stale {stale.name} in {run_dir}")
    return target


def read_checkpoint_metadata(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata saved with the latest checkpoint (frames, fingerprint, ...) without loading it."""
    return dict(Checkpoint.manifest(checkpoint_path(run_dir)).get("metadata", {}))


def make_checkpoint(
    *,
    loss_module: LossModule,
    optimizers: Mapping[str, torch.optim.Optimizer],
    update_step: Any,
    progress: dict[str, Any],
    config: Mapping[str, Any] | None = None,
    replay_buffer: ReplayBuffer | None = None,
    policy: nn.Module | None = None,
    env_states: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Register everything a resumed run needs on one :class:`~torchrl.checkpoint.Checkpoint`.

    Keyword Args:
        loss_module: its state holds the actor, the critics, their targets and ``log_alpha``.
        optimizers: name -> optimiser (e.g. ``{"actor_optim": ..., "critic_optim": ...}``).
        update_step: the :class:`~torchrl_sacflow.training.SACUpdate` (its call counter sets the
            actor schedule).
        progress: a JSON dict of counters (frames, updates, ...); restored **in place** on load.
        config: the run's resolved config (JSON), saved for the record; never loaded back.
        replay_buffer: saved if given (it can be large: ~obs_dim × 8 bytes per transition).
        policy: the actor alone, a convenience copy for loading a policy without the loss.
        env_states: name -> :class:`~torchrl_sacflow.training.env_state.EnvState` (the training
            env with its collector, the eval env): what makes a resume exact. Restore them, and
            ``"rng"``, only once the envs and the collector exist (``load_checkpoint``'s ``exclude``,
            then a second call with ``components``).
    """
    torch_payload = StateDictCheckpointAdapter(payload_format="torch")
    ckpt = Checkpoint()
    ckpt.register("loss_module", loss_module, adapter=torch_payload)
    for name, optimizer in optimizers.items():
        ckpt.register(name, optimizer, adapter=torch_payload)
    ckpt.register("update_step", update_step, adapter=torch_payload)
    ckpt.register("rng", GlobalRNGState(), adapter=torch_payload)
    ckpt.register("progress", progress, adapter=JSONCheckpointAdapter())
    if config is not None:
        ckpt.register("config", dict(config), adapter=JSONCheckpointAdapter())
    if policy is not None:
        ckpt.register("policy", policy, adapter=torch_payload)
    if replay_buffer is not None:
        ckpt.register("replay_buffer", replay_buffer)  # ReplayBuffer.dump / .load
    for name, state in (env_states or {}).items():
        ckpt.register(name, state, adapter=torch_payload)
    return ckpt


def save_checkpoint(
    ckpt: Checkpoint, run_dir: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Atomically replace ``<run_dir>/checkpoint`` with the current state of ``ckpt``'s components.

    An empty replay buffer is left out (TorchRL cannot dump an uninitialised storage).
    """
    components = [
        name
        for name, value in ckpt.components.items()
        if not (isinstance(value, ReplayBuffer) and len(value) == 0)
    ]
    with warnings.catch_warnings():
        # Re-dumping a buffer that was loaded and not written to since warns about its cursor; the
        # writer's own cursor is what resumes writing, and it is saved (checked in the tests).
        warnings.filterwarnings("ignore", message="last_cursor is None")
        return ckpt.save(checkpoint_path(run_dir), components=components, metadata=dict(metadata or {}))


def load_checkpoint(
    ckpt: Checkpoint, run_dir: str | os.PathLike, *, components: set[str] | None = None,
    exclude: set[str] = frozenset(),
) -> set[str]:
    """Restore the registered components present in ``<run_dir>/checkpoint`` (never ``config``).

    Keyword Args:
        components: only these (default: all registered ones).
        exclude: not these, e.g. the env states and RNGs a recipe restores later, once its
            collector is built (building and seeding it would otherwise move them on).

    Returns the names of the components that were restored. A replay buffer that was not saved
    (``checkpoint.save_replay_buffer=false``) is simply left empty.
    """
    path = checkpoint_path(run_dir)
    saved = set(Checkpoint.manifest(path)["components"])
    wanted = (set(ckpt.components) if components is None else set(components))
    wanted = (wanted & set(ckpt.components) & saved) - {"config"} - set(exclude)
    if not wanted:
        return set()
    return set(ckpt.load(path, components=wanted).loaded)


def load_trained_policy(run_dir: str | os.PathLike, *, seed: int = 0):
    """The actor of a MuJoCo-recipe run from its latest checkpoint, and an env to run it in.

    Rebuilds the env (gymnasium id or ``env.make`` factory) and the policy from the run's
    ``config.yaml``, then loads the ``policy`` component of ``<run_dir>/checkpoint``.

    Returns:
        ``(actor, env)``: a TorchRL ``ProbabilisticActor`` and the recipe's ``TransformedEnv``.

    Raises:
        ConfigError: if ``run_dir`` holds no config or no checkpoint.
    """
    from omegaconf import OmegaConf

    from torchrl_sacflow.training.envs import make_env, observation_dim
    from torchrl_sacflow.training.errors import ConfigError
    from torchrl_sacflow.training.policies import make_policy

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not has_checkpoint(run_dir):
        raise ConfigError(f"{str(run_dir)!r} holds no finished run of the recipe (config.yaml and checkpoint/)")
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    env = make_env(cfg["env"]["id"], factory=cfg["env"].get("make"), observation_keys=cfg["env"].get("observation_keys"),
                   seed=seed)
    actor = make_policy(cfg["policy"], env.action_spec, observation_dim(env))
    ckpt = Checkpoint()
    ckpt.register("policy", actor, adapter=StateDictCheckpointAdapter(payload_format="torch"))
    # the newest complete checkpoint, also one a kill left as a backup (read only: nothing is moved)
    ckpt.load(max((p for p in _candidates(run_dir) if is_complete_checkpoint(p)), key=_rank), components={"policy"})
    return actor, env
