"""Policies by name: the three flow velocities and TorchRL's Tanh-Normal Gaussian baseline."""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from tensordict.nn import InteractionType, NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import TensorSpec
from torchrl.modules import MLP, ProbabilisticActor

from torchrl_sacflow.modules import (
    DirectProbabilisticActor,
    GatedVelocity,
    MLPVelocity,
    TransformerVelocity,
    make_flow_actor,
)
from torchrl_sacflow.modules.flow_actor import LOG_PROB_KINDS, NOISE_SCALES, SIGMA_HEADS
from torchrl_sacflow._fast.tanh_normal import FusedTanhNormal
from torchrl_sacflow.training.errors import ConfigError

__all__ = ["POLICY_KINDS", "FLOW_VELOCITIES", "make_gaussian_actor", "make_policy", "check_policy_config"]

POLICY_KINDS = ("flow", "gaussian")
FLOW_VELOCITIES = ("transformer", "gru", "mlp")
_VELOCITY_CLASSES = {"transformer": TransformerVelocity, "gru": GatedVelocity, "mlp": MLPVelocity}


def make_gaussian_actor(
    action_spec: TensorSpec,
    observation_dim: int,
    *,
    num_cells: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    in_keys: Sequence[str] = ("observation",),
    scale_mapping: str = "biased_softplus_1.0",
    scale_lb: float = 1e-4,
) -> ProbabilisticActor:
    """SAC's Tanh-Normal actor assembled from TorchRL parts (MLP → NormalParamExtractor → TanhNormal).

    The baseline the flow policies are compared against, in the same pipeline: its log-prob is
    the usual change-of-variables density, and its target entropy is ``-|A|`` (``"auto"``). Built
    as a :class:`~torchrl_sacflow.modules.DirectProbabilisticActor` (a ``ProbabilisticActor`` whose
    everyday calls skip TensorDict's generic plumbing), like the flow actors, with TorchRL's
    ``TanhNormal`` as :class:`~torchrl_sacflow._fast.tanh_normal.FusedTanhNormal` (the same
    distribution, its draw-and-score call written out in one pass).
    """
    action_dim = int(action_spec.shape[-1])
    net = nn.Sequential(
        MLP(
            in_features=observation_dim,
            out_features=2 * action_dim,
            num_cells=list(num_cells),
            activation_class=activation,
        ),
        NormalParamExtractor(scale_mapping=scale_mapping, scale_lb=scale_lb),
    )
    module = TensorDictModule(net, in_keys=list(in_keys), out_keys=["loc", "scale"])
    return DirectProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=FusedTanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": False,
        },
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=False,
    )


def check_policy_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a policy config that cannot be built (before building it)."""
    kind = cfg.get("kind")
    if kind not in POLICY_KINDS:
        raise ConfigError(
            f"unknown policy kind {kind!r} for policy {cfg.get('name')!r}: expected one of {POLICY_KINDS}"
        )
    if kind == "gaussian":
        return
    velocity = cfg.get("velocity")
    if velocity not in FLOW_VELOCITIES:
        raise ConfigError(f"unknown policy.velocity {velocity!r}: expected one of {FLOW_VELOCITIES}")
    k = cfg.get("num_steps")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"policy.num_steps (K, Euler steps) must be an integer >= 1, got {k!r}")
    sigma = cfg.get("noise_std")
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0):
        raise ConfigError(f"policy.noise_std (σ) must be > 0, or null for a learned σ, got {sigma!r}")
    for key, default, options in (("sigma_head", "state", SIGMA_HEADS), ("noise_scale", "sqrt_dt", NOISE_SCALES),
                                  ("log_prob", "path", LOG_PROB_KINDS)):
        if cfg.get(key, default) not in options:
            raise ConfigError(f"unknown policy.{key} {cfg.get(key)!r}: expected one of {options}")
    if cfg.get("sigma_head", "state") == "velocity":
        if velocity != "transformer":
            raise ConfigError("policy.sigma_head=velocity needs policy.velocity=transformer (policy=flow_t)")
        if sigma is not None:
            raise ConfigError("policy.sigma_head=velocity learns σ: set policy.noise_std=null")
    accepted = inspect.signature(_VELOCITY_CLASSES[velocity]).parameters
    unknown = sorted(set(cfg.get("velocity_kwargs") or {}) - set(accepted) - {"action_dim", "observation_dim"})
    if unknown:
        raise ConfigError(
            f"policy.velocity_kwargs {unknown} are not options of the {velocity} velocity "
            f"({_VELOCITY_CLASSES[velocity].__name__}); e.g. preset=paper_code is for policy=flow_t"
        )


def make_policy(
    cfg: Mapping[str, Any], action_spec: TensorSpec, observation_dim: int
) -> ProbabilisticActor:
    """Build the actor described by a ``policy`` config group (see ``recipes/config/policy/``).

    ``kind: flow`` calls :func:`~torchrl_sacflow.make_flow_actor` with the group's velocity, K, σ
    and network settings; ``kind: gaussian`` calls :func:`make_gaussian_actor`.
    """
    check_policy_config(cfg)
    if cfg["kind"] == "gaussian":
        return make_gaussian_actor(action_spec, observation_dim, num_cells=tuple(cfg["num_cells"]))
    try:
        return _make_flow_policy(cfg, action_spec, observation_dim)
    except ValueError as err:  # a bad value inside velocity_kwargs / log_std_kwargs: one line, exit code 2
        raise ConfigError(f"bad policy config ({cfg.get('name')}): {err}") from err


def _make_flow_policy(cfg: Mapping[str, Any], action_spec: TensorSpec, observation_dim: int) -> ProbabilisticActor:
    return make_flow_actor(
        action_spec,
        observation_dim,
        velocity=cfg["velocity"],
        num_steps=int(cfg["num_steps"]),
        noise_std=None if cfg.get("noise_std") is None else float(cfg["noise_std"]),
        velocity_kwargs=dict(cfg.get("velocity_kwargs") or {}),
        log_std_kwargs=dict(cfg.get("log_std_kwargs") or {}),
        per_step_noise=bool(cfg.get("per_step_noise", False)),
        drift_correction=bool(cfg.get("drift_correction", True)),
        sigma_head=cfg.get("sigma_head", "state"),
        noise_scale=cfg.get("noise_scale", "sqrt_dt"),
        log_prob=cfg.get("log_prob", "path"),
    )
