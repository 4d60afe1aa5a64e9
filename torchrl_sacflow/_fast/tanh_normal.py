"""TorchRL's ``TanhNormal`` with SAC's one call, ``rsample_and_log_prob``, done in one pass.

SAC draws an action and scores that same draw twice per update (critic target, actor loss), and a
collector once per frame. TorchRL's :class:`~torchrl.modules.TanhNormal` does it through
``torch.distributions`` machinery: ``Independent(Normal)`` sampling and scoring, then a
``ComposeTransform`` (safe tanh, then the affine map to the action bounds) that is called once
forward and once for its log-Jacobian, each part summed separately. The math is a handful of
element-wise ops; the machinery around them cost ~0.2 ms per call on CPU at batch 256, ~1 % of a
Gaussian SAC update per call (``benchmarks/results/throughput_notes.md``).

:class:`FusedTanhNormal` is that distribution (subclass; every other method inherited) with
``rsample_and_log_prob``/``sample_and_log_prob`` (and ``rsample``/``sample``) computing the same
expressions directly, with TorchRL's safe tanh (re-declared so that calling it skips an
argument-binding step); for a reparameterised draw the Gaussian term uses the drawn noise itself
(``(pre − loc) / scale`` is that noise: same value up to rounding, same gradient, fewer ops).
Configurations it does not cover (``tanh_loc``, ``event_dims != 1``, an unsafe tanh) use the
parent's methods. The constructor is the parent's, except that what it derives from the bounds
alone (their check, the transform objects, the transformed shapes: ~80 µs of its ~100 µs on CPU)
is kept per ``(low, high)`` and reused: an actor passes the same bounds on every call.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import distributions as D
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
    every ``apply`` binds its arguments through ``inspect.signature`` (~70 µs per call on CPU,
    4x the op itself). Functorch transforms (vmap, grad) need ``setup_context``; under them
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


class _Bounds:
    """What TorchRL's ``TanhNormal`` constructor derives from ``(upscale, low, high, safe_tanh)`` on
    a device (checked bounds, transform objects), and the affine map's summed log-Jacobian."""

    __slots__ = ("sources", "low", "high", "upscale", "non_trivial_max", "non_trivial_min", "t", "affine_logdet",
                 "shapes")

    def __init__(self, dist: TanhNormal, sources: tuple):
        self.sources = sources  # the caller's low/high objects: keeps their ids from being reused
        self.low, self.high, self.upscale = dist.low, dist.high, dist.upscale
        self.non_trivial_max, self.non_trivial_min, self.t = dist.non_trivial_max, dist.non_trivial_min, dist._t
        self.affine_logdet = {}  # action size -> Σ log|scale| of the affine map (0-d tensor)
        self.shapes = {}  # (parameter shape, event dims) -> (batch shape, event shape)


# (low, high, upscale, safe_tanh, device, dtype) -> _Bounds. An actor passes its action spec's
# bounds (the same tensors) on every call, so the constructor's checks and transform objects are
# built once; bounds given as numbers are keyed by value.
_BOUNDS_CACHE: dict = {}
_BOUNDS_CACHE_SIZE = 64


def _bound_key(bound):
    if isinstance(bound, torch.Tensor):
        # identity and version: an in-place change of the bounds misses the cache
        return (id(bound), bound._version)
    if isinstance(bound, (int, float)):
        return float(bound)
    return None


class FusedTanhNormal(TanhNormal):
    """:class:`~torchrl.modules.TanhNormal` with a one-pass ``rsample_and_log_prob``.

    Same constructor, samples, log-densities and gradients as the parent (tested against it);
    the draw-and-score path is written out, and what the constructor derives from the bounds
    (their check, the transform objects) is computed once per ``(low, high)`` instead of per
    call. See the module docstring.

    Examples:
        >>> torch.manual_seed(0)
        >>> d = FusedTanhNormal(torch.zeros(4, 2), torch.ones(4, 2), low=-2.0, high=2.0)
        >>> action, log_prob = d.rsample_and_log_prob()
        >>> action.shape, log_prob.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    def __init__(self, loc, scale, upscale=5.0, low=-1.0, high=1.0, event_dims=None, tanh_loc=False,
                 safe_tanh=True):
        key = bounds = None
        if _fast.enabled() and isinstance(loc, torch.Tensor) and isinstance(scale, torch.Tensor) and scale.device == loc.device \
                and isinstance(upscale, (int, float)) and not torch.compiler.is_compiling():
            low_key, high_key = _bound_key(low), _bound_key(high)
            if low_key is not None and high_key is not None:
                key = (low_key, high_key, float(upscale), bool(safe_tanh), loc.device, loc.dtype)
                bounds = _BOUNDS_CACHE.get(key)
        if bounds is None:
            super().__init__(loc, scale, upscale=upscale, low=low, high=high, event_dims=event_dims,
                             tanh_loc=tanh_loc, safe_tanh=safe_tanh)
            if key is not None:
                if len(_BOUNDS_CACHE) >= _BOUNDS_CACHE_SIZE:
                    _BOUNDS_CACHE.clear()
                _BOUNDS_CACHE[key] = bounds = _Bounds(self, (low, high))
            self._bounds = bounds
            return
        # the parent's constructor with the bound-derived state from the cache
        self._bounds = bounds
        self.tanh_loc = tanh_loc
        self._event_dims = min(1, loc.ndim) if event_dims is None else event_dims
        self.device = loc.device
        self.upscale = bounds.upscale
        self.low, self.high = bounds.low, bounds.high
        self.non_trivial_max, self.non_trivial_min = bounds.non_trivial_max, bounds.non_trivial_min
        self._t = bounds.t
        shape_key = (loc.shape, self._event_dims) if not tanh_loc and scale.shape == loc.shape else None
        shapes = bounds.shapes.get(shape_key) if shape_key is not None else None
        if shapes is None:
            self.update(loc, scale)
            if shape_key is not None and self._plain_base(loc.shape):
                bounds.shapes[shape_key] = (self.batch_shape, self.event_shape)
            return
        # ``update``'s base distribution, and TransformedDistribution's shapes from the cache (the
        # transform's shape maps cost ~60 µs per construction through torch.broadcast_shapes)
        self.loc, self.scale = loc, scale
        base = D.Normal(loc, scale)
        self.base_dist = D.Independent(base, self._event_dims) if self._event_dims > 0 else base
        self.transforms = [self._t]
        D.Distribution.__init__(self, shapes[0], shapes[1])

    def _plain_base(self, shape: torch.Size) -> bool:
        """Whether the parent built its base distribution as ``[Independent(]Normal(loc, scale)[)]``
        of the parameters' own shape (no broadcasting against the bounds)."""
        base = self.base_dist
        if self._event_dims > 0:
            if type(base) is not D.Independent or base.reinterpreted_batch_ndims != self._event_dims:
                return False
            base = base.base_dist
        return type(base) is D.Normal and base.batch_shape == shape and len(self.transforms) == 1

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

    def _affine_logdet(self, affine, pre: torch.Tensor) -> torch.Tensor:
        """``Σ log|scale|`` of the affine map over the action dimension; a constant per bounds and
        action size (computed once) unless the bounds vary per sample."""
        cache = self._bounds.affine_logdet if self._bounds is not None else None
        size = pre.shape[-1]
        if cache is not None and size in cache:
            return cache[size]
        log_scale = affine.scale.abs().log()
        if log_scale.ndim > 1:  # per-sample bounds
            return log_scale.expand_as(pre).sum(-1)
        value = log_scale.expand(size).sum()
        if cache is not None:
            cache[size] = value
        return value

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
