"""The noise-augmented rollout, its path log-density, and the actor as a TorchRL module."""
import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.distributions import AffineTransform, Normal, TanhTransform
from torchrl.data import Bounded, Unbounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_sacflow import (
    FlowActor,
    FlowMatchingLoss,
    FlowPathDistribution,
    GatedVelocity,
    MLPVelocity,
    TransformerVelocity,
    get_flow_rollout,
    make_flow_actor,
)
from torchrl_sacflow.modules.flow_actor import tanh_log_abs_det_jacobian

VELOCITIES = ["transformer", "gru", "mlp"]


def _obs_td(batch, n_obs, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({"observation": torch.randn(batch, n_obs, generator=g)}, batch_size=[batch])


def _reference_drift(v, a, t, var):
    """b of docs/algorithm.md §3, written out independently of the library."""
    return v * (1 - t + t * var / 2) / (1 - t) - a * var / (2 * (1 - t))


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_k1_log_density_matches_closed_form_gaussian_tanh(velocity):
    torch.manual_seed(0)
    low, high = torch.tensor([-2.0, -1.0, 0.0]), torch.tensor([2.0, 3.0, 0.5])
    spec = Bounded(low, high, shape=(3,))
    sigma = 0.3
    actor = make_flow_actor(spec, 4, velocity=velocity, num_steps=1, noise_std=sigma)
    td = _obs_td(64, 4)
    dist = actor.get_dist(td)
    action, log_prob = dist.rsample_and_log_prob()
    a0, a1 = dist.last_path
    vel = get_flow_rollout(actor).velocity
    with torch.no_grad():
        # K = 1: t_0 = 0 and Δt = 1; the base score is −A_0, so the drift is v − σ²/2 · A_0.
        mean = a0 + vel(a0, td["observation"], torch.zeros(64, 1)) - sigma**2 / 2 * a0
        base = Normal(torch.zeros(3), torch.ones(3)).log_prob(a0).sum(-1)
        step = Normal(mean, sigma).log_prob(a1).sum(-1)
        loc, scale = (high + low) / 2, (high - low) / 2
        jac = TanhTransform().log_abs_det_jacobian(a1, torch.tanh(a1)).sum(-1)
        jac = jac + AffineTransform(loc, scale).log_abs_det_jacobian(torch.tanh(a1), action).sum(-1)
        expected = base + step - jac
    torch.testing.assert_close(log_prob.detach(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(action.detach(), loc + scale * torch.tanh(a1.detach()))


@pytest.mark.parametrize("velocity", VELOCITIES)
@pytest.mark.parametrize("learned_sigma", [False, True])
def test_k4_log_density_equals_recomputation_from_the_path(velocity, learned_sigma):
    torch.manual_seed(1)
    spec = Bounded(-1.0, 1.0, shape=(2,))
    actor = make_flow_actor(
        spec, 3, velocity=velocity, num_steps=4, noise_std=None if learned_sigma else 0.5
    )
    td = _obs_td(32, 3)
    td = actor.module[0](td)  # writes the log σ the distribution uses
    dist = actor.get_dist(td)
    _, log_prob = dist.rsample_and_log_prob()
    path = [p.detach() for p in dist.last_path]
    log_std = td["flow_log_std"].detach()
    std = log_std.exp()
    vel = get_flow_rollout(actor).velocity
    K, dt = 4, 0.25
    with torch.no_grad():
        total = Normal(0.0, 1.0).log_prob(path[0]).sum(-1)
        for i in range(K):
            t = i * dt
            v = vel(path[i], td["observation"], torch.full((32, 1), t))
            mean = path[i] + dt * _reference_drift(v, path[i], t, std**2)
            total += Normal(mean, std * math.sqrt(dt)).log_prob(path[i + 1]).sum(-1)
        total -= torch.log(1 - torch.tanh(path[-1]) ** 2).sum(-1)
    assert len(path) == K + 1
    torch.testing.assert_close(log_prob.detach(), total, rtol=1e-4, atol=1e-3)


def test_tanh_term_is_finite_for_saturated_actions():
    x = torch.tensor([[30.0, -40.0, 0.0], [15.0, 8.0, -100.0]])
    out = tanh_log_abs_det_jacobian(x)
    assert torch.isfinite(out).all()
    # log(1 - tanh(x)^2) -> log 4 - 2|x| for large |x| (the naive form gives -inf there); 0 at x = 0.
    assert out[0].item() == pytest.approx(2 * math.log(4) - 140.0, abs=1e-4)
    row1 = math.log(1 - math.tanh(8.0) ** 2) + 2 * math.log(4) - 230.0
    assert out[1].item() == pytest.approx(row1, rel=1e-5)

    class Huge(nn.Module):  # a velocity that drives every action deep into saturation
        def forward(self, action, observation, time):
            return torch.full_like(action, 200.0)

    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3, velocity=Huge(), noise_std=0.1)
    _, log_prob = actor.get_dist(actor.module[0](_obs_td(8, 3))).rsample_and_log_prob()
    assert torch.isfinite(log_prob).all()


def test_log_prob_of_arbitrary_action_raises_with_reason():
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3, velocity="mlp", noise_std=0.2)
    dist = actor.get_dist(actor.module[0](_obs_td(4, 3)))
    assert isinstance(dist, FlowPathDistribution)
    sample = dist.sample()
    assert dist.log_prob(sample).shape == (4,)  # the draw it just made is fine
    with pytest.raises(NotImplementedError, match="intractable"):
        dist.log_prob(torch.zeros(4, 2))


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_actor_writes_action_and_log_prob_in_bounds(velocity):
    spec = Bounded(torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0]), shape=(2,))
    actor = make_flow_actor(spec, 5, velocity=velocity)
    with set_exploration_type(ExplorationType.RANDOM):
        td = actor(_obs_td(16, 5))
    assert td["action"].shape == (16, 2)
    assert td["action_log_prob"].shape == (16,)
    assert torch.isfinite(td["action_log_prob"]).all()
    assert spec.is_in(td["action"].detach())


def test_deterministic_mode_runs_the_noise_free_ode():
    torch.manual_seed(2)
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(3,)), 4, velocity="gru", noise_std=0.5)
    td = _obs_td(10, 4)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a1 = actor(td.clone())["action"]
        a2 = actor(td.clone())["action"]
    torch.testing.assert_close(a1, a2)  # A_0 = 0 and no step noise: reproducible
    rollout = get_flow_rollout(actor)
    with torch.no_grad():  # the same ODE written out by hand
        a, obs = torch.zeros(10, 3), td["observation"]
        for i in range(4):
            a = a + 0.25 * rollout.velocity(a, obs, torch.full((10, 1), i / 4))
    torch.testing.assert_close(a1.detach(), torch.tanh(a))
    with set_exploration_type(ExplorationType.RANDOM):
        r1 = actor(td.clone())["action"]
        r2 = actor(td.clone())["action"]
    assert not torch.allclose(r1, r2)
    rollout.deterministic_base = "sample"
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        s1 = actor(td.clone())["action"]
    assert not torch.allclose(s1, a1)


def test_num_steps_and_noise_std_can_be_changed_on_a_built_actor():
    torch.manual_seed(3)
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3, velocity="transformer", num_steps=4)
    rollout = get_flow_rollout(actor)
    td = actor.module[0](_obs_td(8, 3))
    dist = actor.get_dist(td)
    dist.sample()
    assert len(dist.last_path) == 5
    rollout.num_steps = 10
    dist.sample()
    assert len(dist.last_path) == 11
    # σ override: the path log-density's normaliser follows the new σ.
    rollout.num_steps = 1
    rollout.noise_std = 0.01
    _, lp_small = dist.sample_and_log_prob()
    rollout.noise_std = 1.0
    _, lp_big = dist.sample_and_log_prob()
    # the normaliser alone differs by 2 dims × log(1.0 / 0.01) ≈ 9.2 (tanh terms move it a little)
    assert (lp_small - lp_big).mean() > 6.0
    rollout.noise_std = None
    with pytest.raises(ValueError, match="num_steps"):
        rollout.num_steps = 0
    with pytest.raises(ValueError, match="noise_std"):
        rollout.noise_std = -0.1


def test_factory_rejects_bad_arguments():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    with pytest.raises(ValueError, match="num_steps"):
        make_flow_actor(spec, 3, num_steps=0)
    with pytest.raises(ValueError, match="noise_std"):
        make_flow_actor(spec, 3, noise_std=-1.0)
    with pytest.raises(ValueError, match="unknown velocity"):
        make_flow_actor(spec, 3, velocity="lstm")
    with pytest.raises(TypeError, match="Bounded"):
        make_flow_actor(Unbounded(shape=(2,)), 3)


def test_several_observation_keys_are_concatenated_in_order():
    torch.manual_seed(4)
    actor = make_flow_actor(
        Bounded(-1.0, 1.0, shape=(2,)), 5, velocity="mlp", in_keys=("pos", ("nested", "vel"))
    )
    td = TensorDict({"pos": torch.randn(6, 2), "nested": {"vel": torch.randn(6, 3)}}, [6])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        out = actor(td)
    torch.testing.assert_close(out["flow_observation"], torch.cat([td["pos"], td["nested", "vel"]], -1))
    flat = TensorDict({"observation": out["flow_observation"]}, [6])
    twin = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 5, velocity="mlp")
    twin.load_state_dict(actor.state_dict())
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        torch.testing.assert_close(twin(flat)["action"], out["action"])


@pytest.mark.usefixtures("fast_paths_on")  # a test of the speed path itself
@pytest.mark.parametrize("in_keys", [("observation",), ("pos", ("nested", "vel"))])
@pytest.mark.parametrize("noise_std", [None, 0.2])
def test_direct_get_dist_equals_the_generic_path(in_keys, noise_std):
    from tensordict.nn import ProbabilisticTensorDictSequential

    torch.manual_seed(0)
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 5, velocity="gru", in_keys=in_keys, noise_std=noise_std)
    assert isinstance(actor, FlowActor) and actor._direct_parts() is not None
    if in_keys == ("observation",):
        td = TensorDict({"observation": torch.randn(6, 5)}, [6])
    else:
        td = TensorDict({"pos": torch.randn(6, 2), "nested": {"vel": torch.randn(6, 3)}}, [6])
    td_direct, td_generic = td.clone(), td.clone()
    with set_exploration_type(ExplorationType.RANDOM):
        direct = actor.get_dist(td_direct)
        generic = ProbabilisticTensorDictSequential.get_dist(actor, td_generic)
        torch.manual_seed(1)
        a1, lp1 = direct.rsample_and_log_prob()
        torch.manual_seed(1)
        a2, lp2 = generic.rsample_and_log_prob()
    assert type(direct) is type(generic) is FlowPathDistribution
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(lp1, lp2)
    assert set(td_direct.keys(True, True)) == set(td_generic.keys(True, True))
    for key in td_generic.keys(True, True):
        torch.testing.assert_close(td_direct[key], td_generic[key])
    # gradients flow the same way
    a1.sum().backward()
    assert all(p.grad is not None for p in actor.parameters())


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_gradients_reach_every_parameter_through_the_rollout(velocity):
    torch.manual_seed(5)
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3, velocity=velocity, num_steps=4)
    opt = torch.optim.SGD(actor.parameters(), lr=1e-2)
    # Two steps: Flow-G's gate head starts at weight 0 (paper init), which blocks the gradient to
    # the gate's hidden layers until the first update has moved it.
    for _ in range(2):
        opt.zero_grad()
        td = actor.module[0](_obs_td(64, 3))
        action, log_prob = actor.get_dist(td).rsample_and_log_prob()
        (action.pow(2).sum() + 0.1 * log_prob.sum()).backward()
        opt.step()
    missing = [n for n, p in actor.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reached: {missing}"


def test_velocity_classes_have_the_paper_structure():
    g = GatedVelocity(3, 4)
    # gate head starts at weight 0, bias +5 (g ≈ 0.993: an ungated flow at init)
    assert torch.all(g.gate[-1].weight == 0) and torch.all(g.gate[-1].bias == 5.0)
    gate, cand = g.gate_and_candidate(torch.randn(7, 3), g.encode_state(torch.randn(7, 4)), 0.5)
    torch.testing.assert_close(gate, torch.full_like(gate, torch.sigmoid(torch.tensor(5.0)).item()))
    assert cand.abs().max() <= g.candidate_bound
    t = TransformerVelocity(3, 4)
    assert t.d_model == 64 and len(t.blocks) == 2 and t.blocks[0].num_heads == 4
    m = MLPVelocity(3, 4)
    # the state-slice trick is exact: step(encode_state(s)) == a plain Linear on [A, s, t]
    a, s = torch.randn(5, 3), torch.randn(5, 4)
    lin = m.input.linear
    torch.testing.assert_close(
        m(a, s, 0.25), m.trunk(lin(torch.cat([a, s, torch.full((5, 1), 0.25)], -1)))
    )


def test_transformer_single_token_fast_path_equals_full_attention():
    """With one state token the cross-attention output must equal softmax attention over it."""
    torch.manual_seed(6)
    v = TransformerVelocity(2, 3, d_model=16, num_heads=4)
    block = v.blocks[0]
    x = torch.randn(5, 16)
    tokens = torch.randn(5, 1, 16)
    ctx = block.norm_context(tokens)
    wq, wk = torch.randn(16, 16), torch.randn(16, 16)
    q = (x @ wq).unflatten(-1, (4, 4)).unsqueeze(-2)
    k = (ctx @ wk).unflatten(-1, (4, 4)).transpose(-3, -2)
    val = block.cross_value(ctx).unflatten(-1, (4, 4)).transpose(-3, -2)
    full = block.cross_out(torch.nn.functional.scaled_dot_product_attention(q, k, val).squeeze(-2).flatten(-2))
    torch.testing.assert_close(block.cross_attend(x, block.encode_state(tokens)), full)
    multi = TransformerVelocity(2, 3, d_model=16, num_heads=4, num_state_tokens=3)
    out = multi(torch.randn(5, 2), torch.randn(5, 3), 0.5)
    assert out.shape == (5, 2) and torch.isfinite(out).all()


def _w1(x: torch.Tensor, y: torch.Tensor) -> float:
    """1-D Wasserstein-1 distance between two equal-size samples."""
    return (x.flatten().sort().values - y.flatten().sort().values).abs().mean().item()


class _MixtureVelocity(nn.Module):
    """Exact rectified-flow velocity E[A_1 − A_0 | A_t = x] for a 1-D Gaussian-mixture target."""

    def __init__(self, means, stds, weights):
        super().__init__()
        self.register_buffer("mu", torch.tensor(means))
        self.register_buffer("s2", torch.tensor(stds) ** 2)
        self.register_buffer("w", torch.tensor(weights))

    def forward(self, action, observation, time):
        x, t = action, time
        var_t = (1 - t) ** 2 + t**2 * self.s2
        logits = self.w.log() + Normal(t * self.mu, var_t.sqrt()).log_prob(x)
        post = logits.softmax(-1)
        cond = self.mu + (t * self.s2 - (1 - t)) / var_t * (x - t * self.mu)
        return (post * cond).sum(-1, keepdim=True)


def _rollouts(actor, n, sigma):
    rollout = get_flow_rollout(actor)
    obs = torch.zeros(n, 1)
    with torch.no_grad():
        ode, _, _ = rollout.rollout(obs, torch.zeros(n, 1), deterministic=True)
        rollout.deterministic_base = "sample"
        ode, _, _ = rollout.rollout(obs, torch.zeros(n, 1), deterministic=True)
        rollout.deterministic_base = "zero"
        log_std = torch.full((n, 1), math.log(sigma))
        noisy, _, _ = rollout.rollout(obs, log_std)
        rollout.drift_correction = False
        uncorrected, _, _ = rollout.rollout(obs, log_std)
        rollout.drift_correction = True
    return ode, noisy, uncorrected


def test_drift_correction_keeps_the_marginal_with_the_exact_velocity():
    """The derivation itself: with the exact velocity the corrected SDE has the data's law."""
    torch.manual_seed(7)
    means, stds, weights = [-1.2, 0.9], [0.15, 0.15], [0.4, 0.6]
    actor = make_flow_actor(
        Bounded(-1.0, 1.0, shape=(1,)), 1, velocity=_MixtureVelocity(means, stds, weights),
        num_steps=64, noise_std=0.8,
    )
    n = 20000
    comp = torch.multinomial(torch.tensor(weights), n, replacement=True)
    data = torch.tanh(torch.tensor(means)[comp] + torch.tensor(stds)[comp] * torch.randn(n)).unsqueeze(-1)
    ode, noisy, uncorrected = _rollouts(actor, n, sigma=0.8)
    w_ode, w_noisy, w_unc = _w1(ode, data), _w1(noisy, data), _w1(uncorrected, data)
    assert w_noisy < 0.03 and w_ode < 0.03, (w_ode, w_noisy)
    assert w_unc > 4 * w_noisy, (w_noisy, w_unc)


def test_drift_correction_after_flow_matching_training():
    """Issue test: after FM training on a bimodal 1-D law, noisy ≈ ODE ≈ data; uncorrected is off."""
    torch.manual_seed(8)
    actor = make_flow_actor(
        Bounded(-1.0, 1.0, shape=(1,)), 1, velocity="mlp", num_steps=32, noise_std=0.6,
        velocity_kwargs={"hidden_sizes": (64, 64), "activation": nn.SiLU},
    )
    loss = FlowMatchingLoss(actor)
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    modes = torch.tensor([-0.7, 0.6])

    def data(n):
        return torch.tanh(modes[torch.randint(0, 2, (n,))] + 0.1 * torch.randn(n)).unsqueeze(-1)

    for _ in range(1500):
        batch = TensorDict({"observation": torch.zeros(256, 1), "action": data(256)}, [256])
        opt.zero_grad()
        loss(batch)["loss_flow_matching"].backward()
        opt.step()
    n = 20000
    target = data(n)
    ode, noisy, uncorrected = _rollouts(actor, n, sigma=0.6)
    w_ode, w_noisy, w_unc = _w1(ode, target), _w1(noisy, target), _w1(uncorrected, target)
    assert w_noisy <= w_ode + 0.02, (w_ode, w_noisy)
    assert w_unc > 3 * max(w_noisy, 0.01), (w_noisy, w_unc)
