"""What a flow run's logs need to show *why* it learns or stalls (the paper-parity work).

The entropy term of SAC acts on the flow only through σ, so the quantities to watch are α, the
mean ``log π`` (logged by :class:`~torchrl_sacflow.training.SACUpdate` as ``entropy = −mean log π``),
the σ the policy samples with, and how far the sampled action is from the noise-free ODE action
on the same states: a run whose sampled policy stays near random while its ODE improves shows a
large gap.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_sacflow.modules.flow_actor import get_flow_rollout

__all__ = ["critic_diagnostics", "flow_diagnostics"]


@torch.no_grad()
def flow_diagnostics(
    actor: nn.Module, batch: TensorDictBase, *, action_key="action", max_samples: int = 256
) -> dict[str, float]:
    """σ and the sampled-vs-ODE action gap of a flow actor on (up to ``max_samples``) states of ``batch``.

    Acts as in collection (running statistics of any normalisation layer, nothing updated): the
    actor's distribution is built for the states, then its rollout is run twice from the *same*
    base draw ``A_0``: with the step noises (the sampled action) and without them (the ODE).

    Returns:
        ``sigma_mean`` (mean σ over states, steps and action entries; the σ of ``σ√Δt ε`` or
        ``σΔt ε``), ``sigma_step_{i}`` for each Euler step when σ differs per step (per-step head
        or σ from the velocity), ``ode_action_gap``: the mean Euclidean distance, in env
        action units, between the two actions, i.e. how far the step noise moves an action, and
        ``action_saturation``: the share of sampled action entries within 1 % of a bound
        (``|tanh(A_K)| > 0.99``). Empty for a non-flow actor.
    """
    try:
        rollout = get_flow_rollout(actor)
    except ValueError:
        return {}
    # the draws below leave the global RNG as they found it: logging does not change the run
    with torch.random.fork_rng(devices=[]):
        return _diagnostics(actor, rollout, batch[:max_samples].select(*actor.in_keys, strict=False))


def _diagnostics(actor, rollout, td) -> dict[str, float]:
    with set_exploration_type(ExplorationType.RANDOM):
        dist = actor.get_dist(td)
    obs, log_std = dist.observation, dist.log_std
    base = torch.randn((*obs.shape[:-1], rollout.action_dim), dtype=obs.dtype, device=obs.device)
    sampled, _, _ = rollout.rollout(obs, log_std, base_noise=base)
    log_stds = rollout.last_log_std
    ode, _, _ = rollout.rollout(obs, log_std, deterministic=True, base_noise=base)
    out = {"ode_action_gap": float((sampled - ode).norm(dim=-1).mean())}
    # where the tanh saturates, the path density's Jacobian term -log(1 - tanh²) grows without bound
    # and the α-weighted entropy pushes σ up (docs/algorithm.md §3): the share of such entries
    unit = (sampled - rollout.action_loc) / rollout.action_scale
    out["action_saturation"] = float((unit.abs() > 0.99).float().mean())
    if log_stds:
        sigmas = torch.stack([ls.exp().expand_as(log_stds[-1]) for ls in log_stds])  # [K, batch, d]
        out["sigma_mean"] = float(sigmas.mean())
        if rollout.per_step_noise or rollout.velocity_log_std:
            out.update({f"sigma_step_{i}": float(s.mean()) for i, s in enumerate(sigmas)})
    return out


@torch.no_grad()
def critic_diagnostics(loss_module: nn.Module, batch: TensorDictBase, *, max_samples: int = 256) -> dict[str, float]:
    """The scale of the critic's values on (up to ``max_samples``) buffer transitions of ``batch``.

    A stalled run can be a critic that extrapolates (Q far above what the returns allow) rather than
    the policy: the entropy bonus α·(−log π) competes with Q's gradient, so its effect depends on Q's
    scale. Evaluated with the loss's ``qvalue_network`` and its current parameters, in eval mode
    (running statistics of any batch renormalisation, nothing updated).

    Returns:
        ``q_mean`` and ``q_std``: mean and population std over the critic ensemble and states of
        ``Q(s, a_buffer)``, in return units. Empty when the loss has no ``qvalue_network``.
    """
    qnet, params = getattr(loss_module, "qvalue_network", None), getattr(loss_module, "qvalue_network_params", None)
    if qnet is None or params is None:
        return {}
    td = batch[:max_samples].select(*qnet.in_keys, strict=False)
    was_training = qnet.training
    qnet.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            values = torch.stack([_q_with(qnet, p, td) for p in params.unbind(0)])
    finally:
        qnet.train(was_training)
    return {"q_mean": float(values.mean()), "q_std": float(values.std(unbiased=False))}


def _q_with(qnet: nn.Module, params, td: TensorDictBase) -> torch.Tensor:
    with params.to_module(qnet):
        return qnet(td.clone())[qnet.out_keys[0]]
