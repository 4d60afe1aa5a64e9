"""Paper-parity ablation on HalfCheetah-v4: the released Flow-T code's configuration, each of its
differences from ours switched one at a time, and the exact-math preset (issue 20).

    python benchmarks/paper_parity.py run                       # the 10k-step ablation, 2 seeds per row
    python benchmarks/paper_parity.py run --rows paper_code paper --frames 13000 --seeds 1 2 3
    python benchmarks/paper_parity.py report                    # record finished runs; table + plot

Every run is the MuJoCo recipe itself::

    python -m recipes.train_mujoco env=halfcheetah policy=flow_t <row overrides> seed=<s> threads=<t>
        collector.total_frames=<frames> collector.init_random_frames=5000 eval.interval=2000 eval.num_episodes=5

into ``outputs/paper_parity/<frames>/<row>/seed<s>``, ``--parallel`` at a time (default 2, with
``--threads`` 1 each: the two cores of these machines; two 2-thread jobs at once are ~19x slower).
A run whose ``summary.json`` exists is skipped, one still running from an earlier driver is waited
for, an unfinished one continues from its last checkpoint (every 1 000 env steps, replay buffer
included: a session that ends mid-run loses at most 1 000 steps), anything else starts again. What a
finished run measured is copied into
``benchmarks/results/paper_parity.json`` (committed), so a later session skips it even on a fresh
clone, and ``report`` writes ``paper_parity.md`` / ``paper_parity.png`` from that file.

Measured per run: the training episode return at 8k / 10k (/ 13k) env steps (HalfCheetah episodes
are 1 000 steps, so the episode ending at that step), the deterministic (noise-free ODE) eval at the
same steps (5 episodes), α, ``−mean log π`` and σ at the end, the sampled-vs-ODE action gap, wall time.
The released code's own figures (issue 20, same machine type, seeds 1/3/4): 2 481 @ 10k and
3 123 @ 13k on average (seed 1: 2 016 / 2 913 / 3 709 at 8k / 10k / 13k).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from critics import _finished, run_jobs  # noqa: E402

from torchrl_sacflow.training import read_csv_scalar  # noqa: E402

RUNS_DIR = REPO / "outputs" / "paper_parity"
RESULTS = REPO / "benchmarks" / "results" / "paper_parity.json"
BASE = [
    "env=halfcheetah", "policy=flow_t", "collector.init_random_frames=5000", "eval.interval=2000",
    "eval.num_episodes=5", "checkpoint.interval=1000",
    "logger.progress_bar=false",
]
_PC = ["preset=paper_code"]
_VK = "policy.velocity_kwargs"
# `preset=paper` as it was before it took the released actor and α₀ 0.005: our Flow-T actor (d 64,
# pre-LayerNorm, sinusoidal time, SiLU, σ(s) head), target entropy 0, α₀ 0.2
_OLD_PAPER = ["preset=paper", "policy.sigma_head=state", f"{_VK}.d_model=64", *(f"~{_VK}.{k}" for k in (
    "obs_hidden", "norm_layout", "time_embedding", "ffn_activation", "input_norm", "log_std_init")),
    "policy.target_entropy=0.0", "optim.alpha_init=0.2"]
# row -> (overrides, what it is). The released code (`paper_code`), then one difference at a time
# switched to ours, then the paper's math as it is (`paper_today`) and the candidates for `paper`.
ROWS: dict[str, tuple[list[str], str]] = {
    "paper_code": (_PC, "released Flow-T code's configuration (`preset=paper_code`)"),
    "pc+path_logprob": (_PC + ["policy.log_prob=path"], "… with our exact path log-density"),
    "pc+sqrt_dt": (_PC + ["policy.noise_scale=sqrt_dt"], "… with step noise σ√Δt"),
    "pc+drift": (_PC + ["policy.drift_correction=true"], "… with the drift correction"),
    "pc+state_sigma": (_PC + ["policy.sigma_head=state"], "… with our state-only σ head"),
    "pc+no_actor_norm": (_PC + [f"{_VK}.input_norm=false", f"{_VK}.norm_layout=pre_layernorm"],
                         "… without batch renorm in the actor (our pre-LayerNorm blocks)"),
    "pc+our_sizes": (_PC + [f"{_VK}.d_model=64", f"{_VK}.obs_hidden=32", f"{_VK}.time_embedding=sinusoidal",
                            f"{_VK}.ffn_activation=silu"], "… with our sizes (d 64, sinusoidal time, SiLU)"),
    "pc+coarse_cadence": (_PC + ["collector.frames_per_batch=1000"],
                          "… with 1 000 updates after every 1 000 env steps (our default) instead of 10 after "
                          "every 10 (the released code: 1 after every step)"),
    "paper_today": ([*_OLD_PAPER, "collector.frames_per_batch=1000"],
                    "`preset=paper` before this work (exact density, target entropy 0, 1 000 updates per 1 000 "
                    "steps)"),
    "paper_alpha_fine": ([*_OLD_PAPER, "policy.target_entropy=auto_path", "optim.alpha_init=0.05"],
                         "`preset=paper` (our Flow-T actor) with α₀ = 0.2/K, target entropy −(K+1)·d, 10 updates "
                         "per 10 env steps"),
    "paper_candidate": (
        _PC + ["policy.log_prob=path", "policy.noise_scale=sqrt_dt", "policy.drift_correction=true",
               "policy.target_entropy=auto_path", "optim.alpha_init=0.05"],
        "the paper's math (exact path density, σ√Δt, drift correction) in the released actor architecture, "
        "α₀ = 0.2/K, target entropy −(K+1)·d"),
    "paper_code_exact": (
        _PC + ["+policy.velocity_kwargs.init=lecun_normal", "optim.alpha_objective=alpha"],
        "`paper_code` plus the two last differences a line-by-line reading found: flax's lecun-normal "
        "init (zero biases) in the actor and the α objective −α·(log π + H̄)"),
    "gaussian": (["policy=gaussian", "preset=paper"],
                 "the Gaussian SAC baseline (TorchRL's Tanh-Normal actor) in the same pipeline: `policy=gaussian "
                 "preset=paper` (the same critic, optimiser and cadence)"),
    "paper": (["preset=paper"],
              "`preset=paper` now: `paper_candidate` with α₀ = 0.005 (found as the candidate `paper_alpha_small`, "
              "renamed): the `−log σ` push (α per step and action entry) starts 10× smaller, and the target "
              "−(K+1)·d only lifts α again once σ falls below ≈ 0.1 (K = 4; higher where the tanh saturates)"),
}
CHECKPOINTS = (8000, 10000, 13000, 25000)


# --env: the task (a recipe env group). HalfCheetah keeps the original run folders and result keys
ENVS = {"halfcheetah": "HalfCheetah-v4", "hopper": "Hopper-v4", "walker2d": "Walker2d-v4", "ant": "Ant-v4"}
DEFAULT_ENV = "halfcheetah"


def _env_prefix(env: str) -> str:
    return "" if env == DEFAULT_ENV else f"{env}/"


def run_dir_for(frames: int, row: str, seed: int, env: str = DEFAULT_ENV) -> Path:
    return RUNS_DIR / _env_prefix(env) / str(frames) / row / f"seed{seed}"


def _key(frames: int, row: str, seed: int, env: str = DEFAULT_ENV) -> str:
    return f"{_env_prefix(env)}{frames}/{row}/seed{seed}"


def _split_key(key: str) -> tuple[str, int, str, int]:
    """``[env/]frames/row/seed<s>`` -> ``(env, frames, row, seed)``."""
    parts = key.split("/")
    env = parts[0] if len(parts) == 4 else DEFAULT_ENV
    frames, row, seed = parts[-3:]
    return env, int(frames), row, int(seed[4:])


def overrides_for(row: str, env: str) -> list[str]:
    """The recipe overrides of one row on one task; a row's own group choice replaces BASE's."""
    row_args = ROWS[row][0]
    groups = {a.split("=", 1)[0] for a in row_args if "=" in a and "." not in a.split("=", 1)[0]}
    base = [a for a in BASE if a.split("=", 1)[0] not in groups and not a.startswith("env=")]
    return [f"env={env}", *base, *row_args]


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _at(run_dir: Path, metric: str, step: int) -> float | None:
    steps, values = read_csv_scalar(run_dir, metric)
    return next((v for s, v in zip(steps, values) if s == step), None)


def train_return_at(run_dir: Path, step: int, window: int = 1000) -> float | None:
    """The training episode return at ``step``: the mean over the episodes that ended in the last
    ``window`` env steps up to it (HalfCheetah: the one 1 000-step episode ending there; Hopper, Walker2d
    and Ant end episodes at any step). ``None`` when no episode ended in that window."""
    steps, values = read_csv_scalar(run_dir, "train/episode_return")
    vals = [v for s, v in zip(steps, values) if step - window < s <= step]
    return float(np.mean(vals)) if vals else None


def _last(run_dir: Path, metric: str) -> float | None:
    _, values = read_csv_scalar(run_dir, metric)
    return values[-1] if values else None


def measure(run_dir: Path) -> dict:
    """What one finished run measured (see the module docstring)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    out = {"frames": summary["frames"], "wall_time_s": summary["wall_time_s"],
           "updates_per_s": summary["updates_per_s"]}
    for step in CHECKPOINTS:
        if step <= summary["frames"]:
            out[f"train_return_{step}"] = train_return_at(run_dir, step)
            out[f"eval_return_{step}"] = _at(run_dir, "eval/return_mean", step)
    for name in ("alpha", "entropy", "sigma_mean", "ode_action_gap"):
        out[name] = _last(run_dir, f"train/{name}")
    steps, values = read_csv_scalar(run_dir, "train/episode_return")
    out["train_curve"] = [[s, v] for s, v in zip(steps, values)]
    return out


def run(args: argparse.Namespace) -> None:
    results = load_results()
    env = args.env
    jobs = [(row, s) for s in args.seeds for row in args.rows]  # seed-major: every row gets a seed first
    pending = []
    for job in jobs:
        if _key(args.frames, *job, env) in results:
            continue
        if _finished(run_dir_for(args.frames, *job, env)):  # finished but not recorded (driver killed in between)
            record(args.frames, *job, env)
        else:
            pending.append(job)

    def args_for(job) -> list[str]:
        row, seed = job
        return [*overrides_for(row, env), f"seed={seed}", f"threads={args.threads}",
                f"collector.total_frames={args.frames}", *args.overrides,
                f"hydra.run.dir={run_dir_for(args.frames, row, seed, env)}"]

    def on_done(job) -> None:
        if _finished(run_dir_for(args.frames, *job, env)):
            record(args.frames, *job, env)
            report(args)

    run_jobs(pending, run_dir_for=lambda job: run_dir_for(args.frames, *job, env), args_for=args_for,
             parallel=args.parallel, threads=args.threads, on_done=on_done)


def record(frames: int, row: str, seed: int, env: str = DEFAULT_ENV) -> None:
    results = load_results()
    entry = measure(run_dir_for(frames, row, seed, env))
    entry["overrides"] = overrides_for(row, env) if env != DEFAULT_ENV else ROWS[row][0]
    results[_key(frames, row, seed, env)] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))


def _fmt(values: list, digits: int = 0) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    a = np.asarray(vals, dtype=float)
    text = f"{a.mean():.{digits}f}"
    if len(a) > 1:
        text += " (" + " / ".join(f"{v:.{digits}f}" for v in a) + ")"
    return text


def report(args: argparse.Namespace | None = None) -> None:
    results = load_results()
    lines = [
        "# Paper parity on HalfCheetah-v4 (issue 20)", "",
        "`python benchmarks/paper_parity.py run` (then `report`); each run is the MuJoCo recipe, Flow-T,",
        "5 000 uniform-random steps, then 10 updates after every 10 env steps (the presets' cadence; rows",
        "marked 1 000 use 1 000 after every 1 000), CrossQ critic 2 × 1024, batch 512, actor every 3rd update;",
        "1 torch thread, two runs at a time on a 2-core CPU. Cells: mean over seeds",
        "(per-seed values in brackets). *train* = training episode return of the episode ending at that step;",
        "*eval* = deterministic noise-free ODE, 5 episodes. α, entropy (−mean log π), σ and the sampled-vs-ODE",
        "action gap are the last logged values. The released JAX code, same machine type: **2 481 @ 10k,",
        "3 123 @ 13k** (mean of seeds 1/3/4; seed 1: 2 016 / 2 913 / 3 709 at 8k / 10k / 13k).", "",
    ]
    for env, frames in sorted({_split_key(k)[:2] for k in results}, key=lambda ef: (ef[0] != DEFAULT_ENV, ef)):
        steps = [s for s in CHECKPOINTS if s <= frames][-2:]
        head = ["row", "seeds"] + [f"train @{s // 1000}k" for s in steps] + [f"eval @{s // 1000}k" for s in steps] \
            + ["α", "entropy", "σ", "ODE gap", "wall min"]
        lines += [f"## {ENVS[env]}, {frames} env steps", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in ROWS:
            runs = [v for k, v in sorted(results.items()) if _split_key(k)[:3] == (env, frames, row)]
            if not runs:
                continue
            cells = [f"`{row}`", str(len(runs))]
            cells += [_fmt([r.get(f"train_return_{s}") for r in runs]) for s in steps]
            cells += [_fmt([r.get(f"eval_return_{s}") for r in runs]) for s in steps]
            cells += [_fmt([r.get("alpha") for r in runs], 3), _fmt([r.get("entropy") for r in runs], 1),
                      _fmt([r.get("sigma_mean") for r in runs], 2), _fmt([r.get("ode_action_gap") for r in runs], 2),
                      _fmt([r["wall_time_s"] / 60 for r in runs])]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Rows: " + "; ".join(f"`{r}` {ROWS[r][1]}" for r in ROWS), ""]
    out = RESULTS.with_suffix(".md")
    out.write_text("\n".join(lines))
    _plot(results)
    print("\n".join(lines))


def _plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({_split_key(k)[:2] for k in results}, key=lambda ef: (ef[0] != DEFAULT_ENV, ef))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), squeeze=False)
    for ax, (env, frames) in zip(axes[0], panels):
        for row in ROWS:
            curves = [v["train_curve"] for k, v in results.items() if _split_key(k)[:3] == (env, frames, row)]
            if not curves:
                continue
            steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
            mean = [np.mean([dict(map(tuple, c))[s] for c in curves]) for s in steps]
            ax.plot(steps, mean, marker="o", ms=3, label=f"{row} ({len(curves)})")
        if env == DEFAULT_ENV:
            ax.axhline(2481, color="k", ls=":", lw=1, label="released code @10k (3 seeds)")
            ax.axhline(3123, color="k", ls="--", lw=1, label="released code @13k (3 seeds)")
        ax.set_title(f"{ENVS[env]}, {frames} steps: training episode return")
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS.with_suffix(".png"), dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="start the missing runs (skips recorded/finished ones)")
    p_run.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p_run.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p_run.add_argument("--frames", type=int, default=10000)
    p_run.add_argument("--env", default=DEFAULT_ENV, choices=list(ENVS), help="the task (default halfcheetah)")
    p_run.add_argument("--parallel", type=int, default=2)
    p_run.add_argument("--threads", type=int, default=1)
    p_run.add_argument("overrides", nargs="*", help="extra recipe overrides for every run")
    sub.add_parser("report", help="record finished runs, then write the table and plot from "
                                  "benchmarks/results/paper_parity.json (starts nothing)")
    args = parser.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        record_finished()
    report(args)


def record_finished() -> None:
    """Record every finished run under ``outputs/paper_parity`` that the results file lacks."""
    results = load_results()
    for summary in sorted(RUNS_DIR.glob("**/seed*/summary.json")):
        run_dir = summary.parent
        key = str(run_dir.relative_to(RUNS_DIR))
        try:
            env, frames, row, seed = _split_key(key)
        except (ValueError, IndexError):
            continue
        if env in ENVS and row in ROWS and key not in results and _finished(run_dir):
            record(frames, row, seed, env)


if __name__ == "__main__":
    main()
