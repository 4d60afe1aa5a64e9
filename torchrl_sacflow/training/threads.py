"""Process-wide runtime settings: learner threads, device, seeds.

On small machines the learner's threads compete with collector worker processes for the same
cores; two learner threads on two cores shared with a worker slowed an update 10-30×. So the
learner takes what the workers leave (every core when it collects itself), and each worker runs
single-threaded.
"""
from __future__ import annotations

import os

import torch

from torchrl_sacflow.training.errors import ConfigError

__all__ = ["available_cores", "resolve_num_threads", "set_learner_threads", "resolve_device", "seed_everything"]


def available_cores() -> int:
    """Cores this process may run on (respects ``taskset``/cgroup affinity, unlike ``cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_threads(threads: int | str, num_workers: int = 1, backend: str = "local") -> int:
    """Learner threads for a ``threads`` setting.

    ``"auto"``: with the in-process collector (``backend="local"``, ``num_workers=1``) the env
    steps in the learner's process, so collection and updates alternate and the learner takes
    every core (measured in ``docs/fast_paths.md``). With worker processes (``num_workers > 1`` or the
    Ray backend) collection runs at the same time as the updates, so each worker keeps a core and
    the learner gets ``max(1, cores - num_workers)`` (more learner threads than free cores run
    far slower than one). Workers run single-threaded.

    Raises:
        ConfigError: ``threads`` is neither ``"auto"`` nor an integer >= 1.
    """
    if threads in ("auto", None):
        if backend == "local" and int(num_workers) <= 1:
            return available_cores()
        return max(1, available_cores() - max(int(num_workers), 1))
    text = str(threads).strip()
    if isinstance(threads, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")
    return int(text)


def set_learner_threads(threads: int | str, num_workers: int = 1, backend: str = "local") -> int:
    """Resolve ``threads`` and apply it with ``torch.set_num_threads``; return the value used."""
    n = resolve_num_threads(threads, num_workers, backend)
    torch.set_num_threads(n)
    return n


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is taken as a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<n>', got {device!r}") from None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (envs and collectors are seeded separately)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
