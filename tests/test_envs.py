"""``DirectGymEnv``: the same data as TorchRL's ``GymEnv``, and the recipe's collector defaults."""
import warnings

import numpy as np
import pytest
import torch
from torchrl.envs import GymEnv
from torchrl.envs.utils import check_env_specs

from torchrl_sacflow.training import env_maker, make_collector
from torchrl_sacflow.training.envs import DirectGymEnv


def _rollouts(env_id, steps, device=None):
    out = []
    for cls in (GymEnv, DirectGymEnv):
        env = cls(env_id, device=device)
        env.set_seed(3)
        torch.manual_seed(0)
        out.append(env.rollout(steps, break_when_any_done=False))
        env.close()
    return out


# Pendulum: float32 observations, only truncations; Hopper: float64 observations, terminations
@pytest.mark.parametrize("env_id,steps", [("Pendulum-v1", 450), ("Hopper-v4", 150)])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_direct_step_returns_what_gymenv_returns(env_id, steps, device):
    stock, direct = _rollouts(env_id, steps, device)
    assert set(stock.keys(True, True)) == set(direct.keys(True, True))
    for key, value in stock.items(True, True):
        other = direct[key]
        assert (value.dtype, value.shape, value.device) == (other.dtype, other.shape, other.device), key
        assert torch.equal(value, other), key
    assert stock["next", "done"].any()  # episode ends (and the resets after them) were compared


@pytest.mark.usefixtures("fast_paths_on")
def test_direct_path_is_taken_and_specs_check():
    env = DirectGymEnv("Hopper-v4")
    assert env._direct_specs() is not None
    env.set_seed(0)
    calls = []
    original = env.read_obs
    env.read_obs = lambda obs: calls.append(1) or original(obs)
    env.rollout(5)
    assert len(calls) == 1  # the reset only: the steps built their observations directly
    check_env_specs(env)


def test_unusual_outputs_go_through_the_parent_readers():
    env = DirectGymEnv("Pendulum-v1")
    env.set_seed(0)
    td = env.rand_action(env.reset())
    # a raw observation whose dtype differs from its spec must be encoded (cast) as GymEnv does
    inner_step = env._env.step
    env._env.step = lambda a: (lambda o, *rest: (o.astype(np.float64), *rest))(*inner_step(a))
    out = env.step(td)
    assert out["next", "observation"].dtype == torch.float32
    # frame skip: the direct path steps once, so it must hand over
    skip = DirectGymEnv("Pendulum-v1", frame_skip=2)
    assert skip.wrapper_frame_skip == 2 and skip._direct_specs() is None


def test_recipe_collector_skips_trajectory_ids_unless_asked():
    kw = dict(total_frames=20, frames_per_batch=10, seed=0)
    plain = make_collector(env_maker("Pendulum-v1"), None, **kw)
    batch = next(iter(plain))
    plain.shutdown()
    assert ("collector", "traj_ids") not in batch.keys(True)
    assert batch["next", "done"].shape == (10, 1)
    tracked = make_collector(env_maker("Pendulum-v1"), None, track_traj_ids=True, **kw)
    batch = next(iter(tracked))
    tracked.shutdown()
    assert ("collector", "traj_ids") in batch.keys(True)


def test_recipe_env_has_no_init_tracker_but_a_recurrent_policy_gets_one():
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import LSTMModule

    feedforward = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["action"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # TorchRL 0.14 warns when it would add one
        plain = make_collector(env_maker("Pendulum-v1"), feedforward, total_frames=10, frames_per_batch=10, seed=0)
        batch = next(iter(plain))
    plain.shutdown()
    assert "is_init" not in batch.keys()
    lstm = LSTMModule(input_size=3, hidden_size=8, in_key="observation", out_key="features")
    policy = TensorDictSequential(lstm, TensorDictModule(torch.nn.Linear(8, 1), ["features"], ["action"]))
    recurrent = make_collector(env_maker("Pendulum-v1"), policy, total_frames=10, frames_per_batch=10, seed=0)
    batch = next(iter(recurrent))
    recurrent.shutdown()
    assert batch["is_init"][0].all() and not batch["is_init"][1:].any()
