"""Q(s, a) critics for SAC Flow, as TorchRL ``ValueOperator``s."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchrl.modules import MLP, BatchRenorm1d, ValueOperator

__all__ = ["make_qvalue", "make_crossq_qvalue", "BatchRenormQNet"]


def make_qvalue(
    observation_dim: int,
    action_dim: int,
    *,
    num_cells: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    in_keys: Sequence = ("observation", "action"),
    out_key: str = "state_action_value",
    layer_norm: bool = False,
) -> ValueOperator:
    """A textbook SAC critic: an MLP on ``[s, a]`` writing ``"state_action_value"``.

    ``SACLoss``/``SACFlowLoss`` duplicate it into ``num_qvalue_nets`` independent copies.
    ``layer_norm=True`` puts a ``LayerNorm`` after every hidden layer (before its activation), as
    the critics of FQL / QC-FQL (seohongpark/fql, ColinQiyangLi/qc) have.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> q = make_qvalue(4, 2)
        >>> td = TensorDict({"observation": torch.randn(3, 4), "action": torch.randn(3, 2)}, [3])
        >>> q(td)["state_action_value"].shape
        torch.Size([3, 1])
    """
    net = MLP(
        in_features=observation_dim + action_dim,
        out_features=1,
        num_cells=list(num_cells),
        activation_class=activation,
        norm_class=nn.LayerNorm if layer_norm else None,
        norm_kwargs=[{"normalized_shape": int(n)} for n in num_cells] if layer_norm else None,
    )
    return ValueOperator(net, in_keys=list(in_keys), out_keys=[out_key])


class _SaturatingBatchRenorm1d(BatchRenorm1d):
    """:class:`~torchrl.modules.BatchRenorm1d` whose step counter stops at ``warmup_steps``.

    TorchRL 0.14's ``BatchRenorm1d`` computes its warm-up factor as
    ``num_batches_tracked // warmup_steps`` and means to cap the counter, but the cap
    (``clamp_max``, not in place) is a no-op: after ``2 × warmup_steps`` training batches the
    factor becomes 2, 3, ... and the r/d corrections are amplified past their ``max_r``/``max_d``
    bounds. This subclass saturates the counter in place, so the factor stays at 1 once warmed
    up: plain batch norm for the first ``warmup_steps`` batches, batch *re*norm afterwards
    (CrossQ).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training and self.warmup_steps > 0:
            # (out-of-place clamp + copy_: clamp_ has no vmap batching rule)
            self.num_batches_tracked.copy_(self.num_batches_tracked.clamp(max=self.warmup_steps))
        return out


class BatchRenormQNet(nn.Module):
    """The CrossQ critic body on ``[s, a]``: ``BRN → [Linear → act → BRN] × L → Linear(1)``.

    The inputs are concatenated on the last dim and every leading dim is flattened into one batch
    before the network (``BatchRenorm1d`` normalises over dim 0 of a 2-D input), then restored.

    In training mode each :class:`~torchrl.modules.BatchRenorm1d` normalises with the statistics
    of the batch it sees (during warm-up) or with renormalised running statistics (after), and
    updates its running statistics; in eval mode it only uses the running statistics.

    Args:
        in_features (int): size of ``[s, a]``.

    Keyword Args:
        num_cells (sequence of int): hidden widths. Default ``(1024, 1024)``.
        activation (type): activation class. Default ``nn.ReLU``.
        momentum, eps, max_r, max_d, warmup_steps: see :func:`make_crossq_qvalue`.
    """

    def __init__(
        self,
        in_features: int,
        *,
        num_cells: Sequence[int] = (1024, 1024),
        activation: type[nn.Module] = nn.ReLU,
        momentum: float = 0.01,
        eps: float = 1e-3,
        max_r: float = 3.0,
        max_d: float = 5.0,
        warmup_steps: int = 100_000,
    ):
        super().__init__()
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")

        def brn(n: int) -> BatchRenorm1d:
            return _SaturatingBatchRenorm1d(
                n,
                momentum=momentum,
                eps=eps,
                max_r=max_r,
                max_d=max_d,
                warmup_steps=int(warmup_steps),
            )

        layers: list[nn.Module] = [brn(in_features)]
        last = in_features
        for width in num_cells:
            layers += [nn.Linear(last, width), activation(), brn(width)]
            last = width
        layers.append(nn.Linear(last, 1))
        self.in_features = in_features
        self.net = nn.Sequential(*layers)

    def flat_body(self) -> tuple[str, nn.Sequential]:
        """The network as a fused evaluation may run it: ``("net", self.net)``.

        :meth:`forward` is ``self.net`` on the inputs concatenated on the last dim and flattened to
        ``[B, in_features]``, its output reshaped back to ``[*batch, 1]``. ``self.net`` holds only
        ``nn.Linear`` layers, parameter-free activations and :class:`~torchrl.modules.BatchRenorm1d`
        layers whose step counter stops at ``warmup_steps``. The speed paths
        (``torchrl_sacflow._fast``) read the critic through this method alone, so they need not
        import this module.

        Returns:
            ``(attribute name, body)``: the name under which the body's parameters are keyed and
            the ``nn.Sequential`` itself.
        """
        return "net", self.net

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected {self.in_features} input features in total, got {x.shape[-1]}"
            )
        batch_shape = x.shape[:-1]
        out = self.net(x.reshape(-1, self.in_features))
        return out.reshape(*batch_shape, 1)


def make_crossq_qvalue(
    observation_dim: int,
    action_dim: int,
    *,
    num_cells: Sequence[int] = (1024, 1024),
    activation: type[nn.Module] = nn.ReLU,
    momentum: float = 0.01,
    eps: float = 1e-3,
    max_r: float = 3.0,
    max_d: float = 5.0,
    warmup_steps: int = 100_000,
    in_keys: Sequence = ("observation", "action"),
    out_key: str = "state_action_value",
) -> ValueOperator:
    """A CrossQ critic: batch-renormalised MLP on ``[s, a]`` writing ``"state_action_value"``.

    The architecture of CrossQ (Bhatt et al., ICLR 2024, https://openreview.net/pdf?id=PczQtTsTIX)
    as used by the SAC Flow MuJoCo code (https://arxiv.org/abs/2509.25756): a
    :class:`~torchrl.modules.BatchRenorm1d` on the input, then ``Linear → ReLU → BatchRenorm1d``
    per hidden layer (2 × 1024), then a linear head. Use it with
    :class:`~torchrl_sacflow.objectives.crossq_flow.CrossQFlowLoss`, which evaluates it on the
    joint batch of ``(s, a)`` and ``(s', a')`` and manages its train/eval mode; with a plain
    ``SACLoss`` the normalisation statistics would only ever see ``(s, a)``.

    Args:
        observation_dim (int): flat observation size (sum of the observation ``in_keys``).
        action_dim (int): action size.

    Keyword Args:
        num_cells (sequence of int): hidden widths. Default ``(1024, 1024)``.
        activation (type): activation class. Default ``nn.ReLU``.
        momentum (float): running-statistics update rate, ``running ← running + momentum ·
            (batch − running)``. Default ``0.01`` (Flax's ``momentum=0.99`` of the reference).
        eps (float): variance epsilon. Default ``1e-3`` (reference; TorchRL's default is 1e-5).
        max_r, max_d (float): clipping of the renorm corrections r and d. Default 3 and 5.
        warmup_steps (int): number of training batches during which the layers behave as plain
            batch norm (r = 1, d = 0) while the running statistics settle; afterwards they
            renormalise with the clipped r/d. Counted per critic forward in training mode (one
            per critic update with ``CrossQFlowLoss``). Default ``100_000`` (reference). ``0``
            renormalises from the first batch.
        in_keys (sequence of keys): inputs, concatenated in this order. Default
            ``("observation", "action")``.
        out_key (str): output key. Default ``"state_action_value"``.

    Returns:
        A :class:`~torchrl.modules.ValueOperator` around a :class:`BatchRenormQNet`. Its
        ``BatchRenorm1d`` running statistics are buffers, which a TorchRL loss copies into its
        ``qvalue_network_params`` (and so into the loss ``state_dict``).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> q = make_crossq_qvalue(4, 2, num_cells=(32, 32), warmup_steps=10)
        >>> td = TensorDict({"observation": torch.randn(8, 4), "action": torch.randn(8, 2)}, [8])
        >>> q(td)["state_action_value"].shape
        torch.Size([8, 1])
        >>> int(q.module.net[0].num_batches_tracked)  # a training-mode forward updates the stats
        1
        >>> _ = q.eval()(td)  # eval mode reads the running statistics only
        >>> int(q.module.net[0].num_batches_tracked)
        1
    """
    net = BatchRenormQNet(
        observation_dim + action_dim,
        num_cells=num_cells,
        activation=activation,
        momentum=momentum,
        eps=eps,
        max_r=max_r,
        max_d=max_d,
        warmup_steps=warmup_steps,
    )
    return ValueOperator(net, in_keys=list(in_keys), out_keys=[out_key])
