"""Critic + loss construction, one registry entry per ``critic`` config option.

A critic option decides more than the Q network: which loss class, whether there is a target
network and how it is updated, and how often the actor is updated (``policy_delay``). So one
builder returns all of it as a :class:`LossBundle`, and adding an option (e.g. a CrossQ-style
BatchRenorm critic) is one decorated function::

    @register_critic("crossq")
    def _crossq(cfg, actor, *, observation_dim, action_dim, gamma, alpha_init, target_entropy, device):
        ...
        return LossBundle(loss_module, target_updater=None, policy_delay=cfg["policy_delay"])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import LossModule
from torchrl.objectives.utils import TargetNetUpdater

from torchrl_sacflow.modules import make_qvalue
from torchrl_sacflow.objectives import FusedSoftUpdate, SACFlowLoss
from torchrl_sacflow.training.errors import ConfigError

__all__ = ["LossBundle", "CRITICS", "register_critic", "make_loss"]


@dataclass
class LossBundle:
    """What a critic option provides to the training step.

    Attributes:
        loss_module: a SAC-style loss exposing ``actor_loss``, ``alpha_loss``, a critic loss
            (``qvalue_loss`` or SACLoss's ``qvalue_v2_loss``), ``actor_network_params``,
            ``qvalue_network_params`` and ``log_alpha``.
        target_updater: called after every critic step (``None``: no target network).
        policy_delay: the actor and α are updated every ``policy_delay``-th critic step.
    """

    loss_module: LossModule
    target_updater: TargetNetUpdater | None = None
    policy_delay: int = 1


CriticBuilder = Callable[..., LossBundle]
CRITICS: dict[str, CriticBuilder] = {}


def register_critic(name: str) -> Callable[[CriticBuilder], CriticBuilder]:
    """Register a builder ``fn(cfg, actor, *, observation_dim, action_dim, gamma, alpha_init,
    target_entropy, device, **loss_kwargs) -> LossBundle`` under ``name`` (the ``critic.name`` of its
    config file); ``loss_kwargs`` go to the loss class."""

    def decorator(fn: CriticBuilder) -> CriticBuilder:
        CRITICS[name] = fn
        return fn

    return decorator


def make_loss(
    critic_cfg: Mapping[str, Any],
    actor: ProbabilisticActor,
    *,
    observation_dim: int,
    action_dim: int,
    gamma: float = 0.99,
    alpha_init: float = 0.2,
    target_entropy: float | str = 0.0,
    device: str | torch.device = "cpu",
    **loss_kwargs: Any,
) -> LossBundle:
    """Build critic, loss and target updater for the ``critic`` config group (by ``critic.name``).

    The actor must already be on ``device``; the critic is built there. ``gamma`` is the discount
    of one transition of the data: ``γ^h`` for chunks of ``h`` primitive steps whose reward is
    already the discounted sum over the chunk (offline-to-online). ``loss_kwargs`` go to the loss
    class (e.g. ``proximity_coef``, ``fixed_alpha``).
    """
    name = critic_cfg.get("name")
    if name not in CRITICS:
        raise ConfigError(f"unknown critic {name!r}: expected one of {sorted(CRITICS)}")
    bundle = CRITICS[name](
        critic_cfg,
        actor,
        observation_dim=observation_dim,
        action_dim=action_dim,
        gamma=gamma,
        alpha_init=alpha_init,
        target_entropy=target_entropy,
        device=device,
        **loss_kwargs,
    )
    if int(bundle.policy_delay) < 1:
        raise ConfigError(f"critic.policy_delay must be >= 1, got {bundle.policy_delay}")
    return bundle


@register_critic("sac")
def _sac_critic(
    cfg: Mapping[str, Any],
    actor: ProbabilisticActor,
    *,
    observation_dim: int,
    action_dim: int,
    gamma: float,
    alpha_init: float,
    target_entropy: float | str,
    device: str | torch.device,
    **loss_kwargs: Any,
) -> LossBundle:
    """Twin MLP critics with a Polyak-averaged target copy (τ = 0.005, :class:`FusedSoftUpdate`) and
    :class:`SACFlowLoss`.

    The paper's τ = 1.0 belongs to its CrossQ critic (no target network); with plain MLP critics
    a soft target is what keeps the TD target stable.
    """
    qvalue = make_qvalue(observation_dim, action_dim, num_cells=tuple(cfg["num_cells"])).to(device)
    loss = SACFlowLoss(
        actor,
        qvalue,
        num_qvalue_nets=int(cfg.get("num_qvalue_nets", 2)),
        loss_function=cfg.get("loss_function", "l2"),
        alpha_init=alpha_init,
        target_entropy=target_entropy,
        delay_qvalue=True,
        **loss_kwargs,
    )
    loss.make_value_estimator(gamma=gamma)
    target_updater = FusedSoftUpdate(loss, tau=float(cfg.get("tau", 0.005)))
    return LossBundle(loss, target_updater, policy_delay=int(cfg.get("policy_delay", 1)))
