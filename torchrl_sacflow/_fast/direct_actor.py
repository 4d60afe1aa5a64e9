"""A ``ProbabilisticActor`` whose everyday calls run on tensors, skipping TensorDict's generic plumbing.

TorchRL's :class:`~torchrl.modules.ProbabilisticActor` goes through tensordict's sequence machinery
on every call: each module output is passed through ``TensorDict.from_any`` (which, in tensordict
0.14, asks ``importlib`` whether pandas is installed), the distribution module is found by
walking all submodules, and the sample goes through an interaction-type dispatch: fixed costs that
are a large share of a small actor's call at batch 1, the policy in a collector
(``docs/fast_paths.md`` has the measurements).

:class:`DirectProbabilisticActor` is a ``ProbabilisticActor`` like any other (same constructor,
same modules, same state dict, same entries written). When it has the standard two-module shape
(a plain ``TensorDictModule`` computing the distribution parameters, then the probabilistic
module) and nothing could make the generic path behave differently (hooks, ``tensordict_out``,
keyword calls, ``skip_existing``, a seeded generator, ``num_samples``, composite distributions,
``safe`` projection, interaction types other than random/deterministic, any attribute outside the
allow-list of what TorchRL 0.14 sets), ``forward`` and ``get_dist`` compute the same thing
directly. Otherwise — and always with the speed paths off (:mod:`torchrl_sacflow._fast`) — they
defer to the parent.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import (
    CompositeDistribution,
    InteractionType,
    ProbabilisticTensorDictModule,
    TensorDictModule,
    set_interaction_type,
)
from tensordict.nn.probabilistic import interaction_type
from tensordict.nn.utils import skip_existing
from torch import distributions as D
from torch.nn.modules import module as _nn_module
from torchrl.modules import ProbabilisticActor
from torchrl.modules.distributions.utils import sample_and_log_prob
from torchrl.modules.tensordict_module.probabilistic import SafeProbabilisticModule

from torchrl_sacflow import _fast

__all__ = ["DirectProbabilisticActor"]

_PLAIN_PROB_MODULES = (SafeProbabilisticModule, ProbabilisticTensorDictModule)
_DIRECT_INTERACTIONS = (InteractionType.RANDOM, InteractionType.DETERMINISTIC)


# The allow-list: every attribute the three modules may carry, as TorchRL 0.14 / tensordict 0.14
# set them (besides nn.Module's own). An attribute not listed here (a new constructor option of a
# later version) sends the call to the parent's generic path, which knows what it means. The
# values of the listed ones that change behaviour are checked in _direct_parts.
_NN_MODULE_ATTRS = frozenset(vars(torch.nn.Module()))
_KNOWN_ATTRS = {
    "actor": _NN_MODULE_ATTRS | {"_complete_out_keys", "_det_part", "_get_kwargs", "_in_keys", "_kwargs",
                                 "_ordered_dict", "_out_keys", "_out_keys_apparent", "_requires_sample", "_spec",
                                 "inplace", "method", "method_kwargs", "partial_tolerant", "return_composite",
                                 "safe", "strict"},
    "params": _NN_MODULE_ATTRS | {"_get_kwargs", "_in_keys", "_kwargs", "_out_keys", "_out_keys_apparent", "inplace",
                                  "method", "method_kwargs", "strict"},
    "prob": _NN_MODULE_ATTRS | {"_composite_lp_aggreate_at_init", "_dist", "_generator", "_generator_key",
                                "_in_keys", "_log_prob_key", "_log_prob_keys", "_out_keys", "_spec",
                                "_trigger_warning_lpk", "cache_dist", "default_interaction_type", "dist_keys",
                                "distribution_class", "distribution_kwargs", "n_empirical_estimate", "num_samples",
                                "return_log_prob", "safe"},
}


def _only_known_settings(actor: ProbabilisticActor) -> bool:
    """Whether the actor, its parameter module and its probabilistic module carry only allow-listed
    attributes, with the behaviour-changing ones at the values the direct path reproduces."""
    if len(actor.module) != 2:
        return False
    parts = {"actor": actor, "params": actor.module[0], "prob": actor.module[1]}
    if any(not set(vars(m)) <= _KNOWN_ATTRS[name] for name, m in parts.items()):
        return False
    prob = parts["prob"]
    return not actor.partial_tolerant and not getattr(prob, "cache_dist", False)


class DirectProbabilisticActor(ProbabilisticActor):
    """A :class:`~torchrl.modules.ProbabilisticActor` with a direct path for its common case.

    Constructed exactly like its parent; see the module docstring for when the direct path is
    taken. ``docs/fast_paths.md`` has the measured effect.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import NormalParamExtractor, TensorDictModule
        >>> from torchrl.modules import TanhNormal
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), NormalParamExtractor())
        >>> actor = DirectProbabilisticActor(
        ...     TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        ...     in_keys=["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True)
        >>> td = actor(TensorDict({"observation": torch.randn(5, 3)}, [5]))
        >>> td["action"].shape, td["action_log_prob"].shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def _direct_parts(self) -> tuple[TensorDictModule, torch.nn.Module, ProbabilisticTensorDictModule] | None:
        """``(params module, its nn.Module, probabilistic module)`` if the direct path applies."""
        if not _fast.enabled() or not _only_known_settings(self):
            return None
        if self.return_composite or not self._requires_sample or len(self.module) != 2 \
                or self._select_before_return or self.inplace not in (None, True):
            return None
        if _nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks:
            return None
        params, prob = self.module[0], self.module[1]
        if type(params) is not TensorDictModule or type(prob) not in _PLAIN_PROB_MODULES:
            return None
        if params.method is not None or params.method_kwargs or params._kwargs is not None \
                or params.inplace is not True:
            return None
        if getattr(prob, "safe", False) or prob.num_samples is not None or prob._generator is not None \
                or prob._generator_key is not None or len(prob.dist_sample_keys) != 1:
            return None
        dist_class = prob.distribution_class
        if not isinstance(dist_class, type) or issubclass(dist_class, CompositeDistribution):
            return None
        inner = params.module
        for m in (self, params, inner, prob):
            if m._forward_hooks or m._forward_pre_hooks:
                return None
        return params, inner, prob

    def _direct_dist(self, tensordict: TensorDictBase, parts) -> D.Distribution:
        params, inner, prob = parts
        inputs = [tensordict.get(key) for key in params.in_keys]
        if interaction_type() is None:  # what get_dist_params does: run the module under the default
            with set_interaction_type(prob.default_interaction_type):
                values = inner(*inputs)
        else:
            values = inner(*inputs)
        if isinstance(values, torch.Tensor):
            values = (values,)
        out_keys = params.out_keys_source
        if len(values) != len(out_keys):
            raise RuntimeError(f"{type(inner).__name__} returned {len(values)} tensors for out_keys {out_keys}")
        for key, value in zip(out_keys, values):
            if key != "_":
                tensordict.set(key, value)
        dist_kwargs = {
            (dist_key[-1] if isinstance(dist_key, tuple) else dist_key): tensordict.get(td_key)
            for dist_key, td_key in zip(prob.dist_keys, prob.in_keys)
        }
        return prob.distribution_class(**dist_kwargs, **prob.distribution_kwargs)

    def get_dist(self, tensordict: TensorDictBase, tensordict_out=None, **kwargs) -> D.Distribution:
        parts = None if (tensordict_out is not None or kwargs) else self._direct_parts()
        if parts is None:
            return super().get_dist(tensordict, tensordict_out, **kwargs)
        return self._direct_dist(tensordict, parts)

    def forward(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], TensorDictBase) and not skip_existing():
            parts = self._direct_parts()
            if parts is not None:
                prob = parts[2]
                mode = interaction_type() or prob.default_interaction_type
                if mode in _DIRECT_INTERACTIONS and (
                    mode is InteractionType.RANDOM or hasattr(prob.distribution_class, "deterministic_sample")
                ):
                    return self._direct_forward(args[0], parts, mode)
        return super().forward(*args, **kwargs)

    def _direct_forward(self, tensordict: TensorDictBase, parts, mode: InteractionType) -> TensorDictBase:
        prob = parts[2]
        dist = self._direct_dist(tensordict, parts)
        log_prob = None
        if mode is InteractionType.RANDOM:
            if prob.return_log_prob:
                sample, log_prob = sample_and_log_prob(dist, reparameterize=dist.has_rsample)
            else:
                sample = dist.rsample() if dist.has_rsample else dist.sample()
        else:
            sample = dist.deterministic_sample
            if prob.return_log_prob:
                log_prob = dist.log_prob(sample)
        tensordict.set(prob.dist_sample_keys[0], sample)
        if log_prob is not None:
            tensordict.set(prob.log_prob_key, log_prob)
        return tensordict
