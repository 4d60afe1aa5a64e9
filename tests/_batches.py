"""Random SAC transitions, the batch the loss, update and actor tests feed their modules."""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.data import TensorSpec


def random_transitions(
    n: int,
    obs_dim: int,
    action_spec: TensorSpec,
    *,
    seed: int | None = None,
    action_key: str = "action",
    obs_key: str = "observation",
    next_shift: float = 0.0,
) -> TensorDict:
    """``n`` transitions: standard-normal observations ``[n, obs_dim]`` (the next ones shifted by
    ``next_shift``) and rewards ``[n, 1]``, actions uniform in ``action_spec``'s bounds, nothing
    done or terminated.

    Drawn in the order observation, action, next observation, reward, from a generator seeded with
    ``seed``, or from torch's global one with ``seed=None`` (then the actions are ``action_spec.rand``'s).
    """
    g = None if seed is None else torch.Generator().manual_seed(seed)
    low, high = action_spec.space.low, action_spec.space.high
    return TensorDict(
        {
            obs_key: torch.randn(n, obs_dim, generator=g),
            action_key: torch.rand(n, *action_spec.shape, generator=g) * (high - low) + low,
            "next": {
                obs_key: torch.randn(n, obs_dim, generator=g) + next_shift,
                "reward": torch.randn(n, 1, generator=g),
                "done": torch.zeros(n, 1, dtype=torch.bool),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )
