"""TorchRL's ``TanhNormal`` with SAC's one call, ``rsample_and_log_prob``, done in one pass.

SAC draws an action and scores that same draw twice per update (critic target, actor loss), and a
collector once per frame. TorchRL's :class:`~torchrl.modules.TanhNormal` does it through
``torch.distributions`` machinery: ``Independent(Normal)`` sampling and scoring, then a
``ComposeTransform`` (safe tanh, then the affine map to the action bounds) that is called once
forward and once for its log-Jacobian, each part summed separately. The math is a handful of
element-wise ops; the machinery around them costs more than the math on CPU
(``docs/fast_paths.md``).

:class:`FusedTanhNormal` is that distribution (subclass; every other method inherited) with
``rsample_and_log_prob``/``sample_and_log_prob`` (and ``rsample``/``sample``) computing the same
expressions directly, with TorchRL's safe tanh (re-declared so that calling it skips an
argument-binding step); for a reparameterised draw the Gaussian term uses the drawn noise itself
(``(pre − loc) / scale`` is that noise: same value up to rounding, same gradient, fewer ops).
Configurations it does not cover (``tanh_loc``, ``event_dims != 1``, an unsafe tanh) use the
parent's methods. The constructor is the parent's. (A cache of what the constructor derives from
the bounds gained nothing measurable and was removed.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions.utils import _standard_normal
from torchrl.modules import TanhNormal
from torchrl.modules.distributions.continuous import SafeTanhTransform
from torchrl.modules.distributions.utils import safetanh_noeps

from torchrl_sacflow import _fast

__all__ = ["FusedTanhNormal"]

_HALF_LOG_2PI = math.log(math.sqrt(2 * math.pi))
_LOG_2 = math.log(2.0)


class _SafeTanh(torch.autograd.Function):
    """TorchRL's ``safetanh_noeps``: ``tanh`` clamped to ``±(1 − resolution)``, gradient ``1 − out²``.

    The same forward and backward as TorchRL's function, declared without ``setup_context``: with it,
    every ``apply`` binds its arguments through ``inspect.signature``, which costs more than the op
    itself on CPU (``docs/fast_paths.md``). Functorch transforms (vmap, grad) need ``setup_context``; under them
    :func:`safe_tanh` uses TorchRL's function.
    """

    @staticmethod
    def forward(ctx, x):
        lim = 1.0 - torch.finfo(x.dtype).resolution
        out = x.tanh().clamp(-lim, lim)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * (1 - out.pow(2))


def safe_tanh(x: torch.Tensor) -> torch.Tensor:
    if torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling():
        return safetanh_noeps(x)
    return _SafeTanh.apply(x)


class FusedTanhNormal(TanhNormal):
    """:class:`~torchrl.modules.TanhNormal` with a one-pass ``rsample_and_log_prob``.

    Same constructor, samples, log-densities and gradients as the parent (tested against it);
    the draw-and-score path is written out. See the module docstring.

    Examples:
        >>> torch.manual_seed(0)
        >>> d = FusedTanhNormal(torch.zeros(4, 2), torch.ones(4, 2), low=-2.0, high=2.0)
        >>> action, log_prob = d.rsample_and_log_prob()
        >>> action.shape, log_prob.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    def _draw(self, sample_shape, reparameterize: bool = True):
        """``(standard-normal noise or None, pre-tanh draw, action, affine part or None)``: what
        ``rsample``/``sample`` compute."""
        normal = self.root_dist
        loc, scale = normal.loc, normal.scale
        shape = self._extended_shape(sample_shape)
        if reparameterize:  # Normal.rsample
            eps = _standard_normal(shape, dtype=loc.dtype, device=loc.device)
            pre = loc + eps * scale
        else:  # Normal.sample
            eps, pre = None, torch.normal(loc.expand(shape), scale.expand(shape))
        action = safe_tanh(pre)
        parts = getattr(self.transforms[0], "parts", None)
        affine = parts[1] if parts is not None else None
        if affine is not None:
            action = affine.loc + affine.scale * action
        return eps, pre, action, affine

    @staticmethod
    def _affine_logdet(affine, pre: torch.Tensor) -> torch.Tensor:
        """``Σ log|scale|`` of the affine map over the action dimension (per sample if the bounds are)."""
        log_scale = affine.scale.abs().log()
        if log_scale.ndim > 1:  # per-sample bounds
            return log_scale.expand_as(pre).sum(-1)
        return log_scale.expand(pre.shape[-1]).sum()

    def _fused(self, sample_shape, reparameterize: bool):
        if reparameterize:
            eps, pre, action, affine = self._draw(sample_shape)
        else:
            with torch.no_grad():
                eps, pre, action, affine = self._draw(sample_shape, reparameterize=False)
        loc, scale = self.root_dist.loc, self.root_dist.scale
        # log N(pre; loc, scale) minus the log-Jacobians of tanh (TanhTransform's expression) and of
        # the affine map. For a reparameterised draw (pre − loc) / scale is the noise itself: the
        # same value (up to rounding) and the same gradient, in fewer ops.
        if eps is not None:
            quad = -0.5 * eps * eps
        else:
            quad = -((pre - loc) ** 2) / (2 * scale**2)
        log_prob = quad - scale.log() - 2.0 * (_LOG_2 - pre - F.softplus(-2.0 * pre))
        log_prob = log_prob.sum(-1) - pre.shape[-1] * _HALF_LOG_2PI
        if affine is not None:
            log_prob = log_prob - self._affine_logdet(affine, pre)
        return action, log_prob

    def _fusable(self) -> bool:
        if not _fast.enabled() or self.tanh_loc or self._event_dims != 1:
            return False
        t = self.transforms[0] if len(self.transforms) == 1 else None
        parts = getattr(t, "parts", None)
        tanh = parts[0] if parts is not None and len(parts) == 2 else t
        return type(tanh) is SafeTanhTransform

    def rsample_and_log_prob(self, sample_shape=()) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._fusable():
            return super().rsample_and_log_prob(sample_shape)
        return self._fused(torch.Size(sample_shape), reparameterize=True)

    def sample_and_log_prob(self, sample_shape=()) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._fusable():
            return super().sample_and_log_prob(sample_shape)
        return self._fused(torch.Size(sample_shape), reparameterize=False)

    # A collector's exploration step draws without scoring.
    def rsample(self, sample_shape=()) -> torch.Tensor:
        if not self._fusable():
            return super().rsample(sample_shape)
        return self._draw(torch.Size(sample_shape))[2]

    def sample(self, sample_shape=()) -> torch.Tensor:
        if not self._fusable():
            return super().sample(sample_shape)
        with torch.no_grad():
            return self._draw(torch.Size(sample_shape), reparameterize=False)[2]
