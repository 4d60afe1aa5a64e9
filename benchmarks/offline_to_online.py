"""Offline-to-online SAC Flow from weak data, beside its baselines (issues 19, 31): the success rate
after flow-matching pre-training, after offline RL on the data and after online fine-tuning, under
three proximity terms (the paper's ``β‖a_θ − a_buffer‖²``, the flow-matching error of the buffer
action, none), for Flow-T and Flow-G, and for BC, FQL and QC-FQL (``algo=bc|fql|qc_fql`` of the same
recipe, rows ``bc`` / ``fql`` / ``qc_fql``), on scripted Lift with imperfect demos, scripted Can and
OGBench cube-double.

    python -m benchmarks.offline_to_online run --policies bc fql qc_fql flow_t --variants l2   # the comparison

    python -m benchmarks.offline_to_online run                          # all rows, seeds 0-2 (hours on 2 cores)
    python -m benchmarks.offline_to_online run --tasks lift_weak --seeds 0 --policies flow_t --variants flow_matching
    python -m benchmarks.offline_to_online run --quick                  # tiny budgets, seed 0: a smoke run
    python -m benchmarks.offline_to_online run -- ogbench.transitions=1000000   # recipe overrides for every run
    python -m benchmarks.offline_to_online report                       # record finished runs; table + plot
    python -m benchmarks.offline_to_online lift                         # the Robomimic recipe's defaults (below)

Every run is the offline-to-online recipe (``python -m recipes.train_offline_online``), ``--parallel``
at a time with one torch thread each, into ``outputs/bench_offline_to_online/<task>/<policy>_seed<s>/<variant>``.
Each (task, policy, seed, variant) is one whole run: its pre-training is the same for every variant of
a seed (same seed, same data), the variants differ from the offline SAC phase on (``VARIANTS``).
Why offline SAC steps: with the critic starting from scratch online, the first online updates took
the pre-trained Flow-T on weak Lift from 0.55 to 0.00 success, with and without the proximity term
(``docs/offline_to_online.md``).

The runs go through the shared driver (:mod:`benchmarks.sweep`: a recorded or finished run is
skipped, one still running from an earlier driver is waited for, an unfinished one continues from
its last checkpoint). The data are generated once, before the runs, into ``outputs/datasets`` (cached by their settings). What a finished run measured is copied
into ``benchmarks/results/offline_to_online.json``, from which ``report`` writes
``offline_to_online.md`` / ``.png`` (``--quick``: under ``outputs/bench_offline_to_online_quick``
instead, never into ``benchmarks/results``).

CPU budget (2 shared cores): 5 000 pre-training steps, 1 000 offline SAC Flow updates, then 1 000
online env steps (chunks of 5: 5 000 primitive steps) with one update each; evaluations every 250
online steps (Lift: 20 episodes of at most 200 steps; Can: 10; cube-double: 5 episodes of 500 steps).
A smoke-scale comparison, not the paper's 1M + 1M steps.

``lift``: the Robomimic recipe as it ships (``python -m recipes.train_robomimic``: scripted Lift,
its own budgets, no offline SAC steps) for ``--policies`` x ``--seeds``, plus the overrides after
``--``, into ``outputs/bench_robomimic/<policy>_seed<s>``; its results file is
``benchmarks/results/robomimic_lift.json`` (a list of the runs' summaries), its report
``robomimic_lift.md`` / ``.png`` (success after pre-training and after online, steps/s)::

    python -m benchmarks.offline_to_online lift -- online_frames=1000 eval.interval=250
    python -m benchmarks.offline_to_online lift --quick                  # a smoke run (tiny budgets, 1 seed)
    python -m benchmarks.offline_to_online lift -- dataset=/data/lift/mh/low_dim.hdf5 max_episode_steps=500
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.sweep import (OUTPUTS, REPO, RESULTS_DIR, Job, Results, command_line, fmt, plot_curves,
                              run_curve, run_jobs, summary)

RECIPE = "recipes.train_offline_online"
DATASETS_DIR = OUTPUTS / "datasets"
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
# row -> recipe overrides: SAC Flow with each flow policy, then the paper's offline-to-online baselines
# (issue 31) on the same data, buffers, evaluation and budgets: BC (flow-matching pre-training alone,
# Flow-T), FQL (no chunks) and QC-FQL (chunks of 5, the recipe's action_chunk); FQL's α = fql.alpha.
POLICIES: dict[str, list[str]] = {
    "flow_t": ["policy=flow_t"], "flow_g": ["policy=flow_g"],
    "bc": ["algo=bc", "policy=flow_t"], "fql": ["algo=fql", "action_chunk=1"], "qc_fql": ["algo=qc_fql"],
    # Flow-G's cloning (issue 30): pre-training alone, the defaults and the option that clones Bandit2
    "bc_flow_g": ["algo=bc", "policy=flow_g"],
    "bc_flow_g_unit_relu": ["algo=bc", "policy=flow_g", "policy.velocity_kwargs.candidate_slope=unit",
                            "policy.velocity_kwargs.activation=relu"],
    "bc_flow_g_256x3": ["algo=bc", "policy=flow_g", "policy.velocity_kwargs.hidden_sizes=[256,256,256]"],
    "bc_flow_g_256x3_unit_relu": ["algo=bc", "policy=flow_g", "policy.velocity_kwargs.hidden_sizes=[256,256,256]",
                                  "policy.velocity_kwargs.candidate_slope=unit", "policy.velocity_kwargs.activation=relu"],
}
#: rows without SAC Flow's proximity variants: each runs once per seed, as variant ``BASELINE_VARIANT``
BASELINES = ("bc", "fql", "qc_fql", "bc_flow_g", "bc_flow_g_unit_relu", "bc_flow_g_256x3", "bc_flow_g_256x3_unit_relu")
BASELINE_VARIANT = "default"
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
_QUICK_FLOW_T = ["policy.velocity_kwargs.d_model=16", "policy.velocity_kwargs.num_heads=2",
                 "policy.velocity_kwargs.num_layers=1"]
QUICK_POLICY = {"flow_t": _QUICK_FLOW_T, "flow_g": ["policy.velocity_kwargs.hidden_sizes=[16]"], "bc": _QUICK_FLOW_T,
                "fql": ["fql.actor_cells=[16]"], "qc_fql": ["fql.actor_cells=[16]"],
                "bc_flow_g": ["policy.velocity_kwargs.hidden_sizes=[16]"],
                "bc_flow_g_unit_relu": ["policy.velocity_kwargs.hidden_sizes=[16]"],
                "bc_flow_g_256x3": ["policy.velocity_kwargs.hidden_sizes=[16]"],
                "bc_flow_g_256x3_unit_relu": ["policy.velocity_kwargs.hidden_sizes=[16]"]}


def variants_of(policy: str, variants) -> list[str]:
    """The fine-tuning variants a row runs: SAC Flow's proximity ``variants``, a baseline's own one."""
    return [BASELINE_VARIANT] if policy in BASELINES else list(variants)


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
        self.runs_dir = OUTPUTS / f"bench_offline_to_online{'_quick' if args.quick else ''}"
        results_dir = self.runs_dir if args.quick else RESULTS_DIR
        self.results = Results(results_dir / "offline_to_online.json", self.measure)

    def job(self, task: str, policy: str, seed: int, variant: str) -> Job:
        """One whole run: a task, a policy, a seed, a fine-tuning variant (key ``task/policy/variant/seed<s>``)."""
        quick = QUICK + QUICK_POLICY[policy] if self.quick else []
        if (variant == BASELINE_VARIANT) != (policy in BASELINES):
            raise ValueError(f"row {policy} has no variant {variant!r}")
        args = _merge(TASKS[task][0], BUDGET, [f"datasets_dir={DATASETS_DIR}", f"seed={seed}"], POLICIES[policy],
                      quick, self.extra, [] if policy in BASELINES else VARIANTS[variant][0])
        return Job(f"{task}/{policy}/{variant}/seed{seed}", self.runs_dir / task / f"{policy}_seed{seed}" / variant,
                   tuple(args), RECIPE)

    def measure(self, job: Job) -> dict:
        """What a finished run measured, for the results file."""
        done = summary(job.run_dir)
        curve = run_curve(job.run_dir, "eval/success_rate")
        return {
            "success_after_pretrain": done["success_rate_after_pretrain"],
            "success_after_offline": done["success_rate_after_offline"],
            "success_after_online": done["final_success_rate"],
            "best_online_eval": max((v for _, v in curve), default=None),
            "eval_curve": curve, "frames": done["frames"], "data": done["data"], "wall_s": done["wall_time_s"],
            "overrides": list(job.args),
        }


def prepare_data(overrides: list[str], label: str, config: str = "train_offline_online") -> None:
    """Generate (or find) the dataset of a run with these recipe ``overrides`` once, before parallel
    runs could race to write it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from torchrl_sacflow.training.offline_online import check_offline_online_config, resolve_offline_data

    with initialize_config_dir(config_dir=str(REPO / "recipes" / "config"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config, overrides=list(overrides)), resolve=True)
    check_offline_online_config(cfg)
    data = resolve_offline_data(cfg, progress=True)
    print(f"{label}: {data.path}{' (generated)' if data.generated else ''}", flush=True)


def run(sweep: Sweep, args: argparse.Namespace) -> None:
    for task in args.tasks:
        prepare_data(sweep.job(task, "flow_t", 0, next(iter(VARIANTS))).args, task)
    jobs = [sweep.job(t, p, s, variant) for s in args.seeds for t in args.tasks for p in args.policies
            for variant in variants_of(p, args.variants)]  # seed-major
    run_jobs(jobs, parallel=args.parallel, results=sweep.results, on_done=lambda _: report(sweep))


def report(sweep: Sweep) -> None:
    results = sweep.results.load()
    lines = [
        "# Offline-to-online SAC Flow from weak data, beside BC, FQL and QC-FQL (issues 19, 31)", "",
        "`python -m benchmarks.offline_to_online run` (then `report`); every run is "
        "`python -m recipes.train_offline_online` with " + " ".join(f"`{b}`" for b in BUDGET) + ", one torch "
        "thread. Each row is one whole run per seed (flow-matching pre-training, offline SAC Flow on the data, "
        "online SAC Flow; the pre-training is the same for every SAC Flow row of a seed). Rows `bc`, `fql`, `qc_fql`: "
        "`algo=bc` (Flow-T, flow-matching pre-training only), `algo=fql action_chunk=1`, `algo=qc_fql` (chunks of 5) "
        "with the recipe's `fql` defaults (α 100, 2 x 256 GELU actor and behaviour flow, the critic group's "
        "2 x 256 MLPs with LayerNorm), same data, budgets and evaluation; their proximity column is `default` "
        "(FQL's own distillation term; none for BC). Cells: mean over seeds (per-seed "
        "values in brackets); success rate of the deterministic (ODE) policy (FQL: its one-step policy, noise "
        "sampled as in the reference). *best online* is the best "
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
                  "| row | proximity | seeds | after pre-training | after offline RL | after online | "
                  "best online | run min |", "|---|---|---|---|---|---|---|---|"]
        for policy in POLICIES:
            for variant in variants_of(policy, VARIANTS):
                rows = [v for k, v in sorted(runs.items()) if k.startswith(f"{task}/{policy}/{variant}/")]
                if not rows:
                    continue
                plot_rows.append((task, f"{policy} {variant}", [r["eval_curve"] for r in rows]))
                cells = [policy, variant, str(len(rows))]
                cells += [fmt([r[k] for r in rows], 2) for k in ("success_after_pretrain", "success_after_offline",
                                                              "success_after_online", "best_online_eval")]
                cells.append(fmt([r["wall_s"] / 60 for r in rows], 1))
                lines.append("| " + " | ".join(cells) + " |")
        data = next(iter(runs.values()))["data"]
        lines += ["", f"Data: {data['transitions']} transitions, {data['episodes_with_success']} of "
                      f"{data['episodes']} episodes reach the task's success.", ""]
    lines += ["Proximity: " + "; ".join(f"`{v}` {about}" for v, (_, about) in VARIANTS.items()) + ".", ""]
    out = sweep.results.path.with_suffix(".md")
    out.write_text("\n".join(lines))
    tasks = list(dict.fromkeys(task for task, _, _ in plot_rows))
    plot_curves([(f"{t}: eval success rate (step 0 = after offline SAC)",
                  [(label, curves) for task, label, curves in plot_rows if task == t]) for t in tasks],
                out.with_suffix(".png"), xlabel="online env steps (chunks)", ylim=(-0.05, 1.05))
    print("\n".join(lines))


def record_finished(sweep: Sweep) -> None:
    """Record every finished fine-tuning under the runs folder that the results file lacks."""
    jobs = []
    for path in sorted(sweep.runs_dir.glob("*/*_seed*/*/summary.json")):
        run_dir = path.parent
        task, (policy, seed), variant = run_dir.parent.parent.name, run_dir.parent.name.rsplit("_seed", 1), run_dir.name
        if task in TASKS and policy in POLICIES and variant in variants_of(policy, VARIANTS):
            jobs.append(sweep.job(task, policy, int(seed), variant))
    sweep.results.record_finished(jobs)


# ---------------------------------------------------------------------------------------------
# lift: the Robomimic recipe's defaults on scripted Lift (was benchmarks/robomimic.py)
# ---------------------------------------------------------------------------------------------
LIFT_RECIPE = "recipes.train_robomimic"
LIFT_RUNS = OUTPUTS / "bench_robomimic"
LIFT_POLICIES = ("flow_t", "flow_g", "flow_mlp")
LIFT_QUICK = ["pretrain_steps=200", "online_frames=40", "frames_per_batch=20", "eval.interval=20",
              "eval.num_episodes=2", "max_episode_steps=60", "scripted_episodes=4"]
# the report's setting line: (text, the run config's key), the key dotted; "?" where a run lacks it
LIFT_SETTING = [
    ("dataset `{}`", "env.dataset"), ("({} scripted demos when generated)", "scripted_episodes"),
    ("action chunk h={}", "action_chunk"), ("K={}", "policy.num_steps"), ("σ={}", "policy.noise_std"),
    ("{} flow-matching steps", "pretrain_steps"), ("{} offline SAC steps", "offline_steps"),
    ("{} online env steps", "online_frames"), ("batch {}", "batch_size"), ("β online {}", "beta.online_start"),
    ("→{}", "beta.online_end"), ("offline fraction {}", "offline_fraction"),
    ("{} update per env step", "updates_per_frame"), ("episodes of {} primitive steps", "max_episode_steps"),
    ("success rate over {} deterministic (ODE) episodes per evaluation", "eval.num_episodes"),
]


class LiftResults(Results):
    """``robomimic_lift.json``: a list of the runs' summaries (with ``variant``, ``seed``, ``run_dir`` and
    the run's ``overrides``), keyed ``<policy>_seed<s>`` in memory. A run counts as recorded only with
    the same overrides (``lift -- dataset=...`` runs again what the scripted-Lift sweep recorded)."""

    def recorded(self, job: Job, results: dict) -> bool:
        return job.key in results and results[job.key].get("overrides") == list(job.args)

    def load(self) -> dict:
        entries = super().load() or []
        return {f"{e['variant']}_seed{e['seed']}": e for e in entries}

    def write(self, results: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(list(results.values()), indent=2))


def lift_job(policy: str, seed: int, overrides: list[str], runs_dir: Path = LIFT_RUNS) -> Job:
    return Job(f"{policy}_seed{seed}", runs_dir / f"{policy}_seed{seed}",
               (f"policy={policy}", f"seed={seed}", "threads=1", "logger.progress_bar=false", *overrides), LIFT_RECIPE)


def lift_measure(job: Job) -> dict:
    policy, seed = job.key.rsplit("_seed", 1)
    return {"run_dir": str(job.run_dir), **summary(job.run_dir), "variant": policy, "seed": int(seed),
            "eval_curve": run_curve(job.run_dir, "eval/success_rate"), "setting": _lift_setting(job.run_dir),
            "overrides": list(job.args)}


LIFT_RESULTS = LiftResults(RESULTS_DIR / "robomimic_lift.json", lift_measure)


def lift(args: argparse.Namespace) -> None:
    """The ``lift`` sweep: every ``--policies`` x ``--seeds`` run of the Robomimic recipe, then its report."""
    overrides = (LIFT_QUICK if args.quick else []) + args.overrides
    seeds = args.seeds[:1] if args.quick else args.seeds
    runs_dir = LIFT_RUNS.with_name("bench_robomimic_quick") if args.quick else LIFT_RUNS
    results = LiftResults(runs_dir / "robomimic_lift.json", lift_measure) if args.quick else LIFT_RESULTS
    if not any(o.startswith("dataset=") for o in overrides):
        prepare_data(overrides, "scripted Lift", config="train_robomimic")
    jobs = [lift_job(p, s, overrides, runs_dir) for s in seeds for p in args.policies]
    start = time.perf_counter()
    run_jobs(jobs, parallel=args.parallel, results=results)
    results.record_finished(jobs)
    lift_report([results.load()[j.key] for j in jobs if j.key in results.load()], results.path.with_suffix(".md"),
                command_line("benchmarks.offline_to_online"), args.parallel, time.perf_counter() - start)


def _lift_curve(entry: dict) -> list:
    """A run's eval success curve: recorded, or (entries recorded before curves were) from its run dir."""
    if "eval_curve" in entry:
        return entry["eval_curve"]
    return run_curve(Path(entry["run_dir"]), "eval/success_rate") if Path(entry["run_dir"]).is_dir() else []


def _dotted(config: dict, key: str):
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return "?"
        config = config[part]
    return config


def _lift_setting(run_dir: Path) -> str | None:
    """The report's setting line from a run's ``config.yaml`` (``None`` without one)."""
    from omegaconf import OmegaConf

    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        return None
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    return ", ".join(text.format(_dotted(config, key)) for text, key in LIFT_SETTING).replace(", →", "→")


def lift_report(results: list[dict], out_md: Path, command: str, parallel: int, sweep_s: float) -> None:
    import torch

    if not results:
        return
    setting = results[0].get("setting") or _lift_setting(results[0]["run_dir"]) or "not recorded"
    lines = [
        "# Offline-to-online SAC Flow on scripted Robomimic Lift", "", "```", command, "```", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
        f"torch {torch.__version__}, CPU only; {parallel} runs at a time, 1 torch thread each; "
        f"other processes were sharing the cores, so the rates are lower bounds. Sweep wall time "
        f"{sweep_s / 60:.1f} min. Date {time.strftime('%Y-%m-%d')}.", "",
        f"Setting (recipe defaults unless overridden): {setting}.", "",
        "| policy | seeds | success after pre-training | success after online | best online eval | "
        "pre-train steps/s | env frames/s | updates/s | wall s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for policy in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == policy]
        best = [max((v for _, v in _lift_curve(r)), default=None) for r in rows]
        lines.append(" | ".join([
            f"| {policy}", str(len(rows)), fmt([r["success_rate_after_pretrain"] for r in rows], 2, "std"),
            fmt([r["final_success_rate"] for r in rows], 2, "std"), fmt(best, 2, "std"),
            fmt([r.get("pretrain_steps_per_s") for r in rows], 0, "std"),
            fmt([r.get("env_frames_per_s") for r in rows], 1, "std"),
            fmt([r.get("updates_per_s") for r in rows], 1, "std"), fmt([r["wall_time_s"] for r in rows], 0, "std"),
        ]) + " |")
    lines += ["", "Per run (success rate at each evaluation, online frames → success):", ""]
    for r in results:
        curve = ", ".join(f"{s}: {v:.1f}" for s, v in _lift_curve(r))
        lines.append(f"- {r['variant']} seed {r['seed']}: {curve}")
    lines += [
        "", "Env frames/s counts online env steps (chunks of h actions) per second of collection "
        "(simulation + policy inference); updates/s counts SAC Flow updates per second of update time.", "",
        "## With an official Robomimic file", "",
        "With an official multi-human file (`lift/mh/low_dim.hdf5`, v0.1), the same sweep at the paper's "
        "settings for Lift (500-step episodes, β 10000 offline / 1000 online) and a budget a GPU machine "
        "affords is:", "",
        "```",
        "python -m benchmarks.offline_to_online lift -- dataset=/path/to/lift/mh/low_dim.hdf5 max_episode_steps=500 \\",
        "    pretrain_steps=100000 offline_steps=100000 online_frames=200000 \\",
        "    online_buffer_size=1000000 eval.interval=10000 eval.num_episodes=50 \\",
        "    checkpoint.interval=50000 device=cuda",
        "```", "",
        "or a single run: `python -m recipes.train_robomimic dataset=/path/to/lift/mh/low_dim.hdf5 "
        "max_episode_steps=500 policy=flow_g seed=0` (add the budgets above). `task=can` / `task=square` "
        "with the matching files; the env is rebuilt from each file's `env_args`.",
    ]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")
    plot_curves([("scripted Lift, offline-to-online (eval success rate)",
                  [(p, curves) for p in dict.fromkeys(r["variant"] for r in results)
                   if (curves := [c for r in results if r["variant"] == p and (c := _lift_curve(r))])])],
                out_md.with_suffix(".png"), xlabel="online env steps (chunks)", ylim=(-0.05, 1.05))
    print(out_md.read_text())


def action_errors(run_dirs: list[Path], every: int = 3) -> None:
    """Per action entry, ``|a_ODE(s) − a_data|`` of each run's pre-trained policy (its checkpoint's
    ``policy``) at every ``every``-th state of its own dataset, averaged over the states and the chunk."""
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_sacflow.training import make_policy
    from torchrl_sacflow.training.offline_online import resolve_offline_data

    torch.set_num_threads(1)
    for run_dir in run_dirs:
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
        data = resolve_offline_data(cfg)
        env = data.make_env(seed=0)
        offline = data.load(env)
        actor = make_policy(cfg["policy"], env.action_spec, int(offline["observation"].shape[-1]))
        actor.load_state_dict(torch.load(run_dir / "checkpoint" / "components" / "0005-policy" / "state.pt",
                                         weights_only=False))
        rows = offline[::every]
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            action = actor(TensorDict({"observation": rows["observation"]}, rows.batch_size))["action"]
        err = (action - rows["action"]).abs().reshape(len(rows), cfg["action_chunk"], -1).mean((0, 1))
        print(f"{run_dir}: " + " ".join(f"{e:.3f}" for e in err.tolist()), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    p = sub.add_parser("lift", help="the Robomimic recipe's defaults on scripted Lift (robomimic_lift.md)")
    p.add_argument("--quick", action="store_true", help="tiny budgets, seed 0 (results under outputs/)")
    p.add_argument("--policies", nargs="+", default=["flow_t", "flow_g"], choices=LIFT_POLICIES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one torch thread each)")
    p = sub.add_parser("action-errors", help="per action entry, |a_ODE - a_data| of finished runs' policies")
    p.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(own)
    args.overrides = overrides
    if args.cmd == "lift":
        return lift(args)
    if args.cmd == "action-errors":
        return action_errors(args.run_dirs)
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
