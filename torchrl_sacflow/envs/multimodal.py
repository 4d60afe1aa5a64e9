"""Small tasks with several equally good actions: where a flow policy can do what a Gaussian cannot.

Registered as gymnasium environments when :mod:`torchrl_sacflow` is imported, so they run through
the MuJoCo recipe (``env=bandit2``, ``env=bandit4``, ``env=two_paths``), TorchRL's ``GymEnv``,
collectors and transforms like any other task.

* :class:`MultimodalBandit` — one step; the reward has 2 (or 4) separated, equally high peaks in a
  2-D action space. Optimal return 1.0 (an action on any peak centre).
* :class:`TwoPathNavigation` — a 2-D point must go from below an obstacle to above it; going left
  or right of it is equally good. Optimal return in the class docstring.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

__all__ = ["MultimodalBandit", "BanditActionValue", "TwoPathNavigation", "register_multimodal_envs", "BANDIT_PEAKS"]

#: Peak centres of the bandit's reward, by number of modes.
BANDIT_PEAKS = {
    2: np.array([[-0.5, 0.0], [0.5, 0.0]]),
    4: np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]]),
}


class MultimodalBandit(gym.Env):
    """A one-step continuous bandit with ``num_modes`` equally high reward peaks.

    ``r(a) = max_k exp(−‖a − c_k‖² / (2 w²))`` for ``a ∈ [−1, 1]²``, peaks ``c_k`` at
    :data:`BANDIT_PEAKS` (``(±0.5, 0)`` for 2 modes, ``(±0.5, ±0.5)`` for 4), width ``w = 0.1``:
    between two peaks (distance 1.0, i.e. 10 widths) the reward is ``exp(−12.5) ≈ 4e-6``. The
    observation is a constant ``[0, 0]``; every episode is one step and terminates.

    **Optimal return: 1.0**, reached by any policy whose action lands on a peak centre. The
    maximum-entropy optimum ``π*(a) ∝ exp(r(a)/α)`` puts equal mass on every peak.

    Args:
        num_modes (int): 2 or 4. Default 2.
        width (float): peak width ``w``. Default 0.1.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_modes: int = 2, width: float = 0.1):
        if num_modes not in BANDIT_PEAKS:
            raise ValueError(f"num_modes must be one of {sorted(BANDIT_PEAKS)}, got {num_modes!r}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.peaks = BANDIT_PEAKS[num_modes]
        self.width = float(width)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reward(self, action: np.ndarray) -> np.ndarray:
        """``r(a)`` for actions of shape ``[..., 2]`` (also what benchmarks score samples with)."""
        a = np.asarray(action, dtype=np.float64)[..., None, :]
        sq = ((a - self.peaks) ** 2).sum(-1)
        return np.exp(-sq / (2 * self.width**2)).max(-1)

    def nearest_peak(self, action: np.ndarray) -> np.ndarray:
        """Index of the closest peak centre for actions ``[..., 2]``."""
        a = np.asarray(action, dtype=np.float64)[..., None, :]
        return ((a - self.peaks) ** 2).sum(-1).argmin(-1)

    def mode_fractions(self, actions: np.ndarray, within: float = 3.0) -> np.ndarray:
        """Fraction of ``actions`` (``[n, 2]``) within ``within`` peak widths of each peak: ``[num_modes]``.

        The rest (``1 − sum``) is off every peak, e.g. in the valley. How the benchmark and the tests
        tell a policy that keeps every mode from one that keeps one or sits between them.
        """
        a = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
        dist = np.sqrt(((a[:, None, :] - self.peaks) ** 2).sum(-1))  # [n, modes]
        on = dist <= within * self.width
        return on.mean(0)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return np.zeros(2, dtype=np.float32), float(self.reward(action)), True, False, {}



class BanditActionValue(nn.Module):
    """The exact action value of a :class:`MultimodalBandit`, ``Q(s, a) = r(a)``, as a critic module.

    A one-step bandit's Q is its reward, so the SAC actor objective can be studied with no critic
    learning in the way (``python -m benchmarks.multimodality probe``, ``tests/test_multimodality.py``).
    Wrap it as TorchRL critics are: ``TensorDictModule(BanditActionValue(bandit), ["observation",
    "action"], ["state_action_value"])``.

    Args:
        bandit (MultimodalBandit): whose peaks and width define ``r``.

    Shapes: ``observation`` ``[..., 2]`` (unused), ``action`` ``[..., 2]`` → ``[..., 1]``.
    """

    def __init__(self, bandit: MultimodalBandit):
        super().__init__()
        self.register_buffer("peaks", torch.as_tensor(bandit.peaks, dtype=torch.float32))
        self.width = bandit.width
        # TorchRL's losses keep a functional copy of the critic's parameters: give it one to hold
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        sq = ((action[..., None, :] - self.peaks) ** 2).sum(-1)
        return torch.exp(-sq / (2 * self.width**2)).amax(-1, keepdim=True) + 0.0 * self.unused

class TwoPathNavigation(gym.Env):
    """A point goes around a round obstacle to a goal; left and right are equally good.

    The point starts at ``(0, −0.8)`` (± 0.02 uniform jitter) and must reach the goal disc of
    radius 0.1 around ``(0, 0.8)``; a disc obstacle of radius 0.3 sits at the origin. An action
    ``a ∈ [−1, 1]²`` moves the point by ``0.1·a`` (clipped to the arena ``[−1, 1]²``); a move
    that would enter the obstacle is not made. Reward ``−0.01`` per step, ``+1`` on reaching the
    goal (terminated); episodes are truncated after 60 steps.

    **Optimal return: between 0.84 and 0.88.** Every path to the goal disc is at least
    :meth:`shortest_path_length` ≈ 1.614 long (tangent, arc, tangent around the obstacle) and a
    step covers at most ``0.1·√2``, so at least 12 steps (return ≤ 0.88); the scripted policy of
    :meth:`scripted_action` (via a waypoint beside the obstacle) takes 16 (return 0.84). Going
    left and going right are mirror images: equally good.
    """

    metadata = {"render_modes": []}
    START, GOAL = np.array([0.0, -0.8]), np.array([0.0, 0.8])
    OBSTACLE_RADIUS, GOAL_RADIUS, STEP, MAX_STEPS = 0.3, 0.1, 0.1, 60
    WAYPOINT = np.array([0.36, 0.0])  # beside the obstacle (mirrored for the left path)

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.position = self.START.copy()
        self.steps = 0

    @classmethod
    def shortest_path_length(cls) -> float:
        """Length of the shortest start→goal-disc path around the obstacle (tangent, arc, tangent)."""
        d, r = float(np.linalg.norm(cls.START)), cls.OBSTACLE_RADIUS
        tangent = math.sqrt(d * d - r * r)
        arc = r * (math.pi - 2 * math.acos(r / d))
        return 2 * tangent + arc - cls.GOAL_RADIUS

    def scripted_action(self, side: int = 1) -> np.ndarray:
        """A near-optimal action: towards the waypoint on ``side`` (+1 right, −1 left), then the goal."""
        waypoint = self.WAYPOINT * np.array([side, 1.0])
        target = waypoint if self.position[1] < waypoint[1] - 0.05 else self.GOAL
        delta = (target - self.position) / self.STEP
        return np.clip(delta / max(1.0, np.abs(delta).max()), -1.0, 1.0)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.position = self.START + self.np_random.uniform(-0.02, 0.02, size=2)
        self.steps = 0
        return self.position.astype(np.float32), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        proposal = np.clip(self.position + self.STEP * action, -1.0, 1.0)
        if np.linalg.norm(proposal) >= self.OBSTACLE_RADIUS:
            self.position = proposal
        self.steps += 1
        reached = bool(np.linalg.norm(self.position - self.GOAL) <= self.GOAL_RADIUS)
        reward = -0.01 + (1.0 if reached else 0.0)
        truncated = not reached and self.steps >= self.MAX_STEPS
        return self.position.astype(np.float32), reward, reached, truncated, {}


def register_multimodal_envs() -> None:
    """Register ``SACFlow/Bandit2-v0``, ``SACFlow/Bandit4-v0`` and ``SACFlow/TwoPaths-v0`` (idempotent)."""
    entries = {
        "SACFlow/Bandit2-v0": ({"num_modes": 2}, 1, MultimodalBandit),
        "SACFlow/Bandit4-v0": ({"num_modes": 4}, 1, MultimodalBandit),
        "SACFlow/TwoPaths-v0": ({}, TwoPathNavigation.MAX_STEPS, TwoPathNavigation),
    }
    for env_id, (kwargs, max_steps, cls) in entries.items():
        if env_id not in gym.envs.registry:
            gym.register(env_id, entry_point=f"{cls.__module__}:{cls.__name__}", kwargs=kwargs,
                         max_episode_steps=max_steps)
