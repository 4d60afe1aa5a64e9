"""SACFlowLoss honours TorchRL's loss contract, and its additions (β term, gradient diagnostic) work."""
import contextlib
import math
import warnings

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal
from torchrl.objectives import SoftUpdate
from tensordict.nn import TensorDictModule

from torchrl_sacflow import FlowMatchingLoss, SACFlowLoss, get_flow_rollout, make_flow_actor, make_qvalue

from _batches import random_transitions

N_OBS, N_ACT, BATCH = 4, 2, 16
VELOCITIES = ["transformer", "gru", "mlp"]


def _spec():
    return Bounded(-1.0, 1.0, shape=(N_ACT,))


def _data(batch=BATCH, seed=0, action_key="action", obs_key="observation"):
    return random_transitions(batch, N_OBS, _spec(), seed=seed, action_key=action_key, obs_key=obs_key)


def _loss(velocity="transformer", **kwargs):
    actor = make_flow_actor(_spec(), N_OBS, velocity=velocity, num_steps=4)
    qvalue = make_qvalue(N_OBS, N_ACT, num_cells=(32, 32))
    return SACFlowLoss(actor, qvalue, **kwargs)


def _gaussian_actor():
    net = nn.Sequential(MLP(in_features=N_OBS, out_features=2 * N_ACT, num_cells=[32]), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module, in_keys=["loc", "scale"], spec=_spec(), distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0}, return_log_prob=True,
    )


def _grads(params):
    return [p.grad for p in params]


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_forward_outputs_and_defaults(velocity):
    loss = _loss(velocity)
    out = loss(_data())
    for key in ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"):
        assert out[key].shape == () and torch.isfinite(out[key]), key
    assert loss.target_entropy.item() == 0.0
    assert out["alpha"].item() == pytest.approx(0.2)
    assert "path_grad_norm" not in out.keys() and "proximity" not in out.keys()


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_input_tensordict_is_unchanged(velocity):
    loss = _loss(velocity)
    td = _data()
    before = td.clone()
    loss(td)
    # SACLoss writes its TD-error priority in place; every input entry stays as it was.
    for key in before.keys(True, True):
        torch.testing.assert_close(td[key], before[key], msg=str(key))
    assert set(td.keys(True, True)) - set(before.keys(True, True)) <= {"td_error"}


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_gradient_isolation_between_actor_qvalue_and_alpha(velocity):
    loss = _loss(velocity)
    out = loss(_data())
    actor_p = list(loss.actor_network_params.values(True, True))
    q_p = list(loss.qvalue_network_params.values(True, True))

    out["loss_actor"].backward(retain_graph=True)
    assert all(g is None or g.abs().sum() == 0 for g in _grads(q_p))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(actor_p))
    assert loss.log_alpha.grad is None or loss.log_alpha.grad == 0
    loss.zero_grad()

    out["loss_qvalue"].backward(retain_graph=True)
    assert all(g is None or g.abs().sum() == 0 for g in _grads(actor_p))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(q_p))
    assert loss.log_alpha.grad is None or loss.log_alpha.grad == 0
    loss.zero_grad()

    out["loss_alpha"].backward()
    assert all(g is None or g.abs().sum() == 0 for g in _grads(actor_p) + _grads(q_p))
    assert loss.log_alpha.grad is not None and loss.log_alpha.grad != 0


def _skips_swap(loss) -> bool:
    """Whether the loss skips the parameter swap; a real swap is undone again (entered and exited)."""
    ctx = loss._actor_params()
    with ctx:
        pass
    return isinstance(ctx, contextlib.nullcontext)


def _actor_and_target(loss, td, seed=3):
    torch.manual_seed(seed)
    loss_actor, _ = loss.actor_loss(td)
    torch.manual_seed(seed)
    target = loss._compute_target_v2(td)
    return loss_actor.detach(), target


@pytest.mark.usefixtures("fast_paths_on")
@pytest.mark.parametrize("velocity", VELOCITIES)
def test_actor_holds_the_loss_parameters_and_swap_is_skipped(velocity):
    loss = _loss(velocity)
    assert _skips_swap(loss)
    module_tensors = {**dict(loss.actor_network.named_parameters()), **dict(loss.actor_network.named_buffers())}
    for key, tensor in loss.actor_network_params.items(True, True):
        assert module_tensors[".".join(key)] is tensor, key
    # load_state_dict and dtype moves update in place: still bound
    loss.load_state_dict(_loss(velocity).state_dict())
    assert _skips_swap(loss)
    loss.double()
    assert _skips_swap(loss)
    assert next(loss.actor_network.parameters()).dtype == torch.float64


@pytest.mark.parametrize("velocity", ["transformer", "gru"])
def test_actor_evaluations_use_the_loss_parameters_when_the_module_diverges(velocity):
    torch.manual_seed(0)
    loss = _loss(velocity)
    td = _data()
    reference = _actor_and_target(loss, td)
    # someone puts other tensors into the actor module (not through the loss)
    rollout = next(m for m in loss.actor_network.modules() if hasattr(m, "action_scale"))
    rollout.action_scale = rollout.action_scale * 0.5
    head = loss.actor_network.module[0].module.log_std_head.net[-1]
    head.bias = nn.Parameter(head.bias.detach() + 1.0)
    assert not _skips_swap(loss)  # falls back to the swap
    diverged = _actor_and_target(loss, td)
    for a, b in zip(reference, diverged):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("estimator", ["td0", "td1"])
def test_target_value_matches_sacloss(estimator):
    from torchrl.objectives import SACLoss, ValueEstimators

    torch.manual_seed(0)
    loss = _loss("gru")
    if estimator == "td1":  # not SAC's default: takes the estimator's generic path
        loss.make_value_estimator(ValueEstimators.TD1, gamma=0.9)
    td = _data()
    td["next", "terminated"][::3] = True  # some targets without bootstrap
    keys_before = set(td.keys(True, True))
    torch.manual_seed(5)
    ours = loss._compute_target_v2(td)
    torch.manual_seed(5)
    theirs = SACLoss._compute_target_v2(loss, td)
    torch.testing.assert_close(ours, theirs)
    assert set(td.keys(True, True)) == keys_before  # the caller's batch is not written to


def test_parameters_are_unique_and_exclude_targets():
    loss = _loss("gru")
    names = [n for n, _ in loss.named_parameters()]
    assert len(names) == len(set(names))
    ids = [id(p) for p in loss.parameters()]
    assert len(ids) == len(set(ids))
    assert not any("target" in n for n in names)
    assert any("target_qvalue" in n for n, _ in loss.named_buffers())


def test_set_keys_and_unknown_key_error():
    loss = _loss("mlp")
    loss.set_keys(action="act", reward="rew")
    assert "act" in loss.in_keys and ("next", "rew") in loss.in_keys
    td = _data(action_key="act")
    td["next", "rew"] = td["next"].pop("reward")
    with pytest.raises(KeyError):
        loss(_data())  # the old action key is no longer read
    qvalue_in = loss.qvalue_network.in_keys
    assert "action" in qvalue_in  # the critic's own keys are not renamed by set_keys
    with pytest.raises(ValueError):
        loss.set_keys(not_a_key="x")


def test_keyword_call_returns_out_keys_in_order():
    loss = _loss("transformer")
    td = _data()
    outs = loss(
        observation=td["observation"], action=td["action"],
        next_observation=td["next", "observation"], next_reward=td["next", "reward"],
        next_done=td["next", "done"], next_terminated=td["next", "terminated"],
    )
    assert isinstance(outs, tuple) and len(outs) == len(loss.out_keys)
    assert all(torch.isfinite(o) for o in outs)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    loss = _loss("gru")
    with torch.no_grad():
        loss.log_alpha.fill_(-3.0)
    loss2 = _loss("gru")
    loss2.load_state_dict(loss.state_dict())
    sd1, sd2 = loss.state_dict(), loss2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        torch.testing.assert_close(sd1[k], sd2[k], msg=k)
    assert any("target_qvalue" in k for k in sd1)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction_modes(reduction):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = _loss("mlp", reduction=reduction)
    out = loss(_data())
    shape = (BATCH,) if reduction == "none" else ()
    for key in ("loss_actor", "loss_qvalue", "loss_alpha"):
        assert out[key].shape == shape, key
    if reduction != "none":
        torch.manual_seed(0)
        r = loss(_data())
        assert torch.isfinite(r["loss_qvalue"])


def test_vmap_on_and_off_agree():
    torch.manual_seed(0)
    loss_vmap = _loss("transformer", deactivate_vmap=False)
    loss_loop = _loss("transformer", deactivate_vmap=True)
    loss_loop.load_state_dict(loss_vmap.state_dict())
    td = _data()
    torch.manual_seed(1)
    a = loss_vmap(td.clone())
    torch.manual_seed(1)
    b = loss_loop(td.clone())
    for key in ("loss_actor", "loss_qvalue", "loss_alpha"):
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_soft_update_of_target_critics():
    loss = _loss("mlp")
    updater = SoftUpdate(loss, tau=0.5)
    before = loss.target_qvalue_network_params.clone()
    with torch.no_grad():
        for p in loss.qvalue_network_params.values(True, True):
            p.add_(1.0)
    updater.step()
    after = loss.target_qvalue_network_params
    for k, v in before.items(True, True):
        torch.testing.assert_close(after[k], v + 0.5)


def test_proximity_term_is_added_and_annealable():
    torch.manual_seed(0)
    loss = _loss("gru", proximity_coef=0.0)
    td = _data()
    torch.manual_seed(1)
    base = loss(td.clone())
    loss.proximity_coef = 1000.0
    torch.manual_seed(1)
    reg = loss(td.clone())
    assert reg["proximity"].item() == pytest.approx(base["proximity"].item(), rel=1e-5)
    expected = base["loss_actor"] + 1000.0 * base["proximity"]
    torch.testing.assert_close(reg["loss_actor"], expected, rtol=1e-4, atol=1e-3)
    assert "_proximity_coef" in loss.state_dict()
    with pytest.raises(ValueError):
        loss.proximity_coef = -1.0
    with pytest.raises(RuntimeError, match="proximity"):
        _loss("gru").proximity_coef = 1.0


@pytest.mark.parametrize("proximity_loss", ["l2", "flow_matching"])
def test_proximity_mask_holds_only_the_marked_rows(proximity_loss):
    """With ``proximity_mask`` set, the term is the mean over the marked rows: changing the unmarked
    rows' buffer actions (e.g. online data) leaves it unchanged (its gradient too: they enter times 0),
    and it is not diluted by them (the l2 check: about the first half's own mean, not half of it; the
    two draw different noise, hence the tolerance, which a mean over all 32 rows would still fail)."""
    loss = _loss("gru", proximity_coef=1.0, proximity_loss=proximity_loss)
    td = _data(batch=32)
    far = td.clone()
    far["action"][16:] = -td["action"][16:].sign() * 0.99  # the unmarked rows: other buffer actions
    mask = torch.arange(32) < 16

    def proximity(data, **keys):
        loss.set_keys(proximity_mask=keys.get("mask", "proximity_mask"))
        torch.manual_seed(3)
        return loss(data)["proximity"]

    full = proximity(td.clone())
    first_half = proximity(td[:16].clone())
    marked = td.clone()
    marked["is_offline"] = mask
    far["is_offline"] = mask
    # the key is absent by default: every row counts
    assert proximity(marked.clone()).item() == pytest.approx(full.item(), rel=1e-5)
    with_mask = proximity(marked.clone(), mask="is_offline")
    far_with_mask = proximity(far.clone(), mask="is_offline")
    assert with_mask.item() == pytest.approx(far_with_mask.item(), rel=1e-5)  # the unmarked rows do not count
    assert proximity(far.clone()).item() > 1.2 * full.item()  # ... though they differ
    if proximity_loss == "l2":  # same draws for the first 16 rows: the mean over them
        assert with_mask.item() == pytest.approx(first_half.item(), rel=0.3)
    none = far.clone()
    none["is_offline"] = torch.zeros(32, dtype=torch.bool)
    assert proximity(none, mask="is_offline").item() == 0.0


def test_proximity_gradient_pulls_actor_towards_buffer_actions():
    """With a huge β, actor steps move the policy's actions towards the buffer action."""
    torch.manual_seed(0)
    actor = make_flow_actor(_spec(), N_OBS, velocity="gru", noise_std=0.05)
    loss = SACFlowLoss(actor, make_qvalue(N_OBS, N_ACT, num_cells=(16,)), proximity_coef=100.0)
    opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    td = _data(batch=64)
    td["action"] = torch.full((64, N_ACT), 0.5)
    dists = []
    for _ in range(60):
        out = loss(td)
        dists.append(out["proximity"].item())
        opt.zero_grad()
        out["loss_actor"].backward()
        opt.step()
    assert dists[-1] < 0.5 * dists[0]


def test_gaussian_actor_works_with_auto_entropy():
    loss = SACFlowLoss(_gaussian_actor(), make_qvalue(N_OBS, N_ACT, num_cells=(16,)), target_entropy="auto",
                       action_spec=_spec())
    out = loss(_data())
    assert loss.target_entropy.item() == -N_ACT
    assert torch.isfinite(out["loss_actor"])
    with pytest.raises(ValueError, match="flow actor"):
        SACFlowLoss(_gaussian_actor(), make_qvalue(N_OBS, N_ACT), log_path_grad_norms=True)


@pytest.mark.parametrize("velocity", VELOCITIES)
def test_path_grad_norms_are_k_finite_values(velocity):
    loss = _loss(velocity, log_path_grad_norms=True)
    out = loss(_data())
    norms = out["path_grad_norm"]
    assert norms.shape == (4,) and torch.isfinite(norms).all() and (norms > 0).all()
    assert not norms.requires_grad
    out["loss_actor"].backward()  # the diagnostic left the actor graph usable
    helper = loss.path_grad_norms(_data())
    assert helper.shape == (4,)


class _LinearVelocity(nn.Module):
    """v = c · A: the Jacobian of each noisy Euler step is a known scalar."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))

    def forward(self, action, observation, time):
        return self.c * action


@pytest.mark.parametrize("c,sigma,K", [(1.5, 0.3, 4), (-0.5, 0.8, 6)])
def test_path_grad_norms_follow_the_analytic_jacobian(c, sigma, K):
    actor = make_flow_actor(_spec(), N_OBS, velocity=_LinearVelocity(c), num_steps=K, noise_std=sigma)
    loss = SACFlowLoss(
        actor, make_qvalue(N_OBS, N_ACT, num_cells=(16,)), alpha_init=1e-8, fixed_alpha=True,
        log_path_grad_norms=True,
    )
    norms = loss(_data(batch=64))["path_grad_norm"]
    dt = 1.0 / K
    # dA_{i+1}/dA_i = 1 + Δt · (c (1 − t + t σ²/2)/(1 − t) − σ²/(2(1 − t))), the same for every sample
    jac = [1 + dt * (c * (1 - i * dt + i * dt * sigma**2 / 2) / (1 - i * dt) - sigma**2 / (2 * (1 - i * dt)))
           for i in range(K)]
    for i in range(K - 1):
        assert norms[i].item() == pytest.approx(norms[i + 1].item() * jac[i], rel=1e-3), i
    assert norms[0].item() / norms[-1].item() == pytest.approx(math.prod(jac[:-1]), rel=1e-3)


def test_flow_matching_loss_contract_and_learning():
    torch.manual_seed(0)
    actor = make_flow_actor(_spec(), N_OBS, velocity="transformer", noise_std=0.1)
    fm = FlowMatchingLoss(actor)
    assert fm.in_keys == ["observation", "action"] and fm.out_keys == ["loss_flow_matching"]
    td = _data(batch=128)
    before = td.clone()
    out = fm(td)
    assert out["loss_flow_matching"].shape == ()
    for key in before.keys(True, True):
        torch.testing.assert_close(td[key], before[key])
    assert FlowMatchingLoss(actor, reduction="none")(td)["loss_flow_matching"].shape == (128,)
    # the velocity it trains is the actor's own
    out["loss_flow_matching"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    # it learns: a deterministic state→action map is fitted by the ODE rollout
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    w = torch.randn(N_OBS, N_ACT)
    for _ in range(400):
        obs = torch.randn(256, N_OBS)
        batch = TensorDict({"observation": obs, "action": 0.8 * torch.tanh(obs @ w)}, [256])
        opt.zero_grad()
        fm(batch)["loss_flow_matching"].backward()
        opt.step()
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    obs = torch.randn(512, N_OBS)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        pred = actor(TensorDict({"observation": obs}, [512]))["action"]
    err = (pred - 0.8 * torch.tanh(obs @ w)).abs().mean().item()
    assert err < 0.1, err
    with pytest.raises(ValueError, match="flow actor"):
        FlowMatchingLoss(_gaussian_actor())


@pytest.mark.usefixtures("fast_paths_on")
def test_flow_matching_and_sac_losses_sharing_one_actor_stay_correct():
    # the offline-to-online recipe builds both losses on the same actor; the second one takes the
    # tensors the first one bound, so both skip the parameter swap and compute what they computed alone
    torch.manual_seed(0)
    actor = make_flow_actor(_spec(), N_OBS, velocity="transformer", noise_std=0.1)
    fm = FlowMatchingLoss(actor)
    assert _skips_swap(fm)
    td = _data(batch=32)
    torch.manual_seed(1)
    reference = fm(td)["loss_flow_matching"].detach()
    sac = SACFlowLoss(actor, make_qvalue(N_OBS, N_ACT, num_cells=(32, 32)))
    assert _skips_swap(sac)
    assert _skips_swap(fm)
    torch.manual_seed(1)
    torch.testing.assert_close(fm(td)["loss_flow_matching"].detach(), reference)
    # a buffer of the module changed behind the losses' back: the swap restores the loss's own
    rollout = get_flow_rollout(actor)
    rollout.action_loc = rollout.action_loc + 0.5
    assert not _skips_swap(fm)
    torch.manual_seed(1)
    torch.testing.assert_close(fm(td)["loss_flow_matching"].detach(), reference)


def _gaussian_direct_actor():
    from torchrl_sacflow.training.policies import make_gaussian_actor

    return make_gaussian_actor(_spec(), N_OBS, num_cells=(32,))


@pytest.mark.usefixtures("fast_paths_on")
@pytest.mark.parametrize("policy", ["transformer", "gru", "gaussian"])
@pytest.mark.parametrize("weighted", [False, True])
def test_critic_and_actor_losses_match_torchrl_sacloss(policy, weighted):
    """The tensor-level critic evaluation gives SACLoss's values, td-errors and gradients."""
    import copy

    from torchrl.objectives import SACLoss

    torch.manual_seed(0)
    actor = _gaussian_direct_actor() if policy == "gaussian" else make_flow_actor(_spec(), N_OBS, velocity=policy)
    qvalue = make_qvalue(N_OBS, N_ACT, num_cells=(32, 32))
    kwargs = dict(num_qvalue_nets=2, loss_function="l2", alpha_init=0.3, target_entropy=0.0, delay_qvalue=True)
    theirs = SACLoss(copy.deepcopy(actor), copy.deepcopy(qvalue), **kwargs)
    ours = SACFlowLoss(actor, qvalue, **kwargs)
    assert ours._ensemble is not None  # the tensor path is the one under test
    ours.load_state_dict(theirs.state_dict(), strict=False)
    with torch.no_grad():  # targets away from the online critics, so the target term matters
        for p in ours.target_qvalue_network_params.values(True, True):
            p.add_(0.1)
        for p in theirs.target_qvalue_network_params.values(True, True):
            p.add_(0.1)
    td = _data()
    td["next", "terminated"][::4] = True
    if weighted:
        td["priority_weight"] = torch.rand(BATCH)
    results = []
    for loss in (ours, theirs):
        torch.manual_seed(7)
        q_loss, q_meta = loss.qvalue_v2_loss(td.clone())
        q_grads = torch.autograd.grad(q_loss, list(loss.qvalue_network_params.values(True, True)))
        torch.manual_seed(8)
        a_loss, a_meta = loss.actor_loss(td.clone())
        a_params = [p for p in loss.actor_network_params.values(True, True) if p.requires_grad]
        a_grads = torch.autograd.grad(a_loss, a_params)
        results.append((q_loss, q_meta["td_error"], *q_grads, a_loss, a_meta["log_prob"], *a_grads))
    # the TensorDict entry point SACLoss's generic paths call (e.g. skip_done_states) agrees too
    td_q = td.select("observation", "action")
    results[0] += (ours._vmap_qnetworkN0(td_q, ours.qvalue_network_params)["state_action_value"],)
    results[1] += (theirs._vmap_qnetworkN0(td_q, theirs.qvalue_network_params)["state_action_value"],)
    assert len(results[0]) == len(results[1])
    for mine, ref in zip(*results):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)
    assert results[0][1].shape == (BATCH,)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_forward_matches_sacloss_forward_and_returns_the_actor_metadata(reduction):
    """``forward`` assembles SACLoss's output itself: the same losses, α, entropy and written
    priority as ``SACLoss.forward`` (same draws), plus ``proximity`` (reduced only)."""
    import copy

    from torchrl.objectives import SACLoss

    torch.manual_seed(0)
    actor = make_flow_actor(_spec(), N_OBS, velocity="gru")
    qvalue = make_qvalue(N_OBS, N_ACT, num_cells=(32, 32))
    kwargs = dict(num_qvalue_nets=2, loss_function="l2", alpha_init=0.3, target_entropy=0.0, reduction=reduction)
    theirs = SACLoss(copy.deepcopy(actor), copy.deepcopy(qvalue), **kwargs)
    ours = SACFlowLoss(actor, qvalue, proximity_coef=0.0, **kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=False)
    outs, datas = [], []
    for loss in (ours, theirs):
        td = _data(seed=3)
        torch.manual_seed(5)
        outs.append(loss(td))
        datas.append(td)
    for key in ("loss_actor", "loss_qvalue", "loss_alpha"):
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(datas[0]["td_error"], datas[1]["td_error"], rtol=1e-5, atol=1e-6)
    if reduction == "none":
        assert outs[0]["loss_actor"].shape == (BATCH,) and "proximity" not in outs[0].keys()
        return
    for key in ("alpha", "entropy"):
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=1e-5, atol=1e-6)
    assert outs[0]["proximity"].shape == () and outs[0]["proximity"] > 0  # the metadata, through the output
    assert set(outs[0].keys()) == set(ours.out_keys)


@pytest.mark.usefixtures("fast_paths_on")
def test_actor_loss_stages_chain_to_actor_loss_and_are_withheld_where_they_do_not_apply():
    """The public split SACUpdate compiles: draw → min_q → objective gives ``actor_loss``'s value;
    no stages with the path diagnostic or a critic outside the tensor path."""
    loss = _loss("gru", proximity_coef=1.0)
    draw, min_q, objective = loss.actor_loss_stages
    td = _data(seed=2)
    torch.manual_seed(4)
    action, log_prob, _ = draw(td)
    split, split_meta = objective(td, action, log_prob, min_q(td, action))
    torch.manual_seed(4)
    whole, whole_meta = loss.actor_loss(td)
    torch.testing.assert_close(split, whole)
    torch.testing.assert_close(split_meta["proximity"], whole_meta["proximity"])
    assert _loss("gru", log_path_grad_norms=True).actor_loss_stages is None

    class Overridden(SACFlowLoss):
        def actor_loss(self, tensordict):
            return super().actor_loss(tensordict)

    actor = make_flow_actor(_spec(), N_OBS, velocity="mlp")
    assert Overridden(actor, make_qvalue(N_OBS, N_ACT, num_cells=(8,))).actor_loss_stages is None


def test_critic_without_the_tensor_path_uses_sacloss_machinery():
    """A critic the ensemble does not cover (a normalisation layer) keeps the vmapped TensorDict path."""

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(N_OBS + N_ACT, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, obs, act):
            return self.net(torch.cat([obs, act], -1))

    qvalue = TensorDictModule(Critic(), in_keys=["observation", "action"], out_keys=["state_action_value"])
    loss = SACFlowLoss(make_flow_actor(_spec(), N_OBS, velocity="mlp"), qvalue)
    assert loss._ensemble is None and loss.actor_loss_stages is None
    out = loss(_data())
    out["loss_qvalue"].backward()
    assert all(p.grad is not None for p in loss.qvalue_network_params.values(True, True))


@pytest.mark.parametrize("critic,skip_done_states", [("sac", False), ("sac", True), ("crossq", False)])
def test_terminated_rows_with_non_finite_next_observation_keep_the_loss_finite(critic, skip_done_states):
    """A terminated row's target is its reward alone, whatever its next observation holds (NaN here);
    TorchRL 0.14.1's SACLoss multiplies the target critic's NaN by 0 and returns NaN."""
    from torchrl.data import Bounded

    from torchrl_sacflow.modules.critics import make_crossq_qvalue
    from torchrl_sacflow.objectives import CrossQFlowLoss

    torch.manual_seed(0)
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3, velocity="gru")
    if critic == "sac":
        loss = SACFlowLoss(actor, make_qvalue(3, 2), skip_done_states=skip_done_states)
    else:  # (CrossQFlowLoss rejects skip_done_states: every next state is in its joint batch)
        loss = CrossQFlowLoss(actor, make_crossq_qvalue(3, 2, num_cells=(16, 16)))
    loss.make_value_estimator(gamma=0.9)
    terminated = torch.zeros(8, 1, dtype=torch.bool)
    terminated[0] = True
    next_obs = torch.randn(8, 3)
    next_obs[0] = float("nan")
    data = TensorDict({
        "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        "next": {"observation": next_obs, "reward": torch.randn(8, 1), "done": terminated.clone(),
                 "terminated": terminated},
    }, batch_size=[8])
    loss_q, meta = (loss.qvalue_loss if critic == "crossq" else loss.qvalue_v2_loss)(data)
    assert torch.isfinite(loss_q) and torch.isfinite(meta["td_error"]).all()
    loss_q.backward()
    grads = [p.grad for p in loss.qvalue_network_params.values(True, True) if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isnan(data["next", "observation"][0]).all()  # the caller's data are untouched
    if critic == "sac" and not skip_done_states:  # row 0's target is its reward alone
        with torch.no_grad():
            target = loss._compute_target_v2(loss.finite_next_states(data))
        assert target[0] == data["next", "reward"][0, 0]


@pytest.mark.parametrize("objective", ["log_alpha", "alpha"])
def test_alpha_objective_gradient(objective):
    """``log_alpha`` (TorchRL): d/d log α = −(log π + H̄); ``alpha`` (SAC paper, released code): the same
    times α, so its step shrinks with α. Both push α the same way."""
    loss = _loss(alpha_init=0.05, target_entropy=-3.0, alpha_objective=objective)
    log_prob = torch.tensor([1.0, 2.0, 4.0])
    loss.alpha_loss(log_prob).mean().backward()
    expected = -(log_prob.mean() - 3.0) * (0.05 if objective == "alpha" else 1.0)
    assert loss.log_alpha.grad.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_alpha_objective():
    with pytest.raises(ValueError, match="alpha_objective"):
        _loss(alpha_objective="alpha2")


def _train_proximity_only(proximity_loss: str, steps: int = 300) -> torch.Tensor:
    """Actor steps on buffer actions split between (±0.6, 0), β large (the critic's pull is noise
    next to it), α tiny; returns 2 000 sampled actions."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    torch.manual_seed(0)
    actor = make_flow_actor(_spec(), N_OBS, velocity="mlp", num_steps=4, noise_std=0.05,
                            velocity_kwargs={"hidden_sizes": (64, 64)})
    loss = SACFlowLoss(actor, make_qvalue(N_OBS, N_ACT, num_cells=(16,)), proximity_coef=100.0,
                       proximity_loss=proximity_loss, alpha_init=1e-4)
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    peaks = torch.tensor([[-0.6, 0.0], [0.6, 0.0]])
    for _ in range(steps):
        td = TensorDict({"observation": torch.zeros(256, N_OBS),
                         "action": peaks[torch.randint(0, 2, (256,))] + 0.02 * torch.randn(256, N_ACT)}, [256])
        value, _ = loss.actor_loss(td)
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        return actor(TensorDict({"observation": torch.zeros(2000, N_OBS)}, [2000]))["action"]


def test_flow_matching_proximity_keeps_both_modes_of_the_buffer_where_l2_averages_them():
    """β‖a_θ − a_buffer‖² pulls every sample towards each buffer action, i.e. to their mean (0, 0);
    β·L_FM(θ; s, a_buffer) fits the buffer's distribution, both modes."""
    def shares(actions):
        near = [((actions - torch.tensor([x, 0.0])).norm(dim=-1) < 0.2).float().mean().item() for x in (-0.6, 0.6)]
        return near, (actions.norm(dim=-1) < 0.2).float().mean().item()

    (left, right), centre = shares(_train_proximity_only("flow_matching"))
    assert left > 0.25 and right > 0.25 and centre < 0.2, (left, right, centre)
    (left, right), centre = shares(_train_proximity_only("l2"))
    assert left < 0.1 and right < 0.1 and centre > 0.8, (left, right, centre)


def test_bad_proximity_loss_and_flow_matching_proximity_needs_a_flow():
    with pytest.raises(ValueError, match="proximity_loss must be 'l2' or 'flow_matching'"):
        _loss("gru", proximity_coef=1.0, proximity_loss="kl")
    with pytest.raises(ValueError, match="needs a flow actor"):
        SACFlowLoss(_gaussian_actor(), make_qvalue(N_OBS, N_ACT, num_cells=(16,)), proximity_coef=1.0,
                    proximity_loss="flow_matching")


def test_pre_tanh_alpha_entropy_adds_back_the_squash_jacobian():
    """``alpha_entropy="pre_tanh"``: the temperature reads ``log π + Σ log(1 − a²)`` (the path density
    before the tanh); the actor loss keeps ``log π``."""
    loss = _loss(alpha_entropy="pre_tanh")
    td = _data()
    action = torch.tensor([[0.5, -0.2], [0.9999, -0.9999]]).repeat(BATCH // 2, 1)
    log_prob, min_q = torch.randn(BATCH), torch.randn(BATCH)
    loss_actor, meta = loss.actor_objective(td, action, log_prob, min_q)
    x = torch.atanh(action)  # the pre-tanh action, independently
    expected = log_prob + torch.log(1 - torch.tanh(x) ** 2).sum(-1)
    torch.testing.assert_close(meta["alpha_log_prob"], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(meta["log_prob"], log_prob)
    torch.testing.assert_close(loss_actor, (loss._alpha * log_prob - min_q).mean())
    assert "alpha_log_prob" not in _loss().actor_objective(td, action, log_prob, min_q)[1]


def test_pre_tanh_alpha_does_not_rise_because_actions_saturate():
    """Saturated actions: ``−log π`` of the action is far below the target −(K+1)·d, so SAC's rule
    raises α (negative gradient on log α); the pre-tanh entropy is above it, so α falls."""
    loss = _loss(alpha_entropy="pre_tanh", target_entropy="auto_path")  # target −(4+1)·2 = −10
    action = torch.full((BATCH, N_ACT), 0.99999)
    log_prob = torch.full((BATCH,), 5.0) - loss.squash_log_jacobian(action)  # pre-tanh log p = 5: entropy −5 > −10
    _, meta = loss.actor_objective(_data(), action, log_prob, torch.zeros(BATCH))
    assert -log_prob.mean() < loss.target_entropy < -meta["alpha_log_prob"].mean()
    grads = {}
    for key in ("log_prob", "alpha_log_prob"):
        loss.log_alpha.grad = None
        loss.alpha_loss(meta[key]).mean().backward()
        grads[key] = loss.log_alpha.grad.item()
    assert grads["log_prob"] < 0 < grads["alpha_log_prob"]  # descent: α up with "action", down with "pre_tanh"


def test_forward_and_sac_update_give_the_temperature_the_pre_tanh_density():
    from torchrl_sacflow.training import SACUpdate

    loss = _loss(alpha_entropy="pre_tanh", alpha_init=0.1)
    td = _data()
    torch.manual_seed(7)
    loss.qvalue_v2_loss(td)  # the draws forward makes, in its order
    _, meta = loss.actor_loss(td)
    torch.manual_seed(7)
    out = loss(td)
    torch.testing.assert_close(out["loss_alpha"], loss.alpha_loss(meta["alpha_log_prob"]).mean())
    assert not torch.allclose(out["loss_alpha"], loss.alpha_loss(meta["log_prob"]).mean())
    torch.testing.assert_close(out["entropy"], -meta["log_prob"].mean())  # the logged entropy is still −log π's
    optim = torch.optim.Adam(loss.parameters())
    update = SACUpdate(loss, actor_optim=optim, critic_optim=optim)
    _, loss_alpha, _ = update._reduce_actor(torch.zeros(BATCH), meta)
    torch.testing.assert_close(loss_alpha, loss.alpha_loss(meta["alpha_log_prob"]).mean())


def test_bad_alpha_entropy():
    with pytest.raises(ValueError, match="alpha_entropy must be 'action' or 'pre_tanh', got 'post'"):
        _loss(alpha_entropy="post")
    with pytest.raises(ValueError, match="alpha_entropy='pre_tanh' needs a flow actor"):
        SACFlowLoss(_gaussian_actor(), make_qvalue(N_OBS, N_ACT, num_cells=(32, 32)), alpha_entropy="pre_tanh")
