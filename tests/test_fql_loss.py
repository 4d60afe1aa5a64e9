"""FQLLoss (FQL and, with action_chunk=h, QC-FQL) honours TorchRL's loss contract and the reference's semantics."""
import copy

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import MLP
from torchrl.objectives import SoftUpdate

from torchrl_sacflow import FQLLoss
from torchrl_sacflow.action_chunks import chunk_episode, transitions_tensordict

N_OBS, D, BATCH = 4, 2, 16


def _modules(width, seed=0):
    torch.manual_seed(seed)
    actor = TensorDictModule(MLP(in_features=N_OBS + width, out_features=width, num_cells=[32, 32]),
                             in_keys=["observation", "flow_noise"], out_keys=["action"])
    velocity = TensorDictModule(MLP(in_features=N_OBS + width + 1, out_features=width, num_cells=[32, 32]),
                                in_keys=["observation", "flow_noisy_action", "flow_time"], out_keys=["flow_velocity"])
    qvalue = TensorDictModule(MLP(in_features=N_OBS + width, out_features=1, num_cells=[32, 32]),
                              in_keys=["observation", "action"], out_keys=["state_action_value"])
    return actor, velocity, qvalue


def _data(width, batch=BATCH, seed=0, chunk_length=None):
    g = torch.Generator().manual_seed(seed)
    td = TensorDict({
        "observation": torch.randn(batch, N_OBS, generator=g),
        "action": torch.rand(batch, width, generator=g) * 2 - 1,
        "next": {"observation": torch.randn(batch, N_OBS, generator=g),
                 "reward": torch.randn(batch, 1, generator=g),
                 "done": torch.zeros(batch, 1, dtype=torch.bool),
                 "terminated": torch.rand(batch, 1, generator=g) < 0.3},
    }, batch_size=[batch])
    if chunk_length is not None:
        td["chunk_length"] = chunk_length
    return td


def _loss(h=1, **kwargs):
    actor, velocity, qvalue = _modules(h * D)
    return FQLLoss(actor, velocity, qvalue, action_chunk=h, **kwargs)


def _params(loss, name):
    return list(getattr(loss, f"{name}_network_params").values(True, True))


def _reached(params):
    return [p.grad is not None and p.grad.abs().sum() > 0 for p in params]


@pytest.mark.parametrize("h", [1, 3])
def test_forward_returns_the_loss_keys_finite_scalars(h):
    loss = _loss(h)
    td = _data(h * D, chunk_length=torch.full((BATCH, 1), h))
    out = loss(td)
    assert set(out.keys()) == set(loss.out_keys) == {"loss_actor", "loss_qvalue", "loss_flow", "distill_loss", "q_loss"}
    for key in loss.out_keys:
        assert out[key].shape == () and torch.isfinite(out[key]), key
    assert td["td_error"].shape == (BATCH,)
    assert set(loss.in_keys) >= {"observation", "action", ("next", "observation"), ("next", "reward"),
                                 ("next", "terminated")}
    assert (loss.tensor_keys.chunk_length in loss.in_keys) == (h > 1)


def test_reduction_none_keeps_the_batch():
    out = _loss(reduction="none")(_data(D))
    for key in ("loss_actor", "loss_qvalue", "loss_flow"):
        assert out[key].shape == (BATCH,), key


@pytest.mark.parametrize("h", [1, 2])
def test_each_loss_reaches_only_its_network(h):
    loss = _loss(h, alpha=3.0)
    out = loss(_data(h * D, chunk_length=torch.full((BATCH, 1), h)))
    actor_p, velocity_p, q_p = _params(loss, "actor"), _params(loss, "velocity"), _params(loss, "qvalue")

    out["loss_actor"].backward(retain_graph=True)
    assert all(_reached(actor_p)) and not any(_reached(velocity_p)) and not any(_reached(q_p))
    loss.zero_grad()
    out["loss_flow"].backward(retain_graph=True)
    assert all(_reached(velocity_p)) and not any(_reached(actor_p)) and not any(_reached(q_p))
    loss.zero_grad()
    out["loss_qvalue"].backward()
    assert all(_reached(q_p)) and not any(_reached(actor_p)) and not any(_reached(velocity_p))
    assert not any(p.requires_grad for p in loss.target_qvalue_network_params.values(True, True))


def test_ensemble_members_differ_and_soft_update_moves_the_target():
    loss = _loss(num_qvalue_nets=3)
    first = next(iter(loss.qvalue_network_params.values(True, True)))
    assert first.shape[0] == 3 and not torch.equal(first[0], first[1])
    updater = SoftUpdate(loss, tau=0.25)
    online = loss.qvalue_network_params.detach().clone()
    target_before = loss.target_qvalue_network_params.clone()
    with torch.no_grad():
        for p in loss.qvalue_network_params.values(True, True):
            p.add_(1.0)
    updater.step()
    for key, t in loss.target_qvalue_network_params.items(True, True):
        expected = 0.75 * target_before[key] + 0.25 * (online[key] + 1.0)
        torch.testing.assert_close(t, expected)


class _EulerOneStep(nn.Module):
    """A "one-step" policy that is exactly the behaviour flow's clipped K-step Euler integral."""

    def __init__(self, velocity_mlp, steps):
        super().__init__()
        self.velocity, self.steps = velocity_mlp, steps

    def forward(self, obs, z):
        x = z
        for i in range(self.steps):
            t = torch.full((*x.shape[:-1], 1), i / self.steps)
            x = x + self.velocity(obs, x, t) / self.steps
        return x.clamp(-1.0, 1.0)


def test_distillation_is_zero_when_the_policy_is_the_flow_and_never_reaches_the_flow():
    _, velocity, qvalue = _modules(D)
    actor = TensorDictModule(_EulerOneStep(copy.deepcopy(velocity.module), steps=4),
                             in_keys=["observation", "flow_noise"], out_keys=["action"])
    loss = FQLLoss(actor, velocity, qvalue, alpha=100.0, flow_steps=4)
    loss_actor, meta = loss.actor_loss(_data(D))
    assert meta["distill_loss"].item() == 0.0
    loss_actor.backward()
    assert not any(_reached(_params(loss, "velocity")))
    assert all(_reached(_params(loss, "actor")))
    # a policy that is not the flow: the distillation term is positive, still not reaching the flow
    with torch.no_grad():
        for p in loss.actor_network_params.values(True, True):
            p.add_(0.1)
    loss.zero_grad()
    loss_actor, meta = loss.actor_loss(_data(D))
    assert meta["distill_loss"].item() > 1e-4
    loss_actor.backward()
    assert not any(_reached(_params(loss, "velocity")))


@pytest.mark.parametrize("normalize", [False, True])
def test_actor_loss_matches_an_independent_computation(normalize):
    loss = _loss(alpha=7.0, flow_steps=3, normalize_q_loss=normalize)
    td = _data(D)
    torch.manual_seed(5)
    loss_actor, meta = loss.actor_loss(td)
    torch.manual_seed(5)
    z = torch.randn(BATCH, D)
    obs = td["observation"]
    with torch.no_grad():
        x = z
        for i in range(3):
            t = torch.full((BATCH, 1), i / 3)
            with loss.velocity_network_params.to_module(loss.velocity_network):
                x = x + loss.velocity_network.module(obs, x, t) / 3
        target = x.clamp(-1, 1)
        with loss.actor_network_params.to_module(loss.actor_network):
            mu = loss.actor_network.module(obs, z)
        qs = []
        for j in range(2):
            with loss.qvalue_network_params[j].to_module(loss.qvalue_network):
                qs.append(loss.qvalue_network.module(obs, mu.clamp(-1, 1)).squeeze(-1))
        q = torch.stack(qs).mean(0)
    lam = 1 / q.abs().mean() if normalize else 1.0
    distill = (mu - target).pow(2).mean()
    torch.testing.assert_close(meta["distill_loss"], distill)
    torch.testing.assert_close(loss_actor.detach(), -lam * q.mean() + 7.0 * distill)


def _episode(T=9, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T + 1, N_OBS)).astype(np.float32)
    rewards = rng.normal(size=T)
    dones = np.zeros(T, bool)
    dones[5] = True  # a terminal step inside the episode: windows through it stop there
    return obs[:-1], obs[1:], rng.uniform(-1, 1, size=(T, D)), rewards, dones


@pytest.mark.parametrize("q_agg", ["mean", "min"])
def test_chunked_target_equals_an_independent_computation(q_agg):
    h, gamma, T = 3, 0.9, 9
    obs, next_obs, actions, rewards, dones = _episode(T)
    pieces = chunk_episode(obs, next_obs, actions, rewards, dones, h, gamma, np.zeros(T, bool))
    td = transitions_tensordict({k: [v] for k, v in pieces.items()}, [np.zeros(T, np.int64)])
    loss = _loss(h, gamma=gamma, q_agg=q_agg)
    with torch.no_grad():  # the online critics differ from the target ones: the target must use the latter
        for p in loss.qvalue_network_params.values(True, True):
            p.add_(0.5)
    torch.manual_seed(11)
    y = loss.value_target(td)
    torch.manual_seed(11)
    z = torch.randn(T, h * D)

    expected = []
    for t in range(T):
        ret, terminal = 0.0, False
        for j in range(h):  # executed steps: inside the episode, up to and including the first terminal
            if t + j >= T:
                break
            ret += gamma ** j * rewards[t + j]
            if dones[t + j]:
                terminal = True
                break
        last = min(t + h, T, (t + int(np.argmax(dones[t:])) + 1) if dones[t:].any() else T) - 1
        s_next = torch.as_tensor(next_obs[last]).float()[None]
        with torch.no_grad(), loss.actor_network_params.to_module(loss.actor_network):
            a_next = loss.actor_network.module(s_next, z[t:t + 1]).clamp(-1, 1)
        qs = []
        for m in range(2):
            with torch.no_grad(), loss.target_qvalue_network_params[m].to_module(loss.qvalue_network):
                qs.append(loss.qvalue_network.module(s_next, a_next).item())
        agg = min(qs) if q_agg == "min" else sum(qs) / 2
        expected.append(ret + gamma ** h * (0.0 if terminal else 1.0) * agg)
    assert td["next", "terminated"].any() and not td["next", "terminated"].all()
    torch.testing.assert_close(y, torch.tensor(expected, dtype=y.dtype))


def test_flow_loss_masks_the_padded_entries_of_short_chunks():
    h = 2
    loss = _loss(h)
    length = torch.tensor([[1], [2]]).repeat(BATCH // 2, 1)
    td = _data(h * D, chunk_length=length)
    torch.manual_seed(3)
    got = loss.flow_loss(td)
    torch.manual_seed(3)
    a = td["action"]
    x0 = torch.randn_like(a)
    t = torch.rand(BATCH, 1)
    with torch.no_grad(), loss.velocity_network_params.to_module(loss.velocity_network):
        pred = loss.velocity_network.module(td["observation"], (1 - t) * x0 + t * a, t)
    err = (pred - (a - x0)).pow(2)
    err[length.squeeze(-1) == 1, D:] = 0.0  # the second action of a one-step chunk is padding
    torch.testing.assert_close(got.detach(), err.mean())
    # padded entries are out: with every chunk full the loss is larger here
    torch.manual_seed(3)
    full = loss.flow_loss(_data(h * D, chunk_length=torch.full((BATCH, 1), h)))
    assert full.item() > got.item()


@pytest.mark.parametrize("kwargs, match", [
    ({"q_agg": "max"}, "q_agg must be 'min' or 'mean', got 'max'"),
    ({"alpha": -1.0}, "alpha .* must be >= 0, got -1.0"),
    ({"num_qvalue_nets": 0}, "num_qvalue_nets must be an integer >= 1"),
    ({"h": 0}, "action_chunk must be an integer >= 1"),
    ({"flow_steps": 0}, "flow_steps must be an integer >= 1"),
    ({"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
])
def test_bad_options_raise_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        _loss(**kwargs)
    assert "\n" not in str(err.value)


def test_action_width_not_a_multiple_of_the_chunk_raises():
    loss = FQLLoss(*_modules(5), action_chunk=2)
    with pytest.raises(ValueError, match="action width 5 is not a multiple of action_chunk=2"):
        loss(_data(5))
