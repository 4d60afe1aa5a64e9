"""SAC Flow with a CrossQ critic: batch-renormalised Q networks, no target network, one critic
forward on the joint batch of ``(s, a)`` and ``(s', a')`` (docs/algorithm.md §4, "paper parity")."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch import Tensor, nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.sac import compute_rsample_log_prob
from torchrl.objectives.utils import distance_loss

from torchrl_sacflow.objectives.sac_flow import SACFlowLoss

__all__ = ["CrossQFlowLoss"]


@contextlib.contextmanager
def _module_mode(module: nn.Module, training: bool):
    """Put ``module`` (recursively) in train/eval mode; give every submodule its mode back."""
    previous = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield
    finally:
        for m, mode in previous:
            m.training = mode


class CrossQFlowLoss(SACFlowLoss):
    """SAC Flow with a CrossQ critic, as in the paper's MuJoCo experiments.

    Presented in "SAC Flow: Sample-Efficient Reinforcement Learning of Flow-Based Policies via
    Velocity-Reparameterized Sequential Modeling", https://arxiv.org/abs/2509.25756, whose MuJoCo
    code is built on CrossQ ("CrossQ: Batch Normalization in Deep Reinforcement Learning for
    Greater Sample Efficiency and Simplicity", https://openreview.net/pdf?id=PczQtTsTIX).

    Compared to :class:`~torchrl_sacflow.objectives.sac_flow.SACFlowLoss` (textbook SAC with a
    target critic), the critic part follows CrossQ:

    * **no target network**: the TD target uses the online critic itself (the reference's
      ``τ = 1.0``), detached; there is nothing for a target-network updater to do;
    * **joint critic forward**: ``(s, a)`` and ``(s', a')`` are concatenated along the batch and
      the Q networks run *once*, in training mode, on the ``2B`` samples, so the
      batch-(re)normalisation statistics of the critic are those of both distributions and are
      updated on both. The output is split back into ``Q(s, a)`` and the detached ``Q(s', a')``.
      Build the critic with :func:`~torchrl_sacflow.modules.critics.make_crossq_qvalue`;
    * the next action ``a' ~ π(·|s')`` is drawn with :class:`~torchrl.envs.utils.ExplorationType`
      ``RANDOM`` (stochastic, with its path log-density) while the actor's modules are in eval
      mode (matters only for actors with normalisation/dropout layers);
    * the **actor loss** evaluates the critic in **eval mode**: the running statistics are used and
      not updated, and no gradient reaches the critic parameters.

    The loss sets the critic's and actor's modes itself for each step and restores them
    afterwards: callers never need to call ``train()``/``eval()`` on the critic. Everything else
    is inherited: the path log-density of flow actors, target entropy 0 and α = 0.2 defaults, the
    squared-error critic loss, the proximity term ``β ‖a_θ − a_buffer‖²`` and the per-step
    gradient diagnostic ``"path_grad_norm"``, prioritised-replay weights and the ``reduction``
    modes. A Gaussian (e.g. Tanh-Normal) actor works too; pass ``target_entropy="auto"`` for it.

    Why a subclass of :class:`SACFlowLoss` and not of :class:`~torchrl.objectives.CrossQLoss`:
    the two CrossQ-specific pieces are the critic loss and the critic's mode during the actor
    loss, two small overrides here, while everything flow-specific (and the priority weights, the
    value-estimator plumbing and the output keys) lives in ``SACFlowLoss`` and would have to be
    duplicated on top of ``CrossQLoss``. ``CrossQLoss`` also leaves the critic in train mode
    after its actor loss whatever its mode was before, and samples ``a'`` with the actor in its
    current mode.

    Training schedule (not the loss's job): the reference updates the critic at every step and
    the actor and α every 3rd critic update (``policy_delay = 3``), with Adam ``β1 = 0.5``. Call
    :meth:`qvalue_loss` every step and :meth:`actor_loss` / :meth:`alpha_loss` every third step
    (see the second example) rather than ``forward``, which computes all three.

    Args:
        actor_network (ProbabilisticActor): the policy (flow actor or any SAC actor).
        qvalue_network (TensorDictModule or list of them): Q(s, a) writing
            ``"state_action_value"``, normally built by
            :func:`~torchrl_sacflow.modules.critics.make_crossq_qvalue`; duplicated
            ``num_qvalue_nets`` times if a single one is given. Its batch-renorm running
            statistics are buffers of :attr:`qvalue_network_params` and so part of the loss
            ``state_dict``.

    Keyword Args:
        num_qvalue_nets (int): number of Q networks. Default 2.
        loss_function (str): critic distance. Default ``"l2"``.
        alpha_init (float): initial temperature. Default 0.2 (paper).
        target_entropy (float or "auto"): default ``0.0`` (flow policies, paper); ``"auto"`` gives
            the ``−|A|`` heuristic of Gaussian SAC.
        proximity_coef (float, optional): β of the proximity term; see :class:`SACFlowLoss`.
        log_path_grad_norms (bool): per-step gradient diagnostic; see :class:`SACFlowLoss`.
        **kwargs: the other keywords of :class:`~torchrl.objectives.SACLoss` (``fixed_alpha``,
            ``min_alpha``, ``max_alpha``, ``reduction``, ``deactivate_vmap``, ``action_spec``,
            ``use_prioritized_weights``, ``scalar_output_mode``, ...). ``delay_qvalue=True`` and
            ``skip_done_states=True`` are rejected (no target network; every next state goes
            through the joint critic batch).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_sacflow.modules import make_flow_actor
        >>> from torchrl_sacflow.modules.critics import make_crossq_qvalue
        >>> from torchrl_sacflow.objectives.crossq_flow import CrossQFlowLoss
        >>> n_obs, n_act, batch = 5, 2, 16
        >>> spec = Bounded(-1.0, 1.0, shape=(n_act,))
        >>> actor = make_flow_actor(spec, n_obs, velocity="transformer")
        >>> qvalue = make_crossq_qvalue(n_obs, n_act, num_cells=(64, 64))
        >>> loss = CrossQFlowLoss(actor, qvalue)
        >>> loss.make_value_estimator(gamma=0.99)
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
        >>> sorted(out.keys())
        ['alpha', 'entropy', 'loss_actor', 'loss_alpha', 'loss_qvalue']

        The reference schedule: a critic update every step, actor and α every third one.

        >>> critic_opt = torch.optim.Adam(loss.qvalue_network_params.parameters(),
        ...                               lr=1e-3, betas=(0.5, 0.999))
        >>> actor_opt = torch.optim.Adam(loss.actor_network_params.parameters(),
        ...                              lr=3e-4, betas=(0.5, 0.999))
        >>> alpha_opt = torch.optim.Adam([loss.log_alpha], lr=1e-3, betas=(0.5, 0.999))
        >>> for step in range(1, 4):
        ...     loss_q, _ = loss.qvalue_loss(data)
        ...     critic_opt.zero_grad(); loss_q.backward(); critic_opt.step()
        ...     if step % 3 == 0:
        ...         loss_pi, meta = loss.actor_loss(data)
        ...         actor_opt.zero_grad(); loss_pi.backward(); actor_opt.step()
        ...         loss_a = loss.alpha_loss(meta["log_prob"]).mean()
        ...         alpha_opt.zero_grad(); loss_a.backward(); alpha_opt.step()
    """

    @dataclass
    class _AcceptedKeys(SACFlowLoss._AcceptedKeys):
        """Keys of :class:`SACFlowLoss`.

        Attributes:
            action (NestedKey): the action in the data, the key the next action ``a'`` is written
                to for the joint critic batch, and the ``a_buffer`` of the proximity term.
                Defaults to ``"action"``.
        """

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(self, actor_network, qvalue_network, **kwargs) -> None:
        # the keywords and defaults are SACFlowLoss's (target entropy 0, α 0.2, l2, two critics)
        if kwargs.pop("delay_qvalue", False):
            raise ValueError(
                "CrossQFlowLoss has no target critic (CrossQ); use SACFlowLoss for a target network"
            )
        if kwargs.get("skip_done_states", False):
            raise ValueError(
                "skip_done_states is not supported by CrossQFlowLoss: every next state is part of "
                "the joint critic batch"
            )
        super().__init__(actor_network, qvalue_network, delay_qvalue=False, **kwargs)

    def _set_in_keys(self):
        super()._set_in_keys()
        # the critic also reads its (non-action) inputs at the next step
        next_keys = [
            ("next", *((key,) if isinstance(key, str) else key))
            for key in self.qvalue_network.in_keys
            if key != self.tensor_keys.action
        ]
        self._in_keys = list(dict.fromkeys([*self._in_keys, *next_keys]))

    # -- critic ---------------------------------------------------------------------------
    def _next_action(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, Tensor]:
        """Sample ``a' ~ π(·|s')`` (stochastic, actor modules in eval mode, no grad)."""
        next_td = tensordict.get("next").copy()
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM), _module_mode(
            self.actor_network, False
        ), self._actor_params():
            next_dist = self.actor_network.get_dist(next_td)
            next_action, next_log_prob = compute_rsample_log_prob(next_dist)
        next_td.set(self.tensor_keys.action, next_action)
        return next_td, next_log_prob

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """CrossQ critic loss on the joint batch.

        ``y = r + γ (1 − terminated) [min_j Q_j(s', a') − α log p(path'|s')]`` with
        ``Q_j(s', a')`` taken, detached, from the same training-mode forward as ``Q_j(s, a)``
        (batch ``[(s, a); (s', a')]``); the loss is ``Σ_j d(Q_j(s, a), y)``, reduced over the
        batch. This forward updates the critic's batch-renorm running statistics (once per call).

        Returns the reduced loss and a metadata dict with the detached ``"td_error"``
        (``max_j |Q_j(s, a) − y|``, per sample).
        """
        if tensordict.batch_dims < 1:
            raise RuntimeError("CrossQFlowLoss needs a batched tensordict (batch_dims >= 1)")
        weights = self._maybe_get_priority_weight(tensordict)
        tensordict = self.finite_next_states(tensordict)  # (see SACFlowLoss.qvalue_v2_loss)
        next_td, next_log_prob = self._next_action(tensordict)

        in_keys = self.qvalue_network.in_keys
        joint = torch.cat([tensordict.select(*in_keys), next_td.select(*in_keys)], 0)
        with _module_mode(self.qvalue_network, True):
            joint = self._vmap_qnetworkN0(joint, self.qvalue_network_params)
        batch = tensordict.shape[0]
        pred_current, pred_next = joint.get(self.tensor_keys.state_action_value).split(batch, dim=1)

        next_value = pred_next.min(0)[0]
        if next_value.shape[-next_log_prob.ndim :] != next_log_prob.shape:
            next_log_prob = next_log_prob.unsqueeze(-1)
        next_value = (next_value - self._alpha * next_log_prob).detach()
        target_value = self.value_estimator.value_estimate(
            tensordict, next_value=next_value
        ).squeeze(-1)

        pred_val = pred_current.squeeze(-1)
        loss_qval = distance_loss(
            pred_val, target_value.expand_as(pred_val), loss_function=self.loss_function
        ).sum(0)
        loss_qval = self._reduce_loss(loss_qval, tensordict=tensordict, weights=weights)
        metadata = {"td_error": (pred_val - target_value).abs().detach().max(0)[0]}
        return loss_qval, metadata

    def qvalue_v2_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Alias of :meth:`qvalue_loss` (the name ``SACLoss.forward`` calls)."""
        return self.qvalue_loss(tensordict)

    # -- actor ----------------------------------------------------------------------------
    def actor_min_q(self, tensordict: TensorDictBase, action: Tensor) -> Tensor:
        """``min_j Q_j(s, a_θ)`` with the critic in eval mode.

        The actor loss of :class:`SACFlowLoss` (``α log p(path_θ|s) − min_j Q_j(s, a_θ)
        [+ β ‖a_θ − a_buffer‖²]``) is inherited unchanged; only its critic value differs: ``Q_j``
        uses its running batch-renorm statistics (not updated) and detached parameters. Setting
        the mode here rather than around the whole ``actor_loss`` keeps the draw and the objective
        free of it, so :class:`~torchrl_sacflow.training.SACUpdate` can compile them around this call.
        """
        with _module_mode(self.qvalue_network, False):
            return super().actor_min_q(tensordict, action)
