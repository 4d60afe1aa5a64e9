#!/usr/bin/env python
"""How many torch threads the learner should use with the in-process collector (issue 17, item 4).

    python -m benchmarks.perf.learner_threads            # preset=paper, Flow-T: the paper's configuration
    python -m benchmarks.perf.learner_threads --quick    # a smoke run, nothing written

With ``collector.num_workers=1`` the env steps in the learner's process and collection and updates
alternate: they never run at the same time, so a second learner thread competes only with *other*
processes. This script times the recipe's own update step (built from ``recipes/config`` with the
given overrides, exactly as ``recipes/train_mujoco.py`` builds it) with 1 and with all cores'
threads, interleaved in blocks of ``policy_delay`` updates (1 2 2 1 ...), in two conditions:

* **idle**: nothing else runs (the script warns when the 1-minute load average says otherwise);
* **loaded**: one busy-looping process per core but one (a second training run, a test suite, an
  editor's indexer on a 2-core box).

and under two OpenMP wait policies (``OMP_WAIT_POLICY``, read by the OpenMP runtime when torch
loads, so each policy runs in its own process): the runtime's default, whose idle threads spin
before they sleep, and ``PASSIVE``, whose idle threads sleep at once. A spinning thread that the
OS has descheduled stalls every parallel region until it runs again, which is what makes extra
threads so costly on a loaded machine.

Wall clock (thread CPU time would add up the threads). The table goes to
``benchmarks/results/learner_threads.md``; ``threads: auto`` in ``recipes/config/train_mujoco.yaml``
follows from it (``torchrl_sacflow.training.threads``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

os.environ.setdefault("RL_WARNINGS", "False")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.sweep import REPO, RESULTS_DIR  # noqa: E402

CONFIG_DIR = REPO / "recipes" / "config"
OUT = RESULTS_DIR / "learner_threads.md"


def build_update(overrides: list[str], obs_dim: int = 17, act_dim: int = 6):
    """The recipe's update step for ``overrides`` (HalfCheetah shapes) and one replay-like batch."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from torchrl.data import Bounded

    from torchrl_sacflow.training import SACUpdate, make_loss, make_optimizers, make_policy

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("train_mujoco", overrides=list(overrides))
    c = OmegaConf.to_container(cfg, resolve=True)
    opt = c["optim"]
    torch.manual_seed(0)
    actor = make_policy(c["policy"], Bounded(-1.0, 1.0, shape=(act_dim,)), obs_dim)
    bundle = make_loss(c["critic"], actor, observation_dim=obs_dim, action_dim=act_dim, gamma=opt["gamma"],
                       alpha_init=opt["alpha_init"], target_entropy=c["policy"]["target_entropy"], device="cpu",
                       alpha_objective=opt["alpha_objective"])
    optims = make_optimizers(bundle.loss_module, actor_lr=opt["actor_lr"], critic_lr=opt["critic_lr"],
                             alpha_lr=opt["alpha_lr"], actor_betas=(opt["actor_beta1"], 0.999),
                             critic_betas=(opt["critic_beta1"], 0.999), alpha_betas=(opt["alpha_beta1"], 0.999),
                             weight_decay=opt["weight_decay"])
    update = SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1], alpha_optim=optims[2],
                       target_updater=bundle.target_updater, policy_delay=bundle.policy_delay,
                       compile=opt["compile"], autocast=opt["autocast"])
    n = opt["batch_size"]
    batch = TensorDict({
        "observation": torch.randn(n, obs_dim), "action": torch.rand(n, act_dim) * 2 - 1,
        "next": {"observation": torch.randn(n, obs_dim), "reward": torch.randn(n, 1),
                 "done": torch.zeros(n, 1, dtype=torch.bool), "terminated": torch.zeros(n, 1, dtype=torch.bool)},
    }, [n])
    return update, batch


def time_threads(update, batch, thread_counts: list[int], rounds: int) -> dict[int, float]:
    """Median wall seconds per update for each thread count, blocks of ``policy_delay`` updates
    (one actor step each) interleaved A B B A ..."""
    block = update.policy_delay
    times: dict[int, list[float]] = {n: [] for n in thread_counts}
    for n in thread_counts:  # warm-up at every setting (thread pools start lazily)
        torch.set_num_threads(n)
        for _ in range(block):
            update(batch)
    for i in range(rounds):
        for n in thread_counts if i % 2 == 0 else thread_counts[::-1]:
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            for _ in range(block):
                update(batch)
            times[n].append((time.perf_counter() - t0) / block)
    return {n: statistics.median(v) for n, v in times.items()}


def start_load(processes: int) -> list[subprocess.Popen]:
    code = "while True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(processes)]


def measure(overrides: list[str], rounds: int) -> list[list]:
    """Rows ``[condition, threads, upd/s, ratio vs 1 thread]`` for this process's wait policy."""
    cores = report.cores()
    counts = sorted({1, cores})
    update, batch = build_update(overrides)
    rows = []
    for condition, hogs in (("idle", 0), (f"loaded ({cores - 1} busy process)", cores - 1)):
        procs = start_load(hogs)
        try:
            time.sleep(0.5 if hogs else 0.0)
            med = time_threads(update, batch, counts, rounds)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        rows += [[condition, n, f"{1 / med[n]:.2f}", f"**{med[1] / med[n]:.2f}**"] for n in counts]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="interleaved blocks per thread count and condition")
    p.add_argument("--wait-policies", default="default,PASSIVE",
                   help="OpenMP settings to compare: 'default' (OMP_WAIT_POLICY unset), an OMP_WAIT_POLICY "
                        "value (PASSIVE, ACTIVE), or VAR=VALUE (e.g. GOMP_SPINCOUNT=10000, libgomp's spin "
                        "iterations before an idle thread sleeps)")
    p.add_argument("--quick", action="store_true", help="2 rounds, small critics, nothing written")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one policy's measurement
    p.add_argument("overrides", nargs="*", default=None,
                   help="recipe overrides (default: env=halfcheetah policy=flow_t preset=paper)")
    args = p.parse_args(argv)
    overrides = args.overrides or ["env=halfcheetah", "policy=flow_t", "preset=paper"]
    if args.quick:
        overrides = [*overrides, "critic.num_cells=[64,64]", "optim.batch_size=64"]
        args.rounds = 2
    if args.worker:
        import json

        print("ROWS " + json.dumps(measure(overrides, args.rounds)), flush=True)
        return 0
    machine = report.machine_lines()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        print(f"learner_threads: warning: 1-minute load average {load:.2f}: the 'idle' rows are not idle",
              file=sys.stderr)
    import json

    rows = []
    for policy in [w for w in args.wait_policies.split(",") if w]:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        if "=" in policy:
            name, value = policy.split("=", 1)
            env[name] = value
        elif policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        cmd = [sys.executable, __file__, "--worker", "--rounds", str(args.rounds), *overrides]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        found = [line for line in out.splitlines() if line.startswith("ROWS ")]
        for row in json.loads(found[-1][5:]):
            rows.append([policy, *row])
            print(rows[-1], flush=True)
    cores = report.cores()
    lines = report.section(
        "Learner threads with the in-process collector (issue 17)",
        f"Command: `{report.command_line('benchmarks.perf.learner_threads', argv)}`", machine,
        f"The recipe's update step (`{' '.join(overrides)}`, HalfCheetah shapes, one batch reused), "
        f"{args.rounds} interleaved blocks of 3 updates (`preset=paper`'s policy delay: one actor step "
        f"per block) per thread count, wall clock; upd/s = 1 / median. *vs 1 thread* = speed ratio in "
        f"the same condition and wait policy. *loaded*: {cores - 1} single-core busy loop(s) beside the "
        f"learner. OpenMP setting: *default* = `OMP_WAIT_POLICY` unset (the OpenMP runtime's "
        f"spin-then-sleep), *PASSIVE* = idle threads sleep at once, `GOMP_SPINCOUNT=N` = spin N "
        f"iterations, then sleep (libgomp, torch's OpenMP on Linux); one process per setting.",
        report.table(["OpenMP setting", "condition", "torch threads", "updates/s", "vs 1 thread"], rows),
        level=1,
    )
    report.write_report(lines, None if args.quick else OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
