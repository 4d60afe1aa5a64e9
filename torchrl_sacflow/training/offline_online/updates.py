"""The offline-to-online training steps: β schedule, flow-matching pre-training, the γ^h SAC loss."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from torchrl_sacflow.objectives import FlowMatchingLoss
from torchrl_sacflow.training.losses import LossBundle, make_loss


class LinearSchedule:
    """``start`` at step 0, linear to ``end`` at ``duration``, constant afterwards (β of the proximity term).

    The paper keeps β = 1000 during online Robomimic fine-tuning and notes it limits how far the
    policy can move from the data; annealing it lets the critic take over as online data grows.
    """

    def __init__(self, start: float, end: float, duration: int):
        self.start, self.end, self.duration = float(start), float(end), int(duration)

    def __call__(self, step: int) -> float:
        if self.duration <= 0 or step >= self.duration:
            return self.end
        return self.start + (self.end - self.start) * max(step, 0) / self.duration


class FlowMatchingUpdate:
    """One flow-matching (behaviour-cloning) gradient step on a batch; returns the detached loss.

    It trains the actor's own velocity parameters (shared with the SAC loss), so SAC fine-tuning
    starts from the pre-trained policy without any copy.
    """

    def __init__(self, actor: nn.Module, *, lr: float = 3e-4, betas: Sequence[float] = (0.9, 0.999),
                 grad_clip: float | None = None):
        self.loss_module = FlowMatchingLoss(actor)
        self.params = [p for p in self.loss_module.actor_network_params.flatten_keys().values() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=tuple(betas))
        self.grad_clip = grad_clip

    def __call__(self, batch: TensorDictBase) -> TensorDict:
        loss = self.loss_module(batch)["loss_flow_matching"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return TensorDict({"loss_flow_matching": loss.detach()}, batch_size=[])


def make_chunked_sac_flow_loss(
    actor: nn.Module,
    critic_cfg: Mapping[str, Any],
    *,
    observation_dim: int,
    action_width: int,
    action_chunk: int,
    gamma: float,
    alpha_init: float = 0.2,
    fixed_alpha: bool = False,
    target_entropy: float = 0.0,
    proximity_coef: float = 0.0,
    proximity_loss: str = "l2",
) -> LossBundle:
    """The ``critic`` group's loss (:func:`~torchrl_sacflow.training.make_loss`, e.g. ``sac``: twin MLP
    critics with a Polyak target, or ``crossq``) on ``[s, a_{t:t+h}]`` with a γ^h critic target.

    A chunk transition's reward is already the discounted sum over its ``h`` steps, so the
    bootstrap term is discounted by γ^h: ``y = Σ_j γ^j r_j + γ^h (1 − terminated) V(s_{t+h})``.
    A chunk cut short by the episode end either terminates (no bootstrap) or is truncated, so the
    constant γ^h is exact wherever it is used. The proximity term is on from the start (β set later);
    ``proximity_loss`` is :class:`~torchrl_sacflow.SACFlowLoss`'s (``"l2"`` or ``"flow_matching"``).

    Raises:
        ConfigError: an unknown ``critic_cfg["name"]`` or a ``policy_delay`` below 1.
    """
    return make_loss(
        critic_cfg, actor, observation_dim=observation_dim, action_dim=action_width, gamma=gamma**action_chunk,
        alpha_init=alpha_init, target_entropy=target_entropy, device=next(actor.parameters()).device,
        fixed_alpha=fixed_alpha, proximity_coef=proximity_coef, proximity_loss=proximity_loss,
    )
