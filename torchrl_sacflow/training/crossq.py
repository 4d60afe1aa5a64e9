"""The ``crossq`` critic option: CrossQ BatchRenorm critics without a target network.

``critic=crossq`` on the recipe's command line selects it (``recipes/config/critic/crossq.yaml``);
``preset=paper`` selects it together with the rest of the paper code's configuration
(docs/algorithm.md §4, docs/critics.md).

What the builder returns: twin :func:`~torchrl_sacflow.modules.critics.make_crossq_qvalue`
critics (BatchRenorm MLPs) inside a :class:`~torchrl_sacflow.objectives.CrossQFlowLoss`, no
target updater (the TD target uses the online critic, the reference's ``τ = 1.0``) and the
actor/α update period ``critic.policy_delay`` (3 in the reference).

BatchRenorm statistics: the loss itself puts the critic in train mode for the joint
``(s, a)``/``(s', a')`` critic step (the only place the running statistics are updated) and in
eval mode when the actor is scored. Evaluation and collection only run the actor, so nothing
else in the recipe touches the critic. The statistics are buffers of the loss module and so are
saved and restored with its ``state_dict`` in checkpoints.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_sacflow.modules import make_crossq_qvalue
from torchrl_sacflow.objectives import CrossQFlowLoss
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.losses import LossBundle, register_critic

__all__: list[str] = []

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}


@register_critic("crossq")
def _crossq_critic(
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
    """CrossQ critics (BatchRenorm, no target, joint batch) and :class:`CrossQFlowLoss`."""
    activation = str(cfg.get("activation", "relu")).lower()
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"unknown critic.activation {activation!r}: expected one of {sorted(_ACTIVATIONS)}")
    tau = cfg.get("tau", 1.0)
    if tau is not None and float(tau) != 1.0:
        raise ConfigError(f"critic.tau must be 1.0 for the crossq critic (it has no target network), got {tau!r}")
    qvalue = make_crossq_qvalue(
        observation_dim,
        action_dim,
        num_cells=tuple(int(n) for n in cfg["num_cells"]),
        activation=_ACTIVATIONS[activation],
        momentum=float(cfg.get("momentum", 0.01)),
        eps=float(cfg.get("eps", 1e-3)),
        max_r=float(cfg.get("max_r", 3.0)),
        max_d=float(cfg.get("max_d", 5.0)),
        warmup_steps=int(cfg.get("warmup_steps", 100_000)),
    ).to(device)
    loss = CrossQFlowLoss(
        actor,
        qvalue,
        num_qvalue_nets=int(cfg.get("num_qvalue_nets", 2)),
        loss_function=cfg.get("loss_function", "l2"),
        alpha_init=alpha_init,
        target_entropy=target_entropy,
        **loss_kwargs,
    )
    loss.make_value_estimator(gamma=gamma)
    return LossBundle(loss, target_updater=None, policy_delay=int(cfg.get("policy_delay", 3)))
