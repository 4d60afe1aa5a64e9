"""Per-step actor gradient norms ||dL_actor/dA_i|| for the naive MLP flow vs Flow-G vs Flow-T
(paper Fig. 6a), logged during short training runs of the recipe.

    python -m benchmarks.grad_norms --env pendulum
    python -m benchmarks.grad_norms --env pendulum --runs-dir outputs/bench_learning   # reuse runs

The runs log ``train/path_grad_norm_step_{i}`` every ``--every`` updates; the norm at each flow step
input ``A_i`` is averaged over the run, then mean ± std over seeds. The backward pass through the
K-step rollout goes from step K-1 to step 0, so an exploding cell shows up as norms growing toward
i = 0. Writes ``<out-dir>/grad_norms_<env>.md`` and ``.png``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.learning import sweep
from benchmarks.sweep import OUTPUTS, RESULTS_DIR, command_line, finished, header
from torchrl_sacflow.plot import grad_norm_table, plot_grad_norms
from torchrl_sacflow.training import read_csv_scalar

POLICIES = ["flow_mlp", "flow_g", "flow_t"]


def _peak_step0(run_dirs: list[Path], policy: str) -> float | None:
    """Largest logged norm at step 0 over the runs of ``policy`` (spikes are what a mean hides)."""
    values = [v for d in run_dirs if d.name.rsplit("_seed", 1)[0] == policy
              for v in read_csv_scalar(d, "train/path_grad_norm_step_0")[1]]
    return max(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="pendulum")
    parser.add_argument("--policies", nargs="+", default=POLICIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--every", type=int, default=100, help="log the norms every N updates")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=OUTPUTS / "bench_grad_norms")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--note", action="append", default=[], help="a line for the report's Notes section")
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    start = time.time()
    run_dirs = sweep(args.policies, args.seeds, env=args.env, runs_dir=args.runs_dir, parallel=args.parallel,
                     overrides=[f"logger.log_path_grad_norms_every={args.every}", *args.overrides])
    wall = time.time() - start
    done = [d for d in run_dirs if finished(d)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_grad_norms(done, out=args.out_dir / f"grad_norms_{args.env}.png",
                          title=f"{args.env}: actor-loss gradient norm at each flow step")
    table = grad_norm_table(done)
    k = max((len(row["mean"]) for row in table.values()), default=0)
    lines = [
        *header(f"Per-step actor gradient norms: {args.env}", command_line("benchmarks.grad_norms", argv)),
        "||dL_actor/dA_i|| averaged over each run (logged every "
        f"{args.every} updates), mean ± std over seeds. The gradient flows from step {k - 1} back to step 0; "
        "then the growth across the rollout (step 0 / step K-1) and the largest step-0 norm logged.",
        "",
        "| variant | " + " | ".join(f"step {i}" for i in range(k)) + " | step 0 / step K-1 | peak step 0 |",
        "|---|" + "---|" * (k + 2),
    ]
    for label, row in table.items():
        cells = [f"{m:.3g} ± {s:.2g}" for m, s in zip(row["mean"], row["std"])]
        peak = _peak_step0(done, row["policy"])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['mean'][0] / row['mean'][-1]:.2f} | {peak:.3g} |")
    lines += ["", f"Sweep wall time: {wall / 60:.1f} min.", "", f"![grad norms]({png.name})", ""]
    if args.note:
        lines += ["## Notes", ""] + [f"- {n}" for n in args.note] + [""]
    report = args.out_dir / f"grad_norms_{args.env}.md"
    report.write_text("\n".join(lines))
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
