"""Resuming a multi-phase run: each phase's CSV rows past its checkpoint are dropped."""
from __future__ import annotations

import os
from typing import Mapping

from torchrl_sacflow.training.loggers import truncate_csv_logs


def truncate_phase_logs(run_dir: str | os.PathLike, limits: Mapping[str, int], default: int) -> None:
    """Drop CSV rows logged after the checkpoint a run resumes from, phase by phase.

    Each phase logs against its own counter (``pretrain/*`` against pre-training steps,
    ``offline/*`` against offline updates, the rest against online frames), so each metric folder
    is cut at its own limit: ``limits[prefix]``, else ``default``.
    """
    truncate_csv_logs(run_dir, default, limits=limits)
