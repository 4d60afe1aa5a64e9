"""Deterministic evaluation: a fixed number of full episodes on a separate env."""
from __future__ import annotations

import torch
from torch import nn
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record import VideoRecorder

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    env: EnvBase,
    policy: nn.Module,
    *,
    num_episodes: int = 10,
    max_steps: int = 1000,
    exploration_type: ExplorationType = ExplorationType.DETERMINISTIC,
) -> dict[str, float]:
    """Run ``num_episodes`` episodes with the deterministic policy and summarise their returns.

    A flow actor under ``ExplorationType.DETERMINISTIC`` runs its noise-free ODE, a Tanh-Normal
    actor its mode: evaluation measures the policy, not its exploration noise. Episodes run one
    after another on ``env`` (not the training env: its episodes must not be cut).

    Returns:
        ``{"return_mean", "return_std", "episode_length_mean"}`` (population std over episodes).
        If ``env`` has a :class:`~torchrl.record.VideoRecorder`, its frames are written once
        after the last episode.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    returns, lengths = [], []
    with set_exploration_type(exploration_type):
        for _ in range(num_episodes):
            rollout = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=True)
            returns.append(rollout["next", "reward"].sum())
            lengths.append(rollout.shape[-1])
    if isinstance(env, TransformedEnv):
        for transform in env.transform:
            if isinstance(transform, VideoRecorder):
                transform.dump()
    returns = torch.stack(returns).double()
    return {
        "return_mean": returns.mean().item(),
        "return_std": returns.std(unbiased=False).item(),
        "episode_length_mean": sum(lengths) / len(lengths),
    }
