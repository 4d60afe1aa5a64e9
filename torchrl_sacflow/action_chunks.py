"""Recorded episodes as transitions of ``h`` consecutive actions (the offline side of action chunking).

Shared by the dataset loaders (:func:`~torchrl_sacflow.robomimic.load_robomimic_dataset`,
:func:`~torchrl_sacflow.ogbench.load_ogbench_dataset`) so that every file format is chunked by
the same rule, the one the chunked online environments follow: every step of an episode starts
one transition; a window never crosses the end of its episode and stops after the first terminal
step; its reward is the discounted sum of the executed steps' rewards; a short window's action is
padded by repeating its last executed action.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["chunk_episode", "transitions_tensordict"]


def chunk_episode(
    obs: np.ndarray,
    next_obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    h: int,
    gamma: float,
    success: np.ndarray,
) -> dict[str, np.ndarray]:
    """Builds one transition per step of an episode, each spanning up to ``h`` steps.

    Args:
        obs (np.ndarray): ``[T, obs_dim]``, the observation before each step.
        next_obs (np.ndarray): ``[T, obs_dim]``, the observation after each step.
        actions (np.ndarray): ``[T, d]``, the primitive actions.
        rewards (np.ndarray): ``[T]``, each step's reward.
        dones (np.ndarray): ``[T]`` bool, the terminal flags the caller decided on (a window
            stops after the first of them).
        h (int): primitive steps per transition.
        gamma (float): discount of the in-window reward sum.
        success (np.ndarray): ``[T]`` bool, the steps that count as success.

    Returns:
        a dict of ``[T, ...]`` arrays: ``observation``, ``action`` (``[T, h*d]``),
        ``next_observation`` (after the window's last executed step), ``reward``
        (``sum_{j<k} gamma^j r_{t+j}``), ``terminated`` (a done within the window),
        ``truncated`` (the window reaches the episode's last step without a done),
        ``success`` (a success step within the window) and ``chunk_length`` (``k``, the
        executed steps).
    """
    T = actions.shape[0]
    start = np.arange(T)[:, None]
    offset = np.arange(h)[None, :]
    idx = start + offset
    in_episode = idx < T
    idx = np.minimum(idx, T - 1)
    done_at = dones[idx] & in_episode
    # step j of a window runs only if no done happened at steps 0..j-1 of it
    done_before = (np.cumsum(done_at, axis=1) - done_at) > 0
    executed = in_episode & ~done_before
    length = executed.sum(1)
    last = start[:, 0] + length - 1
    action_idx = np.where(executed, idx, last[:, None])
    chunk_actions = actions[action_idx].reshape(T, h * actions.shape[-1])
    discounts = gamma ** offset.astype(np.float64)
    step_rewards = np.where(executed, rewards[idx], 0.0)
    reward = (step_rewards * discounts).sum(1)
    terminated = (done_at & executed).any(1)
    truncated = (last == T - 1) & ~terminated
    return {
        "observation": obs,
        "action": chunk_actions,
        "next_observation": next_obs[last],
        "reward": reward,
        "terminated": terminated,
        "truncated": truncated,
        "success": (success[idx] & executed).any(1),
        "chunk_length": length,
    }


def transitions_tensordict(pieces: dict[str, list[np.ndarray]], episode_ids: list[np.ndarray], *,
                           action: np.ndarray | None = None, device: Any = "cpu") -> TensorDict:
    """The loaders' TorchRL layout from the per-episode outputs of :func:`chunk_episode`.

    ``pieces`` maps each key of :func:`chunk_episode`'s output to one array per episode, and
    ``episode_ids`` holds one array of episode indices per episode; ``action`` (optional) replaces
    the concatenated actions (e.g. after a bounds check). Returns ``[N]`` transitions with
    ``observation``, ``action``, ``episode``, ``chunk_length`` and ``("next", ...)``
    ``observation``, ``reward``, ``done`` (= terminated | truncated), ``terminated``,
    ``truncated``, ``success``; float32 values, bool flags, ``[N, 1]`` scalars.
    """
    cat = {key: np.concatenate(value, 0) for key, value in pieces.items()}
    n = cat["action"].shape[0]

    def col(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(x.reshape(n, -1)).to(dtype)

    terminated, truncated = col(cat["terminated"], torch.bool), col(cat["truncated"], torch.bool)
    return TensorDict(
        {"observation": col(cat["observation"], torch.float32),
         "action": col(cat["action"] if action is None else action, torch.float32),
         "episode": torch.as_tensor(np.concatenate(episode_ids)),
         "chunk_length": col(cat["chunk_length"], torch.int64),
         "next": {"observation": col(cat["next_observation"], torch.float32),
                  "reward": col(cat["reward"], torch.float32), "done": terminated | truncated,
                  "terminated": terminated, "truncated": truncated, "success": col(cat["success"], torch.bool)}},
        batch_size=[n],
    ).to(device)
