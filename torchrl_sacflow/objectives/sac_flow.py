"""SAC for flow policies: TorchRL's ``SACLoss`` with the path log-density, a proximity term and a
per-step gradient diagnostic (docs/algorithm.md §4–5)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from tensordict.nn import dispatch
from torch import Tensor, nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SACLoss
from torchrl.objectives.sac import compute_rsample_log_prob

from torchrl_sacflow.modules.actor_norm import ActorBatchRenorm, batch_statistics
from torchrl_sacflow.modules.flow_actor import FlowRollout
from torchrl_sacflow.objectives.flow_matching import flow_matching_error
from torchrl_sacflow._fast.sac_loss import FastSACLoss

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


class SACFlowLoss(FastSACLoss):
    """SAC Flow loss: SAC trained end to end through a flow policy's K-step rollout.

    Presented in "SAC Flow: Sample-Efficient Reinforcement Learning of Flow-Based Policies via
    Velocity-Reparameterized Sequential Modeling", https://arxiv.org/abs/2509.25756.

    The actor is a flow policy built by :func:`~torchrl_sacflow.make_flow_actor`: its distribution
    returns, for each reparameterised draw, the exact log-density of the noise-augmented path, which
    is used wherever SAC needs ``log π(a|s)`` (critic target, actor loss, temperature loss). On top
    of :class:`~torchrl.objectives.SACLoss` this class adds:

    * flow-policy defaults: target entropy 0, α initialised at 0.2, squared-error critic loss;
    * the offline-to-online proximity term ``β ‖a_θ − a_buffer‖²`` added to the actor loss, with
      ``β`` (:attr:`proximity_coef`) a settable attribute that can be annealed during training, or
      (``proximity_loss="flow_matching"``) ``β L_FM(θ; s, a_buffer)``, the flow-matching error of the
      buffer action, which holds the policy to the data's *distribution* where the squared distance
      pulls every sample towards each buffer action, i.e. towards their conditional mean; where the
      batch carries the ``proximity_mask`` key (a bool or 0/1 ``[B]``), the term holds only the
      marked rows (e.g. the demonstrations, not the online data) and is averaged over them;
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
        proximity_loss (str): ``"l2"`` (default, the paper's ``‖a_θ − a_buffer‖²``) or
            ``"flow_matching"`` (:func:`~torchrl_sacflow.objectives.flow_matching.flow_matching_error`
            of ``(s, a_buffer)``; flow actors only). Both are summed over the action entries.
        log_path_grad_norms (bool): compute the per-step gradient diagnostic. Default ``False``.
        alpha_objective (str): the temperature loss. ``"log_alpha"`` (default, TorchRL's ``SACLoss``):
            ``−log α · (log π + H̄)``, so Adam moves ``log α`` at its full step whatever α is;
            ``"alpha"`` (the SAC paper's ``J(α)``, CleanRL and the paper's released code):
            ``−α · (log π + H̄)``, whose gradient on ``log α`` shrinks with α, so α falls more
            slowly once it is small. Both have the same fixed point.
        alpha_entropy (str): the entropy the temperature loss compares with its target.
            ``"action"`` (default, SAC's): ``−log π`` of the squashed action, the tanh/rescale
            Jacobian included, as everywhere else. ``"pre_tanh"`` (flow actors only): the path
            log-density before the squash, ``log π + Σ_j log(scale_j (1 − y_j²))`` with
            ``y = (a − loc)/scale`` clipped to ``±(1 − 1e-6)``, so actions that saturate the tanh do
            not read as a low entropy and α does not rise because the policy saturates (the
            actor loss and the critic target keep the full ``log π``). Why:
            ``benchmarks/results/paper_parity_notes.md`` §6.
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
            proximity_mask (NestedKey): optional ``[B]`` bool/0-1 entry of the batch: the rows the
                proximity term holds to (averaged over them; none marked: no term). Absent: every
                row. Defaults to ``"proximity_mask"`` (e.g. ``set_keys(proximity_mask="is_offline")``
                with :class:`~torchrl_sacflow.training.offline_online.data.MixedReplayBuffer`).
        """

        proximity_mask: NestedKey = "proximity_mask"

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
        proximity_loss: str = "l2",
        log_path_grad_norms: bool = False,
        alpha_objective: str = "log_alpha",
        alpha_entropy: str = "action",
        **kwargs,
    ) -> None:
        if proximity_loss not in ("l2", "flow_matching"):
            raise ValueError(f"proximity_loss must be 'l2' or 'flow_matching', got {proximity_loss!r}")
        if alpha_objective not in ("log_alpha", "alpha"):
            raise ValueError(f"alpha_objective must be 'log_alpha' or 'alpha', got {alpha_objective!r}")
        if alpha_entropy not in ("action", "pre_tanh"):
            raise ValueError(f"alpha_entropy must be 'action' or 'pre_tanh', got {alpha_entropy!r}")
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
        self.alpha_objective = alpha_objective
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
        if proximity_loss == "flow_matching" and self._flow_rollout is None:
            raise ValueError("proximity_loss='flow_matching' needs a flow actor (built by make_flow_actor)")
        if alpha_entropy == "pre_tanh" and self._flow_rollout is None:
            raise ValueError("alpha_entropy='pre_tanh' needs a flow actor (built by make_flow_actor)")
        self.alpha_entropy = alpha_entropy
        self.proximity_loss = proximity_loss
        self._actor_has_batch_norm = any(isinstance(m, ActorBatchRenorm) for m in self.actor_network.modules())

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
        a_reparm, log_prob, dist = self.actor_draw(tensordict)
        min_q = self.actor_min_q(tensordict, a_reparm)
        return self.actor_objective(tensordict, a_reparm, log_prob, min_q, dist)

    # The actor loss in three public parts (draw → critic value → objective): a training step
    # may run them separately, e.g. SACUpdate compiles the first and the last and runs the
    # detached critics (kept out of compiled graphs: see _fast/sac_loss.py) eagerly between them,
    # instead of breaking a compiled actor_loss four frames deep.
    @property
    def actor_loss_stages(self) -> tuple[Any, Any, Any] | None:
        """:meth:`actor_loss` as the stages a training step may compile apart, or ``None``.

        ``(actor_draw, actor_min_q, actor_objective)`` (bound methods) where running them one
        after the other gives :meth:`actor_loss`'s value and splitting pays: the critics are
        evaluated on plain tensors (the speed path of :class:`FastSACLoss`), which run eagerly
        anyway, so a step compiles the draw and the objective and calls ``actor_min_q`` between
        them (:class:`~torchrl_sacflow.training.SACUpdate` with ``compile``). ``None`` (compile
        :meth:`actor_loss` whole) when a subclass overrides :meth:`actor_loss`, when the critics
        take the TensorDict path, or with ``log_path_grad_norms`` (the diagnostic needs the
        draw's distribution, which does not cross a compiled graph's boundary).
        """
        if type(self).actor_loss is not SACFlowLoss.actor_loss or self._ensemble is None or self.log_path_grad_norms:
            return None
        return self.actor_draw, self.actor_min_q, self.actor_objective

    def actor_draw(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor, Any]:
        """``(a_θ, log p(path_θ|s), distribution)``: one reparameterised draw of the actor."""
        # the actor's batch-renorm layers (if any) use and update batch statistics only here
        with set_exploration_type(ExplorationType.RANDOM), self._actor_params(), _record_path(
            self._flow_rollout, self.log_path_grad_norms
        ), (batch_statistics(self.actor_network) if self._actor_has_batch_norm else contextlib.nullcontext()):
            # get_dist runs the parameter module in place: give it a selection, not the caller's data
            actor_td = tensordict.select(*self.actor_network.in_keys, strict=False)
            dist = self.actor_network.get_dist(actor_td)
            a_reparm, log_prob = compute_rsample_log_prob(dist)
        return a_reparm, log_prob, dist

    def actor_min_q(self, tensordict: TensorDictBase, action: Tensor) -> Tensor:
        """``min_j Q_j(s, a)`` under the detached critic parameters."""
        return self._q_tensors(tensordict, self._cached_detached_qvalue_params, action).min(0)[0]

    def actor_objective(self, tensordict: TensorDictBase, a_reparm: Tensor, log_prob: Tensor, min_q: Tensor,
                         dist=None) -> tuple[Tensor, dict[str, Tensor]]:
        """The reduced actor loss from the draw and its critic value (``dist`` for path grad norms)."""
        weights = self._maybe_get_priority_weight(tensordict)
        if log_prob.shape != min_q.shape:
            raise RuntimeError(f"Losses shape mismatch: {log_prob.shape} and {min_q.shape}")
        loss_actor = self._alpha * log_prob - min_q
        metadata = {"log_prob": log_prob.detach()}
        if self.alpha_entropy == "pre_tanh":  # what the temperature loss reads instead (forward, SACUpdate)
            metadata["alpha_log_prob"] = (log_prob + self.squash_log_jacobian(a_reparm)).detach()
        if self._use_proximity:
            a_buffer = tensordict.get(self.tensor_keys.action)
            if self.proximity_loss == "flow_matching":
                sq_dist = self._flow_matching_error(tensordict, a_buffer)
            else:
                sq_dist = (a_reparm - a_buffer).pow(2).sum(-1)
            mask = tensordict.get(self.tensor_keys.proximity_mask, None)
            if mask is not None:  # the marked rows only, averaged over them
                mask = mask.to(sq_dist.dtype).reshape(sq_dist.shape)
                sq_dist = sq_dist * mask / mask.mean().clamp_min(1.0 / mask.numel())
            loss_actor = loss_actor + self._proximity_coef * sq_dist
            metadata["proximity"] = sq_dist.detach().mean()
        if self.log_path_grad_norms:
            metadata["path_grad_norm"] = self._path_grad_norms(loss_actor, dist)
        loss_actor = self._reduce_loss(loss_actor, tensordict=tensordict, weights=weights)
        return loss_actor, metadata

    def squash_log_jacobian(self, action: Tensor) -> Tensor:
        """``Σ_j log(scale_j (1 − y_j²))``, ``y = (a − loc)/scale`` clipped to ``±(1 − 1e-6)``: the log
        Jacobian of the flow actor's squash at ``action`` (``[*B, d]`` → ``[*B]``)."""
        rollout = self._flow_rollout
        y = ((action - rollout.action_loc) / rollout.action_scale).clamp(-1 + 1e-6, 1 - 1e-6)
        return (torch.log1p(-y * y) + rollout.action_scale.log()).sum(-1)

    def _flow_matching_error(self, tensordict: TensorDictBase, a_buffer: Tensor) -> Tensor:
        """Per-sample flow-matching error of the buffer action under the actor's velocity."""
        keys = self.actor_network.module[0].in_keys
        obs = [tensordict.get(k) for k in keys]
        obs = obs[0] if len(obs) == 1 else torch.cat(obs, dim=-1)
        with self._actor_params():
            return flow_matching_error(self._flow_rollout, obs, a_buffer)

    def _alpha_loss(self, log_prob: Tensor) -> Tensor:
        if self.alpha_objective == "alpha" and self.target_entropy is not None:
            return -self.log_alpha.exp() * (log_prob + self.target_entropy)
        return super()._alpha_loss(log_prob)

    def qvalue_v2_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic loss ``Σ_j d(Q_j(s, a), y)`` against the SAC v2 target, with ``td_error`` metadata.

        A terminated transition's target is its reward alone, whatever its next state holds: next
        observations that are not finite (NaN/inf, which some datasets store after a terminal
        state) are replaced, on terminated rows only, before the next action and the target
        critics see them (:meth:`finite_next_states`); otherwise ``0 × NaN`` would poison the loss.
        """
        return super().qvalue_v2_loss(self.finite_next_states(tensordict))

    def finite_next_states(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``tensordict``, or a shallow copy whose terminated rows' non-finite next-state entries hold
        the row's current-state values instead (finite stand-ins that never reach a target: a
        terminated row does not bootstrap). The caller's data are not modified."""
        terminated = tensordict.get(("next", self.tensor_keys.terminated), None)
        if terminated is None:
            return tensordict
        keys = {k for k in (*self.actor_network.in_keys, *self.qvalue_network.in_keys) if k != self.tensor_keys.action}
        out = tensordict
        for key in keys:
            next_key = ("next", *((key,) if isinstance(key, str) else key))
            value = tensordict.get(next_key, None)
            if value is None or not value.is_floating_point():
                continue
            # eager: skip the common all-finite case; compiled: always mask (no data-dependent branch)
            if not torch.compiler.is_compiling() and bool(torch.isfinite(value).all()):
                continue
            mask = terminated.reshape(*terminated.shape[: tensordict.batch_dims], *[1] * (value.ndim - tensordict.batch_dims))
            bad = ~torch.isfinite(value) & mask.bool()
            stand_in = tensordict.get(key, None)
            stand_in = torch.zeros_like(value) if stand_in is None else stand_in.expand_as(value)
            if out is tensordict:
                out = tensordict.copy()
                out.set("next", tensordict.get("next").copy())
            out.set(next_key, torch.where(bad, stand_in, value))
        return out

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
        """The SAC v2 losses of :meth:`SACLoss.forward <torchrl.objectives.SACLoss.forward>` (same
        values, same order of draws), plus the actor's metadata (``proximity``, ``path_grad_norm``)
        when reduced: ``SACLoss.forward`` keeps only the ``log_prob`` of :meth:`actor_loss`'s
        metadata, so this loss assembles its output itself rather than pass the rest around it.

        Returns:
            ``TensorDict`` of :attr:`out_keys`: ``[]``-shaped with a reduction, else the batch
            shape (``alpha`` / ``entropy`` as non-tensor entries, as ``SACLoss`` does). Also writes
            the critic's ``td_error`` into ``tensordict`` under the ``priority`` key.
        """
        loss_qvalue, value_metadata = self.qvalue_v2_loss(tensordict)
        loss_actor, metadata = self.actor_loss(tensordict)
        log_prob = metadata.pop("log_prob")
        alpha_log_prob = metadata.pop("alpha_log_prob", log_prob)
        loss_alpha = self._reduce_loss(self._alpha_loss(log_prob=alpha_log_prob), tensordict=tensordict,
                                       weights=self._maybe_get_priority_weight(tensordict))
        tensordict.set(self.tensor_keys.priority, value_metadata["td_error"])
        if loss_actor.shape != loss_qvalue.shape:
            raise RuntimeError(f"Losses shape mismatch: {loss_actor.shape} and {loss_qvalue.shape}")
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_alpha": loss_alpha}
        if self.reduction == "none":
            td_out = TensorDict(out, batch_size=tensordict.batch_size)
            if self.scalar_output_mode == "non_tensor":
                td_out.set_non_tensor("alpha", self._alpha)
                td_out.set_non_tensor("entropy", -log_prob.detach().mean())
        else:
            td_out = TensorDict({**out, "alpha": self._alpha, "entropy": -log_prob.detach().mean(), **metadata},
                                batch_size=[])
        self._clear_weakrefs(tensordict, td_out, "actor_network_params", "qvalue_network_params",
                             "target_actor_network_params", "target_qvalue_network_params")
        return td_out
