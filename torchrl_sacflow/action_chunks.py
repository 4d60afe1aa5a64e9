"""Recorded episodes as transitions of ``h`` consecutive actions (the offline side of action chunking).

Shared by the dataset loaders (:func:`~torchrl_sacflow.robomimic.load_robomimic_dataset`,
:func:`~torchrl_sacflow.ogbench.load_ogbench_dataset`) so that every file format is chunked by
the same rule, the one the chunked online environments follow: every step of an episode starts
one transition; a window never crosses the end of its episode and stops after the first terminal
step; its reward is the discounted sum of the executed steps' rewards; a short window's action is
padded by repeating its last executed action.
"""
from __future__ import annotations

import numpy as np

__all__ = ["chunk_episode"]


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
