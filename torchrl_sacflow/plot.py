"""Learning curves and per-step gradient norms from run directories.

    python -m torchrl_sacflow.plot outputs/run_a outputs/run_b [--out curves.png] [--metric eval/return_mean]
    python -m torchrl_sacflow.plot outputs/*flow* --grad-norms --out grad_norms.png

Each run directory is one written by ``recipes.train_mujoco`` (its ``config.yaml`` names the
policy and seed, its ``logs/scalars/*.csv`` hold the metrics). Runs of the same variant (same
policy and env, different seeds) are drawn as their mean with a ±1 std band.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from torchrl_sacflow.training.loggers import read_csv_scalar

__all__ = ["RunInfo", "load_run", "group_runs", "plot_runs", "grad_norm_table", "plot_grad_norms", "main"]

_COLORS = {"flow_t": "tab:blue", "flow_g": "tab:orange", "flow_mlp": "tab:red", "gaussian": "tab:gray"}
GRAD_NORM_METRIC = "train/path_grad_norm_step_{}"


@dataclass
class RunInfo:
    path: Path
    policy: str
    env: str
    seed: int | None

    @property
    def variant(self) -> tuple[str, str]:
        return self.env, self.policy


def load_run(run_dir: str | os.PathLike) -> RunInfo:
    """Read a run's identity (policy name, env id, seed) from its saved config."""
    from omegaconf import OmegaConf

    path = Path(run_dir)
    for candidate in (path / "config.yaml", path / ".hydra" / "config.yaml"):
        if candidate.is_file():
            cfg = OmegaConf.load(candidate)
            env = OmegaConf.select(cfg, "env.id", default=None) or OmegaConf.select(cfg, "env.name", default="?")
            return RunInfo(path, str(OmegaConf.select(cfg, "policy.name", default="?")), str(env), cfg.get("seed"))
    return RunInfo(path, path.name, "?", None)


def group_runs(run_dirs: Iterable[str | os.PathLike]) -> dict[tuple[str, str], list[RunInfo]]:
    """Runs keyed by variant ``(env id, policy name)``, in first-seen order."""
    groups: dict[tuple[str, str], list[RunInfo]] = defaultdict(list)
    for run_dir in run_dirs:
        info = load_run(run_dir)
        groups[info.variant].append(info)
    return dict(groups)


def _label(variant: tuple[str, str], runs: Sequence[RunInfo], with_env: bool) -> str:
    env, policy = variant
    name = f"{env} {policy}" if with_env else policy
    if len(runs) == 1:
        return f"{name} (seed {runs[0].seed})"
    return f"{name} ({len(runs)} seeds)"


def _mean_std_curve(runs: Sequence[RunInfo], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    curves = [read_csv_scalar(r.path, metric) for r in runs]
    curves = [(np.asarray(s, float), np.asarray(v, float)) for s, v in curves if s]
    if not curves:
        return None
    if len(curves) == 1:
        steps, values = curves[0]
        return steps, values, np.zeros_like(values)
    # Seeds of one variant are evaluated at the same frames; interpolate anyway, on the range all share.
    end = min(s[-1] for s, _ in curves)
    steps = np.unique(np.concatenate([s[s <= end] for s, _ in curves]))
    stacked = np.stack([np.interp(steps, s, v) for s, v in curves])
    return steps, stacked.mean(0), stacked.std(0)


def plot_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    metric: str = "eval/return_mean",
    title: str | None = None,
) -> Path:
    """Plot ``metric`` against collected frames, one line (mean ± std over seeds) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(run_dirs)
    with_env = len({env for env, _ in groups}) > 1
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant, runs in groups.items():
        curve = _mean_std_curve(runs, metric)
        if curve is None:
            continue
        steps, mean, std = curve
        color = _COLORS.get(variant[1])
        ax.plot(steps, mean, label=_label(variant, runs, with_env), color=color)
        if len(runs) > 1:
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=color, linewidth=0)
    ax.set_xlabel("environment frames")
    ax.set_ylabel(metric)
    envs = sorted({env for env, _ in groups})
    ax.set_title(title or ", ".join(envs))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return _save_figure(fig, out)


def _save_figure(fig, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` (its folder made if missing) and close it, so that plotting many
    runs in one process does not keep every figure alive; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _run_grad_norms(run: RunInfo) -> np.ndarray | None:
    """Mean over the logged points of ``‖∂L/∂A_i‖`` for each step ``i`` (shape ``[K]``)."""
    norms = []
    i = 0
    while True:
        _, values = read_csv_scalar(run.path, GRAD_NORM_METRIC.format(i))
        if not values:
            break
        norms.append(float(np.mean(values)))
        i += 1
    return np.asarray(norms) if norms else None


def grad_norm_table(run_dirs: Sequence[str | os.PathLike]) -> dict[str, dict]:
    """Per variant label: ``{"policy", "mean", "std", "num_runs"}``, the per-step gradient norms
    (index ``i`` = flow step) averaged over training, mean and std over seeds."""
    groups = group_runs(run_dirs)
    with_env = len({env for env, _ in groups}) > 1
    table = {}
    for variant, runs in groups.items():
        per_run = [n for n in (_run_grad_norms(r) for r in runs) if n is not None]
        if not per_run:
            continue
        k = min(len(n) for n in per_run)
        stacked = np.stack([n[:k] for n in per_run])
        table[_label(variant, runs, with_env)] = {
            "policy": variant[1],
            "mean": stacked.mean(0),
            "std": stacked.std(0),
            "num_runs": len(per_run),
        }
    return table


def plot_grad_norms(run_dirs: Sequence[str | os.PathLike], *, out: str | os.PathLike, title: str | None = None) -> Path:
    """Paper Fig. 6a: the actor-loss gradient norm at each Euler step input ``A_i``, per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = grad_norm_table(run_dirs)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for label, row in table.items():
        steps = np.arange(len(row["mean"]))
        ax.errorbar(steps, row["mean"], yerr=row["std"], marker="o", capsize=3, label=label,
                    color=_COLORS.get(row["policy"]))
    ax.set_yscale("log")
    ax.set_xlabel("flow step i (input A_i)")
    ax.set_ylabel("||dL_actor / dA_i||  (mean over training)")
    ax.set_title(title or "per-step actor gradient norm")
    ax.grid(alpha=0.3, which="both")
    if table:
        ax.set_xticks(np.arange(max(len(row["mean"]) for row in table.values())))
        ax.legend(fontsize=8)
    return _save_figure(fig, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchrl_sacflow.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories written by recipes.train_mujoco")
    parser.add_argument("--out", default=None, help="output PNG (default: learning_curve.png / grad_norms.png)")
    parser.add_argument("--metric", default="eval/return_mean", help="CSV metric to plot against frames")
    parser.add_argument("--grad-norms", action="store_true", help="plot per-step actor gradient norms instead")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not Path(d).is_dir()]
    if missing:
        parser.error(f"not a directory: {missing[0]}")
    if args.grad_norms:
        out = plot_grad_norms(args.run_dirs, out=args.out or "grad_norms.png", title=args.title)
    else:
        out = plot_runs(args.run_dirs, out=args.out or "learning_curve.png", metric=args.metric, title=args.title)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
