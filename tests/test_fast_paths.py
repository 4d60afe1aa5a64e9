"""The one switch over the speed paths (torchrl_sacflow._fast): off means TorchRL's own code paths,
each fast path's fallback conditions, and the caches the fast paths rely on actually forming."""
import contextlib
import copy

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_sacflow import SACFlowLoss, _fast, make_flow_actor, make_qvalue
from torchrl_sacflow.modules import FusedTanhNormal
from torchrl_sacflow.objectives import FusedSoftUpdate
from torchrl_sacflow.training import DirectGymEnv, make_gaussian_actor

from _batches import random_transitions

OBS, ACT = 4, 2
SPEC = Bounded(-1.0, 1.0, shape=(ACT,))
pytestmark = pytest.mark.usefixtures("fast_paths_on")


def _batch(n=16):
    return random_transitions(n, OBS, SPEC)


def test_switch_and_context_manager():
    assert _fast.enabled()
    with _fast.disabled():
        assert not _fast.enabled()
    assert _fast.enabled()


@pytest.mark.parametrize("build", [lambda: make_flow_actor(SPEC, OBS), lambda: make_gaussian_actor(SPEC, OBS)])
def test_direct_actor_paths_follow_the_switch_and_the_allow_list(build):
    actor = build()
    assert actor._direct_parts() is not None
    with _fast.disabled():
        assert actor._direct_parts() is None
    # an attribute TorchRL 0.14 does not set (e.g. a new option of a later version): generic path
    actor.module[1].some_future_option = True
    assert actor._direct_parts() is None
    del actor.module[1].some_future_option
    actor.module[1].cache_dist = True  # a listed attribute at a value the direct path does not reproduce
    assert actor._direct_parts() is None


def test_tanh_normal_fuses_only_when_on():
    loc, scale = torch.zeros(3, ACT), torch.ones(3, ACT)
    assert FusedTanhNormal(loc, scale)._fusable()
    with _fast.disabled():
        dist = FusedTanhNormal(loc, scale)
        assert not dist._fusable()


def _soft_update_pair():
    loss = SACFlowLoss(make_flow_actor(SPEC, OBS), make_qvalue(OBS, ACT, num_cells=(8,)), delay_qvalue=True)
    with torch.no_grad():
        for p in loss.qvalue_network_params.values(True, True):
            p.add_(1.0)  # sources differ from their targets
    return loss


def test_soft_update_cache_forms_and_equals_torchrl():
    ours = _soft_update_pair()
    theirs = copy.deepcopy(ours)
    fused, plain = FusedSoftUpdate(ours, tau=0.1), SoftUpdate(theirs, tau=0.1)
    fused.step()
    cache = fused.__dict__.get("_fused_pairs")
    assert cache is not None and len(cache[2]) == len(list(ours.qvalue_network_params.values(True, True)))
    fused.step()
    assert fused.__dict__["_fused_pairs"] is cache  # reused, not rebuilt
    plain.step()
    plain.step()
    for a, b in zip(ours.target_qvalue_network_params.values(True, True),
                    theirs.target_qvalue_network_params.values(True, True)):
        torch.testing.assert_close(a, b)


def test_soft_update_off_is_torchrls_step():
    loss = _soft_update_pair()
    fused = FusedSoftUpdate(loss, tau=0.1)
    with _fast.disabled():
        fused.step()
    assert "_fused_pairs" not in fused.__dict__


def test_loss_speed_paths_follow_the_switch():
    actor, qvalue = make_flow_actor(SPEC, OBS), make_qvalue(OBS, ACT, num_cells=(8,))
    fast = SACFlowLoss(actor, qvalue)
    assert fast._ensemble is not None
    assert isinstance(fast._actor_params(), contextlib.nullcontext)
    data = _batch()
    with _fast.disabled():
        slow = SACFlowLoss(copy.deepcopy(actor), copy.deepcopy(qvalue))
        slow.load_state_dict(fast.state_dict())
        assert slow._ensemble is None
        assert not isinstance(slow._actor_params(), contextlib.nullcontext)
        torch.manual_seed(0)
        q_slow, _ = slow.qvalue_v2_loss(data)
    torch.manual_seed(0)
    q_fast, _ = fast.qvalue_v2_loss(data)
    torch.testing.assert_close(q_fast, q_slow, rtol=1e-5, atol=1e-5)
    # the actor still holds the loss's tensors (shared buffers reach the policy) with the switch off
    assert all(table.get(name) is tensor for table, name, tensor in slow._actor_slots)


def test_gym_env_direct_step_follows_the_switch(monkeypatch):
    env = DirectGymEnv("Pendulum-v1")
    calls = []
    original = DirectGymEnv.read_obs
    monkeypatch.setattr(DirectGymEnv, "read_obs", lambda self, obs: calls.append(1) or original(self, obs))
    env.rollout(5)
    assert len(calls) == 1  # only the reset: the steps took the direct path
    with _fast.disabled():
        env.rollout(5)
    assert len(calls) == 1 + 1 + 5  # reset + every step through GymEnv's readers


def test_policy_acts_the_same_with_the_switch_off():
    actor = make_flow_actor(SPEC, OBS)
    td = TensorDict({"observation": torch.randn(6, OBS)}, [6])
    with set_exploration_type(ExplorationType.RANDOM):
        torch.manual_seed(1)
        fast = actor(td.clone())
        with _fast.disabled():
            torch.manual_seed(1)
            slow = actor(td.clone())
    torch.testing.assert_close(fast["action"], slow["action"])
    torch.testing.assert_close(fast["action_log_prob"], slow["action_log_prob"])


def test_fused_adam_follows_the_switch():
    from torchrl_sacflow.training import SACUpdate

    def optimizers():
        params = [torch.nn.Parameter(torch.zeros(3))]
        return torch.optim.Adam(params), torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])

    loss = SACFlowLoss(make_flow_actor(SPEC, OBS), make_qvalue(OBS, ACT, num_cells=(8,)))
    actor_opt, critic_opt = optimizers()
    SACUpdate(loss, actor_optim=actor_opt, critic_optim=critic_opt)
    assert actor_opt.param_groups[0]["fused"] and critic_opt.defaults["fused"]
    with _fast.disabled():
        actor_opt, critic_opt = optimizers()
        SACUpdate(loss, actor_optim=actor_opt, critic_optim=critic_opt)
    assert not actor_opt.param_groups[0]["fused"]


@pytest.mark.parametrize("warmup_steps", [0, 2, 100])  # renorm from the start / switching mid-run / batch norm
def test_crossq_critic_ensemble_equals_torchrls_vmapped_batch_renorm(warmup_steps):
    from torchrl_sacflow.modules.critics import make_crossq_qvalue
    from torchrl_sacflow.objectives.crossq_flow import CrossQFlowLoss

    torch.manual_seed(0)
    actor = make_flow_actor(SPEC, OBS)
    qvalue = make_crossq_qvalue(OBS, ACT, num_cells=(16, 16), warmup_steps=warmup_steps)
    fast = CrossQFlowLoss(actor, qvalue)
    assert fast._ensemble is not None
    with _fast.disabled():
        slow = CrossQFlowLoss(copy.deepcopy(actor), copy.deepcopy(qvalue))
    assert slow._ensemble is None
    slow.load_state_dict(fast.state_dict())
    for loss in (fast, slow):
        loss.make_value_estimator(gamma=0.99)
    critic_params = [[p for p in loss.qvalue_network_params.values(True, True) if p.requires_grad]
                     for loss in (fast, slow)]
    for step in range(4):
        data = _batch(32)
        results = []
        for loss, params, on in ((fast, critic_params[0], True), (slow, critic_params[1], False)):
            _fast.set_enabled(on)
            torch.manual_seed(step)
            loss_q, _ = loss.qvalue_loss(data)
            grads = torch.autograd.grad(loss_q, params)
            loss_pi, _ = loss.actor_loss(data)
            results.append((loss_q, grads, loss_pi))
            with torch.no_grad():  # a plain gradient step, so later batches see other critics
                for p, g in zip(params, grads):
                    p.sub_(0.05 * g)
        _fast.set_enabled(True)
        (q_fast, g_fast, pi_fast), (q_slow, g_slow, pi_slow) = results
        torch.testing.assert_close(q_fast, q_slow, rtol=1e-4, atol=1e-5)
        for a, b in zip(g_fast, g_slow):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(pi_fast, pi_slow, rtol=1e-4, atol=1e-5)
    # running statistics and step counters updated alike (in place, on the loss's own buffers)
    for (key, a), (_, b) in zip(fast.qvalue_network_params.items(True, True),
                                slow.qvalue_network_params.items(True, True)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{key} differs")
    counter = fast.qvalue_network_params["module", "net", "0", "num_batches_tracked"]
    assert counter.tolist() == [min(4, warmup_steps) if warmup_steps else 4] * 2
    assert not torch.equal(fast.qvalue_network_params["module", "net", "3", "running_mean"],
                           torch.zeros_like(fast.qvalue_network_params["module", "net", "3", "running_mean"]))
