"""Flow Q-learning (FQL) and its action-chunked variant (QC-FQL) as one TorchRL loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams, dispatch
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.objectives import LossModule
from torchrl.objectives.utils import _vmap_func

__all__ = ["FQLLoss"]

_Q_AGG = ("min", "mean")


def _drop(keys, *remove) -> list:
    return [k for k in keys if k not in remove]


class FQLLoss(LossModule):
    """Flow Q-learning loss: a behaviour flow, a one-step policy distilled from it, and an ensemble critic.

    Presented in "Flow Q-Learning" (Park, Li, Levine, 2025), https://arxiv.org/abs/2502.02538;
    with ``action_chunk=h > 1``, the action-chunked "QC-FQL" of "Reinforcement Learning with
    Action Chunking" (Li, Zhou, Levine, 2025), https://arxiv.org/abs/2507.07969. The semantics
    follow the reference code (seohongpark/fql ``agents/fql.py``, ColinQiyangLi/qc
    ``agents/acfql.py``); actions live in ``[-1, 1]`` and are clipped there, as in both.

    Three networks, three losses (each reaches only its own network's parameters):

    * **behaviour flow** ``v_φ(s, x_t, t)`` (``velocity_network``), trained by flow matching on the
      buffer actions in action space (no tanh): ``x_0 ~ N(0, I)``, ``t ~ U[0, 1]``,
      ``x_t = (1 − t) x_0 + t a``, ``loss_flow = mean_i (v_φ(s, x_t, t) − (a − x_0))_i²`` (mean over
      the action entries, as the reference; this is why :func:`~torchrl_sacflow.objectives.
      flow_matching.flow_matching_error`, which works in a tanh flow actor's pre-tanh space and
      sums the entries, is not reused). Its action for noise ``z`` is the ``flow_steps``-step Euler
      integral from ``x_0 = z``, clipped to ``[-1, 1]`` (:meth:`behaviour_action`).
    * **one-step policy** ``μ_ω(s, z)`` (``actor_network``): ``loss_actor = −λ · mean_j Q_j(s,
      clip(μ_ω(s, z))) + α · mean_i (μ_ω(s, z) − flow(s, z))_i²`` with ``z ~ N(0, I)`` shared by both
      terms. ``λ`` is 1, or ``1 / mean|Q|`` (detached) with ``normalize_q_loss``. The actor's Q is
      the *mean* of the ensemble whatever ``q_agg`` (as the reference).
      **Stop-gradient**: the distillation target ``flow(s, z)`` is computed without gradient
      (``torch.no_grad`` and detached flow parameters), so the distillation term trains the
      one-step policy only and no backpropagation through the Euler steps happens. The reference
      code has this too, implicitly (its networks are called without ``grad_params``; see
      seohongpark/fql issue 8 and ColinQiyangLi/qc issue 9, where a reader took the target for
      non-stop-gradiented); here it is explicit, and tested.
    * **critic** ``Q_j``, ``j = 1..num_qvalue_nets`` (``qvalue_network``, copied and re-initialised
      per member), with target parameters for Polyak averaging
      (:class:`~torchrl.objectives.SoftUpdate`): ``y = r + γ^h (1 − terminated) agg_j Q̄_j(s′,
      clip(μ_ω(s′, z′)))``, ``agg`` = ``q_agg`` (``"mean"``, the reference's default, or ``"min"``),
      ``loss_qvalue = mean_j (Q_j(s, a) − y)²``.

    With ``action_chunk=h`` the transitions are the chunked ones of
    :func:`~torchrl_sacflow.action_chunks.chunk_episode`: ``action`` is ``[*B, h·d]`` (all three
    networks see the whole chunk), ``("next", "reward")`` is already ``Σ_{j<k} γ^j r_{t+j}`` and
    ``("next", "observation")`` is the state after the chunk, so only the bootstrap changes, to
    ``γ^h`` (a chunk cut short by the episode's end either terminates or is truncated; the
    constant ``γ^h`` is that of ``make_chunked_sac_flow_loss``). Where the batch carries
    ``chunk_length`` (``k``, the executed steps), the padded entries of a short chunk
    (``j ≥ k``) are left out of the flow-matching error (QC's ``valid`` mask; mean still over all
    ``h·d`` entries, as there).

    Summing the three losses gives the reference's single objective (critic + BC flow + α distill
    + Q); keeping them apart lets a training step use one optimizer per network.

    Args:
        actor_network (TensorDictModule): the one-step policy; ``in_keys`` = the observation
            key(s) and the ``noise`` key, ``out_keys`` = ``[action]``; unbounded output (clipped
            here where Q or the env needs it).
        velocity_network (TensorDictModule): the behaviour flow's velocity; ``in_keys`` = the
            observation key(s), the ``noisy_action`` and the ``flow_time`` keys (``t`` as
            ``[*B, 1]``), ``out_keys`` = ``[velocity]``.
        qvalue_network (TensorDictModule): ``Q(s, a)`` writing ``state_action_value`` (``[*B, 1]``);
            copied ``num_qvalue_nets`` times.

    Keyword Args:
        alpha (float): α, the distillation weight (>= 0). Default 10.0 (seohongpark/fql's default;
            the FQL paper tunes it per task family, QC-FQL's default is 100).
        num_qvalue_nets (int): critic ensemble size. Default 2 (both references).
        q_agg (str): aggregation of the target ensemble, ``"mean"`` (default, both references) or
            ``"min"``.
        gamma (float): per-step discount γ in (0, 1]. Default 0.99.
        action_chunk (int): ``h``, primitive actions per transition (QC-FQL for ``h > 1``); the
            bootstrap is discounted by ``γ^h``. Default 1 (FQL).
        flow_steps (int): Euler steps of the behaviour flow's action. Default 10 (both references).
        normalize_q_loss (bool): scale the actor's Q term by ``1 / mean|Q|`` (detached). Default
            ``False`` (both references).
        reduction (str): ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses).

    Raises:
        ValueError: an unknown ``q_agg``, ``alpha < 0``, ``num_qvalue_nets``, ``flow_steps`` or
            ``action_chunk`` below 1, ``gamma`` outside (0, 1]; at call time, an action width that
            ``action_chunk`` does not divide.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.modules import MLP
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_sacflow import FQLLoss
        >>> n_obs, h, d, batch = 5, 2, 3, 8
        >>> w = h * d  # QC-FQL: the networks see the whole chunk
        >>> actor = TensorDictModule(MLP(in_features=n_obs + w, out_features=w, num_cells=[32]),
        ...                          in_keys=["observation", "flow_noise"], out_keys=["action"])
        >>> velocity = TensorDictModule(MLP(in_features=n_obs + w + 1, out_features=w, num_cells=[32]),
        ...                             in_keys=["observation", "flow_noisy_action", "flow_time"],
        ...                             out_keys=["flow_velocity"])
        >>> qvalue = TensorDictModule(MLP(in_features=n_obs + w, out_features=1, num_cells=[32]),
        ...                           in_keys=["observation", "action"], out_keys=["state_action_value"])
        >>> loss = FQLLoss(actor, velocity, qvalue, alpha=100.0, action_chunk=h)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> data = TensorDict({
        ...     "observation": torch.randn(batch, n_obs),
        ...     "action": torch.rand(batch, w) * 2 - 1,
        ...     "chunk_length": torch.full((batch, 1), h),
        ...     "next": {"observation": torch.randn(batch, n_obs),
        ...              "reward": torch.randn(batch, 1),
        ...              "done": torch.zeros(batch, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(batch, 1, dtype=torch.bool)},
        ... }, batch_size=[batch])
        >>> out = loss(data)
        >>> sorted(out.keys())
        ['distill_loss', 'loss_actor', 'loss_flow', 'loss_qvalue', 'q_loss']
        >>> (out["loss_actor"] + out["loss_flow"] + out["loss_qvalue"]).backward()
        >>> updater.step()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            action (NestedKey): the buffer action (``[*B, h·d]``) and the actor's output.
                Defaults to ``"action"``.
            noise (NestedKey): the one-step policy's noise input ``z``. Defaults to ``"flow_noise"``.
            noisy_action (NestedKey): the velocity's ``x_t`` input. Defaults to ``"flow_noisy_action"``.
            flow_time (NestedKey): the velocity's ``t`` input (``[*B, 1]``). Defaults to ``"flow_time"``.
            velocity (NestedKey): the velocity's output. Defaults to ``"flow_velocity"``.
            state_action_value (NestedKey): the critic's output. Defaults to ``"state_action_value"``.
            reward (NestedKey): under ``"next"``. Defaults to ``"reward"``.
            done (NestedKey): under ``"next"`` (read by nothing here; kept for TorchRL's key
                conventions). Defaults to ``"done"``.
            terminated (NestedKey): under ``"next"``, stops the bootstrap. Defaults to ``"terminated"``.
            chunk_length (NestedKey): optional ``[*B, 1]`` executed steps of a chunk (masks the
                padded actions of the flow-matching error when ``action_chunk > 1``). Defaults
                to ``"chunk_length"``.
            priority (NestedKey): where the critic's TD error is written. Defaults to ``"td_error"``.
        """

        action: NestedKey = "action"
        noise: NestedKey = "flow_noise"
        noisy_action: NestedKey = "flow_noisy_action"
        flow_time: NestedKey = "flow_time"
        velocity: NestedKey = "flow_velocity"
        state_action_value: NestedKey = "state_action_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        chunk_length: NestedKey = "chunk_length"
        priority: NestedKey = "td_error"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    velocity_network: TensorDictModule
    velocity_network_params: TensorDictParams
    target_velocity_network_params: TensorDictParams
    qvalue_network: TensorDictModule
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        velocity_network: TensorDictModule,
        qvalue_network: TensorDictModule,
        *,
        alpha: float = 10.0,
        num_qvalue_nets: int = 2,
        q_agg: str = "mean",
        gamma: float = 0.99,
        action_chunk: int = 1,
        flow_steps: int = 10,
        normalize_q_loss: bool = False,
        reduction: str | None = None,
    ) -> None:
        if q_agg not in _Q_AGG:
            raise ValueError(f"q_agg must be 'min' or 'mean', got {q_agg!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha (the distillation weight) must be >= 0, got {alpha}")
        for name, value in (("num_qvalue_nets", num_qvalue_nets), ("flow_steps", flow_steps),
                            ("action_chunk", action_chunk)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if reduction not in (None, "mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        super().__init__()
        self._in_keys = None
        self._out_keys = None
        self.reduction = "mean" if reduction is None else reduction
        self.alpha = float(alpha)
        self.num_qvalue_nets = int(num_qvalue_nets)
        self.q_agg = q_agg
        self.gamma = float(gamma)
        self.action_chunk = int(action_chunk)
        self.flow_steps = int(flow_steps)
        self.normalize_q_loss = bool(normalize_q_loss)
        keys = self.tensor_keys
        self._actor_obs_keys = _drop(actor_network.in_keys, keys.noise)
        self._velocity_obs_keys = _drop(velocity_network.in_keys, keys.noisy_action, keys.flow_time)
        self._q_obs_keys = _drop(qvalue_network.in_keys, keys.action)
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(velocity_network, "velocity_network")
        policy_params = list(actor_network.parameters()) + list(velocity_network.parameters())
        self.convert_to_functional(qvalue_network, "qvalue_network", self.num_qvalue_nets,
                                   create_target_params=True, compare_against=policy_params)
        self._vmap_q = _vmap_func(self.qvalue_network, (None, 0), randomness=self.vmap_randomness)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        self._in_keys = None

    @property
    def bootstrap_discount(self) -> float:
        """``γ^h``, the discount of the critic target's bootstrap term."""
        return self.gamma ** self.action_chunk

    @property
    def in_keys(self):
        if self._in_keys is None:
            keys = self.tensor_keys
            obs = list(dict.fromkeys([*self._actor_obs_keys, *self._velocity_obs_keys, *self._q_obs_keys]))
            next_obs = [("next", *((k,) if isinstance(k, str) else k)) for k in
                        dict.fromkeys([*self._actor_obs_keys, *self._q_obs_keys])]
            self._in_keys = [*obs, keys.action, *next_obs, ("next", keys.reward), ("next", keys.terminated)]
            if self.action_chunk > 1:
                self._in_keys.append(keys.chunk_length)
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    @property
    def out_keys(self):
        if self._out_keys is None:
            self._out_keys = ["loss_actor", "loss_qvalue", "loss_flow", "distill_loss", "q_loss"]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values):
        self._out_keys = values

    # -- helpers ----------------------------------------------------------------------------------
    def _width(self, tensordict: TensorDictBase) -> int:
        width = tensordict.get(self.tensor_keys.action).shape[-1]
        if width % self.action_chunk:
            raise ValueError(f"action width {width} is not a multiple of action_chunk={self.action_chunk}")
        return width

    def _noise(self, tensordict: TensorDictBase, width: int) -> Tensor:
        ref = tensordict.get(self.tensor_keys.action)
        return torch.randn(*tensordict.batch_size, width, device=ref.device, dtype=ref.dtype)

    def _one_step(self, obs_td: TensorDictBase, noise: Tensor, params: TensorDictBase) -> Tensor:
        td = obs_td.select(*self._actor_obs_keys, strict=False).copy()
        td.set(self.tensor_keys.noise, noise)
        with params.to_module(self.actor_network):
            return self.actor_network(td).get(self.tensor_keys.action)

    def _q(self, obs_td: TensorDictBase, action: Tensor, params: TensorDictBase) -> Tensor:
        """``[N, *B]``: each ensemble member's Q."""
        td = obs_td.select(*self._q_obs_keys, strict=False).copy()
        td.set(self.tensor_keys.action, action)
        return self._vmap_q(td, params).get(self.tensor_keys.state_action_value).squeeze(-1)

    def _velocity(self, obs_td: TensorDictBase, x: Tensor, t: Tensor) -> Tensor:
        td = obs_td.select(*self._velocity_obs_keys, strict=False).copy()
        td.set(self.tensor_keys.noisy_action, x)
        td.set(self.tensor_keys.flow_time, t)
        return self.velocity_network(td).get(self.tensor_keys.velocity)

    @torch.no_grad()
    def behaviour_action(self, tensordict: TensorDictBase, noise: Tensor) -> Tensor:
        """The behaviour flow's action for noise ``z``: ``flow_steps`` Euler steps from ``x_0 = z``,
        clipped to ``[-1, 1]``; ``[*B, w]``, computed without gradient (the distillation target)."""
        x = noise
        n = self.flow_steps
        with self.velocity_network_params.detach().to_module(self.velocity_network):
            for i in range(n):
                t = torch.full((*x.shape[:-1], 1), i / n, device=x.device, dtype=x.dtype)
                x = x + self._velocity(tensordict, x, t) / n
        return x.clamp(-1.0, 1.0)

    # -- losses -----------------------------------------------------------------------------------
    def flow_loss(self, tensordict: TensorDictBase) -> Tensor:
        """Flow matching of the buffer actions: ``mean_i (v_φ(s, x_t, t) − (a − x_0))_i²``, padded
        chunk entries (``j ≥ chunk_length``) zeroed when ``action_chunk > 1``; reduced."""
        width = self._width(tensordict)
        a = tensordict.get(self.tensor_keys.action)
        x0 = torch.randn_like(a)
        t = torch.rand((*a.shape[:-1], 1), device=a.device, dtype=a.dtype)
        with self.velocity_network_params.to_module(self.velocity_network):
            pred = self._velocity(tensordict, (1 - t) * x0 + t * a, t)
        err = (pred - (a - x0)).pow(2)
        length = tensordict.get(self.tensor_keys.chunk_length, None)
        if self.action_chunk > 1 and length is not None:
            h = self.action_chunk
            valid = torch.arange(h, device=a.device) < length.reshape(*a.shape[:-1], 1)
            err = (err.unflatten(-1, (h, width // h)) * valid.unsqueeze(-1)).flatten(-2)
        return self._reduce_loss(err.mean(-1))

    def _distill(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor]:
        """The one-step action ``μ_ω(s, z)`` and its per-sample distillation error toward the flow's."""
        noise = self._noise(tensordict, self._width(tensordict))
        target = self.behaviour_action(tensordict, noise)
        action = self._one_step(tensordict, noise, self.actor_network_params)
        return action, (action - target).pow(2).mean(-1)

    def distillation_loss(self, tensordict: TensorDictBase) -> Tensor:
        """``mean_i (μ_ω(s, z) − flow(s, z))_i²`` alone, reduced: the actor loss without its Q term.

        Behaviour cloning of the one-step policy (the recipe's pre-training phase, before any
        critic exists); the gradient reaches the one-step policy only.
        """
        return self._reduce_loss(self._distill(tensordict)[1])

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """``−λ mean_j Q_j(s, clip(μ_ω(s, z))) + α mean_i (μ_ω(s, z) − flow(s, z))_i²``, reduced, and
        the detached ``distill_loss`` and ``q_loss`` (reduced). Gradients reach the one-step policy
        only (the critic's parameters and the flow target are detached)."""
        action, distill = self._distill(tensordict)
        q = self._q(tensordict, action.clamp(-1.0, 1.0), self.qvalue_network_params.detach()).mean(0)
        q_loss = -q
        if self.normalize_q_loss:
            q_loss = q_loss / q.detach().abs().mean()
        loss = self._reduce_loss(q_loss + self.alpha * distill)
        return loss, {"distill_loss": self._reduce_loss(distill).detach(),
                      "q_loss": self._reduce_loss(q_loss).detach()}

    @torch.no_grad()
    def value_target(self, tensordict: TensorDictBase) -> Tensor:
        """``y = r + γ^h (1 − terminated) agg_j Q̄_j(s′, clip(μ_ω(s′, z′)))``, ``[*B]``, no gradient."""
        keys = self.tensor_keys
        width = self._width(tensordict)
        next_td = tensordict.get("next")
        next_action = self._one_step(next_td, self._noise(tensordict, width), self.actor_network_params)
        next_q = self._q(next_td, next_action.clamp(-1.0, 1.0), self.target_qvalue_network_params)
        next_q = next_q.min(0).values if self.q_agg == "min" else next_q.mean(0)
        reward = next_td.get(keys.reward).reshape(next_q.shape)
        not_terminal = (~next_td.get(keys.terminated).bool()).reshape(next_q.shape).to(next_q.dtype)
        return reward + self.bootstrap_discount * not_terminal * next_q

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """``mean_j (Q_j(s, a) − y)²``, reduced, and the per-sample ``td_error`` (mean over the
        ensemble of ``|Q_j − y|``, detached) in the metadata."""
        target = self.value_target(tensordict)
        q = self._q(tensordict, tensordict.get(self.tensor_keys.action), self.qvalue_network_params)
        td = q - target
        return self._reduce_loss(td.pow(2).mean(0)), {"td_error": td.detach().abs().mean(0)}

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The three losses and the actor's two terms (detached).

        Returns:
            ``TensorDict`` of :attr:`out_keys`, ``[]``-shaped with a reduction, else the batch
            shape. Writes the critic's ``td_error`` into ``tensordict`` under ``priority``.
        """
        loss_qvalue, meta = self.qvalue_loss(tensordict)
        loss_actor, actor_meta = self.actor_loss(tensordict)
        loss_flow = self.flow_loss(tensordict)
        tensordict.set(self.tensor_keys.priority, meta["td_error"])
        batch = tensordict.batch_size if self.reduction == "none" else []
        return TensorDict({"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_flow": loss_flow,
                           **actor_meta}, batch_size=batch)
