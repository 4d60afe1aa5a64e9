"""Critic benchmark: the textbook SAC critic (twin MLPs + soft target) vs the CrossQ critic
(BatchRenorm, no target, joint batch, policy delay 3), for Flow-T and the Gaussian baseline.

    python benchmarks/critics.py run --env halfcheetah --seeds 0 1 2 --parallel 2
    python benchmarks/critics.py report --env halfcheetah

``run`` launches the recipe itself, one subprocess per (seed, policy, critic), seed-major (all four
variants of seed 0 first), ``--parallel`` at a time with 1 torch thread each::

    python -m recipes.train_mujoco env=<env> policy=<p> critic=<c> seed=<s> threads=1 <CPU budget>

into ``outputs/bench_critics/<env>/<policy>_<critic>_seed<s>``; a finished run is skipped, one
still running from an earlier driver (its ``<run>.pid``) is waited for, any other unfinished one is
started again from scratch. After the first seed the (cheaper) Gaussian runs of a seed go first. ``report`` (also run after each finished run) writes
``benchmarks/results/critics_<env>.md`` and ``.png`` from whatever has finished.

CPU budget (the paper-size CrossQ critic, 2 x 1024 BatchRenorm, costs ~0.35 s per update on one
CPU thread): both critics 2 x 256, batch 256, 5 000 env steps of which the first 1 000 are
uniform random, UTD 1 (1 000 updates after every 1 000 env steps), evaluation every 1 000 steps
(3 deterministic episodes). This is a smoke-scale comparison, not a reproduction of the paper's
1M-step curves.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrl_sacflow.training import read_csv_scalar  # noqa: E402

RUNS_DIR = REPO / "outputs" / "bench_critics"
RESULTS_DIR = REPO / "benchmarks" / "results"
POLICIES = ["flow_t", "gaussian"]
CRITICS = ["sac", "crossq"]
BUDGET = [
    "collector.total_frames=5000",
    "collector.init_random_frames=1000",
    "collector.frames_per_batch=1000",
    "optim.utd_ratio=1.0",
    "optim.batch_size=256",
    "critic.num_cells=[256,256]",
    "replay_buffer.size=100000",
    "eval.interval=1000",
    "eval.num_episodes=3",
    "checkpoint.interval=0",
    "checkpoint.save_replay_buffer=false",
    "logger.progress_bar=false",
    "logger.plot=false",
    "threads=1",
]


def run_dir_for(env: str, policy: str, critic: str, seed: int) -> Path:
    return RUNS_DIR / env / f"{policy}_{critic}_seed{seed}"


def recipe_args(env: str, policy: str, critic: str, seed: int, extra: list[str]) -> list[str]:
    return [f"env={env}", f"policy={policy}", f"critic={critic}", f"seed={seed}", *BUDGET, *extra,
            f"hydra.run.dir={run_dir_for(env, policy, critic, seed)}"]


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and not json.loads(summary.read_text())["interrupted"]


class _Adopted:
    """A run started by an earlier driver that is still alive (its ``<run>.pid`` file): waited on."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "Z"
        if state == "Z":
            self.returncode = "?"
        return self.returncode


def _alive_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if _Adopted(pid).poll() is None else None


def run(args: argparse.Namespace) -> None:
    # seed-major; after the first seed the cheaper Gaussian runs go first, so that more rows have
    # more seeds when the sweep is cut short
    jobs = [(p, c, s) for i, s in enumerate(args.seeds) for p in (POLICIES if i == 0 else POLICIES[::-1])
            for c in CRITICS]
    pending = [j for j in jobs if not _finished(run_dir_for(args.env, *j))]
    running: list[tuple[subprocess.Popen | _Adopted, tuple]] = []
    for job in list(pending):  # still running from an earlier (killed) driver: wait for it, don't restart it
        run_dir = run_dir_for(args.env, *job)
        pid = _alive_pid(run_dir.parent / f"{run_dir.name}.pid")
        if pid is not None:
            pending.remove(job)
            running.append((_Adopted(pid), job))
            print(f"[adopt] {job} pid {pid}", flush=True)
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < args.parallel:
            job = pending.pop(0)
            run_dir = run_dir_for(args.env, *job)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "recipes.train_mujoco", *recipe_args(args.env, *job, args.overrides)]
            log = open(run_dir.parent / f"{run_dir.name}.log", "w")
            print(f"[start {time.strftime('%H:%M:%S')}] {shlex.join(cmd[1:])}", flush=True)
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env_vars)
            (run_dir.parent / f"{run_dir.name}.pid").write_text(str(proc.pid))
            running.append((proc, job))
        time.sleep(5)
        for proc, job in list(running):
            if proc.poll() is not None:
                running.remove((proc, job))
                print(f"[done {time.strftime('%H:%M:%S')}] {job} pid {proc.pid} rc={proc.returncode}", flush=True)
                report(args)


def _runs(env: str) -> dict[tuple[str, str], list[Path]]:
    out: dict[tuple[str, str], list[Path]] = {}
    for policy in POLICIES:
        for critic in CRITICS:
            dirs = sorted(RUNS_DIR.glob(f"{env}/{policy}_{critic}_seed*"))
            out[(policy, critic)] = [d for d in dirs if _finished(d)]
    return out


def _last_train_return(run_dir: Path) -> float:
    _, values = read_csv_scalar(run_dir, "train/episode_return")
    return values[-1] if values else float("nan")


def _seconds_per_1000_updates(run_dir: Path) -> float:
    _, values = read_csv_scalar(run_dir, "time/updates_per_s")
    return 1000.0 / values[-1] if values else float("nan")


def _learning_seconds_per_1000(run_dir: Path, init_frames: int = 1000) -> float:
    """Wall-clock per 1 000 env steps after the random phase (updates + collection + evaluation)."""
    steps, walls = read_csv_scalar(run_dir, "time/wall_time_s")
    pts = [(s, w) for s, w in zip(steps, walls) if s >= init_frames]
    if len(pts) < 2:
        return float("nan")
    (s0, w0), (s1, w1) = pts[0], pts[-1]
    return 1000.0 * (w1 - w0) / (s1 - s0)


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.0f} ± {a.std():.0f}" if len(a) > 1 else f"{a.mean():.0f}"


def report(args: argparse.Namespace) -> None:
    env = args.env
    runs = _runs(env)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = f"critics_{env}"
    example = shlex.join(["python", "-m", "recipes.train_mujoco",
                          *[a for a in recipe_args(env, "flow_t", "crossq", 0, args.overrides)
                            if not a.startswith("hydra.")]])
    lines = [
        f"# SAC critic vs CrossQ critic on {env} (CPU budget)", "",
        "Commands (`benchmarks/critics.py` launches the recipe itself, 2 runs at a time, 1 torch thread each):", "",
        "```", f"python benchmarks/critics.py run --env {env} --seeds 0 1 2 --parallel 2",
        f"python benchmarks/critics.py report --env {env}",
        "# each run is, e.g. (policy in flow_t|gaussian, critic in sac|crossq, seed in 0|1|2):", example, "```", "",
        "**Budget (CPU, not the paper's):** 5 000 env steps (first 1 000 uniform random), UTD 1, batch 256, "
        "both critics 2 × 256 (the paper's CrossQ critic is 2 × 1024 at batch 512: ~0.35 s/update on one "
        "CPU thread), evaluation every 1 000 steps with 3 deterministic episodes. "
        "`critic=sac`: twin ReLU MLPs + Polyak target (τ = 0.005), actor every update, critic Adam β1 0.9. "
        "`critic=crossq`: BatchRenorm MLPs, no target, joint (s,a)/(s',a') batch, actor/α every 3rd update "
        "(so ~1/3 as many actor steps), critic Adam β1 0.9 (only the critic group changes; `preset=paper` would "
        "also set β1 0.5). BatchRenorm warm-up is the reference's 100k critic steps, so over these 4 000 updates "
        "the layers act as batch norm (r = 1, d = 0). Actor Adam β1: 0.5 (Flow-T), 0.9 (Gaussian). "
        "Machine: shared 2-core box under heavy load from other jobs (load ~6), so wall-clock numbers are "
        "inflated and noisy; compare them only relative to each other.", "",
        "| policy | critic | seeds | final train episode return | final eval return (det.) | "
        "wall-clock s / 1 000 env steps, learning phase | wall-clock s / 1 000 env steps, whole run | "
        "s / 1 000 updates (incl. sampling) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (policy, critic), dirs in runs.items():
        summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
        train = [_last_train_return(d) for d in dirs]
        ev = [s["eval_return_mean"] for s in summaries]
        wall = [1000.0 * s["wall_time_s"] / s["frames"] for s in summaries]
        learn = [_learning_seconds_per_1000(d) for d in dirs]
        upd = [_seconds_per_1000_updates(d) for d in dirs]
        seeds = ", ".join(d.name.rsplit("seed", 1)[1] for d in dirs)
        lines.append(f"| {policy} | {critic} | {len(dirs)} ({seeds}) | {_fmt(train)} | {_fmt(ev)} | "
                     f"{_fmt(learn)} | {_fmt(wall)} | {_fmt(upd)} |" if dirs else
                     f"| {policy} | {critic} | 0 | – | – | – | – | – |")
    lines += ["", "Mean ± std over the finished seeds (population std; a single seed shows its value). "
              "Final train return: the last training episode (HalfCheetah episodes are 1 000 steps, so the "
              "episode ending at 5 000 steps). Learning phase: from the end of the random steps to the end "
              "of the run, including updates, collection and the evaluations. Curves: `" + name + ".png`.", ""]
    lines += ["**How to read this.** 5 000 env steps (4 000 updates) is 0.5 % of the paper's 1M-step budget: "
              "HalfCheetah returns at this stage are near those of a random policy (about −300 per episode) "
              "and dominated by seed noise, so with 1–3 seeds a difference of a few hundred is not evidence "
              "that one critic learns better. What the table does show: both critic options train end to "
              "end with both policies through the recipe users run, and what each costs per 1 000 steps on "
              "a CPU at width 256 (CrossQ runs the actor every 3rd update but its critic step runs on the "
              "joint 2 × batch with BatchRenorm; wall-clock numbers come from a shared, heavily loaded "
              "2-core machine). A conclusion about learning needs the paper-size critic, 1M steps and "
              "several seeds on a GPU (`preset=paper device=cuda`).", ""]
    unfinished = sorted(d for d in RUNS_DIR.glob(f"{env}/*_seed*") if d.is_dir() and not _finished(d))
    if unfinished:
        lines += ["Not finished when this file was written (not in the table or the plot):", ""]
        for d in unfinished:
            frames, evals = read_csv_scalar(d, "eval/return_mean")
            last = f"last eval {evals[-1]:.0f} at {frames[-1]} steps" if evals else "no eval logged yet"
            lines.append(f"- `{d.relative_to(REPO)}`: {last}")
        lines.append("")
    (RESULTS_DIR / f"{name}.md").write_text("\n".join(lines))
    _plot(runs, RESULTS_DIR / f"{name}.png", env)
    print(f"wrote {RESULTS_DIR / (name + '.md')}", flush=True)


def _plot(runs: dict[tuple[str, str], list[Path]], path: Path, env: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {("flow_t", "sac"): "C0", ("flow_t", "crossq"): "C1",
              ("gaussian", "sac"): "C2", ("gaussian", "crossq"): "C3"}
    for ax, metric, title in ((axes[0], "train/episode_return", "training episode return"),
                              (axes[1], "eval/return_mean", "deterministic eval return")):
        for key, dirs in runs.items():
            curves = [read_csv_scalar(d, metric) for d in dirs]
            curves = [c for c in curves if c[0]]
            if not curves:
                continue
            steps = sorted(set.intersection(*[set(s) for s, _ in curves]))
            vals = np.array([[dict(zip(s, v))[t] for t in steps] for s, v in curves])
            mean, std = vals.mean(0), vals.std(0)
            ax.plot(steps, mean, marker="o", color=colors[key], label=f"{key[0]} + {key[1]} (n={len(curves)})")
            ax.fill_between(steps, mean - std, mean + std, color=colors[key], alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_title(f"{env}: {title}")
        ax.grid(alpha=0.3)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides (after --)")
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    report(args)


if __name__ == "__main__":
    main()
