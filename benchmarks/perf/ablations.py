#!/usr/bin/env python
"""Same-process A/B of one speed-up of the recipe's step: the step as built vs the step with that
speed-up switched off, interleaved single updates (A B B A ...), thread CPU time, one thread.

Usage: ``python -m benchmarks.perf.ablations POLICY BATCH WHAT [PAIRS]`` with ``WHAT`` one of

* ``tensor_critic``: B evaluates the critics through SACLoss's ``qvalue_v2_loss`` and TensorDict path;
* ``softupdate``: B steps the targets with TorchRL's ``SoftUpdate`` instead of ``FusedSoftUpdate``;
* ``split_actor``: both steps compiled; B compiles the whole actor loss as one function instead of
  the draw and the loss around eager critics (``SACUpdate._split_actor_losses``).
* ``compile_policy``: not the step but collection: A is the recipe's collector with
  ``compile_policy=True``, B the same collector with the eager policy (HalfCheetah, 1 worker;
  ``BATCH`` = frames per collected batch, ``PAIRS`` = interleaved batch pairs, default 12).

Prints the median times and the median per-pair speed ratio (> 1: the speed-up helps) with its IQR.
"""
from __future__ import annotations

import functools
import statistics
import sys
import time

import torch

from benchmarks.perf import throughput as T

WHATS = ("tensor_critic", "softupdate", "split_actor", "compile_policy")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(argv) < 3 or argv[0] not in T.POLICIES or argv[2] not in WHATS:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    policy, batch, what = argv[0], int(argv[1]), argv[2]
    if what == "compile_policy":
        return compile_policy_ab(policy, batch, int(argv[3]) if len(argv) > 3 else 12)
    pairs = int(argv[3]) if len(argv) > 3 else 60
    from torchrl.objectives import SACLoss, SoftUpdate

    torch.set_num_threads(1)
    batches = T.make_batches(8, batch, "cpu", seed=batch)
    mode = "compile" if what == "split_actor" else "eager"
    torch.manual_seed(0)
    a = T.ProjectStep(policy, 4, "cpu", mode)
    torch.manual_seed(0)
    b = T.ProjectStep(policy, 4, "cpu", mode)
    step_b = b
    if what == "split_actor":
        from torchrl_sacflow.training.update import compile_options

        assert a.update.actor_losses == a.update._split_actor_losses
        b.update.actor_losses = torch.compile(b.update._actor_losses, options=compile_options())
    elif what == "tensor_critic":
        b.loss_module._ensemble = None  # the actor loss and target take the TensorDict path
        b.update._critic_loss = functools.partial(SACLoss.qvalue_v2_loss, b.loss_module)
    elif what == "softupdate":
        b.update.target_updater = SoftUpdate(b.loss_module, tau=0.005)
    for i in range(4):
        a(batches[i])
        step_b(batches[i])
    ta, tb = T.time_interleaved(a, step_b, batches, pairs=pairs, device="cpu", clock=time.thread_time)
    ratios = sorted(y / x for x, y in zip(ta, tb))
    print(f"{what} {policy} batch {batch}: with {statistics.median(ta) * 1e3:.2f} ms, without "
          f"{statistics.median(tb) * 1e3:.2f} ms, speed ratio {statistics.median(ratios):.3f} "
          f"(IQR {T._quantile(ratios, 0.25):.3f}-{T._quantile(ratios, 0.75):.3f}), {pairs} pairs")
    return 0


def compile_policy_ab(policy: str, frames: int, pairs: int) -> int:
    """Frames/s of the recipe's one-worker collector with and without ``compile_policy``."""
    from types import SimpleNamespace

    torch.set_num_threads(1)
    args = SimpleNamespace(frames_per_batch=frames, threads=1)
    torch.manual_seed(0)
    a = T.ProjectCollection(policy, 1, args, pairs + 1, mode="compile")
    torch.manual_seed(0)
    b = T.ProjectCollection(policy, 1, args, pairs + 1, mode="eager")
    t0 = time.perf_counter()
    a.batch()  # compiles the policy (after TorchRL's warm-up calls)
    compile_s = time.perf_counter() - t0
    b.batch()
    rates = {a: [], b: []}
    for r in range(pairs):
        for side in (a, b) if r % 2 == 0 else (b, a):
            t = time.thread_time()
            n = side.batch()
            rates[side].append(n / (time.thread_time() - t))
    a.close()
    b.close()
    ratios = sorted(x / y for x, y in zip(rates[a], rates[b]))
    print(f"compile_policy {policy}, {frames} frames per batch: with {statistics.median(rates[a]):.0f} frames/s, "
          f"without {statistics.median(rates[b]):.0f} frames/s, speed ratio {statistics.median(ratios):.3f} "
          f"(IQR {T._quantile(ratios, 0.25):.3f}-{T._quantile(ratios, 0.75):.3f}), {pairs} pairs; first batch "
          f"(with compilation) {compile_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
