#!/usr/bin/env python
"""Scaling collection out: frames/s of the Ray backend (TorchRL's ``RayCollector``) against the
local collectors, the per-round cost of pushing the weights to the workers, and the learner's
update rate the collection has to keep up with.

    python -m benchmarks.perf.scaling                 # -> benchmarks/results/scaling.md
    python -m benchmarks.perf.scaling --quick         # a smoke run (seconds of collection), prints only
    python -m benchmarks.perf.scaling --ray-address <head>:6379 --workers 1,2,4,8   # on a Ray cluster

Everything is built with the recipes' own builders and config files (hydra compose), so a row
measures what ``collector.backend=... collector.num_workers=...`` runs:

* **collection**: for each env (``halfcheetah``: HalfCheetah-v4 with the MuJoCo recipe's Flow-T;
  ``robomimic``: scripted-Lift ``make_robomimic_env`` with the Robomimic recipe's Flow-T, one frame
  = one chunk of ``action_chunk`` actions), each backend (``local``: ``Collector`` for 1 worker,
  ``MultiSyncCollector`` for more; ``ray``: ``RayCollector``, ``--ray-modes`` sync and/or async)
  and each worker count, ``make_collector`` builds the collector, one warm-up batch is taken,
  then ``--batches`` batches of ``--frames-per-batch`` frames are timed (wall clock, nothing
  else running in this process between batches: the learner's share is in the third table).
  frames/s = timed frames / timed seconds. Startup = build + warm-up batch.
* **weight sync**: with a synchronous collector paused between batches (as the recipe calls it,
  after a round of updates), the wall time of ``collector.update_policy_weights_()`` after the
  actor's parameters changed, ``--sync-rounds`` times; median and interquartile range. The
  payload is the actor's parameters and buffers (``TensorDict.from_module``), float32.
* **learner**: SAC updates/s of the MuJoCo recipe's update step (Flow-T, K=4, the recipe's batch
  size, eager, ``--threads`` threads), on random HalfCheetah-shaped batches
  (``benchmarks.perf.throughput``'s ``ProjectStep``). At the paper's UTD 1 the learner consumes
  that many frames/s: collection beyond it only helps with a higher UTD ratio or a faster learner.

A local Ray (``--ray-address`` unset) is started once, with ``max(cores, max workers)`` CPUs, and
shared by the Ray rows (each row's ``RayCollector`` uses it and leaves it running); the script
shuts it down at the end.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("RL_WARNINGS", "False")
warnings.filterwarnings("ignore")

import logging  # noqa: E402

import torch  # noqa: E402

logging.getLogger("torchrl").setLevel(logging.WARNING)

from benchmarks import report  # noqa: E402
from benchmarks.sweep import REPO, RESULTS_DIR  # noqa: E402

CONFIG_DIR = REPO / "recipes" / "config"
ENVS = ("halfcheetah", "robomimic")


def _compose(config: str, overrides: list[str]) -> dict:
    """A recipe's config as plain data, as the recipe resolves it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose(config, overrides=overrides), resolve=True)


class Task:
    """An env constructor and the recipe's exploration actor for it (CPU, as the workers run it)."""

    def __init__(self, name: str, workdir: Path):
        from torchrl_sacflow.training import make_policy, observation_dim

        self.name = name
        if name == "halfcheetah":
            from torchrl_sacflow.training import env_maker

            c = _compose("train_mujoco", ["env=halfcheetah", "policy=flow_t"])
            self.env_fn = env_maker(c["env"]["id"])
            self.label = f"{c['env']['id']}, Flow-T (K={c['policy']['num_steps']})"
            self.unit = "env steps"
        elif name == "robomimic":
            from torchrl_sacflow.robomimic import generate_scripted_demos, make_robomimic_env
            from torchrl_sacflow.training.offline_online import read_task_env_args

            c = _compose("train_robomimic", ["policy=flow_t"])
            dataset = workdir / "lift_scripted.hdf5"
            generate_scripted_demos(dataset, episodes=2, seed=0)  # only its env_args are used
            env_args = read_task_env_args(dataset, c["task"])
            h = c["action_chunk"]
            self.env_fn = functools.partial(make_robomimic_env, env_args, obs_keys=c["obs_keys"], action_chunk=h,
                                            gamma=c["gamma"], max_episode_steps=c["max_episode_steps"])
            self.label = f"Robomimic Lift (scripted), Flow-T (K={c['policy']['num_steps']}), chunks of {h}"
            self.unit = f"chunks of {h} steps"
        else:
            raise ValueError(f"unknown env {name!r}: expected one of {ENVS}")
        env = self.env_fn()
        self.actor = make_policy(c["policy"], env.action_spec, observation_dim(env))
        env.close()
        self.policy_cfg = c["policy"]

    def payload(self) -> tuple[int, int]:
        """(parameters, bytes sent per worker per push: parameters and buffers)."""
        from tensordict import TensorDict

        weights = TensorDict.from_module(self.actor)
        params = sum(p.numel() for p in self.actor.parameters())
        nbytes = sum(t.numel() * t.element_size() for t in weights.values(include_nested=True, leaves_only=True))
        return params, nbytes


def _quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def bench(task: Task, backend: str, workers: int, sync: bool, args) -> tuple[dict, dict | None]:
    """One collection row, and (synchronous collectors) the weight-sync row of the same collector."""
    from torchrl_sacflow.training import make_collector

    fpb = args.frames_per_batch[task.name]
    # one batch more than timed, and the weight pushes before the last: the collector is still running
    total = fpb * (args.batches + 2)
    t0 = time.perf_counter()
    collector = make_collector(task.env_fn, task.actor, total_frames=total, frames_per_batch=fpb,
                               num_workers=workers, seed=0, learner_threads=args.threads, backend=backend,
                               sync=sync)
    try:
        batches = iter(collector)
        next(batches)
        startup = time.perf_counter() - t0
        times, frames = [], 0
        t_all = time.perf_counter()
        for _ in range(args.batches):
            t = time.perf_counter()
            frames += next(batches).numel()
            times.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t_all
        row = {"env": task.name, "backend": backend, "mode": "sync" if sync else "async", "workers": workers,
               "fpb": fpb, "frames_per_s": frames / elapsed, "batch_s": statistics.median(times),
               "startup_s": startup}
        sync_row = None
        if sync:  # an asynchronous collector's workers are busy between batches: the recipe does not push then
            pushes = []
            for _ in range(args.sync_rounds):
                with torch.no_grad():
                    for p in task.actor.parameters():
                        p.add_(1e-6)
                t = time.perf_counter()
                collector.update_policy_weights_()
                pushes.append(time.perf_counter() - t)
            params, nbytes = task.payload()
            sync_row = {"env": task.name, "backend": backend, "workers": workers, "params": params, "bytes": nbytes,
                        "median_ms": 1e3 * statistics.median(pushes), "q1_ms": 1e3 * _quantile(pushes, 0.25),
                        "q3_ms": 1e3 * _quantile(pushes, 0.75)}
    finally:
        collector.shutdown()
        torch.set_num_threads(args.threads)  # a MultiSyncCollector may have changed it
    return row, sync_row


def bench_learner(args) -> dict:
    """SAC updates/s of the MuJoCo recipe's step (Flow-T, K=4, the recipe's batch size, eager)."""
    import throughput

    batch_size = _compose("train_mujoco", ["env=halfcheetah", "policy=flow_t"])["optim"]["batch_size"]
    batches = throughput.make_batches(8, batch_size, "cpu")
    step = throughput.ProjectStep("flow_t", 4, "cpu", "eager")
    for b in batches[:2]:
        step(b)
    times = []
    for i in range(args.learner_updates):
        t = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - t)
    return {"batch": batch_size, "updates_per_s": 1.0 / statistics.median(times), "threads": args.threads}


def machine_lines(args) -> list[str]:
    """The report's header bullets: the machine, and the Ray cluster the rows ran on."""
    import ray

    cluster = ray.cluster_resources()
    where = f"cluster at {args.ray_address}" if args.ray_address else "local Ray started by this script"
    return report.machine_lines(versions={"ray": ray.__version__}) + [
        f"- Ray: {where}, {int(cluster.get('CPU', 0))} CPUs on {len(ray.nodes())} node(s); each worker 1 CPU, "
        f"1 torch thread; learner threads: {args.threads}",
    ]


def format_collect(rows) -> list[str]:
    return report.table(
        ["env", "backend", "mode", "workers", "frames/batch", "frames/s", "s/batch (median)", "startup s"],
        [[r["env"], r["backend"], r["mode"], r["workers"], r["fpb"], f"**{r['frames_per_s']:.0f}**",
          f"{r['batch_s']:.3f}", f"{r['startup_s']:.1f}"] for r in rows],
    )


def format_sync(rows) -> list[str]:
    return report.table(
        ["env", "backend", "workers", "actor parameters", "MiB per worker", "`update_policy_weights_()` ms (IQR)"],
        [[r["env"], r["backend"], r["workers"], f"{r['params']:,}", f"{r['bytes'] / 2**20:.2f}",
          f"**{r['median_ms']:.2f}** ({r['q1_ms']:.2f}–{r['q3_ms']:.2f})"] for r in rows],
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny batches, few of them; writes nothing "
                   "unless --out is given")
    p.add_argument("--envs", default=",".join(ENVS))
    p.add_argument("--backends", default="local,ray")
    p.add_argument("--workers", default="1,2", help="worker counts (each backend)")
    p.add_argument("--ray-modes", default="sync,async", help="RayCollector modes (collector.sync true / false)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting a local Ray")
    p.add_argument("--frames-per-batch", default=None,
                   help="frames per batch, e.g. 1000 or halfcheetah=1000,robomimic=50 (default: the recipes' "
                        "defaults, 1000 and 50)")
    p.add_argument("--batches", type=int, default=10, help="timed batches per collection row")
    p.add_argument("--sync-rounds", type=int, default=20, help="timed weight pushes per row")
    p.add_argument("--learner-updates", type=int, default=30, help="timed updates of the learner row (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this (learner) process")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/results/scaling.md)")
    args = p.parse_args(argv)
    fpb = {"halfcheetah": 1000, "robomimic": 50}
    if args.quick:
        fpb = {"halfcheetah": 20, "robomimic": 4}
        args.batches, args.sync_rounds, args.learner_updates = 2, 2, min(args.learner_updates, 2)
    if args.frames_per_batch:
        for item in args.frames_per_batch.split(","):
            env, _, value = item.rpartition("=")
            for name in ([env] if env else ENVS):
                fpb[name] = int(value)
    args.frames_per_batch = fpb
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    envs = [e for e in args.envs.split(",") if e]
    backends = [b for b in args.backends.split(",") if b]
    workers = [int(w) for w in args.workers.split(",") if w]
    modes = [m == "sync" for m in args.ray_modes.split(",") if m]
    command = report.command_line("benchmarks.perf.scaling", argv)
    t_start = time.perf_counter()

    import ray

    from torchrl_sacflow.training.threads import available_cores

    if args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=max([available_cores(), *workers]), include_dashboard=False, log_to_driver=False)
    collect_rows, sync_rows, learner = [], [], None
    try:
        header = machine_lines(args)
        with tempfile.TemporaryDirectory() as workdir:
            tasks = [Task(name, Path(workdir)) for name in envs]
            grid = [(task, backend, w, sync) for task in tasks for backend in backends for w in workers
                    for sync in (modes if backend == "ray" else [True])]
            for task, backend, w, sync in grid:
                row, sync_row = bench(task, backend, w, sync, args)
                collect_rows.append(row)
                print(format_collect([row])[-1], flush=True)
                if sync_row is not None:
                    sync_rows.append(sync_row)
                    print(format_sync([sync_row])[-1], flush=True)
        if args.learner_updates > 0:
            learner = bench_learner(args)
            print(f"learner: {learner['updates_per_s']:.1f} updates/s", flush=True)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t_start

    lines = report.section("Scaling collection out: Ray workers against the local collectors",
                           f"Command: `{command}` (wall time {wall / 60:.1f} min)", header, level=1)
    lines += report.section(
        "Collection (frames/s, the learner idle)",
        [f"- {t.name}: {t.label}; a frame is one of its {t.unit}" for t in tasks],
        "`make_collector(backend=..., num_workers=..., sync=...)` with the recipes' env and actor (exploration "
        "noise on). local: `Collector` in this process (1 worker) or `MultiSyncCollector` (single-threaded "
        "worker processes); ray: `RayCollector` with that many remote `Collector`s, sync = one rollout of "
        "frames/batch ÷ workers from each, stacked; async = each batch from the first worker to finish. "
        f"After one warm-up batch, {args.batches} batches timed back to back (wall clock); startup = build + "
        "warm-up batch (Ray: starting the worker processes, which import torch and TorchRL, and the "
        "weight-sync channel).",
        format_collect(collect_rows),
    )
    if sync_rows:
        lines += report.section(
            "Weight sync per round",
            f"`collector.update_policy_weights_()` between two batches of a synchronous collector, after the "
            f"actor's parameters changed, {args.sync_rounds} times: local 1 worker has nothing to send (the "
            f"collector acts with the learner's actor; TorchRL's bookkeeping remains), `MultiSyncCollector` copies into the workers' shared memory, "
            f"`RayCollector` sends every tensor to each worker (TorchRL's `RayWeightSyncScheme`: torch.distributed "
            f"gloo, point to point) and waits until the workers have applied them.",
            format_sync(sync_rows),
        )
    if learner:
        lines += report.section(
            "Learner",
            f"The MuJoCo recipe's SAC update (Flow-T, K=4, batch {learner['batch']}, eager, "
            f"{learner['threads']} thread(s)): **{learner['updates_per_s']:.1f} updates/s**, i.e. at the paper's "
            f"UTD 1 (one update per collected frame) the learner consumes "
            f"{learner['updates_per_s']:.1f} frames/s. Compare with the collection rows above.",
        )
    out = Path(args.out) if args.out else RESULTS_DIR / "scaling.md"
    report.write_report(lines, out if not args.quick or args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
