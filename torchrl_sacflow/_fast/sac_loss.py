"""TorchRL's ``SACLoss`` with its generic speed paths: what any ``SACLoss`` user could reuse.

:class:`FastSACLoss` computes the values of :class:`~torchrl.objectives.SACLoss` (SAC v2) with less
overhead: a plain MLP critic ensemble is evaluated with one ``F.linear`` per layer and copy instead
of ``vmap`` (:class:`_MLPEnsemble`), the critic target passes the actor and the target critics only
the entries they read, and the actor's parameter swap is skipped when it is a no-op
(:class:`~torchrl_sacflow._fast.actor_binding.BoundActorParams`). :class:`~torchrl_sacflow.SACFlowLoss`
builds on it, so that file reads as the method. With the speed paths off
(:mod:`torchrl_sacflow._fast`) every method here is the parent's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams
from torch import Tensor, nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, BatchRenorm1d
from torchrl.objectives import SACLoss
from torchrl.objectives.sac import compute_rsample_log_prob
from torchrl.objectives.utils import distance_loss
from torchrl.objectives.value import TD0Estimator

from torchrl_sacflow import _fast
from torchrl_sacflow._fast.actor_binding import BoundActorParams

__all__ = ["FastSACLoss"]


def batch_renorm(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    module: BatchRenorm1d,
) -> Tensor:
    """:meth:`torchrl.modules.BatchRenorm1d.forward` on a 2-D ``x`` with ATen's fused batch-norm kernels.

    Batch renorm is batch norm with an effective affine map: ``w·((x − μ_B)/σ_B · r + d) + b`` is
    ``batch_norm(x)`` with weight ``w·r`` and bias ``b + w·d``, where ``r`` and ``d`` (clipped,
    detached; ``r = 1, d = 0`` during warm-up) come from the batch and the running statistics
    *before* this batch's update. ``F.batch_norm`` then normalises with the batch statistics
    (gradient through them, as in TorchRL), and updates the running statistics in place with the
    same rule (``running ← running + momentum · (batch − running)``, unbiased variance). One
    forward and one backward kernel instead of TorchRL's ~8 elementwise passes and their
    backward: the CrossQ critic's 2 × 1024 layers spent about half of their update time there.

    ``module`` gives the hyper-parameters and the mode (``module.training``); the tensors are the
    slice of one critic copy of the loss's stacked parameters and buffers (views: the in-place
    updates reach the loss's buffers). The step counter is updated by the caller, once for all
    copies. Rounding-level differences from TorchRL's forward only.
    """
    if not module.training:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, module.eps)
    warmup = module.warmup_steps
    if warmup > 0 and x.device.type == "cpu" and not torch.compiler.is_compiling() \
            and int(num_batches_tracked) < warmup:
        # warm-up (r = 1, d = 0): plain batch norm, no statistics needed up front (a CPU read of
        # the counter costs nothing; on an accelerator the branch-free path below avoids a sync)
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, module.momentum, module.eps)
    with torch.no_grad():
        # two passes over x rather than var_mean: ATen's var_mean over dim 0 is much slower on CPU
        # (docs/fast_paths.md)
        mean = x.mean(0)
        var = (x - mean).square_().mean(0)
        running_std = (running_var + module.eps).sqrt()
        r = ((var + module.eps).sqrt() / running_std).clamp(1.0 / module.max_r, module.max_r)
        d = ((mean - running_mean) / running_std).clamp(-module.max_d, module.max_d)
        if warmup > 0:
            # the saturating counter keeps n // warmup_steps in {0, 1}: plain batch norm, then renorm
            factor = (num_batches_tracked // warmup).clamp(max=1).to(x.dtype)
            r = 1.0 + (r - 1.0) * factor
            d = d * factor
    return F.batch_norm(x, running_mean, running_var, weight * r, bias + weight * d, True, module.momentum,
                        module.eps)


def _flat_body(module) -> tuple[str, nn.Module] | None:
    """``module.flat_body()`` (the CrossQ critic's ``(name, Sequential)``), or ``None`` for a module
    without that method: the critic is read by what it offers, not by its class."""
    flat_body = getattr(module, "flat_body", None)
    if not callable(flat_body):
        return None
    name, body = flat_body()
    return (name, body) if isinstance(name, str) and isinstance(body, nn.Sequential) else None


class _MLPEnsemble:
    """``N`` stacked copies of a plain MLP critic, evaluated one ``F.linear`` per layer and copy.

    A drop-in for SACLoss's ``_vmap_qnetworkN0(td, stacked_params)`` when the Q network is a
    ``TensorDictModule`` around a TorchRL :class:`~torchrl.modules.MLP` made of ``nn.Linear`` layers
    and parameter-free activations (what :func:`~torchrl_sacflow.modules.make_qvalue` builds). Same
    math as the vmapped call (copy ``j`` uses slice ``j`` of every stacked parameter, the inputs are
    concatenated in ``in_keys`` order), without the functorch batching machinery: on CPU the vmapped
    linear becomes ``bmm`` + a separate bias ``add``, with a fixed overhead per call.
    Only the output entry is written (the only one SACLoss reads); the result has batch size
    ``[N, *td.batch_size]`` like the vmapped one.

    The CrossQ critic (:class:`~torchrl_sacflow.modules.critics.BatchRenormQNet`, or any module
    with its ``flat_body()`` method: a ``Sequential`` run on the inputs flattened to one batch dim,
    whose batch-renorm layers cap their step counter at ``warmup_steps``) is evaluated the same
    way, its batch-renorm layers with :func:`batch_renorm` on each copy's slice of the stacked
    statistics (in the mode the loss set on the critic's modules), its step counters advanced once
    per training-mode call, as the vmapped call advances each copy's.
    """

    _BRN_BUFFERS = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, qvalue_network: TensorDictModule):
        module = qvalue_network.module
        self.in_keys = list(qvalue_network.in_keys)
        self.out_key = qvalue_network.out_keys[0]
        flat = _flat_body(module)
        self.flatten = flat is not None  # it normalises over one flat batch dim
        body, prefix = (flat[1], ("module", flat[0])) if self.flatten else (module, ("module",))
        # ("module", …, i, "weight"/"bias") keys of the stacked parameters, a batch-renorm layer
        # (its module and the keys of its parameters and buffers) or a stateless module
        self.layers: list = []
        self.counters: list[tuple] = []
        for name, layer in body.named_children():
            key = (*prefix, name)
            if type(layer) is nn.Linear:
                bias = None if layer.bias is None else (*key, "bias")
                self.layers.append(((*key, "weight"), bias))
            elif isinstance(layer, BatchRenorm1d):
                keys = tuple((*key, leaf) for leaf in (*self._BRN_BUFFERS, "num_batches_tracked"))
                self.layers.append((layer, keys))
                self.counters.append((layer, keys[-1]))
            else:
                self.layers.append(layer)

    @staticmethod
    def supports(qvalue_network) -> bool:
        """Whether the critic is a plain Linear/activation MLP, or a CrossQ critic with a
        ``flat_body()`` (:class:`~torchrl_sacflow.modules.critics.BatchRenormQNet`), that this class
        can evaluate."""
        if type(qvalue_network).forward is not TensorDictModule.forward or len(qvalue_network.out_keys) != 1:
            return False
        module = getattr(qvalue_network, "module", None)
        flat = _flat_body(module)
        if flat is not None:
            body, allowed = flat[1], (nn.Linear, BatchRenorm1d)
        elif type(module) is MLP and not getattr(module, "_reshape_out", False):
            body, allowed = module, (nn.Linear,)
        else:
            return False
        for layer in body.children():
            if type(layer) is nn.Linear or (isinstance(layer, BatchRenorm1d) and BatchRenorm1d in allowed):
                if isinstance(layer, BatchRenorm1d) and layer.smooth:
                    return False  # the smooth warm-up is TorchRL's path only
                continue
            if any(True for _ in layer.parameters()) or any(True for _ in layer.buffers()):
                return False  # other normalisation layers, noisy layers, ...
        return True

    def inputs(self, tensordict: TensorDictBase, replace: dict | None = None) -> list[Tensor]:
        """The critic's inputs read from ``tensordict`` in ``in_keys`` order (``replace`` maps keys
        to tensors used instead of the data's)."""
        replace = replace or {}
        inputs = [replace[key] if key in replace else tensordict.get(key, None) for key in self.in_keys]
        if any(value is None for value in inputs):
            missing = [key for key, value in zip(self.in_keys, inputs) if value is None]
            raise KeyError(f"the critic's inputs {missing} are not in the tensordict")
        return inputs

    def __call__(self, tensordict: TensorDictBase, params: TensorDictBase) -> TensorDictBase:
        out = self.q(self.inputs(tensordict), params)
        return TensorDict({self.out_key: out}, batch_size=out.shape[: 1 + tensordict.batch_dims])

    def q(self, inputs: list[Tensor], params: TensorDictBase) -> Tensor:
        """The ensemble's output ``[N, *batch, out]`` for the critic's inputs, in ``in_keys`` order."""
        if torch.compiler.is_compiling() and torch.is_grad_enabled():
            weight = self._leaf(params, next(layer[0] for layer in self.layers
                                             if not isinstance(layer, nn.Module) and not isinstance(layer[0], nn.Module)))
            if not weight.requires_grad:
                # Detached critics under autograd (the actor loss): run eagerly. The compiled
                # backward would save each ReLU's mask as a bool tensor, and inductor's CPU code
                # for that store is much slower than ATen's (docs/fast_paths.md).
                return self._eager(inputs, params)
        return self._forward(inputs, params)

    @staticmethod
    def _leaf(params: TensorDictBase, key: tuple) -> Tensor:
        # A TensorDictParams keeps its leaves in nn.Module's parameter/buffer tables under the
        # dotted key (what optimizers and state_dict see): a dict lookup instead of a nested
        # TensorDict get per tensor.
        if type(params) is TensorDictParams:
            name = ".".join(key)
            leaf = params._parameters.get(name)
            if leaf is None:
                leaf = params._buffers.get(name)
            if leaf is not None:
                return leaf
        return params.get(key)

    def _per_copy(self, layer, params: TensorDictBase, n: int):
        """One entry of ``self.layers`` with its tensors split per ensemble copy.

        A stateless module (activation) stays as it is; ``(BatchRenorm module, tensor keys)`` becomes
        ``(module, per-copy tuples of its tensors)``; ``(weight key, bias key or None)`` becomes
        ``(per-copy weights, per-copy biases)``. Each stacked tensor is unbound once: its backward
        stacks the copies' gradients in one op (indexing each copy would zero-fill and scatter a
        full-size gradient per copy).
        """
        if isinstance(layer, nn.Module):
            return layer
        if isinstance(layer[0], nn.Module):
            return layer[0], tuple(zip(*(self._leaf(params, key).unbind(0) for key in layer[1])))
        weight, bias = layer
        return self._leaf(params, weight).unbind(0), (None,) * n if bias is None else self._leaf(params, bias).unbind(0)

    @torch.compiler.disable
    def _eager(self, inputs: list[Tensor], params: TensorDictBase) -> Tensor:
        return self._forward(inputs, params)

    def _forward(self, inputs: list[Tensor], params: TensorDictBase) -> Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)
        batch_shape = x.shape[:-1]
        if self.flatten:
            x = x.reshape(-1, x.shape[-1])
        n = params.batch_size[0]
        layers = [self._per_copy(layer, params, n) for layer in self.layers]
        inplace_relu = not torch.compiler.is_compiling()
        outs = []
        for j in range(n):
            h = x
            for layer in layers:
                if not isinstance(layer, nn.Module) and isinstance(layer[0], nn.Module):
                    brn, tensors = layer  # weight, bias, running mean, running var, step counter
                    h = batch_renorm(h, *tensors[j], brn)
                elif not isinstance(layer, nn.Module):
                    h = F.linear(h, layer[0][j], layer[1][j])
                elif inplace_relu and type(layer) is nn.ReLU and h is not x:
                    # in place on this function's own activation: same values and gradients
                    # (ReLU's backward reads its output), one [batch, width] allocation less
                    h = torch.relu_(h)
                else:
                    h = layer(h)
            outs.append(h)
        with torch.no_grad():
            for module, key in self.counters:
                if module.training:
                    counter = self._leaf(params, key)
                    counter.add_(1)
                    if module.warmup_steps > 0:  # the flat body's counters stop at warmup_steps
                        counter.clamp_(max=module.warmup_steps)
        out = torch.stack(outs)
        return out.reshape(n, *batch_shape, out.shape[-1]) if self.flatten else out


class FastSACLoss(BoundActorParams, SACLoss):
    """:class:`~torchrl.objectives.SACLoss` (v2: no state-value network) with the speed paths above.

    Constructed exactly like ``SACLoss``. It also binds the loss's actor parameters and buffers into
    the actor module once (:meth:`_bind_actor_params`), so a policy used by a collector shares the
    buffers the loss updates (e.g. the running statistics of normalisation layers in the actor).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._actor_slots = self._bind_actor_params()

    def _make_vmap(self):
        super()._make_vmap()
        # A plain MLP critic ensemble is evaluated without vmap (same math, less overhead), and
        # the losses below pass it tensors instead of TensorDicts.
        self._ensemble = None
        if _fast.enabled() and _MLPEnsemble.supports(self.qvalue_network):
            self._ensemble = self._vmap_qnetworkN0 = _MLPEnsemble(self.qvalue_network)

    def _q_tensors(self, tensordict: TensorDictBase, params: TensorDictBase, action: Tensor | None = None) -> Tensor:
        """Q values ``[N, *batch]`` of the critic ensemble on ``tensordict``'s entries, with
        ``action`` in place of the data's action when given; the TensorDict path otherwise."""
        ensemble = self._ensemble
        action_key = self.tensor_keys.action
        if ensemble is None or (action is not None and action_key not in ensemble.in_keys):
            td_q = tensordict.select(*self.qvalue_network.in_keys, strict=False)
            if action is not None:
                td_q.set(action_key, action)
            return self._vmap_qnetworkN0(td_q, params).get(self.tensor_keys.state_action_value).squeeze(-1)
        inputs = ensemble.inputs(tensordict, None if action is None else {action_key: action})
        return ensemble.q(inputs, params).squeeze(-1)

    def _compute_target_v2(self, tensordict: TensorDictBase) -> Tensor:
        """The SAC v2 target ``r + γ (1 − term) (min_j Q̄_j(s', a') − α log p(a'|s'))``, ``a' ~ π(·|s')``.

        The value of :meth:`SACLoss._compute_target_v2` (same value estimator, same draws), with
        the actor's parameter swap skipped when it is a no-op (:meth:`_actor_params`) and only the
        entries the actor and the target critics read passed to them. ``skip_done_states`` takes
        the parent's path.
        """
        if self.skip_done_states or not _fast.enabled():
            return super()._compute_target_v2(tensordict)
        next_td = tensordict.get("next")
        with torch.no_grad():
            with set_exploration_type(ExplorationType.RANDOM), self._actor_params():
                dist = self.actor_network.get_dist(next_td.select(*self.actor_network.in_keys, strict=False))
                next_action, next_log_prob = compute_rsample_log_prob(dist)
            next_q = self._q_tensors(next_td, self.target_qvalue_network_params, next_action).unsqueeze(-1)
            if next_q.shape[-next_log_prob.ndim :] != next_log_prob.shape:
                next_log_prob = next_log_prob.unsqueeze(-1)
            next_value = (next_q - self._alpha * next_log_prob).min(0)[0]
            estimator = self.value_estimator
            if type(estimator) is TD0Estimator and not estimator.average_rewards:
                # SAC's default estimator takes the bootstrap value as an argument: no copy of the
                # batch, no step_mdp (it reads reward, terminated and steps_to_next_obs, writes nothing)
                return estimator.value_estimate(tensordict, next_value=next_value).squeeze(-1)
            td_value = tensordict.clone(False)  # the estimator reads it; the caller's data stay as given
            td_value.set(("next", estimator.tensor_keys.value), next_value)
            return estimator.value_estimate(td_value).squeeze(-1)

    def qvalue_v2_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic loss ``Σ_j d(Q_j(s, a), y)`` against the SAC v2 target, with ``td_error`` metadata.

        :meth:`SACLoss.qvalue_v2_loss`'s value, with the critics evaluated on tensors
        (:meth:`_q_tensors`) rather than on a selected copy of the batch.
        """
        if not _fast.enabled():
            return super().qvalue_v2_loss(tensordict)
        weights = self._maybe_get_priority_weight(tensordict)
        target_value = self._compute_target_v2(tensordict)
        pred_val = self._q_tensors(tensordict, self.qvalue_network_params)
        td_error = (pred_val - target_value).abs()
        loss_qval = distance_loss(pred_val, target_value.expand_as(pred_val), loss_function=self.loss_function).sum(0)
        loss_qval = self._reduce_loss(loss_qval, tensordict=tensordict, weights=weights)
        return loss_qval, {"td_error": td_error.detach().max(0)[0]}
