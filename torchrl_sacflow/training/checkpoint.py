"""Checkpoints that a killed run can resume from, built on ``torchrl.checkpoint.Checkpoint``.

TorchRL's ``Checkpoint`` already does what a training run needs: one named component per
stateful object, a manifest with free-form metadata, and an atomic publish (the whole checkpoint
is written to a staging directory and renamed into place, so a kill mid-save leaves the previous
checkpoint intact). Model and optimiser states use the plain ``torch.save`` payload (one file per
component), the replay buffer its own ``dump``/``load`` (memory-mapped tensors), the RNG states
``GlobalRNGState`` (python, numpy, torch), and progress counters / config are JSON.

Layout: ``<run_dir>/checkpoint/`` (the latest one; each save replaces it).
"""
from __future__ import annotations

import os
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
    "read_checkpoint_metadata",
    "make_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_trained_policy",
]

CHECKPOINT_DIRNAME = "checkpoint"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIRNAME


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return Checkpoint.is_checkpoint(checkpoint_path(run_dir))


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


def load_checkpoint(ckpt: Checkpoint, run_dir: str | os.PathLike) -> set[str]:
    """Restore every registered component present in ``<run_dir>/checkpoint`` (not ``config``).

    Returns the names of the components that were restored. A replay buffer that was not saved
    (``checkpoint.save_replay_buffer=false``) is simply left empty.
    """
    path = checkpoint_path(run_dir)
    saved = set(Checkpoint.manifest(path)["components"])
    wanted = (set(ckpt.components) & saved) - {"config"}
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
    ckpt.load(checkpoint_path(run_dir), components={"policy"})
    return actor, env
