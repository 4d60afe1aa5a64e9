#!/usr/bin/env python
"""Offline-to-online on scripted Lift: success rate after pre-training alone and after online SAC Flow.

    python benchmarks/robomimic.py                       # Flow-T and Flow-G, seeds 0-2, recipe defaults
    python benchmarks/robomimic.py --quick               # a smoke run (tiny budgets, 1 seed)
    python benchmarks/robomimic.py -- dataset=/data/lift/mh/low_dim.hdf5 max_episode_steps=500

Each (variant, seed) is one ``python -m recipes.train_robomimic`` run (the recipe's own defaults
plus the overrides given after ``--``), ``--jobs`` at a time with one torch thread each; the
numbers come from each run's ``summary.json`` and CSV logs. Writes
``benchmarks/results/robomimic_lift.md`` (the command at the top, a table, steps/s) and
``robomimic_lift.png`` (eval success rate vs online frames, mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("flow_t", "flow_g", "flow_mlp")  # the policy group options
QUICK = ["pretrain_steps=200", "online_frames=40", "frames_per_batch=20", "eval.interval=20",
         "eval.num_episodes=2", "max_episode_steps=60", "scripted_episodes=4"]


def run_one(variant: str, seed: int, runs_dir: Path, overrides: list[str]) -> dict:
    run_dir = runs_dir / f"{variant}_seed{seed}"
    cmd = [sys.executable, "-m", "recipes.train_robomimic", f"policy={variant}", f"seed={seed}",
           "threads=1", "logger.progress_bar=false", *overrides, f"hydra.run.dir={run_dir}"]
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "stdout.log", "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} seed {seed} failed (exit {proc.returncode}); see {run_dir / 'stdout.log'}")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(variant=variant, seed=seed, process_s=time.perf_counter() - start)
    print(f"{variant} seed {seed}: success after pre-training {summary['success_rate_after_pretrain']}, "
          f"after {summary['frames']} online frames {summary['final_success_rate']} "
          f"({summary['process_s']:.0f}s)", flush=True)
    return summary


def mean_std(values: list[float | None], fmt: str = "{:.2f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.fmean(values))} ± {fmt.format(std)}"


def write_report(results: list[dict], args, command: str, out_md: Path, out_png: Path, sweep_s: float) -> None:
    import torch
    from omegaconf import OmegaConf

    from torchrl_sacflow.plot import plot_runs
    from torchrl_sacflow.training import read_csv_scalar

    plot_runs([r["run_dir"] for r in results], out=out_png, metric="eval/success_rate",
              title="scripted Lift, offline-to-online (eval success rate)")
    first = results[0]
    config = OmegaConf.to_container(OmegaConf.load(Path(first["run_dir"]) / "config.yaml"), resolve=True)
    lines = [
        "# Offline-to-online SAC Flow on scripted Robomimic Lift",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
        f"torch {torch.__version__}, CPU only; {args.jobs} runs at a time, 1 torch thread each; "
        f"other processes were sharing the cores, so the rates are lower bounds. Sweep wall time "
        f"{sweep_s / 60:.1f} min. Date {time.strftime('%Y-%m-%d')}.",
        "",
        f"Setting (recipe defaults unless overridden): dataset `{config['env']['dataset']}` "
        f"({config['scripted_episodes']} scripted demos when generated), action chunk h={config['action_chunk']}, "
        f"K={config['policy']['num_steps']}, σ={config['policy']['noise_std']}, {config['pretrain_steps']} flow-matching steps, "
        f"{config['offline_steps']} offline SAC steps, {config['online_frames']} online env steps "
        f"(= {config['online_frames'] * config['action_chunk']} primitive steps), batch {config['batch_size']}, "
        f"β online {config['beta']['online_start']}→{config['beta']['online_end']}, offline fraction "
        f"{config['offline_fraction']}, {config['updates_per_frame']} update per env step, episodes of "
        f"{config['max_episode_steps']} primitive steps, success rate over {config['eval']['num_episodes']} "
        f"deterministic (ODE) episodes per evaluation.",
        "",
        "| policy | seeds | success after pre-training | success after online | best online eval | "
        "pre-train steps/s | env frames/s | updates/s | wall s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == variant]
        best = [max(read_csv_scalar(r["run_dir"], "eval/success_rate")[1] or [float("nan")]) for r in rows]
        lines.append(
            f"| {variant} | {len(rows)} | {mean_std([r['success_rate_after_pretrain'] for r in rows])} | "
            f"{mean_std([r['final_success_rate'] for r in rows])} | {mean_std(best)} | "
            f"{mean_std([r.get('pretrain_steps_per_s') for r in rows], '{:.0f}')} | "
            f"{mean_std([r.get('env_frames_per_s') for r in rows], '{:.1f}')} | "
            f"{mean_std([r.get('updates_per_s') for r in rows], '{:.1f}')} | "
            f"{mean_std([r['wall_time_s'] for r in rows], '{:.0f}')} |")
    lines += ["", "Per run (success rate at each evaluation, online frames → success):", ""]
    for r in results:
        steps, values = read_csv_scalar(r["run_dir"], "eval/success_rate")
        curve = ", ".join(f"{s}: {v:.1f}" for s, v in zip(steps, values))
        lines.append(f"- {r['variant']} seed {r['seed']}: {curve}")
    lines += [
        "",
        "Env frames/s counts online env steps (chunks of h actions) per second of collection "
        "(simulation + policy inference); updates/s counts SAC Flow updates (batch "
        f"{config['batch_size']}) per second of update time.",
        "",
        "## With an official Robomimic file",
        "",
        "The official multi-human files (`lift/mh/low_dim.hdf5`, v0.1) cannot be downloaded on this machine. "
        "With one, the same sweep at the paper's settings for Lift (500-step episodes, β 10000 offline / 1000 "
        "online) and a budget a GPU machine affords is:",
        "",
        "```",
        "python benchmarks/robomimic.py -- dataset=/path/to/lift/mh/low_dim.hdf5 max_episode_steps=500 \\",
        "    pretrain_steps=100000 offline_steps=100000 online_frames=200000 \\",
        "    online_buffer_size=1000000 eval.interval=10000 eval.num_episodes=50 \\",
        "    checkpoint.interval=50000 device=cuda",
        "```",
        "",
        "or a single run: `python -m recipes.train_robomimic dataset=/path/to/lift/mh/low_dim.hdf5 "
        "max_episode_steps=500 policy=flow_g seed=0` (add the budgets above). `task=can` / `task=square` "
        "with the matching files; the env is rebuilt from each file's `env_args`.",
    ]
    out_md.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["flow_t", "flow_g"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--runs-dir", default="outputs/bench_robomimic")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "robomimic_lift.md"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets, seed 0 only (a smoke run)")
    args = parser.parse_args(own)
    if args.quick:
        overrides = QUICK + overrides
        args.seeds = args.seeds[:1]
    runs_dir = (REPO / args.runs_dir).resolve()
    command = "python benchmarks/robomimic.py " + " ".join(shlex.quote(a) for a in argv)

    # Generate (or find) the scripted dataset once, before the parallel runs could race to write it
    if not any(o.startswith("dataset=") for o in overrides):
        probe = subprocess.run(
            [sys.executable, "-c", "from hydra import compose, initialize_config_dir;"
             "from torchrl_sacflow.training.offline_online import resolve_dataset;"
             f"initialize_config_dir(config_dir={str(REPO / 'recipes' / 'config')!r}, version_base='1.3');"
             f"c = compose('train_robomimic', overrides={overrides!r});"
             "print(resolve_dataset(None, task=c.task, datasets_dir=c.datasets_dir,"
             " episodes=c.scripted_episodes, seed=c.scripted_seed)[0])"],
            cwd=REPO, capture_output=True, text=True)
        if probe.returncode:
            print(probe.stderr[-2000:], file=sys.stderr)
            return 1
        print(f"dataset: {probe.stdout.strip().splitlines()[-1]}", flush=True)

    start = time.perf_counter()
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(*job, runs_dir, overrides), jobs))
    out_md = Path(args.out)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    write_report(results, args, command, out_md, out_md.with_suffix(".png"), time.perf_counter() - start)
    (out_md.with_suffix(".json")).write_text(json.dumps(results, indent=2))
    print(out_md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
