"""DirectProbabilisticActor: its direct forward/get_dist equal TorchRL's generic path, and it defers
to that path whenever the two could differ."""
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import ProbabilisticTensorDictSequential, set_skip_existing
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import ProbabilisticActor

from torchrl_sacflow import DirectProbabilisticActor, make_flow_actor
from torchrl_sacflow.training.policies import make_gaussian_actor

N_OBS, N_ACT = 5, 3
SPEC = Bounded(-2.0, 1.0, shape=(N_ACT,))  # non-trivial bounds: the affine part of the squashing is exercised

# tests of the speed path itself: run with it on also under --fast-paths off
pytestmark = pytest.mark.usefixtures("fast_paths_on")


def _actor(kind: str, return_log_prob: bool = True) -> DirectProbabilisticActor:
    torch.manual_seed(0)
    if kind == "gaussian":
        actor = make_gaussian_actor(SPEC, N_OBS, num_cells=(16, 16))
        actor.module[1].return_log_prob = return_log_prob
    else:
        actor = make_flow_actor(SPEC, N_OBS, velocity=kind, num_steps=3, return_log_prob=return_log_prob,
                                velocity_kwargs={"hidden_sizes": (16,)} if kind != "transformer" else {})
    assert isinstance(actor, DirectProbabilisticActor) and actor._direct_parts() is not None
    return actor


def _obs(batch=(7,)):
    return TensorDict({"observation": torch.randn(*batch, N_OBS)}, list(batch))


def _same_tds(a: TensorDict, b: TensorDict):
    assert set(a.keys(True, True)) == set(b.keys(True, True))
    for key in b.keys(True, True):
        torch.testing.assert_close(a[key], b[key])


KINDS = ["gaussian", "gru", "transformer"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", [ExplorationType.RANDOM, ExplorationType.DETERMINISTIC, None])
@pytest.mark.parametrize("return_log_prob", [True, False])
def test_direct_forward_equals_the_generic_forward(kind, mode, return_log_prob):
    actor = _actor(kind, return_log_prob)
    td = _obs()
    outs = []
    for forward in (actor.forward, lambda t: ProbabilisticActor.forward(actor, t)):
        torch.manual_seed(1)
        if mode is None:  # the actor's default interaction type (random)
            outs.append(forward(td.clone()))
        else:
            with set_exploration_type(mode):
                outs.append(forward(td.clone()))
    direct, generic = outs
    _same_tds(direct, generic)
    assert ("action_log_prob" in direct.keys()) == return_log_prob
    lo, hi = SPEC.space.low, SPEC.space.high
    assert ((direct["action"] >= lo) & (direct["action"] <= hi)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_direct_get_dist_equals_the_generic_path_and_carries_gradients(kind):
    actor = _actor(kind)
    td_direct = _obs()
    td_generic = td_direct.clone()
    direct = actor.get_dist(td_direct)
    generic = ProbabilisticTensorDictSequential.get_dist(actor, td_generic)
    assert type(direct) is type(generic)
    torch.manual_seed(2)
    a1, lp1 = direct.rsample_and_log_prob()
    torch.manual_seed(2)
    a2, lp2 = generic.rsample_and_log_prob()
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(lp1, lp2)
    _same_tds(td_direct, td_generic)
    (a1.sum() + lp1.sum()).backward()
    # every parameter is reached (Flow-G's zero-initialised gate head blocks the gate's hidden
    # layers on the first step, so their gradient may be zero, but not missing)
    grads = [p.grad for p in actor.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_direct_forward_under_batch_shapes_and_no_grad():
    actor = _actor("gaussian")
    td = _obs((2, 4))
    with torch.no_grad():
        out = actor(td)
    assert out["action"].shape == (2, 4, N_ACT) and out["action_log_prob"].shape == (2, 4)
    assert not out["action"].requires_grad


def test_defers_to_the_generic_path_when_it_could_differ():
    actor = _actor("gaussian")
    calls = []
    handle = actor.module[0].register_forward_hook(lambda m, i, o: calls.append(1))
    assert actor._direct_parts() is None
    actor(_obs())
    actor.get_dist(_obs())
    assert calls == [1, 1]  # the hook ran: the generic path was taken both times
    handle.remove()
    assert actor._direct_parts() is not None

    # skip_existing: the generic path skips a module whose outputs are present
    td = _obs()
    td["loc"], td["scale"], td["action"] = torch.zeros(7, N_ACT), torch.ones(7, N_ACT), torch.zeros(7, N_ACT)
    td["action_log_prob"] = torch.zeros(7)
    with set_skip_existing(True):
        out = actor(td)
    torch.testing.assert_close(out["action"], torch.zeros(7, N_ACT))

    # keyword call (tensordict's dispatch) and an explicit tensordict_out
    out = actor(observation=torch.randn(7, N_OBS))  # tensordict's dispatch returns the out_keys' tensors
    assert isinstance(out, tuple) and [o.shape for o in out] == [(7, N_ACT)] * 3
    dest = TensorDict()
    res = actor(_obs(), tensordict_out=dest)
    assert res is dest and "action" in dest.keys()


def test_other_interaction_types_take_the_generic_path():
    actor = _actor("gaussian")
    with set_exploration_type(ExplorationType.MODE), pytest.raises(RuntimeError, match="analytical mode"):
        actor(_obs())  # TanhNormal has no closed-form mode: TorchRL's own error, from the generic path


def test_replaced_probabilistic_module_defers():
    actor = _actor("gaussian")
    actor.module[1].num_samples = 2  # the generic path expands the output: not a direct case
    assert actor._direct_parts() is None
