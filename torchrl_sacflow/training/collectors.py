"""Data collection: TorchRL's ``Collector`` in-process, ``MultiSyncCollector`` for several workers."""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchrl.collectors import BaseCollector, Collector, MultiSyncCollector
from torchrl.envs import EnvBase
from torchrl.modules import get_primers_from_module

from torchrl_sacflow.training.config import check_compile_setting
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.signals import ignore_sigint
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
        num_workers (int): 1 collects in this process with :class:`~torchrl.collectors.Collector`;
            ``> 1`` starts that many single-threaded processes under
            :class:`~torchrl.collectors.MultiSyncCollector` (batches from all workers, stacked).
        seed (int, optional): env seed (each worker gets its own offset of it).
        device (str): policy and storing device (the env itself steps on CPU).
        learner_threads (int, optional): torch threads the main process keeps while workers run.
        track_traj_ids (bool): write ``("collector", "traj_ids")`` in every frame. Off by default
            with one worker: SAC's uniform replay reads episode ends from the done flags, and the
            ids cost ~10 % of a single-env collector's time (``_update_traj_ids`` each step).
            TorchRL's ``MultiSyncCollector`` relies on them, so with several workers they are on.
        compile_policy (bool or str): ``torch.compile`` the policy in the collector (TorchRL's
            ``compile_policy``, in each worker), with :func:`~torchrl_sacflow.training.update.compile_options`
            (a string is the compile mode), so a compiled policy draws the same noise as the eager
            one for a given seed. A flow policy's call at batch 1 is a few hundred small ops, and
            compiling it made HalfCheetah collection 1.4-1.6x faster on a 2-core CPU; the Gaussian
            policy was 8 % slower (``benchmarks/results/throughput_notes.md``, row 31). Costs
            seconds of compilation at the third policy call (per worker). Default ``False``.

    Call ``collector.update_policy_weights_()`` after each round of updates: a no-op in-process,
    a weight broadcast to the workers otherwise.
    """
    if num_workers < 1:
        raise ConfigError(f"collector.num_workers must be >= 1, got {num_workers}")
    if frames_per_batch < num_workers:
        raise ConfigError(
            f"collector.frames_per_batch ({frames_per_batch}) must be >= collector.num_workers ({num_workers})"
        )
    check_compile_setting(compile_policy, "collector.compile_policy", device)
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
