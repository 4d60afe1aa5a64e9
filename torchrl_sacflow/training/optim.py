"""One Adam per parameter group (actor, critic, temperature), as in CleanRL's SAC."""
from __future__ import annotations

from typing import Sequence

import torch
from torchrl.objectives import LossModule

__all__ = ["make_optimizers"]


def make_optimizers(
    loss_module: LossModule,
    *,
    actor_lr: float = 3e-4,
    critic_lr: float = 1e-3,
    alpha_lr: float = 1e-3,
    actor_betas: Sequence[float] = (0.5, 0.999),
    critic_betas: Sequence[float] = (0.9, 0.999),
    alpha_betas: Sequence[float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    eps: float = 1e-8,
) -> tuple[torch.optim.Adam, torch.optim.Adam, torch.optim.Adam]:
    """``(actor_optim, critic_optim, alpha_optim)`` over the loss module's own parameter copies.

    Separate optimisers let the training step update the critic every call and the actor only every
    ``policy_delay``-th call. The defaults are the paper's (β1 = 0.5 for a flow actor) and CleanRL's
    SAC learning rates (policy 3e-4, Q and α 1e-3).
    """
    actor_params = list(loss_module.actor_network_params.flatten_keys().values())
    critic_params = list(loss_module.qvalue_network_params.flatten_keys().values())
    actor_optim = torch.optim.Adam(
        actor_params, lr=actor_lr, betas=tuple(actor_betas), weight_decay=weight_decay, eps=eps
    )
    critic_optim = torch.optim.Adam(
        critic_params, lr=critic_lr, betas=tuple(critic_betas), weight_decay=weight_decay, eps=eps
    )
    alpha_optim = torch.optim.Adam([loss_module.log_alpha], lr=alpha_lr, betas=tuple(alpha_betas))
    return actor_optim, critic_optim, alpha_optim
