"""Our ``preset=paper`` against the paper's released JAX code, side by side on this machine (issue 17).

    python -m benchmarks.perf.vs_reference --reference ~/SAC-FLOW --reference-python ~/jaxenv/bin/python

Runs the released Flow-T + CrossQ script (``from_scratch_code/SAC_flow_transformer_jax.py`` of a
clone of ``Elessar123/SAC-FLOW`` that *you* fetch; nothing of it is copied here) and our recipe
with ``preset=paper`` on the same env and step counts, one after the other and alternating
(reference, ours, reference, ours, ...: ``--repeats`` each), each alone on the machine, and writes
``benchmarks/results/vs_reference.md``.

What is compared: **updates per second of wall time while training**, collection included: both
programs take one gradient step per env step after ``--learning-starts`` random steps (ours: 10
updates after every 10 steps, ``preset=paper``'s cadence), so the rate is measured between the
first log point after learning starts and the end (the released code's ``SPS:`` lines, timestamped
as they arrive; our ``time/wall_time_s`` log), which leaves out start-up and the JIT / first-call
compilation of both. The released code needs its own venv (JAX, flax, optax, tyro, tensorboard,
``gymnasium[mujoco]==0.29.1``, ``numpy<2`` and a CPU torch for its imports); how we built one is in
the issue text and ``benchmarks/results/vs_reference.md``.

Where the clone or its interpreter is missing the script says so in one line and exits 2.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.sweep import REPO

RESULTS = REPO / "benchmarks" / "results" / "vs_reference.md"
SCRIPT = Path("from_scratch_code") / "SAC_flow_transformer_jax.py"
RUNS_DIR = REPO / "outputs" / "vs_reference"


def reference_command(args: argparse.Namespace) -> list[str]:
    return [str(args.reference_python), "-u", SCRIPT.name, "--no-track", "--env-id", args.env, "--seed", str(args.seed),
            "--learning-starts", str(args.learning_starts), "--total-timesteps", str(args.steps),
            "--log-freq", str(args.log_freq)]


def ours_command(args: argparse.Namespace, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "recipes.train_mujoco", f"env={args.env_group}", "policy=flow_t", "preset=paper",
            f"seed={args.seed}", f"threads={args.threads}", f"collector.init_random_frames={args.learning_starts}",
            f"collector.total_frames={args.steps}", "eval.interval=0", "eval.num_episodes=1",
            "checkpoint.interval=0", "checkpoint.save_replay_buffer=false", "logger.progress_bar=false",
            "logger.plot=false", *args.overrides, f"hydra.run.dir={run_dir}"]


def _threads_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={threads}"}


def run_reference(args: argparse.Namespace) -> dict:
    """Run the released script; the training rate from its timestamped ``SPS:`` lines."""
    cmd = reference_command(args)
    env = _threads_env(args.threads)
    env["PYTHONPATH"] = f"{args.reference}{os.pathsep}{env.get('PYTHONPATH', '')}"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=args.reference / SCRIPT.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks, tail = [], []
    step = args.learning_starts
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        if line.startswith("SPS:"):
            # a print every log_freq steps after learning starts (the first one at the first
            # multiple of log_freq past learning_starts)
            step = (step // args.log_freq + 1) * args.log_freq
            marks.append((step, time.perf_counter()))
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0 or len(marks) < 2:
        raise SystemExit(f"vs_reference: the released script failed (rc {proc.returncode}):\n{''.join(tail)}")
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return {"updates_per_s": (s1 - s0) / (t1 - t0), "wall_s": wall, "window": f"{s0}-{s1}"}


def _read_csv(path: Path) -> list[tuple[int, float]]:
    with open(path) as f:
        return [(int(float(r[0])), float(r[1])) for r in csv.reader(f) if r]


def run_ours(args: argparse.Namespace, run_dir: Path) -> dict:
    """Run our recipe; the training rate from its logged wall time between the same steps."""
    cmd = ours_command(args, run_dir)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=_threads_env(args.threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"vs_reference: our recipe failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    times = dict(_read_csv(run_dir / "logs" / "scalars" / "time" / "wall_time_s.csv"))
    first = (args.learning_starts // args.log_freq + 1) * args.log_freq
    last = max(s for s in times if s < args.steps)  # the final row also holds the final evaluation
    return {"updates_per_s": (last - first) / (times[last] - times[first]), "wall_s": wall,
            "window": f"{first}-{last}"}


def machine() -> str:
    return f"{report.cpu_model(platform.machine())}, {report.cores()} cores"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="a clone of Elessar123/SAC-FLOW")
    p.add_argument("--reference-python", type=Path, required=True, help="python of a venv that runs it")
    p.add_argument("--env", default="HalfCheetah-v4")
    p.add_argument("--env-group", default="halfcheetah", help="our recipe's env option for --env")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--log-freq", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="threads for both programs (each runs alone)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="extra overrides of our recipe (e.g. optim.compile=true)")
    args = p.parse_args(argv)
    args.reference = args.reference.expanduser().resolve()
    if not (args.reference / SCRIPT).is_file():
        print(f"vs_reference: error: {args.reference / SCRIPT} not found: clone Elessar123/SAC-FLOW and pass "
              f"its root as --reference", file=sys.stderr)
        raise SystemExit(2)
    if not os.access(args.reference_python.expanduser(), os.X_OK):
        print(f"vs_reference: error: --reference-python {args.reference_python} is not an executable python",
              file=sys.stderr)
        raise SystemExit(2)
    args.reference_python = args.reference_python.expanduser()

    rows = []
    for i in range(args.repeats):
        ref = run_reference(args)
        print(f"[{i}] released code: {ref['updates_per_s']:.2f} updates/s, wall {ref['wall_s']:.0f} s", flush=True)
        ours = run_ours(args, RUNS_DIR / f"ours_{i}")
        print(f"[{i}] ours:          {ours['updates_per_s']:.2f} updates/s, wall {ours['wall_s']:.0f} s", flush=True)
        rows.append((ref, ours))
    ref_rate = statistics.median(r["updates_per_s"] for r, _ in rows)
    our_rate = statistics.median(o["updates_per_s"] for _, o in rows)
    command = report.command_line("benchmarks.perf.vs_reference", argv)
    lines = [
        "# Ours (`preset=paper`) vs the released JAX code, side by side (issue 17)", "",
        f"Command: `{command}`", f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}; each program alone, "
        f"alternating, {args.threads} thread(s) each.",
        f"Released: `{shlex.join(reference_command(args)[1:])}` (from `{SCRIPT.parent}/`, clone root on PYTHONPATH).",
        f"Ours: `{shlex.join(ours_command(args, Path('<run>'))[1:])}`.",
        "Rate = env steps (= updates, one per step) per second of wall time between the first log point after "
        "learning starts and the end, collection included.", "",
        "| run | released updates/s | ours updates/s | ours / released | released wall s | ours wall s |",
        "|---|---|---|---|---|---|",
    ]
    for i, (r, o) in enumerate(rows):
        lines.append(f"| {i} | {r['updates_per_s']:.2f} | {o['updates_per_s']:.2f} | "
                     f"{o['updates_per_s'] / r['updates_per_s']:.2f} | {r['wall_s']:.0f} | {o['wall_s']:.0f} |")
    lines.append(f"| median | {ref_rate:.2f} | {our_rate:.2f} | **{our_rate / ref_rate:.2f}** | | |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
