"""The one sweep driver of the learning experiments: run folders, skip / adopt / resume / start,
the committed results file, and the report's number formatting and curves.

An experiment is a table (tasks x variants x budgets, each row a list of recipe overrides) turned
into :class:`Job` s; :func:`run_jobs` runs them, ``parallel`` at a time, each as::

    python -m <job.module> <job.args> hydra.run.dir=<job.run_dir> [resume=<job.run_dir>]

with ``threads`` torch threads, its output in ``<run_dir>.log`` and its pid in ``<run_dir>.pid``
beside the run folder. What happens to one job is :func:`plan`'s answer for its folder, the same
for every experiment:

* ``"skip"``: the run finished (``summary.json`` says it was not interrupted), or its key is in the
  experiment's results file (:class:`Results`: a later session skips it even on a fresh clone);
* ``"adopt"``: a process started by an earlier driver (its ``.pid`` file) still runs it: waited for,
  never started twice;
* ``"resume"``: unfinished, with a complete checkpoint (a run killed when a session ended):
  continued from it (``resume=<run dir>``, exact), its log appended to;
* ``"start"``: anything else (a run killed before its first checkpoint, or never started): the folder
  is removed and the run starts from scratch.

A job that ends finished is measured into the results file (``Results.record``) before
``on_done`` (usually the experiment's report) is called.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from benchmarks.report import command_line
from torchrl_sacflow.training import has_checkpoint, read_csv_scalar

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
OUTPUTS = REPO / "outputs"
MUJOCO = "recipes.train_mujoco"

__all__ = ["Job", "Results", "run_jobs", "plan", "finished", "summary", "fmt", "header", "command_line",
           "run_curve", "mean_curve", "plot_curves", "REPO", "RESULTS_DIR", "OUTPUTS"]


@dataclass(frozen=True)
class Job:
    """One run of a sweep: ``key`` names it in the results file and the log, ``args`` are the recipe
    overrides (without ``hydra.run.dir``, which the driver adds), ``module`` the recipe."""

    key: str
    run_dir: Path
    args: tuple[str, ...]
    module: str = MUJOCO

    def command(self, resume: bool = False) -> list[str]:
        """The command line that runs this job (``resume``: continue from its checkpoint)."""
        extra = [f"resume={self.run_dir}"] if resume else []
        return [sys.executable, "-m", self.module, *self.args, f"hydra.run.dir={self.run_dir}", *extra]


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: a ``summary.json`` that says it was not interrupted."""
    summary = Path(run_dir) / "summary.json"
    return summary.is_file() and not json.loads(summary.read_text())["interrupted"]


def summary(run_dir: Path) -> dict:
    """A run's ``summary.json``."""
    return json.loads((Path(run_dir) / "summary.json").read_text())


def _sibling(run_dir: Path, suffix: str) -> Path:
    return run_dir.parent / f"{run_dir.name}{suffix}"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def alive_pid(run_dir: Path) -> int | None:
    """The pid in ``<run_dir>.pid`` if that process still runs, else ``None``."""
    try:
        pid = int(_sibling(Path(run_dir), ".pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def plan(run_dir: Path, recorded: bool = False) -> str:
    """What the driver does with the run folder ``run_dir``: ``"skip"``, ``"adopt"``, ``"resume"`` or
    ``"start"`` (the rules are in the module docstring). ``recorded``: the run's key is already in the
    results file."""
    run_dir = Path(run_dir)
    if recorded or finished(run_dir):
        return "skip"
    if alive_pid(run_dir) is not None:
        return "adopt"
    if has_checkpoint(run_dir):
        return "resume"
    return "start"


class Results:
    """An experiment's committed results file: a JSON object ``key -> what a finished run measured``.

    ``measure(run_dir) -> dict`` is the experiment's own; the file is re-read before every write, so
    two drivers of one experiment (on different jobs) keep each other's entries.
    """

    def __init__(self, path: Path, measure: Callable[[Job], dict], *, indent: int | None = 1,
                 sort_keys: bool = True):
        self.path, self.measure, self.indent, self.sort_keys = Path(path), measure, indent, sort_keys

    def load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def write(self, results: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(results, indent=self.indent, sort_keys=self.sort_keys))

    def recorded(self, job: Job, results: dict) -> bool:
        """Whether ``results`` (the file's content) already holds ``job``: its key is there."""
        return job.key in results

    def record(self, job: Job) -> None:
        """Measure the finished ``job`` into the file."""
        entry = self.measure(job)
        results = self.load()
        results[job.key] = entry
        self.write(results)

    def record_finished(self, jobs: Iterable[Job]) -> None:
        """Record every finished job the file lacks (e.g. the driver was killed in between)."""
        results = self.load()
        for job in jobs:
            if not self.recorded(job, results) and finished(job.run_dir):
                self.record(job)


class _Adopted:
    """A run started by an earlier driver that is still alive: waited on, like a child process."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            self.returncode = "?"
        return self.returncode


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def run_jobs(jobs: list[Job], *, parallel: int, threads: int = 1, results: Results | None = None,
             on_done: Callable[[Job], None] | None = None, poll_s: float = 5.0) -> None:
    """Run ``jobs`` in their order, ``parallel`` at a time, each with ``threads`` torch threads; the
    skip / adopt / resume / start rules of :func:`plan`. With ``results``, a finished job (one found
    finished but not recorded, and each that ends finished) is recorded there; then ``on_done(job)``
    is called for each job that ends."""
    known = results.load() if results is not None else {}
    pending, running = [], []
    for job in jobs:
        recorded = results is not None and results.recorded(job, known)
        action = plan(job.run_dir, recorded)
        if action == "skip":
            if results is not None and not recorded:
                results.record(job)  # finished but not recorded: the driver was killed in between
            continue
        if action == "adopt":
            pid = alive_pid(job.run_dir)
            print(f"[adopt] {job.key} pid {pid}", flush=True)
            running.append((_Adopted(pid), job))
        else:
            pending.append(job)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            resume = plan(job.run_dir) == "resume"
            if job.run_dir.exists() and not resume:
                shutil.rmtree(job.run_dir)
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            cmd = job.command(resume)
            log = open(_sibling(job.run_dir, ".log"), "a" if resume else "w")
            print(f"[{'resume' if resume else 'start'} {_stamp()}] {shlex.join(cmd[1:])}", flush=True)
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            _sibling(job.run_dir, ".pid").write_text(str(proc.pid))
            running.append((proc, job))
        time.sleep(poll_s)
        for proc, job in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, job))
            print(f"[done {_stamp()}] {job.key} pid {proc.pid} rc={proc.returncode}", flush=True)
            if results is not None and finished(job.run_dir):
                results.record(job)
            if on_done is not None:
                on_done(job)


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
def header(title: str, command: str) -> list[str]:
    """A report's first lines: the title, then the command that made it in a code block."""
    return [f"# {title}", "", "Command:", "", "```", command, "```", ""]


def fmt(values: Iterable, digits: int = 0, spread: str = "values") -> str:
    """A report cell for one row's per-seed ``values`` (``None`` and NaN left out; ``"–"`` if none are
    left): the mean with ``digits`` decimals, then for several values either each of them in brackets
    (``spread="values"``: ``"2481 (2016 / 2913)"``) or the population std (``"std"``: ``"2481 ± 449"``)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    text = f"{np.mean(vals):.{digits}f}"
    if len(vals) > 1:
        if spread == "std":
            text += f" ± {np.std(vals):.{digits}f}"
        else:
            text += " (" + " / ".join(f"{v:.{digits}f}" for v in vals) + ")"
    return text


def run_curve(run_dir: Path, metric: str) -> list[list[float]]:
    """A run's logged ``metric`` as ``[[step, value], ...]`` (the form the results files keep)."""
    steps, values = read_csv_scalar(run_dir, metric)
    return [[s, v] for s, v in zip(steps, values)]


def mean_curve(curves: list) -> tuple[list, list]:
    """``(steps, means)``: the mean over ``curves`` (each ``[[step, value], ...]``) at the steps all share."""
    steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    return steps, [float(np.mean([dict(map(tuple, c))[s] for c in curves])) for s in steps]


def plot_curves(panels: list[tuple[str, list[tuple[str, list]]]], out: Path, *, xlabel: str,
                ylim: tuple[float, float] | None = None,
                hlines: dict[str, list[tuple[float, str, str]]] | None = None) -> None:
    """One panel per ``(title, [(label, curves), ...])``, each label's mean curve over its seeds
    (:func:`mean_curve`, the seed count in the legend); ``hlines``: title -> ``(y, linestyle, label)``
    reference lines. Writes ``out`` (PNG); nothing when there is no panel."""
    if not panels:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        for label, curves in rows:
            steps, mean = mean_curve(curves)
            ax.plot(steps, mean, marker="o", ms=3, label=f"{label} ({len(curves)})")
        for y, style, label in (hlines or {}).get(title, []):
            ax.axhline(y, color="k", ls=style, lw=1, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
