"""Critic benchmark: the textbook SAC critic (twin MLPs + soft target) vs the CrossQ critic
(BatchRenorm, no target, joint batch, policy delay 3), for Flow-T and the Gaussian baseline, on
HalfCheetah-v4 and Hopper-v4; plus one run of the paper code's configuration (``preset=paper``).

    python -m benchmarks.critics run --env halfcheetah --seeds 0 1 2 --parallel 2
    python -m benchmarks.critics run --env hopper --seeds 0 1 2 --parallel 2
    python -m benchmarks.critics paper        # Flow-T, preset=paper, seed 1, 13 000 steps (~1 h)
    python -m benchmarks.critics paper --variant nodrift   # the same without drift correction
    python -m benchmarks.critics report       # benchmarks/results/critics.md + critics.png

``run`` launches the recipe itself, one subprocess per (seed, policy, critic), seed-major (all four
variants of seed 0 first), ``--parallel`` at a time with 1 torch thread each::

    python -m recipes.train_mujoco env=<env> policy=<p> critic=<c> seed=<s> threads=1 <CPU budget>

into ``outputs/bench_critics/<env>/<policy>_<critic>_seed<s>`` by the shared driver
(:mod:`benchmarks.sweep`: finished runs skipped, live ones adopted, killed ones resumed from their
checkpoint). After the first seed the (cheaper) Gaussian runs of a seed go first.
``report`` (also run after each finished run) writes one table and one plot from whatever has
finished, for every env in ``--envs``.

CPU budget (the paper-size CrossQ critic, 2 x 1024 BatchRenorm, costs ~0.35 s per update on one
CPU thread): both critics 2 x 256, batch 256, 5 000 env steps of which the first 1 000 are
uniform random, UTD 1 (1 000 updates after every 1 000 env steps), evaluation every 1 000 steps
(3 deterministic episodes). This is a smoke-scale comparison, not a reproduction of the paper's
1M-step curves; ``paper`` checks the paper configuration itself at 13 000 steps.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np

from benchmarks.sweep import OUTPUTS, REPO, RESULTS_DIR, Job, finished, fmt, run_jobs, summary
from torchrl_sacflow.training import read_csv_scalar

RUNS_DIR = OUTPUTS / "bench_critics"
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
    return [f"env={env}", f"policy={policy}", f"critic={critic}", f"seed={seed}", *BUDGET, *extra]


def run(args: argparse.Namespace) -> None:
    # seed-major; after the first seed the cheaper Gaussian runs go first, so that more rows have
    # more seeds when the sweep is cut short
    jobs = [Job(f"{args.env}/{p}_{c}_seed{s}", run_dir_for(args.env, p, c, s),
                tuple(recipe_args(args.env, p, c, s, args.overrides)))
            for i, s in enumerate(args.seeds) for p in (POLICIES if i == 0 else POLICIES[::-1]) for c in CRITICS]
    run_jobs(jobs, parallel=args.parallel, on_done=lambda job: report(args))


def _runs(env: str) -> dict[tuple[str, str], list[Path]]:
    out: dict[tuple[str, str], list[Path]] = {}
    for policy in POLICIES:
        for critic in CRITICS:
            dirs = sorted(RUNS_DIR.glob(f"{env}/{policy}_{critic}_seed*"))
            out[(policy, critic)] = [d for d in dirs if finished(d)]
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
    return fmt(values, 0, spread="std")


ENV_NOTES = {
    "halfcheetah": "HalfCheetah episodes are 1 000 steps: the last training episode is the one ending at 5 000 steps",
    "hopper": "Hopper episodes end when it falls: the last training episode is the last one finished before 5 000 steps",
}

# The paper code's configuration in one override, at the point where the issue quotes the reference
# code's score (Flow-T, HalfCheetah-v4, seed 1, 5 000 random steps, ~3 700 after 13 000 steps).
PAPER_DIR = REPO / "outputs" / "bench_paper"
PAPER_ARGS = [
    "env=halfcheetah", "policy=flow_t", "preset=paper", "seed=1",
    "collector.total_frames=13000", "collector.init_random_frames=5000",
    "eval.interval=1000", "eval.num_episodes=3", "checkpoint.interval=2000",
    "logger.progress_bar=false",
]
# variants of the paper-configuration run: name -> (extra overrides, label)
PAPER_VARIANTS = {
    "paper": ([], "`preset=paper`"),
    "nodrift": (["policy.drift_correction=false"], "`preset=paper policy.drift_correction=false`"),
}


def paper_run_dir(variant: str) -> Path:
    suffix = "" if variant == "paper" else f"_{variant}"
    return PAPER_DIR / f"halfcheetah_flow_t_paper{suffix}_seed1"


def run_paper(variant: str = "paper") -> None:
    """One paper-configuration run (~1 h on this 2-core CPU), by the shared driver (skipped when
    finished, resumed from its checkpoint when killed); its output in ``<run dir>.log``."""
    run_dir = paper_run_dir(variant)
    run_jobs([Job(run_dir.name, run_dir, (*PAPER_ARGS, *PAPER_VARIANTS[variant][0]))], parallel=1, threads=2)


def _paper_lines(reading: list[str] | None = None) -> list[str]:
    lines = ["## The paper code's configuration (`preset=paper`)", "", "```"]
    for variant, (extra, _) in PAPER_VARIANTS.items():
        flag = "" if variant == "paper" else f" --variant {variant}"
        lines += [f"python -m benchmarks.critics paper{flag}    # runs:",
                  shlex.join(["python", "-m", "recipes.train_mujoco", *PAPER_ARGS, *extra])]
    lines += ["```", "",
              "The issue's reference point: the paper's released code, Flow-T on HalfCheetah-v4, seed 1, 5 000 random "
              "steps first, scored an episodic return of about 3 700 after 13 000 env steps on this kind of machine. "
              "Same settings here through `preset=paper` (2 × 1024 BatchRenorm critics, batch 512, UTD 1, policy "
              "delay 3, Adam β1 0.5) with the random phase shortened to 5 000 steps as in that run; the second run "
              "also switches off the drift correction (the released code has none).", ""]
    runs = {v: paper_run_dir(v) for v in PAPER_VARIANTS if paper_run_dir(v).is_dir()}
    if not runs:
        return lines + ["Not run yet.", ""]
    header = "| env steps | " + " | ".join(
        f"{PAPER_VARIANTS[v][1]}: train episode return | eval return (det., 3 episodes)" for v in runs) + " |"
    lines += [header, "|---|" + "---|---|" * len(runs)]
    data = {}
    for v, d in runs.items():
        steps, train = read_csv_scalar(d, "train/episode_return")
        esteps, evals = read_csv_scalar(d, "eval/return_mean")
        data[v] = (dict(zip(steps, train)), dict(zip(esteps, evals)))
    all_steps = sorted(set().union(*[set(t) | set(e) for t, e in data.values()]))
    fmt = lambda x: "" if x is None else f"{x:.0f}"  # noqa: E731
    for st in all_steps:
        cells = [f"{fmt(data[v][0].get(st))} | {fmt(data[v][1].get(st))}" for v in runs]
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    lines.append("")
    for v, d in runs.items():
        if finished(d):
            done = summary(d)
            lines.append(f"- {PAPER_VARIANTS[v][1]}: wall time {done['wall_time_s'] / 60:.1f} min; update rate of the "
                         f"last update round {done['updates_per_s']:.2f} updates/s "
                         f"({1000.0 / done['updates_per_s']:.0f} s per 1 000 updates).")
        else:
            lines.append(f"- {PAPER_VARIANTS[v][1]}: still running (or interrupted) when this file was written.")
    for paragraph in reading or []:
        lines += ["", paragraph]
    return lines + [""]


def report(args: argparse.Namespace) -> None:
    envs = [e for e in (args.envs or []) if any((RUNS_DIR / e).glob("*_seed*"))]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    example = shlex.join(["python", "-m", "recipes.train_mujoco",
                          *recipe_args("hopper", "flow_t", "crossq", 0, args.overrides)])
    lines = [
        "# SAC critic vs CrossQ critic, Flow-T and Gaussian, HalfCheetah-v4 and Hopper-v4 (CPU budget)", "",
        "Commands (`benchmarks.critics` launches the recipe itself, 2 runs at a time, 1 torch thread each):", "",
        "```",
        *[f"python -m benchmarks.critics run --env {e} --seeds 0 1 2 --parallel 2" for e in ("halfcheetah", "hopper")],
        "python -m benchmarks.critics report",
        "# each run is, e.g. (env in halfcheetah|hopper, policy in flow_t|gaussian, critic in sac|crossq, seed in 0|1|2):",
        example, "```", "",
        "**Budget (CPU, not the paper's):** 5 000 env steps per run (first 1 000 uniform random), UTD 1 "
        "(4 000 updates), batch 256, both critics 2 × 256 (the paper's CrossQ critic is 2 × 1024 at batch 512, "
        "~0.35 s/update on one CPU thread: see the `preset=paper` section below), evaluation every 1 000 steps "
        "with 3 deterministic episodes. `critic=sac`: twin ReLU MLPs + Polyak target (τ = 0.005), actor every "
        "update. `critic=crossq`: BatchRenorm MLPs, no target, joint (s,a)/(s',a') batch, actor/α every 3rd "
        "update (so 1/3 as many actor steps); only the critic group changes (critic Adam β1 0.9; `preset=paper` "
        "would also set β1 0.5). BatchRenorm warm-up is the reference's 100k critic steps, so over these 4 000 "
        "updates the layers act as batch norm (r = 1, d = 0). Actor Adam β1: 0.5 (Flow-T), 0.9 (Gaussian). "
        "The runs shared the 2 cores two at a time (plus, for some, other jobs), so wall-clock figures carry "
        "that load; compare them with each other, not with other machines.", "",
        "| env | policy | critic | seeds | final train episode return | final eval return (det.) | "
        "mean eval return, last 3 evals | wall-clock s / 1 000 env steps, learning phase | "
        "s / 1 000 updates (incl. sampling) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    all_runs = {}
    for env in envs:
        runs = _runs(env)
        all_runs[env] = runs
        for (policy, critic), dirs in runs.items():
            if not dirs:
                lines.append(f"| {env} | {policy} | {critic} | 0 | – | – | – | – | – |")
                continue
            summaries = [summary(d) for d in dirs]
            train = [_last_train_return(d) for d in dirs]
            ev = [s["eval_return_mean"] for s in summaries]
            last3 = [float(np.mean(read_csv_scalar(d, "eval/return_mean")[1][-3:])) for d in dirs]
            learn = [_learning_seconds_per_1000(d) for d in dirs]
            upd = [_seconds_per_1000_updates(d) for d in dirs]
            seeds = ", ".join(d.name.rsplit("seed", 1)[1] for d in dirs)
            lines.append(f"| {env} | {policy} | {critic} | {len(dirs)} ({seeds}) | {_fmt(train)} | {_fmt(ev)} | "
                         f"{_fmt(last3)} | {_fmt(learn)} | {_fmt(upd)} |")
    lines += ["", "Mean ± std over the finished seeds (population std; a single seed shows its value). Final train "
              "return: " + "; ".join(ENV_NOTES[e] for e in envs if e in ENV_NOTES) + ". Learning phase: from the end "
              "of the random steps to the end of the run, including updates, collection and the evaluations. "
              "Curves: `critics.png` (mean ± std over seeds).", ""]
    for paragraph in args.reading or []:
        lines += [paragraph, ""]
    unfinished = sorted(d for e in envs for d in RUNS_DIR.glob(f"{e}/*_seed*") if d.is_dir() and not finished(d))
    if unfinished:
        lines += ["Not finished when this file was written (not in the table or the plot):", ""]
        for d in unfinished:
            frames, evals = read_csv_scalar(d, "eval/return_mean")
            last = f"last eval {evals[-1]:.0f} at {frames[-1]} steps" if evals else "no eval logged yet"
            lines.append(f"- `{d.relative_to(REPO)}`: {last}")
        lines.append("")
    lines += _paper_lines(args.paper_reading)
    (RESULTS_DIR / "critics.md").write_text("\n".join(lines))
    if all_runs:
        _plot(all_runs, RESULTS_DIR / "critics.png")
    print(f"wrote {RESULTS_DIR / 'critics.md'}", flush=True)


def _plot(all_runs: dict[str, dict[tuple[str, str], list[Path]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(all_runs)
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 3.8 * len(envs)), squeeze=False)
    colors = {("flow_t", "sac"): "C0", ("flow_t", "crossq"): "C1",
              ("gaussian", "sac"): "C2", ("gaussian", "crossq"): "C3"}
    for row, env in zip(axes, envs):
        for ax, metric, title in ((row[0], "train/episode_return", "training episode return"),
                                  (row[1], "eval/return_mean", "deterministic eval return")):
            for key, dirs in all_runs[env].items():
                curves = [read_csv_scalar(d, metric) for d in dirs]
                curves = [c for c in curves if c[0]]
                if not curves:
                    continue
                if metric.startswith("train/"):  # episodes end at different steps: bin per 1 000 steps
                    binned = []
                    for s, v in curves:
                        bins: dict[int, list[float]] = {}
                        for st, val in zip(s, v):
                            bins.setdefault(-(-st // 1000) * 1000, []).append(val)
                        binned.append(({b: float(np.mean(x)) for b, x in bins.items()}))
                    steps = sorted(set.intersection(*[set(b) for b in binned]))
                    vals = np.array([[b[t] for t in steps] for b in binned])
                else:
                    steps = sorted(set.intersection(*[set(s) for s, _ in curves]))
                    vals = np.array([[dict(zip(s, v))[t] for t in steps] for s, v in curves])
                mean, std = vals.mean(0), vals.std(0)
                ax.plot(steps, mean, marker="o", color=colors[key], label=f"{key[0]} + {key[1]} (n={len(curves)})")
                ax.fill_between(steps, mean - std, mean + std, color=colors[key], alpha=0.2)
            ax.set_xlabel("env steps")
            ax.set_title(f"{env}: {title}")
            ax.grid(alpha=0.3)
        if row[1].get_legend_handles_labels()[0]:
            row[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "report", "paper"])
    parser.add_argument("--env", default="halfcheetah", help="env of `run`")
    parser.add_argument("--envs", nargs="+", default=["halfcheetah", "hopper"], help="envs in the report")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--reading", action="append", help="a paragraph for the report (how to read the results)")
    parser.add_argument("--paper-reading", action="append", help="a paragraph for the preset=paper section")
    parser.add_argument("--variant", choices=sorted(PAPER_VARIANTS), default="paper", help="run of `paper`")
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides (after --)")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
    elif args.command == "paper":
        run_paper(args.variant)
    report(args)


if __name__ == "__main__":
    main()
