"""Offline-to-online SAC Flow from weak data (issue 19): the success rate after flow-matching
pre-training, after offline SAC Flow on the data and after online fine-tuning, under three proximity
terms (the paper's ``β‖a_θ − a_buffer‖²``, the flow-matching error of the buffer action, none), for
Flow-T and Flow-G, on scripted Lift with imperfect demos, scripted Can and OGBench cube-double.

    python benchmarks/offline_to_online.py run                          # all rows, seeds 0-2 (hours on 2 cores)
    python benchmarks/offline_to_online.py run --tasks lift_weak --seeds 0 --policies flow_t --variants flow_matching
    python benchmarks/offline_to_online.py run --quick                  # tiny budgets, seed 0: a smoke run
    python benchmarks/offline_to_online.py run -- ogbench.transitions=1000000   # recipe overrides for every run
    python benchmarks/offline_to_online.py report                       # record finished runs; table + plot

Every run is the offline-to-online recipe (``python -m recipes.train_offline_online``), ``--parallel``
at a time with one torch thread each, into ``outputs/bench_offline_to_online/<task>/<policy>_seed<s>/<variant>``.
Each (task, policy, seed, variant) is one whole run: its pre-training is the same for every variant of
a seed (same seed, same data), the variants differ from the offline SAC phase on (``VARIANTS``).
Why offline SAC steps: with the critic starting from scratch online, the first online updates took
the pre-trained Flow-T on weak Lift from 0.55 to 0.00 success, with and without the proximity term
(``docs/offline_to_online.md``).

A finished run (its ``summary.json``) is skipped, one still running from an earlier driver is waited
for, an unfinished one continues from its last checkpoint. The data are generated once, before the
runs, into ``outputs/datasets`` (cached by their settings). What a finished run measured is copied
into ``benchmarks/results/offline_to_online.json``, from which ``report`` writes
``offline_to_online.md`` / ``.png`` (``--quick``: under ``outputs/bench_offline_to_online_quick``
instead, never into ``benchmarks/results``).

CPU budget (2 shared cores): 5 000 pre-training steps, 1 000 offline SAC Flow updates, then 1 000
online env steps (chunks of 5: 5 000 primitive steps) with one update each; evaluations every 250
online steps (Lift: 20 episodes of at most 200 steps; Can: 10; cube-double: 5 episodes of 500 steps).
A smoke-scale comparison, not the paper's 1M + 1M steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from critics import _finished, run_jobs  # noqa: E402
from paper_parity import _fmt  # noqa: E402

from torchrl_sacflow.training import read_csv_scalar  # noqa: E402

RECIPE = "recipes.train_offline_online"
DATASETS_DIR = REPO / "outputs" / "datasets"
# task -> (recipe overrides, what it is)
TASKS: dict[str, tuple[list[str], str]] = {
    "lift_weak": (
        ["dataset=robomimic", "scripted_episodes=30", "scripted_failed_fraction=0.4", "scripted_action_noise=0.1",
         "scripted_p_early_stop=0.2", "eval.num_episodes=20"],
        "scripted Robomimic Lift, 30 imperfect demos: 12 failed grasps, action noise 0.1, 20 % of the successes "
        "cut short; pre-training alone reached 0.55 in a one-seed probe (docs/robomimic_data.md)"),
    "can": (
        ["dataset=robomimic", "task=can", "scripted_episodes=30", "scripted_failed_fraction=0.2",
         "eval.num_episodes=10"],
        "scripted Robomimic Can (PickPlaceCan), 30 demos of which 6 failed grasps; 200-step episodes"),
    "cube_double": (
        ["dataset=ogbench", "task=cube-double", "ogbench.transitions=100000", "eval.num_episodes=5"],
        "OGBench cube-double, OGBench's default singletask goal (task 2), 100 000 generated play transitions, "
        "500-step episodes (docs/ogbench_data.md)"),
}
POLICIES = ("flow_t", "flow_g")
# fine-tuning variant -> (recipe overrides, what it is)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "l2": (["beta.loss=l2"], "the paper's proximity term β‖a_θ − a_buffer‖² (β 10 000 offline, 1 000 online)"),
    "flow_matching": (["beta.loss=flow_matching"],
                      "β times the flow-matching error of the buffer action (`beta.loss=flow_matching`), same β"),
    "flow_matching_demos": (["beta.loss=flow_matching", "beta.rows=offline"],
                            "as `flow_matching`, online on the demonstration rows of each batch only "
                            "(`beta.rows=offline`: the policy is not held to its own exploratory actions)"),
    "beta0": (["beta.offline=0", "beta.online_start=0", "beta.online_end=0"], "no proximity term (β = 0)"),
}
BUDGET = ["pretrain_steps=5000", "offline_steps=1000", "online_frames=1000", "frames_per_batch=50",
          "eval.interval=250", "checkpoint.interval=250", "threads=1", "logger.progress_bar=false"]
QUICK = ["pretrain_steps=20", "offline_steps=4", "online_frames=8", "frames_per_batch=4", "eval.interval=4", "eval.num_episodes=1",
         "checkpoint.interval=4", "max_episode_steps=20", "batch_size=16", "critic.num_cells=[32,32]",
         "scripted_episodes=3", "ogbench.transitions=100"]
QUICK_POLICY = {"flow_t": ["policy.velocity_kwargs.d_model=16", "policy.velocity_kwargs.num_heads=2",
                           "policy.velocity_kwargs.num_layers=1"],
                "flow_g": ["policy.velocity_kwargs.hidden_sizes=[16]"]}


def _merge(*overrides: list[str]) -> list[str]:
    """``key=value`` lists merged left to right (a later value of a key replaces an earlier one)."""
    merged: dict[str, str] = {}
    for items in overrides:
        merged.update(item.split("=", 1) for item in items)
    return [f"{key}={value}" for key, value in merged.items()]


class Sweep:
    """The runs of one ``run``/``report`` call: where they go and what each is given."""

    def __init__(self, args: argparse.Namespace):
        self.quick, self.extra = args.quick, list(args.overrides)
        self.runs_dir = REPO / "outputs" / f"bench_offline_to_online{'_quick' if args.quick else ''}"
        results_dir = self.runs_dir if args.quick else REPO / "benchmarks" / "results"
        self.results = results_dir / "offline_to_online.json"

    def run_dir(self, task: str, policy: str, seed: int, stage: str) -> Path:
        return self.runs_dir / task / f"{policy}_seed{seed}" / stage

    def recipe_args(self, task: str, policy: str, seed: int, variant: str) -> list[str]:
        quick = QUICK + QUICK_POLICY[policy] if self.quick else []
        return _merge(TASKS[task][0], BUDGET, [f"datasets_dir={DATASETS_DIR}", f"policy={policy}", f"seed={seed}"],
                      quick, self.extra, VARIANTS[variant][0],
                      [f"hydra.run.dir={self.run_dir(task, policy, seed, variant)}"])

    def load(self) -> dict:
        return json.loads(self.results.read_text()) if self.results.is_file() else {}

    def record(self, task: str, policy: str, seed: int, variant: str) -> None:
        """Copy what a finished run measured into the results file."""
        run_dir = self.run_dir(task, policy, seed, variant)
        summary = json.loads((run_dir / "summary.json").read_text())
        steps, values = read_csv_scalar(run_dir, "eval/success_rate")
        results = self.load()
        results[f"{task}/{policy}/{variant}/seed{seed}"] = {
            "success_after_pretrain": summary["success_rate_after_pretrain"],
            "success_after_offline": summary["success_rate_after_offline"],
            "success_after_online": summary["final_success_rate"], "best_online_eval": max(values, default=None),
            "eval_curve": [[s, v] for s, v in zip(steps, values)], "frames": summary["frames"],
            "data": summary["data"], "wall_s": summary["wall_time_s"],
            "overrides": self.recipe_args(task, policy, seed, variant)[:-1],
        }
        self.results.parent.mkdir(parents=True, exist_ok=True)
        self.results.write_text(json.dumps(results, indent=1, sort_keys=True))


def prepare_data(sweep: Sweep, task: str) -> None:
    """Generate (or find) a task's dataset once, before parallel runs could race to write it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from torchrl_sacflow.training.offline_online import check_offline_online_config, resolve_offline_data

    overrides = [o for o in sweep.recipe_args(task, "flow_t", 0, next(iter(VARIANTS))) if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(REPO / "recipes" / "config"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train_offline_online", overrides=overrides), resolve=True)
    check_offline_online_config(cfg)
    data = resolve_offline_data(cfg, progress=True)
    print(f"{task}: {data.path}{' (generated)' if data.generated else ''}", flush=True)


def run(sweep: Sweep, args: argparse.Namespace) -> None:
    for task in args.tasks:
        prepare_data(sweep, task)
    keys = [(t, p, s) for s in args.seeds for t in args.tasks for p in args.policies]  # seed-major

    def on_done(job) -> None:
        if _finished(sweep.run_dir(*job)):
            sweep.record(*job)
            report(sweep)

    jobs = [(*key, variant) for key in keys for variant in args.variants]
    run_jobs(jobs, run_dir_for=lambda job: sweep.run_dir(*job), args_for=lambda job: sweep.recipe_args(*job),
             parallel=args.parallel, threads=1, on_done=on_done, module=RECIPE)


def report(sweep: Sweep) -> None:
    results = sweep.load()
    lines = [
        "# Offline-to-online SAC Flow from weak data (issue 19)", "",
        "`python benchmarks/offline_to_online.py run` (then `report`); every run is "
        "`python -m recipes.train_offline_online` with " + " ".join(f"`{b}`" for b in BUDGET) + ", one torch "
        "thread. Each row is one whole run per seed (flow-matching pre-training, offline SAC Flow on the data, "
        "online SAC Flow; the pre-training is the same for every row of a seed). Cells: mean over seeds (per-seed "
        "values in brackets); success rate of the deterministic (ODE) policy. *best online* is the best "
        "evaluation during the online phase.", "",
    ]
    if sweep.quick:
        lines += ["**A smoke run (`--quick`): " + " ".join(f"`{q}`" for q in QUICK) + "; the numbers mean nothing.**",
                  ""]
    plot_rows = []
    for task, (task_args, about) in TASKS.items():
        runs = {k: v for k, v in results.items() if k.startswith(f"{task}/")}
        if not runs:
            continue
        lines += [f"## {task}", "", f"{about}; `{' '.join(task_args)}`.", "",
                  "| policy | proximity | seeds | after pre-training | after offline SAC | after online | "
                  "best online | run min |", "|---|---|---|---|---|---|---|---|"]
        for policy in POLICIES:
            for variant in VARIANTS:
                rows = [v for k, v in sorted(runs.items()) if k.startswith(f"{task}/{policy}/{variant}/")]
                if not rows:
                    continue
                plot_rows.append((task, f"{policy} {variant}", [r["eval_curve"] for r in rows]))
                cells = [policy, variant, str(len(rows))]
                cells += [_fmt([r[k] for r in rows], 2) for k in ("success_after_pretrain", "success_after_offline",
                                                               "success_after_online", "best_online_eval")]
                cells.append(_fmt([r["wall_s"] / 60 for r in rows], 1))
                lines.append("| " + " | ".join(cells) + " |")
        data = next(iter(runs.values()))["data"]
        lines += ["", f"Data: {data['transitions']} transitions, {data['episodes_with_success']} of "
                      f"{data['episodes']} episodes reach the task's success.", ""]
    lines += ["Proximity: " + "; ".join(f"`{v}` {about}" for v, (_, about) in VARIANTS.items()) + ".", ""]
    out = sweep.results.with_suffix(".md")
    out.write_text("\n".join(lines))
    _plot(plot_rows, sweep.results.with_suffix(".png"))
    print("\n".join(lines))


def _plot(rows: list, out: Path) -> None:
    """Eval success rate vs online env steps, mean over seeds, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(task for task, _, _ in rows))
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.4 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for _, label, curves in (r for r in rows if r[0] == task):
            steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
            mean = [np.mean([dict(map(tuple, c))[s] for c in curves]) for s in steps]
            ax.plot(steps, mean, marker="o", ms=3, label=f"{label} ({len(curves)})")
        ax.set_title(f"{task}: eval success rate (step 0 = after offline SAC)")
        ax.set_xlabel("online env steps (chunks)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def record_finished(sweep: Sweep) -> None:
    """Record every finished fine-tuning under the runs folder that the results file lacks."""
    results = sweep.load()
    for summary in sorted(sweep.runs_dir.glob("*/*_seed*/*/summary.json")):
        run_dir = summary.parent
        task, (policy, seed), variant = run_dir.parent.parent.name, run_dir.parent.name.rsplit("_seed", 1), run_dir.name
        if (variant in VARIANTS and task in TASKS and f"{task}/{policy}/{variant}/seed{seed}" not in results
                and _finished(run_dir)):
            sweep.record(task, policy, int(seed), variant)


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_text in (("run", "start the missing runs (skips finished ones), then report"),
                            ("report", "record finished runs, then write the table and plot (starts nothing)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--quick", action="store_true", help="tiny budgets, seed 0 (results under outputs/)")
        if name == "run":
            p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
            p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
            p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
            p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
            p.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args(own)
    args.overrides = overrides
    sweep = Sweep(args)
    if args.cmd == "run":
        if args.quick:
            args.seeds = args.seeds[:1]
        start = time.perf_counter()
        run(sweep, args)
        print(f"sweep wall time {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    record_finished(sweep)
    report(sweep)


if __name__ == "__main__":
    main()
