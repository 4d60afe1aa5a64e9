#!/usr/bin/env python
"""Throughput of the SAC Flow recipe's training step and data collection, side by side with a
hand-written PyTorch yardstick, the single-file SAC Flow of ``examples/sac_flow_single_file.py``.

One command (``python -m benchmarks.perf.throughput``; ``--quick`` for a smoke run) prints a markdown
table and writes it to ``benchmarks/results/throughput_<device>.md`` with the command and the
machine at the top. Rows:

* **update**: SAC updates/s of the recipe's own step (``make_policy`` → ``make_loss`` →
  ``make_optimizers`` → :class:`~torchrl_sacflow.training.update.SACUpdate`) for each policy, batch
  size, K and mode (eager / ``torch.compile``), and the yardstick's updates/s for the same
  configuration, measured in the same process, one update at a time, interleaved (A B B A A B ...,
  ``--pairs`` pairs). The ratio column is the median over pairs of project / yardstick speed, so
  drifts of the machine's load cancel out; with one learner thread the clock is the thread's CPU
  time, which other processes on a shared machine do not inflate (``--clock``). Peak RSS is the process's high-water mark while that
  step runs (reset through ``/proc/self/clear_refs`` before each measurement). Two critic
  configurations (``--critics``): ``sac`` (twin 256×256 MLPs with soft targets, every policy, batch
  size and K) and ``crossq`` (the recipe's ``critic=crossq``: BatchRenorm critics, no target network,
  joint ``(s, a)``/``(s', a')`` batch, actor and α every 3rd update; ``--crossq-policies`` at the
  first batch size and K, hidden widths ``--crossq-cells``), against the yardstick's
  ``SAC`` / ``CrossQ`` of the example. CrossQ rows time cycles of 3 updates (one actor step each).
* **collect**: env frames/s of HalfCheetah-v4 with the policy in the loop (exploration mode),
  TorchRL ``Collector`` (1 worker) and ``MultiSyncCollector`` (``--workers``), next to a plain
  gymnasium loop (1 env) / ``AsyncVectorEnv`` (n envs, one batched policy call) with the
  yardstick's actor; eager, and with the policy call compiled on both sides (``--collect-modes``).

``--check`` verifies that, for equal parameters and equal noise, the yardstick and the recipe's
step compute the same three losses and leave the same parameters after a few updates (CrossQ: also
the same batch-renorm running statistics, over the batch-norm warm-up, batch renorm and two actor
steps), for every ``--policies`` × ``--critics``.

``--device cuda`` runs the accelerator path: batches from a replay buffer stored on the device, both
steps compiled (``mode="default"``) and captured with TorchRL/tensordict's ``CudaGraphModule``, Adam
``capturable``, as pytorch/rl's sota SAC does.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("RL_WARNINGS", "False")
warnings.filterwarnings("ignore")

import logging  # noqa: E402

import torch  # noqa: E402

logging.getLogger("torchrl").setLevel(logging.WARNING)

import examples.sac_flow_single_file as yardstick  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks.sweep import REPO, RESULTS_DIR  # noqa: E402

OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah-v4
ENV_ID = "HalfCheetah-v4"
POLICIES = ("flow_t", "flow_g", "flow_mlp", "gaussian")


CONFIG_DIR = REPO / "recipes" / "config"


CRITICS = ("sac", "crossq")


def recipe_config(policy: str, num_steps: int, critic: str = "sac", num_cells=None, **critic_overrides) -> dict:
    """The recipe's own config groups (policy, critic, optim) as plain dicts, K overridden, and the
    critic's hidden widths ``num_cells`` and other ``critic_overrides`` (e.g. ``warmup_steps``) if given."""
    from omegaconf import OmegaConf

    if critic not in CRITICS:
        raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
    cfg = OmegaConf.create(
        {
            "policy": OmegaConf.load(CONFIG_DIR / "policy" / f"{policy}.yaml"),
            "critic": OmegaConf.load(CONFIG_DIR / "critic" / f"{critic}.yaml"),
            "optim": OmegaConf.load(CONFIG_DIR / "optim" / "default.yaml"),
        }
    )
    c = OmegaConf.to_container(cfg, resolve=True)
    if c["policy"]["kind"] == "flow":
        c["policy"]["num_steps"] = int(num_steps)
    if num_cells is not None:
        c["critic"]["num_cells"] = [int(n) for n in num_cells]
    for key, value in critic_overrides.items():
        if key not in c["critic"]:
            raise KeyError(f"critic/{critic}.yaml has no {key!r}")
        c["critic"][key] = value
    return c


def critic_label(critic: str, num_cells) -> str:
    """The table's critic column: ``sac 256×256`` (as the SAC rows always read), ``crossq 2×1024``
    (layers × width)."""
    cells = [int(n) for n in num_cells]
    if critic != "sac" and len(set(cells)) == 1:
        return f"{critic} {len(cells)}×{cells[0]}"
    return f"{critic} " + "×".join(str(n) for n in cells)


# ---------------------------------------------------------------------------------------------
# memory: the process's RSS high-water mark, resettable on Linux
# ---------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not resettable: process peak
    return kib / 1024.0


# ---------------------------------------------------------------------------------------------
# the two training steps
# ---------------------------------------------------------------------------------------------
def _spec(device):
    from torchrl.data import Bounded

    return Bounded(-1.0, 1.0, shape=(ACT_DIM,), device=device)


class ProjectStep:
    """The recipe's step, built from the recipe's config files with its builders, as
    ``recipes/train_mujoco.py`` does (``make_policy`` → ``make_loss`` → ``make_optimizers`` →
    ``SACUpdate``)."""

    def __init__(self, policy: str, num_steps: int, device: str, mode: str, critic: str = "sac",
                 num_cells=None, **critic_overrides):
        from torchrl_sacflow.training import SACUpdate, make_loss, make_optimizers, make_policy

        c = recipe_config(policy, num_steps, critic, num_cells, **critic_overrides)
        opt = c["optim"]
        cuda = torch.device(device).type == "cuda"
        actor = make_policy(c["policy"], _spec(device), OBS_DIM).to(device)
        bundle = make_loss(c["critic"], actor, observation_dim=OBS_DIM, action_dim=ACT_DIM,
                           gamma=opt["gamma"], alpha_init=opt["alpha_init"],
                           target_entropy=c["policy"]["target_entropy"], device=device)
        optims = make_optimizers(
            bundle.loss_module, actor_lr=opt["actor_lr"], critic_lr=opt["critic_lr"], alpha_lr=opt["alpha_lr"],
            actor_betas=(opt["actor_beta1"], 0.999), critic_betas=(opt["critic_beta1"], 0.999),
            weight_decay=opt["weight_decay"])
        if cuda:  # CUDA-graph capture of Adam.step needs its step counters on the device
            for o in optims:
                for group in o.param_groups:
                    group["capturable"] = True
        self.loss_module = bundle.loss_module
        self.update = SACUpdate(
            bundle.loss_module,
            actor_optim=optims[0],
            critic_optim=optims[1],
            alpha_optim=optims[2],
            target_updater=bundle.target_updater,
            policy_delay=bundle.policy_delay,
            compile=(mode == "compile") and ("default" if cuda else True),
        )
        self.fn = self.update
        if cuda:
            from tensordict.nn import CudaGraphModule

            self.fn = CudaGraphModule(self.update, in_keys=[], out_keys=[], warmup=5)

    def __call__(self, batch):
        if torch.cuda.is_available():
            torch.compiler.cudagraph_mark_step_begin()
        return self.fn(batch[0])


class YardstickStep:
    """The hand-written step; compiled the same way as the project's (critic and actor steps)."""

    def __init__(self, policy: str, num_steps: int, device: str, mode: str, critic: str = "sac",
                 num_cells=None, **critic_overrides):
        c = recipe_config(policy, num_steps, critic, num_cells, **critic_overrides)
        opt, q = c["optim"], c["critic"]
        if critic == "crossq":  # no target network; BatchRenorm settings and actor period
            critic_kwargs = {"policy_delay": q["policy_delay"],
                             **{k: q[k] for k in ("momentum", "eps", "max_r", "max_d", "warmup_steps")}}
        else:
            critic_kwargs = {"tau": q["tau"]}
        with torch.device(device):
            self.sac = yardstick.make_agent(
                policy, OBS_DIM, ACT_DIM, num_steps=num_steps, critic=critic, device=device,
                hidden=tuple(q["num_cells"]), gamma=opt["gamma"], alpha_init=opt["alpha_init"],
                actor_lr=opt["actor_lr"], critic_lr=opt["critic_lr"], alpha_lr=opt["alpha_lr"],
                actor_betas=(opt["actor_beta1"], 0.999), critic_betas=(opt["critic_beta1"], 0.999),
                **critic_kwargs)
        cuda = torch.device(device).type == "cuda"
        if cuda:
            for opt in (self.sac.actor_opt, self.sac.q_opt, self.sac.alpha_opt):
                for group in opt.param_groups:
                    group["capturable"] = True
        if mode == "compile":  # the same compiler settings as the project's SACUpdate(compile=...)
            from torchrl_sacflow.training.update import compile_options

            options = compile_options("default" if cuda else None)
            self.sac.critic_step = torch.compile(self.sac.critic_step, options=options)
            self.sac.actor_step = torch.compile(self.sac.actor_step, options=options)
        self.fn = self.sac.update
        if cuda:
            from tensordict.nn import CudaGraphModule

            self.fn = CudaGraphModule(self.sac.update, warmup=5)

    def __call__(self, batch):
        if torch.cuda.is_available():
            torch.compiler.cudagraph_mark_step_begin()
        return self.fn(*batch[1])


def make_batches(num: int, batch_size: int, device: str, seed: int = 0):
    """``num`` batches sampled from a replay buffer on ``device`` holding random HalfCheetah-shaped
    transitions; each as ``(TensorDict for the project, plain tensors for the yardstick)``."""
    from tensordict import TensorDict

    from torchrl_sacflow.training.replay import make_replay_buffer

    g = torch.Generator().manual_seed(seed)
    n = max(4 * batch_size, 4096)
    data = TensorDict(
        {
            "observation": torch.randn(n, OBS_DIM, generator=g),
            "action": torch.rand(n, ACT_DIM, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(n, OBS_DIM, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "done": torch.rand(n, 1, generator=g) < 0.01,
                "terminated": torch.rand(n, 1, generator=g) < 0.01,
            },
        },
        batch_size=[n],
    )
    rb = make_replay_buffer(n, batch_size, device=device)
    rb.extend(data)
    out = []
    for _ in range(num):
        td = rb.sample().to(device)
        plain = (
            td["observation"],
            td["action"],
            td["next", "reward"].squeeze(-1),
            td["next", "observation"],
            td["next", "terminated"].squeeze(-1).float(),
        )
        out.append((td, plain))
    return out


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _clock(args):
    """Thread CPU time with one learner thread (robust to other processes on a shared machine),
    wall time otherwise (CPU time would add up the threads)."""
    if args.clock == "cpu" or (args.clock == "auto" and args.threads == 1 and not args.device.startswith("cuda")):
        return "cpu", time.thread_time
    return "wall", time.perf_counter


def time_interleaved(step_a, step_b, batches, *, pairs: int, device: str, clock):
    """Seconds per update of A and B, one update at a time in the order A B B A A B B A ...

    Alternating single updates puts both under the same machine load, and the ABBA order cancels
    any advantage of going first (warm caches). Returns the per-update times of A and of B.
    """
    times_a, times_b = [], []
    k = 0
    for i in range(pairs):
        order = ((step_a, times_a), (step_b, times_b))
        for step, times in order if i % 2 == 0 else order[::-1]:
            _sync(device)
            t0 = clock()
            step(batches[k % len(batches)])
            _sync(device)
            times.append(clock() - t0)
        k += 1
    return times_a, times_b


def _quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def bench_update(policy, num_steps, batch_size, mode, args, critic="sac", num_cells=None):
    if mode == "compile":
        # Each compiled row starts from an empty compiler cache: otherwise a second batch size makes
        # dynamo recompile with a dynamic batch dimension, and past its recompile limit (8 graphs per
        # function: the loss methods are shared by every row) it silently falls back to eager.
        torch._dynamo.reset()
    batches = make_batches(8, batch_size, args.device, seed=batch_size)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    proj = ProjectStep(policy, num_steps, args.device, mode, critic, num_cells)
    warm = args.warmup if mode == "eager" else max(args.warmup, 3)
    if args.device.startswith("cuda"):
        warm = max(warm, 8)  # CudaGraphModule runs 5 eager warm-up calls, then captures on the 6th
    for i in range(warm):
        proj(batches[i % len(batches)])
    _sync(args.device)
    proj_ready = time.perf_counter() - t0
    t0 = time.perf_counter()
    yard = YardstickStep(policy, num_steps, args.device, mode, critic, num_cells)
    for i in range(warm):
        yard(batches[i % len(batches)])
    _sync(args.device)
    yard_ready = time.perf_counter() - t0
    clock_name, clock = _clock(args)
    # CrossQ updates the actor every `policy_delay` calls: time whole cycles of that many updates
    # (each holds one actor step), not single updates (whose median would be a critic-only one)
    delay = proj.update.policy_delay
    if delay != getattr(yard.sac, "policy_delay", 1):
        raise RuntimeError(f"policy_delay differs: project {delay}, yardstick {yard.sac.policy_delay}")
    pairs = args.pairs if mode == "eager" else args.compile_pairs
    pairs = -(-pairs // delay) * delay
    tp, ty = time_interleaved(proj, yard, batches, pairs=pairs, device=args.device, clock=clock)
    tp = [sum(tp[i:i + delay]) / delay for i in range(0, pairs, delay)]  # mean time per update of a cycle
    ty = [sum(ty[i:i + delay]) / delay for i in range(0, pairs, delay)]
    ratios = [y / p for p, y in zip(tp, ty)]  # (project upd/s) / (yardstick upd/s) per pair (cycle)
    cells = recipe_config(policy, num_steps, critic, num_cells)["critic"]["num_cells"]
    return {
        "clock": clock_name,
        "policy": policy,
        "critic": critic_label(critic, cells),
        "K": "-" if policy == "gaussian" else num_steps,
        "batch": batch_size,
        "mode": mode,
        "project": 1.0 / statistics.median(tp),
        "yardstick": 1.0 / statistics.median(ty),
        "ratio": statistics.median(ratios),
        "ratio_q1": _quantile(ratios, 0.25),
        "ratio_q3": _quantile(ratios, 0.75),
        "cycle": delay,
        "warmup_s_project": proj_ready,
        "warmup_s_yardstick": yard_ready,
    }


# ---------------------------------------------------------------------------------------------
# --check: same losses and same updated parameters for the same parameters and noise
# ---------------------------------------------------------------------------------------------
_FLOW_T_NAMES = {
    "token_time": "time_proj",
    "token_action": "action_proj",
    "state_encoder": "obs_enc",
    "norm_self": "ln1",
    "self_value": "self_v",
    "self_out": "self_o",
    "norm_context": "ln_ctx",
    "cross_value": "cross_v",
    "cross_out": "cross_o",
    "norm_ffn": "ln2",
    "norm_out": "ln_out",
    "head": "out",
}


def library_to_yardstick(policy: str, loss_module, sac) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs ``(yardstick tensor, library tensor)`` covering every trainable tensor of both (the
    critics' buffers, CrossQ's batch-renorm statistics, are in :func:`critic_buffers`)."""
    pairs = []
    yard_actor = dict(sac.actor.named_parameters())
    for key, value in loss_module.actor_network_params.items(True, True):
        if not isinstance(value, torch.nn.Parameter) and not value.requires_grad:
            continue  # buffers (action bounds, time frequencies)
        key = list(key)
        if policy == "gaussian":  # ('module','0','module','0', i, w)
            pairs.append((yard_actor[f"net.{key[4]}.{key[5]}"], value))
            continue
        i = key.index("module", 2) + 1
        rest = key[i:]
        if rest[0] == "log_std_head":  # log_std_head.net.i.w
            pairs.append((yard_actor[f"log_std_net.{rest[2]}.{rest[3]}"], value))
            continue
        v = rest[2:]  # after 'rollout', 'velocity'
        if policy == "flow_mlp":
            if v[0] == "input":
                pairs.append((yard_actor[f"velocity.net.0.{v[2]}"], value))
            else:  # trunk.{1,3} -> net.{2,4}
                pairs.append((yard_actor[f"velocity.net.{int(v[1]) + 1}.{v[2]}"], value))
        elif policy == "flow_g":
            if v[0] == "input":
                h = value.shape[0] // 2
                pairs.append((yard_actor[f"velocity.gate.0.{v[2]}"], value[:h]))
                pairs.append((yard_actor[f"velocity.cand.0.{v[2]}"], value[h:]))
            else:
                name = "gate" if v[0] == "gate" else "cand"
                pairs.append((yard_actor[f"velocity.{name}.{int(v[1]) + 1}.{v[2]}"], value))
        else:
            name = ".".join(_FLOW_T_NAMES.get(p, p) for p in v)
            pairs.append((yard_actor[f"velocity.{name}"], value))
    critics = [(loss_module.qvalue_network_params, (sac.q1, sac.q2))]
    if hasattr(sac, "q1_target"):  # SAC; CrossQ has no target network
        critics.append((loss_module.target_qvalue_network_params, (sac.q1_target, sac.q2_target)))
    for params, nets in critics:
        pairs += _critic_pairs(params, nets, buffers=False)
    pairs.append((sac.log_alpha, loss_module.log_alpha))
    n_yard = sum(1 for _ in sac.actor.parameters()) + sum(1 for _, nets in critics for net in nets
                                                         for _ in net.parameters()) + 1
    if len({id(p) for p, _ in pairs}) != n_yard:
        raise RuntimeError(f"parameter mapping covers {len(pairs)} tensors, expected {n_yard}")
    return pairs


def _critic_pairs(params, nets, *, buffers: bool):
    """``(yardstick tensor, library tensor)`` for the critics' parameters (``buffers=False``) or
    buffers: the library stacks the copies (dim 0), keyed ``(..., layer index, name)``, and each
    yardstick critic is an ``nn.Sequential`` with the same layer indices (the MLP's ``Linear``
    layers; CrossQ's ``BRN, Linear, ReLU, BRN, ..., Linear``)."""
    pairs = []
    for key, value in params.items(True, True):
        layer, kind = key[-2], key[-1]
        if (kind in dict(nets[0][int(layer)].named_buffers(recurse=False))) != buffers:
            continue  # (the target copies hold the parameters as plain tensors: ask the yardstick)
        for j, net in enumerate(nets):
            pairs.append((getattr(net[int(layer)], kind), value[j]))
    return pairs


def critic_buffers(loss_module, sac) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs ``(yardstick buffer, library buffer)`` of the online critics: CrossQ's batch-renorm
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` (none for the SAC MLPs)."""
    pairs = _critic_pairs(loss_module.qvalue_network_params, (sac.q1, sac.q2), buffers=True)
    n_yard = sum(1 for net in (sac.q1, sac.q2) for _ in net.buffers())
    if len({id(b) for b, _ in pairs}) != n_yard:
        raise RuntimeError(f"buffer mapping covers {len(pairs)} tensors, expected {n_yard}")
    return pairs


def check(policies, num_steps: int = 4, batch_size: int = 64, updates: int | None = None, verbose=True,
          critic: str = "sac", num_cells=None, tamper=None, mode: str = "eager", **critic_overrides) -> dict:
    """Run ``updates`` steps of both from equal parameters with equal noise.

    Returns, per policy, ``(loss difference, parameter difference, statistics difference)``: the
    largest relative difference of the three losses over all updates (the later updates' losses
    also test the optimiser and target updates of the earlier ones); the mean absolute difference
    of all parameters (critics, targets, actor, log α) after the updates divided by the mean
    absolute parameter change they made (a max-norm on parameters would flag Adam's first steps on
    gradients that are ~0: their sign, and so a ±lr step, is decided by rounding); and the same
    measure for the critics' batch-renorm running statistics (``inf`` if their step counters
    differ; 0 for the SAC critics, which have none).

    ``critic="crossq"`` checks the CrossQ pair with ``num_cells`` (default: the config's) and, unless
    ``critic_overrides`` say otherwise, ``warmup_steps=2`` and ``updates=4``: the updates cover the
    batch-norm warm-up, batch renorm with clipped corrections after it, critic-only updates and two
    actor steps (calls 0 and 3 with ``policy_delay`` 3) scored with the running statistics.
    ``tamper(yardstick)`` may alter the yardstick after its parameters are copied (tests).
    ``mode="compile"`` checks the two compiled steps instead (slow: minutes of compilation).
    """
    if critic == "crossq":
        critic_overrides.setdefault("warmup_steps", 2)
    if updates is None:
        updates = 4 if critic == "crossq" else 2
    results = {}
    for policy in policies:
        batches = make_batches(updates, batch_size, "cpu", seed=1)
        if mode == "compile":
            torch._dynamo.reset()
        proj = ProjectStep(policy, num_steps, "cpu", mode, critic, num_cells, **critic_overrides)
        yard = YardstickStep(policy, num_steps, "cpu", mode, critic, num_cells, **critic_overrides)
        pairs = library_to_yardstick(policy, proj.loss_module, yard.sac)
        buffers = critic_buffers(proj.loss_module, yard.sac)
        with torch.no_grad():
            for y, lib in pairs + buffers:
                y.copy_(lib)
        if tamper is not None:
            tamper(yard.sac)
        start = [lib.detach().clone() for _, lib in pairs]
        stats_start = [lib.detach().clone() for _, lib in buffers]
        worst_loss = 0.0
        for batch in batches:
            torch.manual_seed(123)
            out = proj.update(batch[0])
            torch.manual_seed(123)
            q_loss, actor_loss, alpha_loss, _, _ = yard.sac.update(*batch[1])
            for a, b in ((out["loss_qvalue"], q_loss), (out["loss_actor"], actor_loss), (out["loss_alpha"], alpha_loss)):
                worst_loss = max(worst_loss, float((a - b).abs() / (1.0 + b.abs())))
        pairs = library_to_yardstick(policy, proj.loss_module, yard.sac)
        diff = torch.cat([(y.detach() - lib.detach()).abs().flatten() for y, lib in pairs]).mean()
        moved = torch.cat([(lib.detach() - s0).abs().flatten() for (_, lib), s0 in zip(pairs, start)]).mean()
        param_diff = float(diff / moved)
        stats_diff = 0.0
        buffers = critic_buffers(proj.loss_module, yard.sac)
        stats = [(y, lib, s0) for (y, lib), s0 in zip(buffers, stats_start) if lib.is_floating_point()]
        if stats:  # running means and variances; the step counters must be equal
            diff = torch.cat([(y - lib).abs().flatten() for y, lib, _ in stats]).mean()
            moved = torch.cat([(lib - s0).abs().flatten() for _, lib, s0 in stats]).mean()
            counters_equal = all(torch.equal(y, lib) for y, lib in buffers if not lib.is_floating_point())
            stats_diff = float(diff / moved) if counters_equal else math.inf
        results[policy] = (worst_loss, param_diff, stats_diff)
        if verbose:
            cells = recipe_config(policy, num_steps, critic, num_cells)["critic"]["num_cells"]
            print(f"check {policy:9s} K={num_steps} {critic_label(critic, cells):15s}: max rel. loss diff "
                  f"{worst_loss:.1e}; after {updates} updates, mean |param diff| / mean |param change| = "
                  f"{param_diff:.1e}" + (f"; batch-renorm statistics: {stats_diff:.1e}" if stats else ""))
    return results


# ---------------------------------------------------------------------------------------------
# collection
# ---------------------------------------------------------------------------------------------
class ProjectCollection:
    """The recipe's collector (``make_collector`` + ``make_env``), one ``batch()`` = one yielded batch."""

    def __init__(self, policy, workers, args, rounds, mode="eager"):
        from torchrl_sacflow.training.collectors import make_collector
        from torchrl_sacflow.training.envs import env_maker
        from torchrl_sacflow.training.policies import make_policy

        actor = make_policy(recipe_config(policy, 4)["policy"], _spec("cpu"), OBS_DIM)
        fpb = args.frames_per_batch
        self.collector = make_collector(env_maker(ENV_ID), actor, total_frames=fpb * (rounds + 1),
                                        frames_per_batch=fpb, num_workers=workers, seed=0,
                                        learner_threads=args.threads, compile_policy=mode == "compile")
        self.iterator = iter(self.collector)

    def batch(self) -> int:
        return next(self.iterator).numel()

    def close(self):
        self.collector.shutdown()


class YardstickCollection:
    """A plain gymnasium loop (1 env) / ``AsyncVectorEnv`` (n envs, one batched policy call per step)
    with the yardstick's actor; one ``batch()`` = the same number of frames as the collector's."""

    def __init__(self, policy, workers, args, mode="eager"):
        import gymnasium as gym

        from torchrl_sacflow.training.update import compile_options

        torch.manual_seed(0)
        self.actor = yardstick.make_agent(policy, OBS_DIM, ACT_DIM, num_steps=4).actor
        # compiled as the recipe's collector compiles its policy (same options)
        self.sample = torch.compile(self.actor.sample, options=compile_options()) if mode == "compile" \
            else self.actor.sample
        self.workers = workers
        self.steps = args.frames_per_batch // workers
        self.env = gym.make(ENV_ID) if workers == 1 else gym.vector.AsyncVectorEnv([lambda: gym.make(ENV_ID)] * workers)
        self.obs, _ = self.env.reset(seed=0)

    @torch.no_grad()
    def batch(self) -> int:
        # the transitions go into preallocated tensors, as a hand-written loop fills its replay
        # buffer (the collector's batch holds them too): observation, action, reward, next
        # observation, terminated, truncated
        single, n = self.workers == 1, self.workers
        obs_b, next_b = torch.empty(self.steps, n, OBS_DIM), torch.empty(self.steps, n, OBS_DIM)
        act_b, rew_b = torch.empty(self.steps, n, ACT_DIM), torch.empty(self.steps, n)
        term_b, trunc_b = torch.empty(self.steps, n, dtype=torch.bool), torch.empty(self.steps, n, dtype=torch.bool)
        for t in range(self.steps):
            s = torch.as_tensor(self.obs, dtype=torch.float32).reshape(n, OBS_DIM)
            act, _ = self.sample(s)
            obs, rew, term, trunc, _ = self.env.step(act.numpy()[0] if single else act.numpy())
            obs_b[t], act_b[t], next_b[t] = s, act, torch.as_tensor(obs, dtype=torch.float32).reshape(n, OBS_DIM)
            rew_b[t], term_b[t], trunc_b[t] = torch.as_tensor(rew), torch.as_tensor(term), torch.as_tensor(trunc)
            self.obs = obs
            if single and (term or trunc):
                self.obs, _ = self.env.reset()
            # (AsyncVectorEnv resets finished sub-envs by itself)
        self.last = (obs_b, act_b, rew_b, next_b, term_b, trunc_b)
        return self.steps * self.workers

    def close(self):
        self.env.close()


def bench_collect(policy, workers, args, mode="eager"):
    """Frames/s of both sides, one batch at a time, interleaved (A B B A ...) after one warm-up batch
    each; the ratio is the median over rounds of the two batches' speed ratio, so drifts of the
    machine's speed cancel out as in the update rows. With one worker both sides run in this thread,
    and the clock is its CPU time (``--threads 1``); with several, wall time."""
    rounds = args.collect_batches
    if mode == "compile":
        # as for the compiled update rows: the actors of earlier rows share code objects with this
        # one, and past dynamo's recompile limit it would run them uncompiled
        torch._dynamo.reset()
    clock = time.thread_time if workers == 1 and args.threads == 1 and args.clock != "wall" else time.perf_counter
    t0 = time.perf_counter()
    proj = ProjectCollection(policy, workers, args, rounds, mode)
    proj.batch()  # the first batch pays for starting workers and envs (and compiling the policy)
    startup_p = time.perf_counter() - t0
    t0 = time.perf_counter()
    yard = YardstickCollection(policy, workers, args, mode)
    yard.batch()
    startup_y = time.perf_counter() - t0
    rates_p, rates_y = [], []
    try:
        for r in range(rounds):
            order = ((proj, rates_p), (yard, rates_y))
            for side, rates in order if r % 2 == 0 else order[::-1]:
                t = clock()
                frames = side.batch()
                rates.append(frames / (clock() - t))
    finally:
        proj.close()
        yard.close()
        torch.set_num_threads(args.threads)  # the multi-process collector may have changed it
    ratios = [p / y for p, y in zip(rates_p, rates_y)]
    return {
        "policy": policy, "mode": mode, "workers": workers, "clock": "cpu" if clock is time.thread_time else "wall",
        "project": statistics.median(rates_p), "yardstick": statistics.median(rates_y),
        "ratio": statistics.median(ratios), "ratio_q1": _quantile(ratios, 0.25), "ratio_q3": _quantile(ratios, 0.75),
        "startup_project": startup_p, "startup_yardstick": startup_y,
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def machine_description(args) -> list[str]:
    """The report's header bullets: the machine, and the device and learner threads of this run."""
    return report.machine_lines(memory=True) + [
        f"- device: {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
        + f"; learner threads: {args.threads} (`torch.set_num_threads`)",
    ]


def format_update_table(rows) -> list[str]:
    return report.table(
        ["policy", "critic", "K", "batch", "mode", "project upd/s", "yardstick upd/s", "ratio (IQR)",
         "ready s project / yardstick"],
        [[r["policy"], r["critic"], r["K"], r["batch"], r["mode"], f"{r['project']:.1f}", f"{r['yardstick']:.1f}",
          f"**{r['ratio']:.2f}** ({r['ratio_q1']:.2f}–{r['ratio_q3']:.2f})",
          f"{r['warmup_s_project']:.1f} / {r['warmup_s_yardstick']:.1f}"] for r in rows],
    )


def format_collect_table(rows) -> list[str]:
    return report.table(
        ["policy (K=4)", "policy call", "workers", "clock", "TorchRL collector frames/s",
         "plain gymnasium loop frames/s", "ratio (IQR)", "startup s (collector / plain)"],
        [[r["policy"], r["mode"], r["workers"], r["clock"], f"{r['project']:.0f}", f"{r['yardstick']:.0f}",
          f"**{r['ratio']:.2f}** ({r['ratio_q1']:.2f}–{r['ratio_q3']:.2f})",
          f"{r['startup_project']:.1f} / {r['startup_yardstick']:.1f}"] for r in rows],
    )


def probe_memory(policy: str, side: str, num_steps: int, batch_size: int, device: str, updates: int = 5) -> dict:
    """Run in a fresh process: RSS after the imports, and peak RSS after building one step and
    running ``updates`` updates (MiB). Separate processes, so one side's allocations never count
    for the other."""
    import json
    import subprocess

    code = (
        "import json, torch; import benchmarks.perf.throughput as T; "
        "torch.set_num_threads(1); base = T._status_kib('VmRSS') / 1024; "
        "b = T.make_batches(4, {batch}, {device!r}); "
        "step = (T.ProjectStep if {side!r} == 'project' else T.YardstickStep)({policy!r}, {k}, {device!r}, 'eager'); "
        "[step(b[i % 4]) for i in range({updates})]; "
        "print(json.dumps({{'base': base, 'peak': T.peak_rss_mib()}}))"
    ).format(batch=batch_size, device=device, side=side, policy=policy, k=num_steps, updates=updates)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "RL_WARNINGS": "False"})
    for line in reversed(out.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"memory probe failed: {out.stderr[-2000:]}")


def format_memory_table(rows) -> list[str]:
    return report.table(
        ["policy", "K", "batch", "RSS after imports MiB", "peak RSS MiB project", "peak RSS MiB yardstick",
         "step's own peak MiB project / yardstick"],
        [[r["policy"], r["K"], r["batch"], f"{r['base']:.0f}", f"{r['project']:.0f}", f"{r['yardstick']:.0f}",
          f"{r['project'] - r['base_p']:.0f} / {r['yardstick'] - r['base_y']:.0f}"] for r in rows],
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: flow_t and gaussian (SAC and CrossQ rows), eager, batch 256, K=4, few pairs, "
                        "1 collector worker, no report written unless --out")
    p.add_argument("--check", action="store_true",
                   help="verify yardstick == library numerically (every --policies × --critics; CrossQ at the "
                        "first --crossq-cells width), then exit")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of this process (default 1)")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--critics", default="sac,crossq",
                   help="critic configs: sac (recipes/config/critic/sac.yaml, every policy, batch size and K) "
                        "and/or crossq (critic/crossq.yaml, the --crossq-policies at the first batch size and K)")
    p.add_argument("--crossq-cells", default="256,1024",
                   help="hidden widths of the CrossQ rows (2 layers each: 2×256, 2×1024; the recipe's is 2×1024); "
                        "compiled only at the first with --compile-grid main")
    p.add_argument("--crossq-policies", default="flow_t,flow_g,gaussian",
                   help="policies (of --policies) with CrossQ rows")
    p.add_argument("--batch-sizes", default="512,256")
    p.add_argument("--num-steps", default="4,10", help="values of K")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--compile-grid", choices=("main", "all"), default="main",
                   help="main: compiled rows only at the first batch size and first K (compiling takes "
                        "~20-40 s per side and row on 2 cores); all: every eager row also compiled")
    p.add_argument("--pairs", type=int, default=40, help="timed (project, yardstick) update pairs per row")
    p.add_argument("--compile-pairs", type=int, default=40, help="pairs per compiled row")
    p.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                   help="auto: thread CPU time when --threads 1 on CPU, else wall time")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates before timing (>=3 when compiled)")
    p.add_argument("--no-update", dest="update", action="store_false", help="skip the training-step rows")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-RSS probes")
    p.add_argument("--no-collect", dest="collect", action="store_false", help="skip the collection rows")
    p.add_argument("--workers", default="1,2", help="collector worker counts")
    p.add_argument("--multi-worker-policies", default="flow_t,gaussian",
                   help="policies also measured with more than one worker (each MultiSyncCollector start "
                        "costs ~10-30 s of process spawning on 2 cores); 'all' for every policy")
    p.add_argument("--collect-modes", default="eager,compile",
                   help="policy call in the collection rows: eager, and compile (the collector's "
                        "compile_policy vs the plain loop's torch.compile'd actor; 1 worker only)")
    p.add_argument("--frames-per-batch", type=int, default=200)
    p.add_argument("--collect-batches", type=int, default=8,
                   help="timed batches per side after a warm-up batch (interleaved with the plain loop's)")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/results/throughput_<device>.md)")
    args = p.parse_args(argv)
    if args.quick:  # eager only, one worker: a minute or two
        args.policies, args.batch_sizes, args.num_steps, args.modes = "flow_t,gaussian", "256", "4", "eager"
        args.pairs, args.workers, args.collect_batches, args.collect_modes = 6, "1", 4, "eager"
        args.memory = False
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    policies = [p for p in args.policies.split(",") if p]
    critics = [c for c in args.critics.split(",") if c]
    if any(c not in CRITICS for c in critics):
        raise SystemExit(f"--critics: expected some of {CRITICS}, got {args.critics!r}")
    crossq_cells = [int(w) for w in args.crossq_cells.split(",") if w]
    if args.check:
        bad = {}
        for critic in critics:
            cells = (crossq_cells[0],) * 2 if critic == "crossq" else None
            res = check(policies, critic=critic, num_cells=cells)
            bad.update({(k, critic): v for k, v in res.items() if not (v[0] < 1e-5 and v[1] < 1e-3 and v[2] < 1e-3)})
        print("check:", "FAILED " + str(bad) if bad else "OK")
        return 1 if bad else 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    ks = [int(k) for k in args.num_steps.split(",") if k]
    modes = [m for m in args.modes.split(",") if m]
    workers = [int(w) for w in args.workers.split(",") if w]
    multi = policies if args.multi_worker_policies == "all" else args.multi_worker_policies.split(",")
    t_start = time.perf_counter()
    header = machine_description(args)
    command = report.command_line("benchmarks.perf.throughput", argv)

    update_rows = []
    if args.update:
        grid = []
        for mode in modes if "sac" in critics else ():
            for policy in policies:
                for b in batch_sizes:
                    for k in (ks[:1] if policy == "gaussian" else ks):
                        if mode == "compile" and args.compile_grid == "main" and (b, k) != (batch_sizes[0], ks[0]):
                            continue
                        grid.append((policy, k, b, mode, "sac", None))
        crossq_policies = [p for p in policies if p in args.crossq_policies.split(",")]
        for mode in modes if "crossq" in critics else ():
            for policy in crossq_policies:
                for w in crossq_cells:
                    if mode == "compile" and args.compile_grid == "main" and w != crossq_cells[0]:
                        continue
                    grid.append((policy, ks[0], batch_sizes[0], mode, "crossq", (w, w)))
        for policy, k, b, mode, critic, cells in grid:
            row = bench_update(policy, k, b, mode, args, critic, cells)
            update_rows.append(row)
            print(format_update_table([row])[-1], flush=True)
    memory_rows = []
    if args.memory and "sac" in critics:
        for policy in policies:
            mp = probe_memory(policy, "project", ks[0], batch_sizes[0], args.device)
            my = probe_memory(policy, "yardstick", ks[0], batch_sizes[0], args.device)
            row = {"policy": policy, "K": "-" if policy == "gaussian" else ks[0], "batch": batch_sizes[0],
                   "base": min(mp["base"], my["base"]), "base_p": mp["base"], "base_y": my["base"],
                   "project": mp["peak"], "yardstick": my["peak"]}
            memory_rows.append(row)
            print(format_memory_table([row])[-1], flush=True)
    collect_rows = []
    if args.collect and not args.device.startswith("cuda"):
        collect_modes = [m for m in args.collect_modes.split(",") if m]
        grid = [(p, w, m) for m in collect_modes for w in workers for p in policies
                if (w == 1 or p in multi) and (m == "eager" or w == 1)]
        for policy, w, mode in grid:
            row = bench_collect(policy, w, args, mode)
            collect_rows.append(row)
            print(format_collect_table([row])[-1], flush=True)
    wall = time.perf_counter() - t_start

    lines = report.section("SAC Flow throughput: the recipe's step vs a hand-written PyTorch yardstick",
                           f"Command: `{command}` (wall time {wall / 60:.1f} min, after `pip install -e .`)",
                           header, level=1)
    if update_rows:
        crossq_text = (
            " **CrossQ rows** (critic `crossq L×W`): the recipe's `critic=crossq` (`critic/crossq.yaml`: twin "
            "BatchRenorm critics `BRN → [Linear → ReLU → BRN] × 2 → Linear`, momentum 0.01, ε 1e-3, "
            "r/d clipped at 3/5, no target network, one train-mode critic forward on the joint batch "
            "`[(s, a); (s', a')]`, the actor scored with the critics in eval mode; actor + α step every "
            "3rd update, `policy_delay` 3) with `num_cells` set to the width shown (the recipe's and the "
            "paper's is 2×1024); yardstick = the example's `CrossQ`, the same in plain PyTorch with a "
            "hand-written BatchRenorm layer and two separate critic modules (`--check --critics crossq` "
            "also verifies equal batch-renorm running statistics). The project's critic runs its speed path "
            "(`_fast.sac_loss._MLPEnsemble`: the two copies without vmap, each batch-renorm layer as ATen's "
            "fused `batch_norm`); the yardstick does not. Both run inside the BatchRenorm warm-up "
            "(`warmup_steps` 100 000, i.e. plain batch norm, as in the first 100k updates of a run); there "
            "the project's eager CPU path skips the r/d corrections, while the yardstick computes them and "
            "multiplies them by the warm-up factor, as TorchRL's `BatchRenorm1d` does. Because only every "
            "3rd update has an actor step, CrossQ times are taken over cycles of 3 consecutive updates "
            "(one actor step each; the pair count rounded up to a multiple of 3): upd/s = 3 / median "
            "cycle time, ratio = median over cycles of project/yardstick speed."
            if any(r["critic"].startswith("crossq") for r in update_rows) else "")
        lines += report.section(
            "Training step (updates/s; SAC: one update = critic step + soft target update + actor step + "
            "α step; CrossQ: critic step, with an actor and α step every 3rd update)",
            f"Project = the recipe's own step, built from `recipes/config` (policy group, `critic=sac` or "
            f"`critic=crossq`, `optim`) with `make_policy` → `make_loss` → `make_optimizers` → `SACUpdate`, "
            f"exactly as `recipes/train_mujoco.py` does (**SAC rows**, critic `sac 256×256`: twin 256×256 MLP "
            f"critics, τ = 0.005); yardstick = `examples/sac_flow_single_file.py` (plain PyTorch, same networks and "
            f"math; `--check` verifies equal losses and equal updated parameters). HalfCheetah shapes (17-d "
            f"observation, 6-d action), random batches sampled from a replay buffer. {args.pairs} interleaved "
            f"pairs of single updates per eager row, {args.compile_pairs} per compiled row (ABBA order); "
            f"clock: {update_rows[0]['clock']} time (with one learner thread the thread's CPU time, which other "
            f"processes on a shared machine do not inflate); upd/s = 1 / median time; **ratio = median over "
            f"pairs of project/yardstick speed** (> 1: the project is faster), interquartile range in "
            f"brackets. `compile` = `torch.compile` of the loss computations on both sides with the same "
            f"options (`SACUpdate(compile=True)` and `training.update.compile_options`). 'ready s' = build + "
            f"warm-up (incl. compilation).{crossq_text}",
            format_update_table(update_rows),
        )
    if memory_rows:
        lines += report.section("Peak memory (critic=sac, eager, RSS high-water mark of a fresh process: imports, build, 5 updates)",
                                format_memory_table(memory_rows))
    if collect_rows:
        lines += report.section(
            f"Collection ({ENV_ID}, policy in the loop, exploration noise on)",
            f"TorchRL `Collector` (1 worker, in-process) / `MultiSyncCollector` (n single-threaded worker "
            f"processes) built by `torchrl_sacflow.training.make_collector` with the recipe's env "
            f"(`make_env`: `DirectGymEnv` + `StepCounter`, `DoubleToFloat`, `RewardSum`; trajectory ids "
            f"only with several workers, where `MultiSyncCollector` needs them), "
            f"{args.frames_per_batch} frames per batch; next to a plain gymnasium loop (1 env) / "
            f"`gymnasium.vector.AsyncVectorEnv` (n envs, one batched policy call per step) with the yardstick's "
            f"actor, storing its transitions (observation, action, reward, next observation, terminated, "
            f"truncated) in preallocated tensors, the same number of frames per batch. After one warm-up "
            f"batch each, {args.collect_batches} "
            f"batches per side, interleaved one batch at a time (A B B A ...); frames/s = median over batches, "
            f"**ratio = median over rounds of project / plain speed**. Clock: with 1 worker both sides run "
            f"in this thread and the clock is its CPU time (env stepping included; other processes do not "
            f"inflate it), with 2 workers wall time. Policy call `compile`: the collector's `compile_policy` "
            f"(`make_collector(compile_policy=True)`, i.e. `collector.compile_policy=true` in the recipe) "
            f"against the plain loop with `torch.compile(actor.sample)`, same options "
            f"(`training.update.compile_options`); startup includes the compilation.",
            format_collect_table(collect_rows),
        )
    if not args.device.startswith("cuda"):
        lines += report.section(
            "Accelerator path",
            "`--device cuda` builds both steps on the GPU, samples batches from a replay buffer stored on the "
            "device, compiles the loss computations (`compile_options('default')`), makes every Adam "
            "`capturable` and captures each whole update with tensordict's `CudaGraphModule` (as "
            "pytorch/rl's sota SAC does). No GPU was available for this run, so that path is not measured "
            "here.",
        )
    out = Path(args.out) if args.out else RESULTS_DIR / f"throughput_{args.device.split(':')[0]}.md"
    report.write_report(lines, out if not args.quick or args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
