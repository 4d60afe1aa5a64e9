"""Learning benchmark: the four policies x several seeds on one task, same budget for all.

    python -m benchmarks.learning --env pendulum                      # 4 policies x 3 seeds
    python -m benchmarks.learning --env inverted_pendulum --parallel 2 -- collector.total_frames=10000

Each run is ``python -m recipes.train_mujoco env=<env> policy=<p> seed=<s> threads=1`` into
``<runs-dir>/<env>/<policy>_seed<s>``; ``--parallel`` runs go at once (1 torch thread each), by the
shared driver (:mod:`benchmarks.sweep`: finished runs skipped, live ones adopted, killed ones
resumed from their checkpoint), so the sweep can be restarted. At the end it writes ``<out-dir>/learning_<env>.md`` (final deterministic
eval return mean ± std over seeds, frames to reach a threshold, wall time, update rate) and
``learning_<env>.png`` (``torchrl_sacflow.plot``), with the command line at the top.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.sweep import OUTPUTS, RESULTS_DIR, Job, command_line, finished, fmt, header, run_jobs, summary
from torchrl_sacflow.plot import plot_runs
from torchrl_sacflow.training import read_csv_scalar

POLICIES = ["flow_t", "flow_g", "flow_mlp", "gaussian"]
THRESHOLDS = {"pendulum": -300.0, "inverted_pendulum": 900.0}


def run_dir_for(runs_dir: Path, env: str, policy: str, seed: int) -> Path:
    return runs_dir / env / f"{policy}_seed{seed}"


def sweep(policies: list[str], seeds: list[int], *, env: str, runs_dir: Path, parallel: int,
          overrides: list[str]) -> list[Path]:
    """Run every ``(policy, seed)`` of the recipe on ``env`` (seed-major: early partial results),
    ``parallel`` at a time; return their run dirs."""
    jobs = [Job(f"{env}/{p}_seed{s}", run_dir_for(runs_dir, env, p, s),
                (f"env={env}", f"policy={p}", f"seed={s}", "threads=1", "logger.progress_bar=false", *overrides))
            for s in seeds for p in policies]
    run_jobs(jobs, parallel=parallel, poll_s=2)
    return [job.run_dir for job in jobs]


def _frames_to_threshold(run_dir: Path, threshold: float) -> int | None:
    steps, values = read_csv_scalar(run_dir, "eval/return_mean")
    return next((s for s, v in zip(steps, values) if v >= threshold), None)


def summarize(run_dirs: list[Path], threshold: float) -> list[dict]:
    """One row per policy: final/last-3 eval returns, frames to threshold, wall time, update rate."""
    rows = []
    by_policy: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        by_policy.setdefault(run_dir.name.rsplit("_seed", 1)[0], []).append(run_dir)
    for policy, dirs in by_policy.items():
        done = [d for d in dirs if finished(d)]
        if not done:
            continue
        summaries = [summary(d) for d in done]
        final = [s["eval_return_mean"] for s in summaries]
        last3 = [np.mean(read_csv_scalar(d, "eval/return_mean")[1][-3:]) for d in done]
        reach = [_frames_to_threshold(d, threshold) for d in done]
        reached = [r for r in reach if r is not None]
        rows.append({
            "policy": policy,
            "seeds": len(done),
            "final": fmt(final, 1, spread="std"), "last3": fmt(last3, 1, spread="std"),
            "reached": len(reached),
            "frames_to_threshold": float(np.mean(reached)) if reached else None,
            "frames": summaries[0]["frames"],
            "wall_time_s": float(np.mean([s["wall_time_s"] for s in summaries])),
            "updates_per_s": float(np.mean([s["updates_per_s"] for s in summaries])),
        })
    return rows


def final_policy_eval(run_dirs: list[Path], episodes: int) -> list[dict]:
    """Re-evaluate each run's final policy (from its checkpoint) deterministically and by sampling.

    For a flow policy the deterministic action is the noise-free ODE with the learned velocity,
    which SAC never trains directly (it trains the noisy, drift-corrected rollout); comparing both
    shows when the two disagree.
    """
    import torch
    from omegaconf import OmegaConf
    from torchrl.envs.utils import ExplorationType

    from torchrl_sacflow.training import checkpoint_path, evaluate, make_env, make_policy, observation_dim

    rows = []
    for run_dir in run_dirs:
        if not finished(run_dir):
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        env = make_env(cfg["env"]["id"])
        actor = make_policy(cfg["policy"], env.action_spec, observation_dim(env))
        state = next((checkpoint_path(run_dir) / "components").glob("*-policy")) / "state.pt"
        actor.load_state_dict(torch.load(state, weights_only=True))
        row = {"run": run_dir.name}
        for name, mode in (("deterministic", ExplorationType.DETERMINISTIC), ("stochastic", ExplorationType.RANDOM)):
            torch.manual_seed(0)
            env.set_seed(12345)
            result = evaluate(env, actor, num_episodes=episodes, max_steps=cfg["eval"]["max_steps"],
                              exploration_type=mode)
            row[name] = (result["return_mean"], result["return_std"])
        rows.append(row)
        env.close()
    return rows


def write_report(rows: list[dict], *, env: str, threshold: float, command: str, out_dir: Path,
                 png: Path, sweep_wall_s: float | None, final_eval: list[dict] | None = None,
                 notes: list[str] | None = None) -> Path:
    lines = [
        *header(f"Learning benchmark: {env}", command),
        f"Deterministic evaluation (noise-free ODE for the flows, tanh(mean) for the Gaussian). "
        f"Threshold: eval return >= {threshold:g}. Mean ± std over seeds.",
        "",
        "| policy | seeds | final eval return | mean of last 3 evals | frames to threshold (reached) "
        "| wall time / run | updates/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reach = "never" if r["frames_to_threshold"] is None else f"{r['frames_to_threshold']:.0f}"
        lines.append(
            f"| {r['policy']} | {r['seeds']} | {r['final']} | {r['last3']} | {reach} ({r['reached']}/{r['seeds']}) "
            f"| {r['wall_time_s'] / 60:.1f} min | {r['updates_per_s']:.1f} |"
        )
    if rows:
        lines += ["", f"Budget: {rows[0]['frames']} env frames per run."]
    if sweep_wall_s is not None:
        lines += [f"Sweep wall time: {sweep_wall_s / 60:.1f} min."]
    lines += ["", f"![learning curves]({png.name})", ""]
    if final_eval:
        episodes = final_eval[0].get("episodes", "")
        lines += [
            "## Final policies: deterministic vs sampled actions",
            "",
            f"Each run's final checkpoint re-evaluated on {episodes} episodes (same env seeds for both columns).",
            "",
            "| run | deterministic | stochastic |",
            "|---|---|---|",
        ]
        for r in final_eval:
            lines.append(f"| {r['run']} | {r['deterministic'][0]:.1f} ± {r['deterministic'][1]:.1f} "
                         f"| {r['stochastic'][0]:.1f} ± {r['stochastic'][1]:.1f} |")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out = out_dir / f"learning_{env}.md"
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="pendulum")
    parser.add_argument("--policies", nargs="+", default=POLICIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (1 thread each)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--runs-dir", type=Path, default=OUTPUTS / "bench_learning")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report-only", action="store_true", help="only summarise existing runs")
    parser.add_argument("--final-eval-episodes", type=int, default=0,
                        help="re-evaluate each final policy deterministically and stochastically (0: skip)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's Notes section")
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    threshold = args.threshold if args.threshold is not None else THRESHOLDS.get(args.env, 0.0)
    start = time.time()
    if args.report_only:
        run_dirs = [run_dir_for(args.runs_dir, args.env, p, s) for s in args.seeds for p in args.policies]
        sweep_wall = None
    else:
        run_dirs = sweep(args.policies, args.seeds, env=args.env, runs_dir=args.runs_dir, parallel=args.parallel,
                         overrides=args.overrides)
        sweep_wall = time.time() - start
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_runs([d for d in run_dirs if finished(d)], out=args.out_dir / f"learning_{args.env}.png",
                    title=f"{args.env}: deterministic eval return")
    rows = summarize(run_dirs, threshold)
    final_eval = None
    if args.final_eval_episodes:
        final_eval = final_policy_eval(run_dirs, args.final_eval_episodes)
        for r in final_eval:
            r["episodes"] = args.final_eval_episodes
    command = command_line("benchmarks.learning", argv)
    record = args.runs_dir / args.env / "sweep_command.txt"
    if not args.report_only:
        record.write_text(command + "\n")
    elif record.is_file() and record.read_text().strip() != command:
        command = f"{record.read_text().strip()}\n# report regenerated with:\n{command}"
    report = write_report(rows, env=args.env, threshold=threshold, command=command, out_dir=args.out_dir,
                          png=png, sweep_wall_s=sweep_wall, final_eval=final_eval, notes=args.note)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
