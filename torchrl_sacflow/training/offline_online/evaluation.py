"""Success rate of the deterministic (ODE) policy."""
from __future__ import annotations

import math

import torch
from torch import nn
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type


@torch.no_grad()
def evaluate_success(env: EnvBase, policy: nn.Module, *, num_episodes: int) -> dict[str, float]:
    """Success rate of the noise-free policy over ``num_episodes`` full episodes.

    The env ends an episode at success (terminated) or at its own primitive-step limit
    (truncated); an episode counts as a success if any of its steps reports ``success``.

    Returns:
        ``{"success_rate", "return_mean", "episode_length_mean"}`` (length in env steps, i.e. chunks).
    """
    limit = getattr(env, "max_episode_steps", None)
    chunk = getattr(env, "action_chunk", 1)
    max_steps = math.ceil(limit / chunk) + 1 if limit else 10_000
    successes, returns, lengths = [], [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(num_episodes):
            rollout = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=True)
            successes.append(bool(rollout["next", "success"].any()))
            returns.append(float(rollout["next", "reward"].sum()))
            lengths.append(rollout.shape[-1])
    n = float(num_episodes)
    return {
        "success_rate": sum(successes) / n,
        "return_mean": sum(returns) / n,
        "episode_length_mean": sum(lengths) / n,
    }
