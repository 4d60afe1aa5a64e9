"""The offline-to-online algorithms (``algo=``) as one interface: what each phase steps, what acts.

``sac_flow`` (the paper), ``fql`` / ``qc_fql`` (Flow Q-learning and its action-chunked variant, the
paper's offline-to-online baselines) and ``bc`` (flow-matching pre-training alone, the floor) share
the recipe's data, buffers, chunked env, evaluation, checkpoints and collectors; only the networks,
the loss and the update differ, and :func:`make_learner` hides that behind :class:`Learner`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import TensorSpec
from torchrl.modules import MLP
from torchrl.objectives import LossModule, SoftUpdate

from torchrl_sacflow.modules.critics import make_qvalue
from torchrl_sacflow.objectives import FQLLoss
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.optim import make_optimizers
from torchrl_sacflow.training.policies import make_policy
from torchrl_sacflow.training.update import SACUpdate
from torchrl_sacflow.training.offline_online.updates import FlowMatchingUpdate, make_chunked_sac_flow_loss

#: ``algo=`` choices of the offline-to-online recipe.
ALGORITHMS = ("sac_flow", "fql", "qc_fql", "bc")


@dataclass
class Learner:
    """What the recipe's phases need of an algorithm.

    Attributes:
        policy: the acting module (``observation`` -> ``action``, ``[*B, h·d]`` in the env's bounds),
            handed to the collector and the evaluation, and saved as the checkpoint's ``policy``.
        loss: the loss module (every trained and target parameter: the checkpoint's ``loss_module``).
        optimizers: name -> optimiser, for the checkpoint.
        update_step: the stateful update (``state_dict``/``load_state_dict``), for the checkpoint.
        pretrain: one pre-training (behaviour-cloning) step, ``batch -> TensorDict`` of metrics.
        update: one offline / online RL step, ``batch -> TensorDict`` of metrics (``None`` for ``bc``).
        set_beta: sets the proximity coefficient β (SAC Flow); ``None`` where the algorithm has none.
        critic_gamma: the critic target's bootstrap discount, ``γ^h``.
    """

    policy: nn.Module
    loss: LossModule
    optimizers: dict[str, torch.optim.Optimizer]
    update_step: Any
    pretrain: Callable[[TensorDictBase], TensorDict]
    update: Callable[[TensorDictBase], TensorDict] | None
    set_beta: Callable[[float], None] | None
    critic_gamma: float


class GaussianNoise(nn.Module):
    """``z ~ N(0, I)`` of width ``width`` per observation row: the one-step policy's noise input."""

    def __init__(self, width: int):
        super().__init__()
        self.width = int(width)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.randn(*observation.shape[:-1], self.width, device=observation.device, dtype=observation.dtype)


class ClipAction(nn.Module):
    """Clip to ``[-1, 1]``, as FQL does before acting (its one-step policy is unbounded)."""

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return action.clamp(-1.0, 1.0)


class FQLUpdate:
    """One FQL / QC-FQL gradient step: the sum of :class:`~torchrl_sacflow.FQLLoss`'s three losses
    (each reaches only its own network, so one Adam on the sum is three independent ones, as in the
    reference's single optimiser), then the critic's Polyak target update.

    :meth:`pretrain` is the behaviour-cloning step: flow matching of the behaviour flow plus α times
    the one-step policy's distillation toward it (no critic: the Q term needs one).
    """

    def __init__(self, loss: FQLLoss, *, lr: float, tau: float):
        self.loss = loss
        self.params = [p for p in loss.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.target_updater = SoftUpdate(loss, tau=tau)
        self.num_calls = 0

    def _step(self, total: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()

    def __call__(self, batch: TensorDictBase) -> TensorDict:
        out = self.loss(batch)
        self._step(out["loss_actor"] + out["loss_flow"] + out["loss_qvalue"])
        self.target_updater.step()
        self.num_calls += 1
        return out.detach()

    def pretrain(self, batch: TensorDictBase) -> TensorDict:
        flow = self.loss.flow_loss(batch)
        distill = self.loss.distillation_loss(batch)
        self._step(flow + self.loss.alpha * distill)
        return TensorDict({"loss_flow_matching": flow.detach(), "distill_loss": distill.detach()}, batch_size=[])

    def state_dict(self) -> dict[str, Any]:
        return {"num_calls": self.num_calls}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_calls = int(state_dict["num_calls"])


def _mlp(in_features: int, out_features: int, cells) -> MLP:
    return MLP(in_features=in_features, out_features=out_features, num_cells=list(cells), activation_class=nn.GELU)


def make_fql_learner(fql: Mapping[str, Any], critic: Mapping[str, Any], action_spec: TensorSpec, *,
                     observation_dim: int, action_width: int, action_chunk: int, gamma: float,
                     device: torch.device | str = "cpu") -> Learner:
    """FQL (``action_chunk=1``) or QC-FQL: a GELU MLP one-step policy and behaviour flow
    (``fql.actor_cells``), the ``critic`` group's MLP critics (``num_cells``, ``tau``) with
    ``fql.critic_layer_norm``, and :class:`FQLUpdate`.

    Raises:
        ConfigError: the env's action bounds are not ``[-1, 1]`` (FQL clips there), or a bad ``fql`` value.
    """
    low, high = action_spec.space.low, action_spec.space.high
    if not (torch.all(low == -1) and torch.all(high == 1)):
        raise ConfigError("algo=fql/qc_fql acts in [-1, 1] (it clips there): this env's action bounds are "
                          f"[{float(low.min())}, {float(high.max())}]")
    cells = fql["actor_cells"]
    actor = TensorDictModule(_mlp(observation_dim + action_width, action_width, cells),
                             in_keys=["observation", "flow_noise"], out_keys=["action"])
    velocity = TensorDictModule(_mlp(observation_dim + action_width + 1, action_width, cells),
                                in_keys=["observation", "flow_noisy_action", "flow_time"], out_keys=["flow_velocity"])
    qvalue = make_qvalue(observation_dim, action_width, num_cells=critic["num_cells"],
                         layer_norm=bool(fql["critic_layer_norm"]))
    try:
        loss = FQLLoss(actor, velocity, qvalue, alpha=fql["alpha"], num_qvalue_nets=critic["num_qvalue_nets"],
                       q_agg=fql["q_agg"], gamma=gamma, action_chunk=action_chunk, flow_steps=fql["flow_steps"],
                       normalize_q_loss=fql["normalize_q_loss"]).to(device)
    except ValueError as err:
        raise ConfigError(f"bad fql config: {err}") from err
    update = FQLUpdate(loss, lr=fql["lr"], tau=critic["tau"])
    policy = TensorDictSequential(
        TensorDictModule(GaussianNoise(action_width), in_keys=["observation"], out_keys=["flow_noise"]),
        actor,
        TensorDictModule(ClipAction(), in_keys=["action"], out_keys=["action"]),
    ).to(device)
    return Learner(policy=policy, loss=loss, optimizers={"fql_optim": update.optimizer}, update_step=update,
                   pretrain=update.pretrain, update=update, set_beta=None, critic_gamma=loss.bootstrap_discount)


def make_sac_flow_learner(c: Mapping[str, Any], action_spec: TensorSpec, *, observation_dim: int,
                          action_width: int, device: torch.device | str = "cpu") -> Learner:
    """SAC Flow on chunks: the ``policy`` group's flow actor, the ``critic`` group's γ^h loss with the
    proximity term (β set per phase through ``set_beta``), :class:`SACUpdate` and flow-matching pre-training."""
    opt, h = c["optim"], c["action_chunk"]
    actor = make_policy(c["policy"], action_spec, observation_dim).to(device)
    bundle = make_chunked_sac_flow_loss(
        actor, c["critic"], observation_dim=observation_dim, action_width=action_width, action_chunk=h,
        gamma=c["gamma"], alpha_init=opt["alpha_init"], fixed_alpha=not opt["autotune_alpha"],
        target_entropy=opt["target_entropy"], proximity_loss=c["beta"]["loss"])
    loss = bundle.loss_module.to(device)
    if c["beta"]["rows"] == "offline":  # the proximity term holds the demonstrations only (MixedReplayBuffer marks them)
        loss.set_keys(proximity_mask="is_offline")
    actor_optim, critic_optim, alpha_optim = make_optimizers(
        loss, actor_lr=opt["actor_lr"], critic_lr=opt["critic_lr"], alpha_lr=opt["alpha_lr"],
        actor_betas=(opt["actor_beta1"], 0.999))
    update = SACUpdate(loss, actor_optim=actor_optim, critic_optim=critic_optim, target_updater=bundle.target_updater,
                       alpha_optim=alpha_optim if opt["autotune_alpha"] else None, policy_delay=bundle.policy_delay)
    pretrain = FlowMatchingUpdate(actor, lr=opt["pretrain_lr"])

    def set_beta(beta: float) -> None:  # SACFlowLoss sums the proximity over the h·d entries; β is per entry
        loss.proximity_coef = beta / action_width

    return Learner(policy=actor, loss=loss,
                   optimizers={"actor_optim": actor_optim, "critic_optim": critic_optim, "alpha_optim": alpha_optim,
                               "pretrain_optim": pretrain.optimizer},
                   update_step=update, pretrain=pretrain, update=None if c["algo"] == "bc" else update,
                   set_beta=set_beta, critic_gamma=float(loss.value_estimator.gamma))


def make_learner(c: Mapping[str, Any], action_spec: TensorSpec, *, observation_dim: int, action_width: int,
                 device: torch.device | str = "cpu") -> Learner:
    """The :class:`Learner` of ``c["algo"]`` (a checked ``train_offline_online`` config)."""
    if c["algo"] in ("fql", "qc_fql"):
        return make_fql_learner(c["fql"], c["critic"], action_spec, observation_dim=observation_dim,
                                action_width=action_width, action_chunk=c["action_chunk"], gamma=c["gamma"],
                                device=device)
    return make_sac_flow_learner(c, action_spec, observation_dim=observation_dim, action_width=action_width,
                                 device=device)
