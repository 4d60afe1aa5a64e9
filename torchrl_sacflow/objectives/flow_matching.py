"""Rectified-flow (flow-matching) pre-training of a flow actor on (observation, action) data."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams, dispatch
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torchrl_sacflow.modules.flow_actor import FlowRollout, FlowStateModule
from torchrl_sacflow._fast.actor_binding import BoundActorParams

__all__ = ["FlowMatchingLoss", "flow_matching_error"]


def flow_matching_error(rollout: FlowRollout, observation: torch.Tensor, action: torch.Tensor,
                        action_eps: float = 1e-4) -> torch.Tensor:
    """Per-sample flow-matching error ``‖(A_1 − A_0) − v_θ(t, (1 − t) A_0 + t A_1, s)‖²``.

    ``A_1`` is the data ``action`` mapped back through the rollout's rescale and tanh (clipped to
    ``±(1 − action_eps)`` before ``atanh``), ``A_0 ~ N(0, I)``, ``t ~ U[0, 1]`` per sample
    (docs/algorithm.md §1). Shapes: ``observation [*B, obs_dim]``, ``action [*B, d]`` → ``[*B]``.
    The velocity's parameters must be in the module (a loss's ``_actor_params()`` context).
    """
    unit = (action - rollout.action_loc) / rollout.action_scale
    a1 = torch.atanh(unit.clamp(-1 + action_eps, 1 - action_eps))
    a0 = torch.randn_like(a1)
    t = torch.rand((*a1.shape[:-1], 1), device=a1.device, dtype=a1.dtype)
    v = rollout.velocity((1 - t) * a0 + t * a1, observation, t)
    return (a1 - a0 - v).pow(2).sum(-1)


class FlowMatchingLoss(BoundActorParams, LossModule):
    """Flow-matching loss for offline pre-training of a flow policy (docs/algorithm.md §1).

    For data ``(s, a)``, the target end point is taken in the flow's pre-tanh space,
    ``A_1 = atanh(clip((a − loc) / scale, −1 + ε, 1 − ε))``, so that the policy's ``tanh(A_K)``
    output reproduces the data; then with ``A_0 ~ N(0, I)`` and ``t ~ U[0, 1]``:

        L_FM = E ‖ (A_1 − A_0) − v_θ(t, (1 − t) A_0 + t A_1, s) ‖²

    (squared norm over the action dimensions, reduced over the batch). It trains the same velocity
    parameters that :class:`~torchrl_sacflow.SACFlowLoss` fine-tunes.

    Args:
        actor_network (ProbabilisticActor): a flow actor built by
            :func:`~torchrl_sacflow.make_flow_actor`.

    Keyword Args:
        action_eps (float): ε of the clip before ``atanh``. Default ``1e-4``.
        reduction (str): ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_sacflow import make_flow_actor, FlowMatchingLoss
        >>> actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 4, velocity="gru", noise_std=0.1)
        >>> loss = FlowMatchingLoss(actor)
        >>> data = TensorDict({"observation": torch.randn(32, 4),
        ...                    "action": torch.rand(32, 2) * 2 - 1}, batch_size=[32])
        >>> out = loss(data)
        >>> out["loss_flow_matching"].backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            action (NestedKey): the demonstrated action. Defaults to ``"action"``.
        """

        action: NestedKey = "action"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams

    def __init__(self, actor_network, *, action_eps: float = 1e-4, reduction: str | None = None):
        super().__init__()
        if not 0 < action_eps < 1:
            raise ValueError(f"action_eps must be in (0, 1), got {action_eps}")
        self._in_keys = None
        self._out_keys = None
        self.reduction = "mean" if reduction is None else reduction
        self.action_eps = float(action_eps)
        state = next((m for m in actor_network.modules() if isinstance(m, FlowStateModule)), None)
        if state is None:
            raise ValueError("FlowMatchingLoss needs a flow actor (built by make_flow_actor)")
        self.observation_keys = list(actor_network.module[0].in_keys)
        self.convert_to_functional(actor_network, "actor_network")
        self._rollout = next(m for m in self.actor_network.modules() if isinstance(m, FlowRollout))
        self._actor_slots = self._bind_actor_params()  # skip the per-call no-op parameter swap

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self):
        if self._in_keys is None:
            self._in_keys = [*self.observation_keys, self.tensor_keys.action]
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    @property
    def out_keys(self):
        if self._out_keys is None:
            self._out_keys = ["loss_flow_matching"]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values):
        self._out_keys = values

    def pre_tanh_target(self, action: torch.Tensor) -> torch.Tensor:
        """``A_1``: the data action mapped back through the rescale and the tanh."""
        rollout = self._rollout
        unit = (action - rollout.action_loc) / rollout.action_scale
        return torch.atanh(unit.clamp(-1 + self.action_eps, 1 - self.action_eps))

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = [tensordict.get(k) for k in self.observation_keys]
        obs = obs[0] if len(obs) == 1 else torch.cat(obs, dim=-1)
        with self._actor_params():  # the loss's parameters and buffers (action bounds included)
            loss = flow_matching_error(self._rollout, obs, tensordict.get(self.tensor_keys.action), self.action_eps)
        loss = self._reduce_loss(loss, tensordict=tensordict)
        batch = tensordict.batch_size if self.reduction == "none" else []
        return TensorDict({"loss_flow_matching": loss}, batch_size=batch)
