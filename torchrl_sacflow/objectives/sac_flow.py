"""SAC for flow policies: TorchRL's ``SACLoss`` with the path log-density, a proximity term and a
per-step gradient diagnostic (docs/algorithm.md §4–5)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams, dispatch
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP
from torchrl.objectives import SACLoss
from torchrl.objectives.sac import compute_rsample_log_prob
from torchrl.objectives.utils import distance_loss
from torchrl.objectives.value import TD0Estimator

from torchrl_sacflow.modules.actor_norm import ActorBatchRenorm, batch_statistics
from torchrl_sacflow.modules.flow_actor import FlowRollout
from torchrl_sacflow.objectives._actor_binding import BoundActorParams

__all__ = ["SACFlowLoss", "path_target_entropy"]


@contextlib.contextmanager
def _record_path(rollout: FlowRollout | None, enabled: bool):
    if rollout is None or not enabled:
        yield
        return
    rollout.record_path_grads = True
    try:
        yield
    finally:
        rollout.record_path_grads = False


class _MLPEnsemble:
    """``N`` stacked copies of a plain MLP critic, evaluated one ``F.linear`` per layer and copy.

    A drop-in for SACLoss's ``_vmap_qnetworkN0(td, stacked_params)`` when the Q network is a
    ``TensorDictModule`` around a TorchRL :class:`~torchrl.modules.MLP` made of ``nn.Linear`` layers
    and parameter-free activations (what :func:`~torchrl_sacflow.modules.make_qvalue` builds). Same
    math as the vmapped call (copy ``j`` uses slice ``j`` of every stacked parameter, the inputs are
    concatenated in ``in_keys`` order), without the functorch batching machinery: on CPU the vmapped
    linear becomes ``bmm`` + a separate bias ``add`` and costs ~0.8 ms of fixed overhead per call.
    Only the output entry is written (the only one SACLoss reads); the result has batch size
    ``[N, *td.batch_size]`` like the vmapped one.
    """

    def __init__(self, qvalue_network: TensorDictModule):
        mlp = qvalue_network.module
        self.in_keys = list(qvalue_network.in_keys)
        self.out_key = qvalue_network.out_keys[0]
        # ("module", i, "weight"/"bias") keys of the stacked parameters, or a stateless module
        self.layers: list = []
        for name, layer in mlp.named_children():
            if type(layer) is nn.Linear:
                bias = None if layer.bias is None else ("module", name, "bias")
                self.layers.append((("module", name, "weight"), bias))
            else:
                self.layers.append(layer)

    @staticmethod
    def supports(qvalue_network) -> bool:
        """Whether the critic is a plain Linear/activation MLP this class can evaluate."""
        if type(qvalue_network).forward is not TensorDictModule.forward or len(qvalue_network.out_keys) != 1:
            return False
        mlp = getattr(qvalue_network, "module", None)
        if type(mlp) is not MLP or getattr(mlp, "_reshape_out", False):
            return False
        for layer in mlp.children():
            if type(layer) is nn.Linear:
                continue
            if any(True for _ in layer.parameters()) or any(True for _ in layer.buffers()):
                return False  # normalisation layers, noisy layers, ...
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
            weight = self._leaf(params, next(layer for layer in self.layers if not isinstance(layer, nn.Module))[0])
            if not weight.requires_grad:
                # Detached critics under autograd (the actor loss): run eagerly. The compiled
                # backward would save each ReLU's mask as a bool tensor, and inductor's CPU code
                # for that store measured ~20x slower than ATen's (2 ms per 512×256 mask).
                return self._eager(inputs, params)
        return self._forward(inputs, params)

    @staticmethod
    def _leaf(params: TensorDictBase, key: tuple) -> Tensor:
        # A TensorDictParams keeps its leaves in nn.Module's parameter/buffer tables under the
        # dotted key (what optimizers and state_dict see): a dict lookup instead of ~10 µs of
        # nested TensorDict get per tensor.
        if type(params) is TensorDictParams:
            name = ".".join(key)
            leaf = params._parameters.get(name)
            if leaf is None:
                leaf = params._buffers.get(name)
            if leaf is not None:
                return leaf
        return params.get(key)

    @torch.compiler.disable
    def _eager(self, inputs: list[Tensor], params: TensorDictBase) -> Tensor:
        return self._forward(inputs, params)

    def _forward(self, inputs: list[Tensor], params: TensorDictBase) -> Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)
        n = params.batch_size[0]
        # unbind once per stacked tensor: its backward stacks the copies' gradients in one op
        # (indexing each copy would zero-fill and scatter a full-size gradient per copy)
        layers = [
            layer if isinstance(layer, nn.Module)
            else (self._leaf(params, layer[0]).unbind(0),
                  (None,) * n if layer[1] is None else self._leaf(params, layer[1]).unbind(0))
            for layer in self.layers
        ]
        inplace_relu = not torch.compiler.is_compiling()
        outs = []
        for j in range(n):
            h = x
            for layer in layers:
                if not isinstance(layer, nn.Module):
                    h = F.linear(h, layer[0][j], layer[1][j])
                elif inplace_relu and type(layer) is nn.ReLU and h is not x:
                    # in place on this function's own activation: same values and gradients
                    # (ReLU's backward reads its output), one [batch, width] allocation less
                    h = torch.relu_(h)
                else:
                    h = layer(h)
            outs.append(h)
        return torch.stack(outs)


def path_target_entropy(actor: nn.Module) -> float:
    """``−(K+1)·d``: SAC's ``−1`` nat per action entry, for each of the ``K+1`` Gaussian factors of the path.

    The exact path log-density of a K-step flow has ``(K+1)·d`` Gaussian entries (the base draw
    and K step noises). With a target entropy of 0 the temperature holds the path entropy at 0,
    i.e. each step's σ near ``0.34`` (HalfCheetah, K=4), whatever the task wants; this target asks
    for what Gaussian SAC's ``−|A|`` asks of each of its entries.

    Raises:
        ValueError: if ``actor`` holds no :class:`~torchrl_sacflow.modules.FlowRollout`.
    """
    rollout = next((m for m in actor.modules() if isinstance(m, FlowRollout)), None)
    if rollout is None:
        raise ValueError("target_entropy='auto_path' needs a flow actor (built by make_flow_actor)")
    return -float((rollout.num_steps + 1) * rollout.action_dim)


class SACFlowLoss(BoundActorParams, SACLoss):
    """SAC Flow loss: SAC trained end to end through a flow policy's K-step rollout.

    Presented in "SAC Flow: Sample-Efficient Reinforcement Learning of Flow-Based Policies via
    Velocity-Reparameterized Sequential Modeling", https://arxiv.org/abs/2509.25756.

    The actor is a flow policy built by :func:`~torchrl_sacflow.make_flow_actor`: its distribution
    returns, for each reparameterised draw, the exact log-density of the noise-augmented path, which
    is used wherever SAC needs ``log π(a|s)`` (critic target, actor loss, temperature loss). On top
    of :class:`~torchrl.objectives.SACLoss` this class adds:

    * flow-policy defaults: target entropy 0, α initialised at 0.2, squared-error critic loss;
    * the offline-to-online proximity term ``β ‖a_θ − a_buffer‖²`` added to the actor loss, with
      ``β`` (:attr:`proximity_coef`) a settable attribute that can be annealed during training;
    * an optional diagnostic: the per-step gradient norms ``‖∂L_actor/∂A_i‖``, ``i = 0..K−1``
      (paper Fig. 6a), returned detached under ``"path_grad_norm"`` (shape ``[K]``; for each step
      the per-sample norm averaged over the batch). It costs one extra backward pass through the
      actor graph and nothing when off.

    Any actor that works with ``SACLoss`` (e.g. a Tanh-Normal Gaussian actor) works here too; the
    gradient diagnostic needs a flow actor.

    Args:
        actor_network (ProbabilisticActor): the policy (flow actor or any SAC actor).
        qvalue_network (TensorDictModule or list of them): Q(s, a), writing
            ``"state_action_value"``; duplicated ``num_qvalue_nets`` times if a single one is given.

    Keyword Args:
        num_qvalue_nets (int): number of Q networks. Default 2.
        loss_function (str): critic distance. Default ``"l2"`` (the paper's squared TD error).
        alpha_init (float): initial temperature. Default 0.2 (paper).
        target_entropy (float, "auto" or "auto_path"): default ``0.0`` (flow policies, paper);
            ``"auto"`` is the ``−|A|`` heuristic of Gaussian SAC; ``"auto_path"`` applies that
            heuristic to each Gaussian factor of a flow's path, ``−(K+1)·d``
            (:func:`path_target_entropy`).
        proximity_coef (float, optional): β of the proximity term. ``None`` (default) switches the
            term off entirely (no ``"proximity"`` entry in the output); a number switches it on,
            and ``0.0`` keeps the entry while giving it no weight.
        log_path_grad_norms (bool): compute the per-step gradient diagnostic. Default ``False``.
        **kwargs: every other keyword of :class:`~torchrl.objectives.SACLoss` (``fixed_alpha``,
            ``min_alpha``, ``max_alpha``, ``delay_qvalue``, ``reduction``, ``deactivate_vmap``,
            ``skip_done_states``, ``action_spec``, ...).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from torchrl.data import Bounded
        >>> from torchrl.modules import MLP, ValueOperator
        >>> from tensordict import TensorDict
        >>> from torchrl_sacflow import make_flow_actor, SACFlowLoss
        >>> n_obs, n_act, batch = 5, 2, 16
        >>> spec = Bounded(-1.0, 1.0, shape=(n_act,))
        >>> actor = make_flow_actor(spec, n_obs, velocity="transformer")
        >>> qvalue = ValueOperator(MLP(in_features=n_obs + n_act, out_features=1, num_cells=[32]),
        ...                        in_keys=["observation", "action"])
        >>> loss = SACFlowLoss(actor, qvalue, log_path_grad_norms=True)
        >>> data = TensorDict({
        ...     "observation": torch.randn(batch, n_obs),
        ...     "action": spec.rand((batch,)),
        ...     "next": {"observation": torch.randn(batch, n_obs),
        ...              "reward": torch.randn(batch, 1),
        ...              "done": torch.zeros(batch, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(batch, 1, dtype=torch.bool)},
        ... }, batch_size=[batch])
        >>> out = loss(data)
        >>> (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
        >>> out["path_grad_norm"].shape
        torch.Size([4])
    """

    @dataclass
    class _AcceptedKeys(SACLoss._AcceptedKeys):
        """Keys of :class:`SACLoss`; the buffer action of the proximity term is ``action``.

        Attributes:
            action (NestedKey): the action in the data, also the ``a_buffer`` of the proximity
                term. Defaults to ``"action"``.
        """

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        actor_network,
        qvalue_network,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "l2",
        alpha_init: float = 0.2,
        target_entropy: str | float = 0.0,
        proximity_coef: float | None = None,
        log_path_grad_norms: bool = False,
        **kwargs,
    ) -> None:
        if kwargs.get("value_network") is not None:
            raise ValueError("SACFlowLoss implements SAC v2 (no state-value network)")
        if target_entropy == "auto_path":
            target_entropy = path_target_entropy(actor_network)
        super().__init__(
            actor_network,
            qvalue_network,
            num_qvalue_nets=num_qvalue_nets,
            loss_function=loss_function,
            alpha_init=alpha_init,
            target_entropy=target_entropy,
            **kwargs,
        )
        self._use_proximity = proximity_coef is not None
        self.register_buffer(
            "_proximity_coef", torch.tensor(float(proximity_coef or 0.0), device=self.alpha_init.device)
        )
        self.log_path_grad_norms = bool(log_path_grad_norms)
        self._flow_rollout = next(
            (m for m in self.actor_network.modules() if isinstance(m, FlowRollout)), None
        )
        if self.log_path_grad_norms and self._flow_rollout is None:
            raise ValueError("log_path_grad_norms=True needs a flow actor (built by make_flow_actor)")
        self._extras: dict[str, Tensor] = {}
        self._actor_has_batch_norm = any(isinstance(m, ActorBatchRenorm) for m in self.actor_network.modules())
        # skip SACLoss's per-call parameter swap when it is a no-op (BoundActorParams)
        self._actor_slots = self._bind_actor_params()

    def _make_vmap(self):
        super()._make_vmap()
        # A plain MLP critic ensemble is evaluated without vmap (same math, less overhead), and
        # the losses below pass it tensors instead of TensorDicts.
        self._ensemble = None
        if _MLPEnsemble.supports(self.qvalue_network):
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

    # -- β --------------------------------------------------------------------------------
    @property
    def proximity_coef(self) -> float:
        """β of the proximity term ``β ‖a_θ − a_buffer‖²`` (0 disables it)."""
        return float(self._proximity_coef)

    @proximity_coef.setter
    def proximity_coef(self, value: float) -> None:
        if not self._use_proximity:
            raise RuntimeError(
                "this SACFlowLoss was built without a proximity term; pass proximity_coef=<float> "
                "(0.0 is fine) at construction to be able to set it"
            )
        if value < 0:
            raise ValueError(f"proximity_coef (β) must be >= 0, got {value}")
        self._proximity_coef.fill_(float(value))

    @property
    def out_keys(self):
        if self._out_keys is None:
            keys = ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]
            if self._use_proximity:
                keys.append("proximity")
            if self.log_path_grad_norms:
                keys.append("path_grad_norm")
            self._out_keys = keys
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values):
        self._out_keys = values

    # -- losses ---------------------------------------------------------------------------
    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Actor loss ``α log p(path_θ|s) − min_j Q_j(s, a_θ) [+ β ‖a_θ − a_buffer‖²]``.

        Returns the reduced loss and a metadata dict with the (detached) ``log_prob``, and
        ``proximity`` / ``path_grad_norm`` when those are on.
        """
        a_reparm, log_prob, dist = self._actor_draw(tensordict)
        min_q = self._actor_min_q(tensordict, a_reparm)
        return self._actor_objective(tensordict, a_reparm, log_prob, min_q, dist)

    # The actor loss in three parts, so that a compiled training step can run the middle one (the
    # detached critics, kept out of compiled graphs: see _MLPEnsemble.q) between two compiled
    # regions instead of breaking a compiled actor_loss four frames deep (SACUpdate does).
    def _actor_draw(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor, Any]:
        """``(a_θ, log p(path_θ|s), distribution)``: one reparameterised draw of the actor."""
        # the actor's batch-renorm layers (if any) use and update batch statistics only here
        with set_exploration_type(ExplorationType.RANDOM), self._actor_params(), _record_path(
            self._flow_rollout, self.log_path_grad_norms
        ), batch_statistics(self.actor_network, self._actor_has_batch_norm):
            # get_dist runs the parameter module in place: give it a selection, not the caller's data
            actor_td = tensordict.select(*self.actor_network.in_keys, strict=False)
            dist = self.actor_network.get_dist(actor_td)
            a_reparm, log_prob = compute_rsample_log_prob(dist)
        return a_reparm, log_prob, dist

    def _actor_min_q(self, tensordict: TensorDictBase, action: Tensor) -> Tensor:
        """``min_j Q_j(s, a)`` under the detached critic parameters."""
        return self._q_tensors(tensordict, self._cached_detached_qvalue_params, action).min(0)[0]

    def _actor_objective(self, tensordict: TensorDictBase, a_reparm: Tensor, log_prob: Tensor, min_q: Tensor,
                         dist=None) -> tuple[Tensor, dict[str, Tensor]]:
        """The reduced actor loss from the draw and its critic value (``dist`` for path grad norms)."""
        weights = self._maybe_get_priority_weight(tensordict)
        if log_prob.shape != min_q.shape:
            raise RuntimeError(f"Losses shape mismatch: {log_prob.shape} and {min_q.shape}")
        loss_actor = self._alpha * log_prob - min_q
        metadata = {"log_prob": log_prob.detach()}
        if self._use_proximity:
            a_buffer = tensordict.get(self.tensor_keys.action)
            sq_dist = (a_reparm - a_buffer).pow(2).sum(-1)
            loss_actor = loss_actor + self._proximity_coef * sq_dist
            metadata["proximity"] = sq_dist.detach().mean()
        if self.log_path_grad_norms:
            metadata["path_grad_norm"] = self._path_grad_norms(loss_actor, dist)
        loss_actor = self._reduce_loss(loss_actor, tensordict=tensordict, weights=weights)
        # SACLoss.forward only reads "log_prob" from the metadata: keep the rest for our output.
        self._extras = {k: v for k, v in metadata.items() if k != "log_prob"}
        return loss_actor, metadata

    def _compute_target_v2(self, tensordict: TensorDictBase) -> Tensor:
        """The SAC v2 target ``r + γ (1 − term) (min_j Q̄_j(s', a') − α log p(a'|s'))``, ``a' ~ π(·|s')``.

        The value of :meth:`SACLoss._compute_target_v2` (same value estimator, same draws), with
        the actor's parameter swap skipped when it is a no-op (:meth:`_actor_params`) and only the
        entries the actor and the target critics read passed to them. ``skip_done_states`` takes
        the parent's path.
        """
        if self.skip_done_states:
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
        weights = self._maybe_get_priority_weight(tensordict)
        target_value = self._compute_target_v2(tensordict)
        pred_val = self._q_tensors(tensordict, self.qvalue_network_params)
        td_error = (pred_val - target_value).abs()
        loss_qval = distance_loss(pred_val, target_value.expand_as(pred_val), loss_function=self.loss_function).sum(0)
        loss_qval = self._reduce_loss(loss_qval, tensordict=tensordict, weights=weights)
        return loss_qval, {"td_error": td_error.detach().max(0)[0]}

    def _path_grad_norms(self, loss_per_sample: Tensor, dist) -> Tensor:
        path = getattr(dist, "last_path", None)
        if path is None or not loss_per_sample.requires_grad:
            raise RuntimeError("path_grad_norm needs a differentiable flow-actor sample")
        inputs = path[:-1]  # A_0 .. A_{K-1}: the input of each Euler step
        grads = torch.autograd.grad(loss_per_sample.sum(), inputs, retain_graph=True)
        return torch.stack([g.flatten(0, -2).norm(dim=-1).mean() for g in grads]).detach()

    def path_grad_norms(self, tensordict: TensorDictBase) -> Tensor:
        """Per-step gradient norms ``‖∂L_actor/∂A_i‖`` for ``i = 0..K−1`` on one batch (detached).

        A standalone helper (works whether or not ``log_path_grad_norms`` is on).
        """
        previous = self.log_path_grad_norms
        self.log_path_grad_norms = True
        try:
            if self._flow_rollout is None:
                raise ValueError("path_grad_norms needs a flow actor (built by make_flow_actor)")
            return self.actor_loss(tensordict)[1]["path_grad_norm"]
        finally:
            self.log_path_grad_norms = previous

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._extras = {}
        td_out = super().forward(tensordict)
        if self.reduction != "none":
            for key, value in self._extras.items():
                td_out.set(key, value)
        self._extras = {}
        return td_out
