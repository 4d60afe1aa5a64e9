"""The released-code options of the flow actor (issue 20): log-probability kind, noise scale, σ from the
velocity, batch renormalisation inside the actor, the `auto_path` target entropy and the diagnostics."""
import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_sacflow import SACFlowLoss, make_flow_actor
from torchrl_sacflow.modules import ActorBatchRenorm, TransformerVelocity, batch_statistics, get_flow_rollout
from torchrl_sacflow.modules.critics import make_crossq_qvalue, make_qvalue
from torchrl_sacflow.objectives.crossq_flow import CrossQFlowLoss
from torchrl_sacflow.training import flow_diagnostics

from _batches import random_transitions

OBS, ACT, K = 5, 3, 4
SPEC = Bounded(-2.0, 2.0, shape=(ACT,))
RELEASED = dict(d_model=16, obs_hidden=8, norm_layout="post_batchrenorm", time_embedding="mlp",
                ffn_activation="gelu", input_norm=True)


def _released_actor(**kwargs):
    options = dict(velocity="transformer", velocity_kwargs=RELEASED, sigma_head="velocity", noise_scale="dt",
                   log_prob="noise", drift_correction=False)
    options.update(kwargs)
    return make_flow_actor(SPEC, OBS, **options)


def _batch(n=64):
    return random_transitions(n, OBS, SPEC)


class _ZeroVelocity(nn.Module):
    def forward(self, action, observation, time):
        return torch.zeros_like(action) + 0.0 * observation.sum(-1, keepdim=True)


def _draw(actor, obs):
    dist = actor.get_dist(TensorDict({"observation": obs}, obs.shape[:1]))
    action, log_prob = dist.rsample_and_log_prob()
    return action, log_prob, dist.last_path


def test_noise_log_prob_is_the_sum_of_noise_log_densities():
    """log_prob="noise": Σ log N(ε_i; 0, I) over base draw and step noises − Σ log(scale(1 − y²) + 1e-6),
    recomputed independently from the same random draws (with saturated entries, where the 1e-6 shows)."""
    actor = _released_actor()
    rollout = get_flow_rollout(actor)
    with torch.no_grad():  # push some final actions deep into saturation
        rollout.velocity.head.bias.copy_(torch.tensor([40.0, 0.0, -40.0]))
    obs = torch.randn(32, OBS)
    torch.manual_seed(0)
    action, log_prob, path = _draw(actor, obs)
    # replay the draws: A_0, then one ε per step, in that order
    torch.manual_seed(0)
    a = torch.randn(32, ACT)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(a).sum(-1)
    ctx = rollout.velocity.prepare_times(rollout.velocity.encode_state(obs), [i / K for i in range(K)])
    for i in range(K):
        v, log_std = rollout.velocity.step_with_log_std(a, ctx, i / K)
        eps = torch.randn_like(a)
        a = a + (v + log_std.exp() * eps) / K  # the released code: noise on the velocity, Euler step Δt
        expected = expected + torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1)
    y = torch.tanh(a)
    expected = expected - torch.log(2.0 * (1 - y**2) + 1e-6).sum(-1)
    torch.testing.assert_close(path[-1], a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(action, 2.0 * y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("noise_scale,per_step", [("dt", 1 / K), ("sqrt_dt", math.sqrt(1 / K))])
@pytest.mark.parametrize("drift_correction", [False, True])
def test_step_noise_std_and_exact_path_density(noise_scale, per_step, drift_correction):
    """With v ≡ 0 and a fixed σ, a step's noise std is σΔt or σ√Δt around its (drift-corrected) mean,
    and the path log-density equals an independent Gaussian computation."""
    sigma = 0.6
    actor = make_flow_actor(SPEC, OBS, velocity=_ZeroVelocity(), noise_std=sigma, noise_scale=noise_scale,
                            drift_correction=drift_correction)
    obs = torch.randn(20000, OBS)
    with torch.no_grad():
        _, log_prob, path = _draw(actor, obs)
    dt = 1 / K
    normal = torch.distributions.Normal
    expected = normal(0.0, 1.0).log_prob(path[0]).sum(-1)
    for i in range(K):
        t = i * dt
        diffusion = sigma**2 if noise_scale == "sqrt_dt" else sigma**2 * dt
        mean = path[i] * (1 - dt * diffusion / 2 / (1 - t)) if drift_correction else path[i]
        step = path[i + 1] - mean
        assert step.std().item() == pytest.approx(sigma * per_step, rel=0.03)
        expected = expected + normal(0.0, sigma * per_step).log_prob(step).sum(-1)
    expected = expected - torch.log(2.0 * (1 - torch.tanh(path[-1]) ** 2)).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-3)


def test_velocity_sigma_depends_on_the_intermediate_action_and_gets_gradient():
    actor = _released_actor()
    rollout = get_flow_rollout(actor)
    obs = torch.randn(8, OBS)
    ctx = rollout.velocity.encode_state(obs)
    a = torch.randn(8, ACT, requires_grad=True)
    _, log_std = rollout.velocity.step_with_log_std(a, ctx, 0.25)
    (grad,) = torch.autograd.grad(log_std.sum(), a)
    assert grad.abs().sum() > 0  # σ_i is a function of A_i
    # the SAC actor loss reaches the σ head through the sampled path
    loss = SACFlowLoss(actor, make_qvalue(OBS, ACT, num_cells=(16,)))
    loss_actor, _ = loss.actor_loss(_batch())
    loss_actor.backward()
    head = rollout.velocity.log_std_head.weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    assert rollout.velocity_log_std and len(rollout.last_log_std) == K


def test_actor_batch_statistics_change_only_when_the_actor_is_scored():
    actor = _released_actor()
    layers = [m for m in actor.modules() if isinstance(m, ActorBatchRenorm)]
    assert len(layers) == 1 + K + 3 * 2  # observation, one per A_i, three post-norms per block
    loss = CrossQFlowLoss(actor, make_crossq_qvalue(OBS, ACT, num_cells=(16, 16)))
    loss.make_value_estimator(gamma=0.99)

    def stats():
        return [torch.cat([m.running_mean, m.running_var]).clone() for m in layers]

    before = stats()
    with set_exploration_type(ExplorationType.RANDOM):
        actor(TensorDict({"observation": torch.randn(OBS)}, []))  # acting, unbatched
        actor(TensorDict({"observation": torch.randn(16, OBS)}, [16]))
    loss.qvalue_loss(_batch())  # the critic target's next action
    assert all(torch.equal(a, b) for a, b in zip(before, stats()))
    loss.actor_loss(_batch())  # scored: batch statistics, running statistics updated
    after = stats()
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert not any(m.use_batch_stats for m in layers)  # switched back off


def test_batch_statistics_normalise_with_the_batch():
    layer = ActorBatchRenorm(3)
    x = torch.randn(256, 3) * 5 + 2
    torch.testing.assert_close(layer(x), (x - 0.0) / math.sqrt(1 + 1e-3))  # running stats (0, 1)
    with batch_statistics(layer):
        y = layer(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_input_norm_needs_steps_on_the_grid():
    v = TransformerVelocity(ACT, OBS, d_model=16, input_norm=True, num_steps=K)
    ctx = v.encode_state(torch.randn(2, OBS))
    with pytest.raises(ValueError, match="not on the grid"):
        v.step(torch.randn(2, ACT), ctx, 0.3)
    with pytest.raises(ValueError, match="needs num_steps"):
        TransformerVelocity(ACT, OBS, input_norm=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma_head="velocity", velocity="gru"), "needs velocity='transformer'"),
    (dict(sigma_head="velocity", noise_std=0.1), "cannot be combined with a fixed noise_std"),
    (dict(sigma_head="sideways"), "sigma_head must be one of"),
    (dict(noise_scale="dt2"), "noise_scale must be one of"),
    (dict(log_prob="marginal"), "log_prob must be one of"),
])
def test_bad_actor_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_flow_actor(SPEC, OBS, **kwargs)


def test_auto_path_target_entropy():
    actor = make_flow_actor(SPEC, OBS, num_steps=3)
    loss = SACFlowLoss(actor, make_qvalue(OBS, ACT, num_cells=(8,)), target_entropy="auto_path")
    assert float(loss.target_entropy) == -(3 + 1) * ACT


def test_flow_diagnostics_report_sigma_and_the_ode_gap():
    actor = make_flow_actor(SPEC, OBS, noise_std=0.5)
    out = flow_diagnostics(actor, _batch(32))
    assert out["sigma_mean"] == pytest.approx(0.5)
    assert out["ode_action_gap"] > 0.05
    # tiny σ: the sampled action is (almost) the ODE action
    get_flow_rollout(actor).noise_std = 1e-4
    assert flow_diagnostics(actor, _batch(32))["ode_action_gap"] < 1e-2
    per_step = flow_diagnostics(_released_actor(), _batch(32))
    assert {f"sigma_step_{i}" for i in range(K)} <= set(per_step)


@pytest.mark.parametrize("init,spread", [("middle", False), ("lecun_normal", True)])
def test_velocity_log_std_head_init(init, spread):
    """``middle``: σ starts at the middle of the range for every state; ``lecun_normal`` (released code):
    spread over it."""
    v = TransformerVelocity(ACT, OBS, d_model=32, log_std_head=True, log_std_init=init)
    _, log_std = v.step_with_log_std(torch.randn(256, ACT), v.encode_state(torch.randn(256, OBS)), 0.0)
    assert (log_std.std() > 0.5) == spread
    if not spread:
        assert log_std.mean().item() == pytest.approx(-1.5, abs=0.05)


def test_flow_diagnostics_leave_the_global_rng_alone():
    actor, batch = make_flow_actor(SPEC, OBS), _batch(16)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    flow_diagnostics(actor, batch)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("init", ["torch", "lecun_normal"])
def test_velocity_layer_init(init):
    """``lecun_normal`` (the released code's flax init): every Linear has zero bias and weights of std
    1/√fan_in, truncated at 2 of the untruncated std; ``torch``: PyTorch's U(±1/√fan_in)."""
    torch.manual_seed(0)
    v = TransformerVelocity(ACT, OBS, d_model=96, obs_hidden=48, time_embedding="mlp", init=init)
    ffn_in = v.blocks[0].ffn[0]  # 96 -> 384
    expected_std = 96**-0.5 if init == "lecun_normal" else (3 * 96) ** -0.5
    assert ffn_in.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    linears = [m for m in v.modules() if isinstance(m, nn.Linear)]
    biases_zero = all(bool((m.bias == 0).all()) for m in linears if m.bias is not None)
    assert biases_zero == (init == "lecun_normal")
    if init == "lecun_normal":
        bound = 2 * 96**-0.5 / 0.87962566103423978
        assert ffn_in.weight.abs().max().item() <= bound + 1e-6
        # the time MLP starts at exactly 0 for t = 0, as flax's does (zero biases)
        assert v.time_mlp(torch.zeros(1, 1)).abs().max().item() == 0.0


def test_velocity_layer_init_keeps_the_log_std_head_init():
    v = TransformerVelocity(ACT, OBS, d_model=32, log_std_head=True, log_std_init="middle", init="lecun_normal")
    _, log_std = v.step_with_log_std(torch.randn(256, ACT), v.encode_state(torch.randn(256, OBS)), 0.0)
    assert log_std.mean().item() == pytest.approx(-1.5, abs=0.05)
    with pytest.raises(ValueError, match="init"):
        TransformerVelocity(ACT, OBS, init="xavier")
