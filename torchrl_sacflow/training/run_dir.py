"""The folder a run writes into: a fresh one that cannot collide, or the checked folder it resumes.

Two runs must never share a folder silently: a fresh run started into a folder that holds another
run's checkpoint, summary or logs would replace the checkpoint and append a second series to the CSV
logs (hydra issues 2925 and 1817 report the same with hydra's default folders). So a fresh run
refuses such a folder, and the recipes' default folder names end in ``${run_id:}``: the start time
to the microsecond plus the process id, unique on one machine even for the jobs of a scheduler
array started in the same second.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from torchrl_sacflow.training.checkpoint import has_checkpoint, read_checkpoint_metadata, recover_checkpoint
from torchrl_sacflow.training.config import _differences, _fingerprint_payload
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.loggers import csv_scalar_dir

__all__ = ["check_resume", "open_run_dir", "previous_run_files", "run_id"]


def run_id() -> str:
    """``YYYYmmdd-HHMMSS-ffffff-p<pid>``: this process's start of a run, unique on one machine.

    Registered as the OmegaConf resolver ``${run_id:}`` (cached: every use in one process resolves
    to the same id), which the recipes' ``hydra.run.dir`` defaults end with.
    """
    return f"{datetime.datetime.now():%Y%m%d-%H%M%S-%f}-p{os.getpid()}"


if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def previous_run_files(run_dir: str | os.PathLike) -> list[str]:
    """What in ``run_dir`` says a run already wrote there: a checkpoint (also one a kill left as a
    backup), ``summary.json``, or CSV scalar logs. Hydra's own ``.hydra/`` and job log do not count."""
    run_dir = Path(run_dir)
    found = []
    if has_checkpoint(run_dir):
        found.append("a checkpoint")
    if (run_dir / "summary.json").is_file():
        found.append("summary.json")
    scalars = csv_scalar_dir(run_dir)
    if scalars.is_dir() and any(scalars.rglob("*.csv")):
        found.append("CSV logs")
    return found


def check_resume(
    resume_dir: str | os.PathLike, fingerprint: str, cfg: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check that ``resume_dir`` holds a checkpoint made with the same env/policy/critic config.

    A checkpoint that a kill left as a complete backup is adopted first, and stale or partial
    backups are removed (:func:`~torchrl_sacflow.training.checkpoint.recover_checkpoint`).
    ``cfg`` (optional) is only used to name the settings that differ.

    Returns:
        the checkpoint's metadata.

    Raises:
        ConfigError: no such folder, no complete checkpoint in it, or one made with another config.
    """
    path = Path(resume_dir)
    if not path.is_dir():
        raise ConfigError(f"resume directory {str(path)!r} does not exist")
    if recover_checkpoint(path) is None:
        raise ConfigError(f"resume directory {str(path)!r} has no complete checkpoint (expected {path / 'checkpoint'})")
    metadata = read_checkpoint_metadata(path)
    saved = metadata.get("fingerprint")
    if saved != fingerprint:
        groups = metadata.get("fingerprint_groups")
        hint = f": {_differences(groups, _fingerprint_payload(cfg))}" if groups and cfg else ""
        raise ConfigError(
            f"cannot resume {str(path)!r}: its checkpoint was made with another env/policy/critic "
            f"config{hint}; repeat the original run's overrides"
        )
    return metadata


def open_run_dir(
    cfg: Mapping[str, Any], run_dir: str | os.PathLike, fingerprint: str
) -> tuple[Path, dict[str, Any] | None]:
    """The folder a run writes into, created, with the resolved ``cfg`` saved as ``config.yaml``.

    With ``cfg["resume"]`` set it is that folder (``run_dir`` is ignored), once :func:`check_resume`
    found in it a checkpoint of the same ``fingerprint``; otherwise ``run_dir``, which must not hold
    an earlier run (:func:`previous_run_files`).

    Returns:
        ``(folder, metadata)``: ``metadata`` is the resumed checkpoint's, ``None`` for a new run.

    Raises:
        ConfigError: as :func:`check_resume`, or a fresh run into a folder that holds another run's
            checkpoint, summary or logs (it names both ways out: ``resume=`` or another folder).
    """
    metadata = None
    if cfg.get("resume"):
        metadata = check_resume(cfg["resume"], fingerprint, cfg)
        run_dir = cfg["resume"]
    else:
        found = previous_run_files(run_dir)
        if found:
            way_out = (f"continue it with resume={run_dir}" if has_checkpoint(run_dir)
                       else "it has no checkpoint to resume from: delete it")
            raise ConfigError(
                f"run directory {str(run_dir)!r} already holds a run ({', '.join(found)}): {way_out}, "
                f"or start a new run in another directory (hydra.run.dir=<new dir>)"
            )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(dict(cfg)), run_dir / "config.yaml")
    return run_dir, metadata
