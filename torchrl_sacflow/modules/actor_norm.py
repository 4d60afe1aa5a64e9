"""Batch renormalisation inside a policy, with the statistics discipline of the CrossQ critic.

A normalisation layer in an *actor* has a problem a critic does not: the actor also runs on one
observation at a time (collection, evaluation), where batch statistics do not exist. The paper's
released Flow-T code therefore uses batch statistics only when the actor is *scored* (the actor
loss, which also updates the running statistics) and the running statistics everywhere else:
acting, evaluation, and the next action of the critic target.

:class:`ActorBatchRenorm` makes that explicit instead of tying it to ``train()``/``eval()`` (a
policy left in train mode in a collector would otherwise normalise a batch of one): it uses the
running statistics unless switched on by :func:`batch_statistics`, which the SAC Flow losses do
around the actor's reparameterised draw.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from torchrl_sacflow.modules.critics import _SaturatingBatchRenorm1d

__all__ = ["ActorBatchRenorm", "batch_statistics"]


class ActorBatchRenorm(_SaturatingBatchRenorm1d):
    """TorchRL's ``BatchRenorm1d`` over the last dim, on batch statistics only when asked.

    Any leading dims are flattened into one batch (an unbatched ``[n]`` input works). With
    :attr:`use_batch_stats` ``False`` (the default) it normalises with the running statistics and
    changes nothing; with it ``True`` (inside :func:`batch_statistics`) it behaves like the
    critic's layer in training mode: batch statistics (renormalised after ``warmup_steps``
    batches) and a running-statistics update per call.

    Args:
        num_features (int): size of the last dim.

    Keyword Args:
        momentum, eps, max_r, max_d, warmup_steps: as for the CrossQ critic
            (:func:`~torchrl_sacflow.modules.critics.make_crossq_qvalue`); defaults are the
            released code's (momentum 0.01, i.e. flax's 0.99; eps 1e-3; warm-up 100 000 batches).
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.01,
        eps: float = 1e-3,
        max_r: float = 3.0,
        max_d: float = 5.0,
        warmup_steps: int = 100_000,
    ):
        super().__init__(
            num_features, momentum=momentum, eps=eps, max_r=max_r, max_d=max_d, warmup_steps=warmup_steps
        )
        self.use_batch_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        training = self.training
        self.training = self.use_batch_stats
        try:
            out = super().forward(flat)
        finally:
            self.training = training
        return out.reshape(shape)


@contextlib.contextmanager
def batch_statistics(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every :class:`ActorBatchRenorm` of ``module`` uses (and updates) batch statistics.

    A no-op for modules without such layers. The previous setting of each layer is restored on exit.
    """
    layers = [m for m in module.modules() if isinstance(m, ActorBatchRenorm)]
    previous = [m.use_batch_stats for m in layers]
    for m in layers:
        m.use_batch_stats = enabled
    try:
        yield
    finally:
        for m, value in zip(layers, previous):
            m.use_batch_stats = value
