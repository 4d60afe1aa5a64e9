"""TorchRL loggers for a run directory, and the CSV layout the plot command reads."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from tensordict import TensorDictBase
from torchrl.record.loggers import CSVLogger, Logger, get_logger

from torchrl_sacflow.training.errors import ConfigError

__all__ = [
    "LOGGER_BACKENDS",
    "make_logger",
    "log_metrics",
    "csv_scalar_dir",
    "read_csv_scalar",
    "truncate_csv_logs",
    "episode_metrics",
    "write_summary",
]

LOGGER_BACKENDS = ("csv", "tensorboard", "wandb", "none")
_EXP_NAME = "logs"  # CSV scalars land in <run_dir>/logs/scalars/<metric>.csv


def _has_torchcodec() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchcodec") is not None


def make_logger(
    backend: str,
    run_dir: str | os.PathLike,
    *,
    project: str = "torchrl_sacflow",
    wandb_mode: str = "offline",
    config: Mapping[str, Any] | None = None,
    video_format: str = "auto",
) -> Logger | None:
    """A TorchRL logger writing under ``run_dir`` (``"none"`` gives ``None``).

    ``csv`` (default) needs nothing; ``tensorboard`` needs the ``tensorboard`` package; ``wandb``
    runs offline unless ``wandb_mode="online"`` (no account needed by default). ``video_format``
    (CSV only): ``"mp4"`` needs ``torchcodec``; ``"pt"`` saves the frames tensor with
    ``torch.save``; ``"auto"`` picks mp4 when torchcodec is installed.
    """
    if backend not in LOGGER_BACKENDS:
        raise ConfigError(f"unknown logger.backend {backend!r}: expected one of {LOGGER_BACKENDS}")
    if backend == "none":
        return None
    if backend == "csv":
        if video_format == "auto":
            video_format = "mp4" if _has_torchcodec() else "pt"
        if video_format not in ("mp4", "pt", "memmap"):
            raise ConfigError(f"logger.video_format must be auto, mp4, pt or memmap, got {video_format!r}")
        return CSVLogger(exp_name=_EXP_NAME, log_dir=str(run_dir), video_format=video_format)
    kwargs = {}
    if backend == "wandb":
        kwargs["wandb_kwargs"] = {
            "project": project,
            "mode": wandb_mode,
            "config": dict(config or {}),
        }
    return get_logger(backend, logger_name=str(run_dir), experiment_name=_EXP_NAME, **kwargs)


def log_metrics(logger: Logger | None, metrics: Mapping[str, Any], step: int) -> None:
    """Log a dict of scalars (floats or 0-d tensors) at ``step`` (collected frames)."""
    if logger is None:
        return
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.item()
        logger.log_scalar(name, float(value), step=int(step))


def csv_scalar_dir(run_dir: str | os.PathLike) -> Path:
    """Where :func:`make_logger` with the CSV backend writes ``<metric>.csv`` (``step,value`` rows)."""
    return Path(run_dir) / _EXP_NAME / "scalars"


def read_csv_scalar(run_dir: str | os.PathLike, metric: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of one CSV-logged metric; a step logged twice keeps its last value."""
    path = csv_scalar_dir(run_dir) / f"{metric}.csv"
    if not path.is_file():
        return [], []
    rows: dict[int, float] = {}
    with path.open() as file:
        for row in csv.reader(file):
            if len(row) == 2:
                rows[int(float(row[0]))] = float(row[1])
    steps = sorted(rows)
    return steps, [rows[s] for s in steps]


def truncate_csv_logs(run_dir: str | os.PathLike, max_step: int, *, limits: Mapping[str, int] | None = None) -> None:
    """Drop CSV rows logged after ``max_step``: a resumed run re-logs them from its checkpoint.

    ``limits`` gives a top-level metric folder (e.g. ``"pretrain"``) its own last step, for runs
    whose phases log against their own counters.
    """
    root = csv_scalar_dir(run_dir)
    if not root.is_dir():
        return
    for path in root.rglob("*.csv"):
        limit = (limits or {}).get(path.relative_to(root).parts[0], max_step)
        with path.open() as file:
            rows = [row for row in csv.reader(file) if len(row) == 2 and int(float(row[0])) <= limit]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as file:
            csv.writer(file, lineterminator="\n").writerows(rows)
        os.replace(tmp, path)


def episode_metrics(data: TensorDictBase) -> dict[str, float]:
    """Mean return and length of the episodes that ended in a collected batch (``RewardSum`` and
    ``StepCounter`` keys); empty if none ended."""
    done = data["next", "done"].squeeze(-1)
    if not done.any():
        return {}
    return {
        "train/episode_return": data["next", "episode_reward"][done].mean().item(),
        "train/episode_length": data["next", "step_count"][done].float().mean().item(),
    }


def write_summary(run_dir: str | os.PathLike, summary: Mapping[str, Any]) -> str:
    """Write ``summary.json`` into the run dir and return the one-line summary to print."""
    Path(run_dir, "summary.json").write_text(json.dumps(dict(summary), indent=2))
    mean, std = summary.get("eval_return_mean"), summary.get("eval_return_std")
    eval_text = "n/a" if mean is None else f"{mean:.1f} ± {std:.1f}"
    return (
        f"{'interrupted' if summary['interrupted'] else 'done'}: {summary['frames']} frames, "
        f"{summary['updates']} updates, final eval return {eval_text}, wall time {summary['wall_time_s']:.0f}s, "
        f"{summary['updates_per_s']:.1f} updates/s, {summary['frames_per_s']:.0f} frames/s -> {run_dir}"
    )
