"""Resuming a multi-phase run: each phase's CSV rows past its checkpoint are dropped."""
from __future__ import annotations

import csv
import os
from typing import Mapping


from torchrl_sacflow.training.loggers import csv_scalar_dir


def truncate_phase_logs(run_dir: str | os.PathLike, limits: Mapping[str, int], default: int) -> None:
    """Drop CSV rows logged after the checkpoint a run resumes from, phase by phase.

    Each phase logs against its own counter (``pretrain/*`` against pre-training steps,
    ``offline/*`` against offline updates, the rest against online frames), so each metric folder
    is cut at its own limit: ``limits[prefix]``, else ``default``.
    """
    root = csv_scalar_dir(run_dir)
    if not root.is_dir():
        return
    for path in root.rglob("*.csv"):
        limit = limits.get(path.relative_to(root).parts[0], default)
        with path.open() as file:
            rows = [row for row in csv.reader(file) if len(row) == 2 and int(float(row[0])) <= limit]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as file:
            csv.writer(file, lineterminator="\n").writerows(rows)
        os.replace(tmp, path)
