#!/usr/bin/env python
"""Where the rest of the gap to the hand-written yardstick lives: TorchRL parts, measured in isolation.

    python -m benchmarks.perf.overheads       # ~3 min; writes benchmarks/results/overheads_cpu.md

``throughput.py`` leaves the Gaussian baseline below the yardstick in eager mode and TorchRL's
collector well below a plain gymnasium loop. This script measures the candidate causes one at a
time, each as an A/B in one process (interleaved A B B A ..., median), so the next optimisation
starts from numbers rather than guesses:

1. **Distribution**: the recipe's Gaussian SAC step with TorchRL's ``TanhNormal``, with the recipe's
   ``FusedTanhNormal`` and with a minimal tanh-Gaussian distribution written here (same math:
   log-density from the standardised draw, stable tanh Jacobian), critic and actor step separately
   (thread CPU time). 1b: one policy call at batch 1, the recipe's ``DirectProbabilisticActor``
   against TorchRL's generic ``ProbabilisticActor.forward``.
2. **Parameter swap**: ``SACLoss`` calls ``actor_network_params.to_module(actor)`` around every actor
   evaluation (twice per update); its cost per call for each policy.
3. **Environment**: HalfCheetah-v4 steps/s (wall time, random actions) of raw gymnasium, TorchRL's
   ``GymEnv``, ``GymEnv`` + ``DoubleToFloat``, the recipe's ``DirectGymEnv`` (same tensors, plain
   ``torch`` step) and the recipe's env (``make_env``: ``DirectGymEnv`` + ``StepCounter``,
   ``DoubleToFloat``, ``RewardSum``).
4. **One collected frame**: the plain loop's frame against the recipe's actor + TorchRL's
   ``EnvBase.step`` alone (the floor of any TorchRL-env collector), + the recipe's transforms, and
   the recipe's ``Collector``, per policy.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import timeit
import warnings

os.environ.setdefault("RL_WARNINGS", "False")
warnings.filterwarnings("ignore")

import logging  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.distributions import Distribution  # noqa: E402

logging.getLogger("torchrl").setLevel(logging.WARNING)

from benchmarks import report  # noqa: E402
from benchmarks.perf import throughput  # noqa: E402
from benchmarks.sweep import RESULTS_DIR  # noqa: E402

_LOG_2PI = math.log(2 * math.pi)


class MinimalTanhGaussian(Distribution):
    """``tanh(loc + scale ε)`` with its log-density from ``ε`` (what the yardstick computes), as a
    drop-in ``distribution_class`` for the Gaussian actor (action bounds ±1, HalfCheetah's)."""

    has_rsample = True
    arg_constraints: dict = {}

    def __init__(self, loc, scale, low=None, high=None, tanh_loc=False):
        self.loc, self.scale = loc, scale
        super().__init__(batch_shape=loc.shape[:-1], event_shape=loc.shape[-1:], validate_args=False)

    def rsample_and_log_prob(self, sample_shape=torch.Size()):
        eps = torch.randn_like(self.loc)
        x = self.loc + self.scale * eps
        log_prob = (-0.5 * eps.pow(2) - self.scale.log()).sum(-1) - 0.5 * self.loc.shape[-1] * _LOG_2PI
        log_prob = log_prob - (2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))).sum(-1)
        return torch.tanh(x), log_prob


def _median_ms(values):
    return 1000.0 * statistics.median(values)


def distribution_rows(pairs: int) -> list[str]:
    from torchrl.modules import TanhNormal

    batches = throughput.make_batches(8, 512, "cpu")
    torch.manual_seed(0)
    steps = {}
    for name, cls in (("stock", TanhNormal), ("fused", None), ("minimal", MinimalTanhGaussian)):
        steps[name] = throughput.ProjectStep("gaussian", 4, "cpu", "eager")
        if cls is not None:  # "fused": the recipe's own FusedTanhNormal
            steps[name].update.loss_module.actor_network.module[1].distribution_class = cls
    for i in range(3):
        for step in steps.values():
            step(batches[i])
    rows = []
    for name in ("critic_step", "actor_step"):
        fns = {k: (lambda b, u=v.update, n=name: getattr(u, n)(b[0])) for k, v in steps.items()}
        t_stock, t_fused = throughput.time_interleaved(fns["stock"], fns["fused"], batches, pairs=pairs,
                                                       device="cpu", clock=time.thread_time)
        t_fused2, t_min = throughput.time_interleaved(fns["fused"], fns["minimal"], batches, pairs=pairs,
                                                      device="cpu", clock=time.thread_time)
        a, b = _median_ms(t_stock), _median_ms(t_fused)
        b2, c = _median_ms(t_fused2), _median_ms(t_min)
        rows.append(f"| Gaussian `{name}`, batch 512 | {a:.2f} | {b:.2f} / {b2:.2f} | {c:.2f} "
                    f"| {a - b:+.2f} | {b2 - c:+.2f} |")
        print(rows[-1], flush=True)
    return rows


def policy_call_rows(calls: int, rounds: int = 15) -> list[str]:
    """One exploration call of each policy at batch 1 (a collector's step): the recipe's actor
    (``DirectProbabilisticActor``) against TorchRL's generic ``ProbabilisticActor.forward`` on the
    same module, interleaved, thread CPU time."""
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import ProbabilisticActor

    from torchrl_sacflow.training.policies import make_policy

    rows = []
    for policy in throughput.POLICIES:
        actor = make_policy(throughput.recipe_config(policy, 4)["policy"], throughput._spec("cpu"), throughput.OBS_DIM)
        td = TensorDict({"observation": torch.randn(1, throughput.OBS_DIM)}, [1])
        fns = {"direct": actor, "generic": lambda t, a=actor: ProbabilisticActor.forward(a, t)}
        times = {k: [] for k in fns}
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            for f in fns.values():
                f(td.clone())
            for r in range(rounds):
                for k in (("direct", "generic") if r % 2 else ("generic", "direct")):
                    t0 = time.thread_time()
                    for _ in range(calls):
                        fns[k](td.clone())
                    times[k].append((time.thread_time() - t0) / calls)
        d, g = (1e6 * statistics.median(times[k]) for k in ("direct", "generic"))
        rows.append(f"| {policy} | {g:.0f} | {d:.0f} | {g / d:.2f} |")
        print(rows[-1], flush=True)
    return rows


def swap_rows(number: int) -> list[str]:
    rows = []
    for policy in throughput.POLICIES:
        loss = throughput.ProjectStep(policy, 4, "cpu", "eager").loss_module
        params, actor = loss.actor_network_params, loss.actor_network

        def swap():
            with params.to_module(actor, preserve_module_state=False):
                pass

        swap()
        us = min(timeit.repeat(swap, number=number, repeat=5)) / number * 1e6
        n = len(list(params.keys(True, True)))
        rows.append(f"| {policy} | {n} | {us:.0f} | {2 * us / 1000:.2f} |")
        print(rows[-1], flush=True)
    return rows


def _steps_per_s(step, reset, steps: int) -> float:
    reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def env_rows(steps: int) -> list[str]:
    import gymnasium as gym
    from torchrl.envs import Compose, DoubleToFloat, GymEnv, TransformedEnv
    from torchrl.envs.libs.gym import set_gym_backend

    from torchrl_sacflow.training import DirectGymEnv, make_env

    env_id = throughput.ENV_ID
    raw = gym.make(env_id)
    raw.reset(seed=0)
    raw_action = raw.action_space.sample()

    def raw_step():
        _, _, terminated, truncated, _ = raw.step(raw_action)
        if terminated or truncated:
            raw.reset()

    with set_gym_backend("gymnasium"):
        variants = {
            "raw gymnasium": None,
            "TorchRL `GymEnv`": GymEnv(env_id),
            "`GymEnv` + `DoubleToFloat`": TransformedEnv(GymEnv(env_id), Compose(DoubleToFloat())),
            "`DirectGymEnv`": DirectGymEnv(env_id),
            "recipe env (`make_env`)": make_env(env_id),
        }
    rates = {}
    for rep in range(2):  # two rounds, best kept: wall time on a shared machine
        for name, env in variants.items():
            if env is None:
                rate = _steps_per_s(raw_step, lambda: raw.reset(seed=0), steps)
            else:
                state = {"td": None}
                action = env.action_spec.rand()

                def reset(env=env, state=state):
                    state["td"] = env.reset()

                def step(env=env, state=state, action=action):
                    td = state["td"]
                    td["action"] = action
                    state["td"] = env.step_and_maybe_reset(td)[1]

                rate = _steps_per_s(step, reset, steps)
            rates[name] = max(rates.get(name, 0.0), rate)
    rows = []
    base = rates["raw gymnasium"]
    for name, rate in rates.items():
        rows.append(f"| {name} | {rate:.0f} | {1000.0 / rate:.3f} | {rate / base:.2f} |")
        print(rows[-1], flush=True)
    return rows


def frame_rows(frames: int, rounds: int) -> list[str]:
    """One collected frame with the policy in the loop (HalfCheetah, 1 env, thread CPU time), built
    up from its parts: the plain loop of ``throughput.py``; the recipe's actor on a TensorDict plus
    ``DirectGymEnv.step`` (TorchRL's ``EnvBase.step``, no transforms, nothing stored: the least a
    TorchRL env and a TensorDict policy can cost); the same with the recipe's env
    (``make_env``: its three transforms, ``step_and_maybe_reset``); and the recipe's ``Collector``."""
    from types import SimpleNamespace

    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_sacflow.training import DirectGymEnv, make_env
    from torchrl_sacflow.training.policies import make_policy

    args = SimpleNamespace(frames_per_batch=frames, threads=1)
    rows = []
    for policy in throughput.POLICIES:
        actor = make_policy(throughput.recipe_config(policy, 4)["policy"], throughput._spec("cpu"), throughput.OBS_DIM)
        direct = DirectGymEnv(throughput.ENV_ID, device="cpu")
        recipe = make_env(throughput.ENV_ID)
        state = {"direct": TensorDict({"observation": direct.reset()["observation"].float()}, []),
                 "recipe": recipe.reset()}

        @torch.no_grad()
        def base_loop(actor=actor, env=direct, state=state):
            td = state["direct"]
            with set_exploration_type(ExplorationType.RANDOM):
                for _ in range(frames):
                    nxt = env.step(actor(td))["next"]
                    if nxt["done"]:
                        nxt = env.reset()
                    # (float64 MuJoCo observation: the cast the plain loop does too)
                    td = TensorDict({"observation": nxt["observation"].float()}, [])
            state["direct"] = td
            return frames

        @torch.no_grad()
        def recipe_loop(actor=actor, env=recipe, state=state):
            td = state["recipe"]
            with set_exploration_type(ExplorationType.RANDOM):
                for _ in range(frames):
                    td = env.step_and_maybe_reset(actor(td))[1]
            state["recipe"] = td
            return frames

        collector = throughput.ProjectCollection(policy, 1, args, rounds + 1)
        plain = throughput.YardstickCollection(policy, 1, args)
        sides = {"plain": plain.batch, "base": base_loop, "recipe": recipe_loop, "collector": collector.batch}
        times = {k: [] for k in sides}
        for fn in sides.values():
            fn()  # warm-up
        for r in range(rounds):
            for name, fn in (sides.items() if r % 2 == 0 else reversed(sides.items())):
                t0 = time.thread_time()
                n = fn()
                times[name].append((time.thread_time() - t0) / n * 1e6)
        collector.close()
        plain.close()
        us = {k: statistics.median(v) for k, v in times.items()}
        ceiling = statistics.median(p / b for p, b in zip(times["plain"], times["base"]))
        rows.append(f"| {policy} | {us['plain']:.0f} | {us['base']:.0f} | {us['recipe']:.0f} | {us['collector']:.0f} "
                    f"| **{ceiling:.2f}** |")
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=40, help="interleaved pairs per distribution row")
    p.add_argument("--env-steps", type=int, default=2000, help="env steps per env row and round")
    p.add_argument("--frames", type=int, default=200, help="frames per timed batch in section 4")
    p.add_argument("--frame-rounds", type=int, default=8, help="interleaved rounds per policy in section 4")
    p.add_argument("--out", default=str(RESULTS_DIR / "overheads_cpu.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load = report.load_average()
    dist = distribution_rows(args.pairs)
    calls = policy_call_rows(30)
    swap = swap_rows(200)
    env = env_rows(args.env_steps)
    frames = frame_rows(args.frames, args.frame_rounds)
    wall = time.perf_counter() - t0
    command = report.command_line("benchmarks.perf.overheads", argv)
    lines = [
        "# Where the remaining gap lives: TorchRL parts measured in isolation",
        "",
        f"Command: `{command}` (wall time {wall / 60:.1f} min). Machine: {report.cpu_model()}, "
        f"{report.cores()} cores, load average at start {load}; "
        f"torch {torch.__version__}, 1 torch thread.",
        "",
        "## 1. TorchRL's `TanhNormal`, the recipe's `FusedTanhNormal` and a minimal tanh-Gaussian, in the Gaussian step",
        "",
        f"Same step, same networks; only the actor's `distribution_class` differs. Thread CPU time, median of "
        f"{args.pairs} interleaved pairs, two A/Bs (TanhNormal vs fused, fused vs minimal; the fused column "
        "gives both medians).",
        "",
        "| step | TanhNormal ms | FusedTanhNormal ms | minimal ms | TanhNormal − fused | fused − minimal |",
        "|---|---|---|---|---|---|",
        *dist,
        "",
        "## 1b. One exploration call at batch 1 (a collector's step): `DirectProbabilisticActor` vs TorchRL's generic path",
        "",
        "The recipe's actor, calling itself (direct path) or `ProbabilisticActor.forward` on the same modules; "
        "thread CPU time per call, median of 15 interleaved rounds of 30 calls, `no_grad`.",
        "",
        "| policy | generic µs | direct µs | generic / direct |",
        "|---|---|---|---|",
        *calls,
        "",
        "## 2. `actor_network_params.to_module(actor)`: SACLoss's parameter swap (twice per update)",
        "",
        "| policy | tensors swapped | µs per swap | ms per update |",
        "|---|---|---|---|",
        *swap,
        "",
        f"## 3. {throughput.ENV_ID} steps/s (random actions, wall time, best of 2 rounds of {args.env_steps} steps)",
        "",
        "| env | steps/s | ms per step | relative to raw gymnasium |",
        "|---|---|---|---|",
        *env,
        "",
        "## 4. One collected frame, piece by piece (1 env, policy in the loop, exploration noise)",
        "",
        f"Thread CPU time per frame, median of {args.frame_rounds} interleaved rounds of {args.frames} frames "
        "(A B C D D C B A ...). *plain loop*: `throughput.py`'s yardstick side (gymnasium env, the "
        "yardstick's actor on a tensor, transitions stored). *actor + `DirectGymEnv.step`*: the recipe's "
        "actor called on a TensorDict and TorchRL's `EnvBase.step` of `DirectGymEnv`, no transforms, "
        "nothing stored. *+ recipe env*: the env of `make_env` (its three transforms) with "
        "`step_and_maybe_reset`. *Collector*: `make_collector`'s batch, as in `throughput.py`. The last "
        "column is the plain loop's speed over the second column's (median over rounds): the highest "
        "one-worker collection ratio any collector built on a TorchRL env and a TensorDict policy "
        "could show, whatever its transforms and loop cost.",
        "",
        "| policy (K=4) | plain loop µs | actor + `DirectGymEnv.step` µs | + recipe env µs | `Collector` µs "
        "| ceiling of the collection ratio |",
        "|---|---|---|---|---|---|",
        *frames,
        "",
    ]
    report.write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
