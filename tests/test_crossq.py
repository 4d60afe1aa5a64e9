"""CrossQ-style critic (make_crossq_qvalue) and CrossQFlowLoss: the TorchRL loss contract and the
CrossQ specifics (joint critic batch, no target network, batch-renorm statistics per step)."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, BatchRenorm1d, NormalParamExtractor, ProbabilisticActor, TanhNormal

from torchrl_sacflow.modules.critics import make_crossq_qvalue
from torchrl_sacflow.modules.flow_actor import StateLogStd, make_flow_actor
from torchrl_sacflow.objectives.crossq_flow import CrossQFlowLoss

from _batches import random_transitions

N_OBS, N_ACT, BATCH, K = 5, 2, 16, 3
KINDS = ("transformer", "gru", "mlp", "gaussian")
_VELOCITY_KWARGS = {
    "transformer": {
        "d_model": 16, "num_heads": 2, "num_layers": 1, "obs_hidden": 16, "time_dim": 8
    },
    "gru": {"hidden_sizes": (16,)},
    "mlp": {"hidden_sizes": (16,)},
}


def _spec():
    return Bounded(-torch.ones(N_ACT), torch.ones(N_ACT), shape=(N_ACT,))


def _actor(kind: str, action_key="action"):
    if kind == "gaussian":
        net = nn.Sequential(
            MLP(in_features=N_OBS, out_features=2 * N_ACT, num_cells=[16]), NormalParamExtractor()
        )
        return ProbabilisticActor(
            TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            out_keys=[action_key],
            spec=_spec(),
            distribution_class=TanhNormal,
            return_log_prob=True,
        )
    return make_flow_actor(
        _spec(),
        N_OBS,
        velocity=kind,
        num_steps=K,
        out_key=action_key,
        velocity_kwargs=_VELOCITY_KWARGS[kind],
        log_std_kwargs={"hidden_sizes": (16,)},
    )


def _loss(kind: str, *, action_key="action", warmup_steps=100, **kwargs) -> CrossQFlowLoss:
    qvalue = make_crossq_qvalue(
        N_OBS,
        N_ACT,
        num_cells=(32, 32),
        warmup_steps=warmup_steps,
        in_keys=("observation", action_key),
    )
    if kind == "gaussian":
        kwargs.setdefault("target_entropy", "auto")
    loss = CrossQFlowLoss(_actor(kind, action_key), qvalue, **kwargs)
    loss.make_value_estimator(gamma=0.99)
    return loss


def _data(batch: int = BATCH, action_key="action", next_shift: float = 0.0) -> TensorDict:
    return random_transitions(batch, N_OBS, _spec(), action_key=action_key, next_shift=next_shift)


def _brn_state(loss: CrossQFlowLoss) -> dict:
    """Every batch-renorm buffer of the loss's critic params (both Q nets), cloned."""
    return {
        key: value.clone()
        for key, value in loss.qvalue_network_params.items(True, True)
        if key[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the critic builder ------------------------------------------------------------------------
def test_crossq_qvalue_architecture_and_batch_shapes():
    q = make_crossq_qvalue(N_OBS, N_ACT, num_cells=(8, 4), momentum=0.1, warmup_steps=7)
    brns = [m for m in q.modules() if isinstance(m, BatchRenorm1d)]
    # an input BRN, then one per hidden layer
    assert [m.num_features for m in brns] == [N_OBS + N_ACT, 8, 4]
    assert all(m.momentum == 0.1 and m.warmup_steps == 7 for m in brns)
    kinds = [type(m) for m in q.module.net]
    assert kinds[1:4] == [nn.Linear, nn.ReLU, type(brns[0])]  # Linear -> ReLU -> BRN (CrossQ order)
    td = TensorDict(
        {"observation": torch.randn(3, 4, N_OBS), "action": torch.randn(3, 4, N_ACT)}, [3, 4]
    )
    q.eval()
    out = q(td.clone())["state_action_value"]
    assert out.shape == (3, 4, 1)
    flat = q(td.reshape(-1).clone())["state_action_value"]
    torch.testing.assert_close(out.reshape(-1, 1), flat)


def test_crossq_qvalue_warmup_counter_saturates():
    # TorchRL's BatchRenorm1d never caps its counter (warm-up factor 2, 3, ... later): ours does.
    q = make_crossq_qvalue(N_OBS, N_ACT, num_cells=(8,), warmup_steps=2)
    td = TensorDict({"observation": torch.randn(6, N_OBS), "action": torch.randn(6, N_ACT)}, [6])
    for _ in range(5):
        q(td.clone())
    counters = [int(m.num_batches_tracked) for m in q.modules() if isinstance(m, BatchRenorm1d)]
    assert counters == [2, 2]


# -- the loss ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_losses_finite(kind):
    flow = kind != "gaussian"
    loss = _loss(kind, proximity_coef=1.0 if flow else None, log_path_grad_norms=flow)
    out = loss(_data())
    keys = {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"}
    if flow:
        keys |= {"proximity", "path_grad_norm"}
        assert out["path_grad_norm"].shape == (K,)
    assert set(out.keys()) == keys
    for key in keys:
        assert torch.isfinite(out[key]).all(), key
    assert loss.delay_qvalue is False
    assert not any("target_qvalue" in k for k in loss.state_dict())
    assert float(out["alpha"]) == pytest.approx(0.2)
    assert float(loss.target_entropy) == (-N_ACT if kind == "gaussian" else 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_only_where_they_belong(kind):
    loss = _loss(kind)
    out = loss(_data())
    groups = {
        "actor": list(loss.actor_network_params.parameters()),
        "critic": list(loss.qvalue_network_params.parameters()),
        "alpha": [loss.log_alpha],
    }
    owner = {"loss_actor": "actor", "loss_qvalue": "critic", "loss_alpha": "alpha"}
    for key, expected in owner.items():
        for name, params in groups.items():
            grads = torch.autograd.grad(out[key], params, retain_graph=True, allow_unused=True)
            nonzero = any(g is not None and g.abs().sum() > 0 for g in grads)
            assert nonzero == (name == expected), f"{key} -> {name} params: grads = {nonzero}"


@pytest.mark.parametrize("kind", KINDS)
def test_brn_statistics_updated_by_critic_step_only(kind):
    loss = _loss(kind)
    data = _data(next_shift=10.0)
    before = _brn_state(loss)

    # the critic module is in train mode here (its default): the actor step must not update stats
    loss_actor, meta = loss.actor_loss(data)
    (loss_actor + loss.alpha_loss(meta["log_prob"]).mean()).backward()
    if kind != "gaussian":
        loss.path_grad_norms(data)
    _assert_same(before, _brn_state(loss))

    loss.qvalue_network.eval()  # the critic step must run in train mode anyway, then restore eval
    loss.qvalue_loss(data)[0].backward()
    assert not any(m.training for m in loss.qvalue_network.modules())
    after = _brn_state(loss)
    for key in before:
        if key[-1] == "num_batches_tracked":
            assert (after[key] == before[key] + 1).all(), key  # one update per call, both Q nets
        else:
            assert not torch.equal(after[key], before[key]), key
    # the input BRN saw the joint batch [(s, a); (s', a')]: running mean = momentum * mean of both
    first = next(k for k in after if k[-1] == "running_mean")
    joint_obs = torch.cat([data["observation"], data["next", "observation"]])
    momentum = loss.qvalue_network.module.net[0].momentum
    expected = (momentum * joint_obs.mean(0)).expand(2, N_OBS)
    torch.testing.assert_close(after[first][:, :N_OBS], expected)


@pytest.mark.parametrize("kind", ["mlp", "gaussian"])
def test_critic_loss_is_joint_batch_without_target(kind):
    """Recompute the critic loss by hand: one train-mode forward of each Q net on the joint batch,
    next value from the same (online) forward, detached."""
    loss = _loss(kind)
    data = _data()
    names = [
        k for k, v in loss.qvalue_network_params.items(True, True) if isinstance(v, nn.Parameter)
    ]
    params = loss.qvalue_network_params.data.clone()  # state before the step (stats included)
    for name in names:
        params.get(name).requires_grad_(True)
    torch.manual_seed(1)
    loss_q, meta = loss.qvalue_loss(data)
    torch.manual_seed(1)
    next_td, next_log_prob = loss._next_action(data)  # the same draw of a'

    keys = loss.qvalue_network.in_keys
    joint = torch.cat([data.select(*keys), next_td.select(*keys)], 0)
    qs = []
    for j in range(loss.num_qvalue_nets):
        with params[j].to_module(loss.qvalue_network):
            qs.append(loss.qvalue_network(joint.clone())["state_action_value"].squeeze(-1))
    q = torch.stack(qs)
    q_now, q_next = q[:, :BATCH], q[:, BATCH:]
    alpha = loss.log_alpha.exp().detach()
    not_term = (~data["next", "terminated"]).float().squeeze(-1)
    next_value = q_next.min(0)[0] - alpha * next_log_prob
    target = (data["next", "reward"].squeeze(-1) + 0.99 * not_term * next_value).detach()
    expected = (q_now - target).pow(2).sum(0).mean()
    torch.testing.assert_close(loss_q, expected, rtol=1e-5, atol=1e-5)
    td_error = (q_now - target).abs().max(0)[0]
    torch.testing.assert_close(meta["td_error"], td_error, rtol=1e-5, atol=1e-5)
    # same gradients: the next value is a detached part of the *same* forward (no target copy)
    got = torch.autograd.grad(loss_q, [loss.qvalue_network_params.get(n) for n in names])
    want = torch.autograd.grad(expected, [params.get(n) for n in names])
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=f"grad of {name}")


def test_critic_only_inputs_are_read_at_the_next_step():
    qvalue = make_crossq_qvalue(
        N_OBS + 1, N_ACT, num_cells=(16,), in_keys=("observation", "extra", "action")
    )
    loss = CrossQFlowLoss(_actor("mlp"), qvalue)
    assert ("next", "extra") in loss.in_keys and "extra" in loss.in_keys
    data = _data()
    data["extra"] = torch.randn(BATCH, 1)
    data["next", "extra"] = torch.randn(BATCH, 1)
    assert torch.isfinite(loss(data)["loss_qvalue"])
    del data["next", "extra"]
    with pytest.raises(KeyError):
        loss.qvalue_loss(data)


@pytest.mark.parametrize("kind", ["transformer", "gaussian"])
def test_state_dict_round_trip_restores_brn_statistics(kind):
    loss = _loss(kind, warmup_steps=2)
    opt = torch.optim.Adam(loss.parameters(), lr=1e-3, betas=(0.5, 0.999))
    data = _data()
    for _ in range(3):
        out = loss(data)
        opt.zero_grad()
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
        opt.step()
    state = loss.state_dict()
    assert any(k.endswith("running_var") for k in state)
    assert any(k.endswith("num_batches_tracked") for k in state)

    fresh = _loss(kind, warmup_steps=2)
    with pytest.raises(AssertionError):
        _assert_same(_brn_state(loss), _brn_state(fresh))
    fresh.load_state_dict(state)
    _assert_same(_brn_state(loss), _brn_state(fresh))
    counters = [v for k, v in _brn_state(fresh).items() if k[-1] == "num_batches_tracked"]
    assert len(counters) == 3 and all((c == 2).all() for c in counters)  # 3 updates, saturated at 2
    # same params and statistics -> same losses for the same random draws
    for method in ("actor_loss", "qvalue_loss"):
        torch.manual_seed(3)
        a = getattr(loss, method)(data)[0]
        torch.manual_seed(3)
        b = getattr(fresh, method)(data)[0]
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["gru", "gaussian"])
def test_set_keys_renamed_action(kind):
    loss = _loss(kind, action_key="act")
    loss.set_keys(action="act")
    assert "act" in loss.in_keys and ("next", "observation") in loss.in_keys
    out = loss(_data(action_key="act"))
    assert torch.isfinite(out["loss_qvalue"]) and torch.isfinite(out["loss_actor"])
    with pytest.raises(KeyError):  # the data must carry the renamed key
        loss.qvalue_loss(_data())
    with pytest.raises(ValueError):
        loss.set_keys(not_a_key="x")


@pytest.mark.parametrize("kind", ["mlp", "gaussian"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction(kind, reduction):
    ref = _loss(kind, reduction="none", scalar_output_mode="exclude")
    loss = _loss(kind, reduction=reduction, scalar_output_mode="exclude")
    loss.load_state_dict(ref.state_dict())
    data = _data()
    torch.manual_seed(5)
    per_sample = ref(data.clone())
    torch.manual_seed(5)
    out = loss(data.clone())
    for key in ("loss_actor", "loss_qvalue", "loss_alpha"):
        if reduction == "none":
            assert out[key].shape == (BATCH,), key
        else:
            assert out[key].shape == (), key
            expected = per_sample[key].mean() if reduction == "mean" else per_sample[key].sum()
            torch.testing.assert_close(out[key], expected, rtol=1e-5, atol=1e-5)


def test_rejects_target_network_and_skip_done_states():
    with pytest.raises(ValueError, match="target"):
        _loss("mlp", delay_qvalue=True)
    with pytest.raises(ValueError, match="skip_done_states"):
        _loss("mlp", skip_done_states=True)


def test_next_action_with_actor_in_eval_mode_is_stochastic():
    loss = _loss("mlp")
    data = _data()
    flags = []
    sub = next(m for m in loss.actor_network.modules() if isinstance(m, StateLogStd)).net[0]
    handle = sub.register_forward_pre_hook(lambda m, args: flags.append(m.training))
    a1 = loss._next_action(data)[0]["action"]
    a2 = loss._next_action(data)[0]["action"]
    n_next = len(flags)
    loss.actor_loss(data)
    handle.remove()
    assert not torch.allclose(a1, a2)  # RANDOM exploration: a fresh draw each time
    assert n_next > 0 and not any(flags[:n_next])  # eval mode while drawing a'
    assert all(flags[n_next:])  # the actor's own (train) mode for its loss
    assert all(m.training for m in loss.actor_network.modules())  # mode given back


def test_deactivate_vmap_matches_vmap():
    # the for-loop fallback must write the running statistics back just like vmap does
    ref = _loss("mlp")
    loop = _loss("mlp", deactivate_vmap=True)
    loop.load_state_dict(ref.state_dict())
    data = _data()
    torch.manual_seed(1)
    expected = ref.qvalue_loss(data)[0]
    torch.manual_seed(1)
    got = loop.qvalue_loss(data)[0]
    torch.testing.assert_close(got, expected)
    stats_ref, stats_loop = _brn_state(ref), _brn_state(loop)
    for key in stats_ref:
        torch.testing.assert_close(stats_loop[key], stats_ref[key], msg=f"{key} differs")
    assert all((v == 1).all() for k, v in stats_loop.items() if k[-1] == "num_batches_tracked")


@pytest.mark.parametrize("kind", ["transformer", "gaussian"])
def test_losses_leave_the_input_batch_untouched(kind):
    loss = _loss(kind)
    data = _data()
    before = data.clone()
    loss.qvalue_loss(data)
    loss.actor_loss(data)
    assert set(data.keys(True, True)) == set(before.keys(True, True))
    assert (data == before).all()
