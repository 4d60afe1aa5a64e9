"""Data collection: TorchRL's ``Collector`` in-process, ``MultiSyncCollector`` for several workers,
``RayCollector`` for workers on a Ray cluster (one machine or many)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

from torch import nn
from torchrl.collectors import BaseCollector, Collector, MultiSyncCollector
from torchrl.envs import EnvBase
from torchrl.modules import get_primers_from_module

from torchrl_sacflow.training.config import check_collector_backend, check_compile_setting
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.signals import ignore_sigint
from torchrl_sacflow.training.threads import available_cores
from torchrl_sacflow.training.update import compile_options

__all__ = ["make_collector", "round_up_frames"]


def round_up_frames(total_frames: int, frames_per_batch: int) -> int:
    """``total_frames`` rounded up to whole batches (what the collector will actually deliver)."""
    return -(-int(total_frames) // int(frames_per_batch)) * int(frames_per_batch)


def make_collector(
    env_fn: Callable[[], EnvBase],
    policy: nn.Module,
    *,
    total_frames: int,
    frames_per_batch: int,
    init_random_frames: int = 0,
    num_workers: int = 1,
    seed: int | None = None,
    device: str = "cpu",
    learner_threads: int | None = None,
    track_traj_ids: bool = False,
    compile_policy: bool | str = False,
    backend: str = "local",
    sync: bool = True,
    ray_address: str | None = None,
) -> BaseCollector:
    """An off-policy collector that acts uniformly at random for its first ``init_random_frames``.

    Args:
        env_fn (callable): picklable env constructor (:func:`~torchrl_sacflow.training.env_maker`).
        policy (nn.Module): the exploration policy (the actor, sampling with noise). A policy with
            recurrent modules gets TorchRL's ``InitTracker`` and primers appended to the env.

    Keyword Args:
        total_frames (int): frames to deliver (rounded up to whole batches).
        frames_per_batch (int): frames per yielded batch, summed over workers.
        init_random_frames (int): leading frames taken with a random policy (learning starts).
        num_workers (int): local backend: 1 collects in this process with
            :class:`~torchrl.collectors.Collector`; ``> 1`` starts that many single-threaded
            processes under :class:`~torchrl.collectors.MultiSyncCollector` (batches from all
            workers, stacked). Ray backend: the number of remote collectors.
        seed (int, optional): env seed (each worker gets its own offset of it).
        device (str): policy and storing device (the env itself steps on CPU).
        learner_threads (int, optional): torch threads the main process keeps while workers run.
        track_traj_ids (bool): write ``("collector", "traj_ids")`` in every frame. Off by default
            with one worker: SAC's uniform replay reads episode ends from the done flags, and the
            ids cost a noticeable share of a single-env collector's time (``_update_traj_ids``
            each step; ``docs/fast_paths.md``).
            TorchRL's ``MultiSyncCollector`` relies on them, so with several workers they are on.
        compile_policy (bool or str): ``torch.compile`` the policy in the collector (TorchRL's
            ``compile_policy``, in each worker), with :func:`~torchrl_sacflow.training.update.compile_options`
            (a string is the compile mode), so a compiled policy draws the same noise as the eager
            one for a given seed. A flow policy's call at batch 1 is a few hundred small ops, which
            compiling fuses; a Gaussian policy has too few to gain (``docs/fast_paths.md``). Costs
            seconds of compilation at the third policy call (per worker). Default ``False``.
        backend (str): ``"local"`` (default): the collectors above, on this machine. ``"ray"``:
            TorchRL's :class:`~torchrl.collectors.distributed.RayCollector` with ``num_workers``
            remote single-env ``Collector`` actors (1 CPU and 1 torch thread each), wherever the
            Ray cluster has room. The policy runs on CPU in the workers (``device`` must be CPU),
            and their batches come back to this process over Ray's object store.
        sync (bool): ``backend="ray"`` only. ``True`` (default): each batch is one
            ``frames_per_batch // num_workers`` rollout from every worker, stacked
            (``[num_workers, frames_per_batch // num_workers]``), like ``MultiSyncCollector``.
            ``False``: each batch is a ``frames_per_batch`` rollout from whichever worker finished
            first (the others keep collecting meanwhile); ``init_random_frames`` then applies per
            worker, rounded up to whole batches, so at least that many leading frames are random.
        ray_address (str, optional): ``backend="ray"`` only: the cluster to join (``"host:port"``
            of a ``ray start --head`` node, or ``"auto"``). ``None`` starts a local Ray sized to this
            machine (``max(cores, num_workers)`` CPUs). If this process already runs Ray
            (``ray.is_initialized()``), that runtime is used as it is. A Ray runtime the collector
            started is shut down by ``collector.shutdown()`` (TorchRL's runtime lease).

    Weights: call ``collector.update_policy_weights_()`` after each round of updates when ``sync``
    is ``True``: nothing to send in-process, a copy into the workers' shared memory with
    ``MultiSyncCollector``, a send to every (idle) worker with ``RayCollector``. An asynchronous
    Ray collector pushes the weights itself (``update_after_each_batch``), to each worker as
    its batch is handed over, so that no push waits for a worker that is still collecting; a
    broadcast in between would wait for all of them.

    Call ``collector.shutdown()`` when done, also on errors: it stops the workers (and the Ray
    runtime the collector started).

    Raises:
        ConfigError: for a setting out of range, or ``backend="ray"`` without Ray installed.
    """
    if num_workers < 1:
        raise ConfigError(f"collector.num_workers must be >= 1, got {num_workers}")
    if sync and frames_per_batch < num_workers:
        raise ConfigError(
            f"collector.frames_per_batch ({frames_per_batch}) must be >= collector.num_workers ({num_workers})"
        )
    check_compile_setting(compile_policy, "collector.compile_policy", device)
    check_collector_backend(backend, sync=sync, ray_address=ray_address, device=device)
    compiled = None
    if compile_policy and isinstance(policy, nn.Module):
        # warm-up 2: the first calls see the carrier before the policy has written its keys, and
        # compiling then would guard on that key set and recompile at the next call
        compiled = {"options": compile_options(compile_policy if isinstance(compile_policy, str) else None),
                    "warmup": 2}
    common = dict(
        # TorchRL adds InitTracker and the primers for a recurrent policy (what v0.15 will do by
        # default); for the others it would append an InitTracker nothing reads
        auto_register_policy_transforms=isinstance(policy, nn.Module)
        and get_primers_from_module(policy, warn=False) is not None,
        frames_per_batch=int(frames_per_batch),
        total_frames=round_up_frames(total_frames, frames_per_batch),
        init_random_frames=int(init_random_frames),
        policy_device=device,
        storing_device=device,
        env_device="cpu",
        compile_policy=compiled,
    )
    if backend == "ray":
        if sync and frames_per_batch % num_workers:
            raise ConfigError(f"collector.frames_per_batch ({frames_per_batch}) must be a multiple of "
                              f"collector.num_workers ({num_workers}) with collector.sync=true")
        return _make_ray_collector(env_fn, policy, common, num_workers=num_workers, seed=seed, sync=sync,
                                   ray_address=ray_address, track_traj_ids=track_traj_ids)
    if num_workers == 1:
        collector = Collector(env_fn, policy, track_traj_ids=bool(track_traj_ids), **common)
    else:
        collector = MultiSyncCollector(
            [env_fn] * num_workers,
            policy,
            num_threads=learner_threads,
            num_sub_threads=1,
            cat_results="stack",
            init_fn=ignore_sigint,
            **common,
        )
    if seed is not None:
        collector.set_seed(int(seed))
        # The collector reset its env(s) when it was built, before this seed: without a reset the
        # first episode starts from an unseeded state and a run is not reproducible.
        collector.reset()
    return collector


def _make_ray_collector(
    env_fn: Callable[[], EnvBase],
    policy: nn.Module,
    common: dict[str, Any],
    *,
    num_workers: int,
    seed: int | None,
    sync: bool,
    ray_address: str | None,
    track_traj_ids: bool,
) -> BaseCollector:
    """``make_collector(backend="ray")``: TorchRL's ``RayCollector``, seeded and with the policy's weights pushed."""
    from torchrl.collectors.distributed import RayCollector

    frames_per_batch, init_random_frames = common["frames_per_batch"], common["init_random_frames"]
    ray_init_config = {
        "address": ray_address,
        # a local Ray: one logical CPU per worker at least, or the remote collectors would wait forever
        "num_cpus": None if ray_address else max(available_cores(), num_workers),
        "include_dashboard": False,
        # the workers' stdout would come back prefixed with each actor's repr (the whole policy)
        "log_to_driver": False,
    }
    remote_config = {
        "num_cpus": 1,
        # one torch thread per worker, as MultiSyncCollector's num_sub_threads=1 (read at torch's import)
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
    }
    collector_kwargs = {
        "auto_register_policy_transforms": common["auto_register_policy_transforms"],
        "compile_policy": common["compile_policy"],
        "track_traj_ids": bool(track_traj_ids),
    }
    with warnings.catch_warnings():
        # async + init_random_frames: TorchRL warns that it does not coordinate when the workers stop
        # acting at random; the per-worker rule is make_collector's documented behaviour
        warnings.filterwarnings("ignore", message="async distributed data collection with init_random_frames")
        collector = RayCollector(
            env_fn,
            policy,
            collector_class=Collector,
            num_collectors=num_workers,
            frames_per_batch=frames_per_batch,
            total_frames=common["total_frames"],
            # RayCollector hands each worker init_random_frames // num_workers: whole batches of the
            # total, so that a synchronous Ray run acts at random for exactly as long as a local one
            init_random_frames=round_up_frames(init_random_frames, frames_per_batch) if init_random_frames else 0,
            sync=sync,
            update_after_each_batch=not sync,
            policy_device=common["policy_device"],
            storing_device=common["storing_device"],
            env_device=common["env_device"],
            collector_kwargs=collector_kwargs,
            ray_init_config=ray_init_config,
            remote_configs=remote_config,
        )
    try:
        if seed is not None:
            collector.set_seed(int(seed))
            collector.map_fn("reset")  # as for the local collectors: the first episode from the seeded state
        # connects the weight-sync channel and sends the weights the workers start from
        collector.update_policy_weights_()
    except BaseException:
        collector.shutdown()
        raise
    return collector
