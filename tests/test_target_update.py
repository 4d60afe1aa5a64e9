"""FusedSoftUpdate is TorchRL's SoftUpdate, one fused op per step."""
import copy

import pytest
import torch
from torchrl.data import Bounded
from torchrl.objectives import SoftUpdate

from torchrl_sacflow import FusedSoftUpdate, SACFlowLoss, make_flow_actor, make_qvalue


def _loss(seed=0):
    torch.manual_seed(seed)
    actor = make_flow_actor(Bounded(-1.0, 1.0, shape=(2,)), 3, velocity="mlp")
    return SACFlowLoss(actor, make_qvalue(3, 2, num_cells=(16, 16)), delay_qvalue=True)


def _perturb_sources(loss, step):
    g = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in loss.qvalue_network_params.values(True, True):
            p.add_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("tau", [0.005, 0.3])
def test_same_targets_as_torchrl_soft_update(tau):
    ours_loss = _loss()
    theirs_loss = copy.deepcopy(ours_loss)
    ours, theirs = FusedSoftUpdate(ours_loss, tau=tau), SoftUpdate(theirs_loss, tau=tau)
    before = [t.clone() for t in ours_loss.target_qvalue_network_params.values(True, True)]
    for step in range(4):
        for loss, updater in ((ours_loss, ours), (theirs_loss, theirs)):
            _perturb_sources(loss, step)
            updater.step()
    mine = list(ours_loss.target_qvalue_network_params.values(True, True))
    ref = list(theirs_loss.target_qvalue_network_params.values(True, True))
    assert len(mine) == len(ref) == len(before) > 0
    for a, b, old in zip(mine, ref, before):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, old)  # the targets moved
    # the online critics are untouched by the update
    sources = list(ours_loss.qvalue_network_params.values(True, True))
    assert all(p.requires_grad for p in sources)


def test_targets_follow_a_reloaded_loss_and_checks_are_kept():
    loss = _loss()
    updater = FusedSoftUpdate(loss, tau=0.5)
    updater.step()
    # a checkpoint restored in place: the update keeps tracking the same tensors
    other = _loss(seed=1)
    loss.load_state_dict(other.state_dict())
    updater.step()
    for target, source, old_target in zip(
        loss.target_qvalue_network_params.values(True, True),
        loss.qvalue_network_params.values(True, True),
        other.target_qvalue_network_params.values(True, True),
    ):
        torch.testing.assert_close(target, 0.5 * (source + old_target))
    updater.initialized = False
    with pytest.raises(Exception, match="must be initialized"):
        updater.step()
