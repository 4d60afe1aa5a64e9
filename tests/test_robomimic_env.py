"""Robomimic online side: env rebuilt from env_args, chunked steps, collectors."""
from __future__ import annotations

import copy
import functools
import pickle
import warnings

import h5py
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from _robomimic_fixtures import (
    LEGACY_SEED,
    LIFT_SEED,
    concat_obs,
    legacy_lift_file,  # noqa: F401 (fixture)
    lift_file,  # noqa: F401 (fixture)
)

from torchrl_sacflow.robomimic import (
    DEFAULT_OBS_KEYS,
    RobomimicEnvError,
    list_demos,
    load_robomimic_dataset,
    make_robomimic_env,
    read_env_args,
    robosuite_kwargs_from_env_args,
)


@pytest.fixture(scope="module")
def lift_env(lift_file):
    env = make_robomimic_env(lift_file, seed=LIFT_SEED)
    yield env
    env.close()


@pytest.fixture(scope="module")
def short_env(lift_file):
    """Chunk of 3 and a 7-step limit: episodes are 3 env steps (3 + 3 + 1 primitive steps)."""
    env = make_robomimic_env(lift_file, action_chunk=3, max_episode_steps=7, seed=11)
    yield env
    env.close()


def _demo(path, index=0):
    name = list_demos(path)[index]
    with h5py.File(path, "r") as f:
        g = f["data"][name]
        return {
            "states": g["states"][()],
            "actions": g["actions"][()],
            "obs": concat_obs(g["obs"], DEFAULT_OBS_KEYS),
            "next_obs": concat_obs(g["next_obs"], DEFAULT_OBS_KEYS),
        }


def _step(env, action):
    return env.step(TensorDict({"action": torch.as_tensor(action, dtype=torch.float32)}, []))


def _replay(env, demo):
    """Replays recorded primitive actions from the demo's first state; returns per-step outputs."""
    env.reset_to_state(demo["states"][0])
    outs = [_step(env, a)["next"] for a in demo["actions"]]
    return torch.stack(outs)


def test_specs_and_observation_layout(lift_env, lift_file):
    from torchrl.envs.utils import check_env_specs

    check_env_specs(lift_env)
    dataset = load_robomimic_dataset(lift_file)
    assert lift_env.observation_spec["observation"].shape[-1] == dataset["observation"].shape[-1] == 19
    assert lift_env.obs_sizes == {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
    assert lift_env.action_spec.shape == (7,)
    assert (lift_env.action_spec.space.low == -1).all() and (lift_env.action_spec.space.high == 1).all()
    # the flat observation is the robosuite observables in DEFAULT_OBS_KEYS order
    td = lift_env.reset()
    raw = lift_env.robosuite_env._get_observations()
    robosuite_keys = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state")
    expected = np.concatenate([raw[k] for k in robosuite_keys])
    np.testing.assert_allclose(td["observation"].numpy(), expected, atol=1e-6)
    assert not td["success"].item() and not td["done"].item()
    # starting from a recorded state gives the recorded observation
    demo = _demo(lift_file, 1)
    td = lift_env.reset_to_state(demo["states"][0])
    np.testing.assert_allclose(td["observation"].numpy(), demo["obs"][0], atol=1e-5)


def test_env_replays_recorded_demo(lift_env, lift_file):
    demo = _demo(lift_file, 0)
    out = _replay(lift_env, demo)
    T = len(demo["actions"])
    np.testing.assert_allclose(out["observation"].numpy(), demo["next_obs"], atol=1e-4)
    np.testing.assert_array_equal(out["reward"][:, 0].numpy(), np.r_[np.zeros(T - 1), 1.0])
    assert out["success"][-1].item() and out["terminated"][-1].item() and out["done"][-1].item()
    assert not out["done"][:-1].any() and not out["truncated"].any()
    assert lift_env.episode_steps == T


def test_legacy_controller_env_args_build_and_replay(legacy_lift_file):
    env_args = read_env_args(legacy_lift_file)
    assert env_args["env_kwargs"]["controller_configs"]["type"] == "OSC_POSE"
    _, kwargs = robosuite_kwargs_from_env_args(env_args)
    right = kwargs["controller_configs"]["body_parts"]["right"]
    assert kwargs["controller_configs"]["type"] == "BASIC"
    assert right["type"] == "OSC_POSE" and right["input_type"] == "delta"
    assert right["damping_ratio"] == 1 and "damping" not in right and "control_delta" not in right
    assert right["gripper"] == {"type": "GRIP"}
    assert kwargs["hard_reset"] is False and kwargs["has_offscreen_renderer"] is False
    env = make_robomimic_env(legacy_lift_file, seed=LEGACY_SEED)
    try:
        demo = _demo(legacy_lift_file, 1)
        out = _replay(env, demo)
        np.testing.assert_allclose(out["observation"].numpy(), demo["next_obs"], atol=1e-4)
        assert out["success"][-1].item() and not out["success"][:-1].any()
    finally:
        env.close()


def test_official_style_env_args_conversion():
    env_args = {
        "env_name": "Lift",
        "env_version": "1.2.0",
        "type": 1,
        "env_kwargs": {
            "has_renderer": True,
            "has_offscreen_renderer": True,
            "use_camera_obs": True,
            "control_freq": 20,
            "robots": "Panda",
            "reward_shaping": False,
            "controller_configs": {"type": "OSC_POSE", "control_delta": False, "damping": 2, "kp": 150},
            "gripper_visualizations": False,  # not a robosuite 1.5 argument
        },
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name, kwargs = robosuite_kwargs_from_env_args(env_args, seed=4)
    assert name == "Lift" and kwargs["robots"] == ["Panda"] and kwargs["seed"] == 4
    assert "gripper_visualizations" not in kwargs
    assert any("gripper_visualizations" in str(w.message) for w in caught)
    assert kwargs["lite_physics"] is False  # recorded before robosuite 1.5
    assert kwargs["has_renderer"] is False and kwargs["use_camera_obs"] is False
    assert kwargs["ignore_done"] is True
    right = kwargs["controller_configs"]["body_parts"]["right"]
    assert right["input_type"] == "absolute" and right["damping_ratio"] == 2
    # files written with robosuite >= 1.5 keep its physics default
    newer = copy.deepcopy(env_args)
    newer["env_version"] = "1.5.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "lite_physics" not in robosuite_kwargs_from_env_args(newer)[1]


def test_bad_env_args_give_one_line_errors():
    with pytest.raises(RobomimicEnvError, match="unknown robosuite environment 'Lifty'") as info:
        make_robomimic_env({"env_name": "Lifty", "type": 1, "env_kwargs": {}})
    assert "\n" not in str(info.value)
    with pytest.raises(RobomimicEnvError, match="not a robosuite environment"):
        make_robomimic_env({"env_name": "Lift", "type": 2, "env_kwargs": {}})
    with pytest.raises(ValueError, match="action_chunk"):
        make_robomimic_env({"env_name": "Lift", "type": 1}, action_chunk=0)


def test_unknown_obs_key_error(lift_file):
    with pytest.raises(RobomimicEnvError, match="observation key 'robot0_tail' is not produced") as info:
        make_robomimic_env(lift_file, obs_keys=("robot0_eef_pos", "robot0_tail"))
    assert "\n" not in str(info.value)


def test_chunked_step_executes_actions_in_order_and_stops_at_success(lift_file):
    h, gamma = 4, 0.9
    env = make_robomimic_env(lift_file, action_chunk=h, gamma=gamma, seed=LIFT_SEED)
    try:
        assert env.action_spec.shape == (h * 7,)
        demo = _demo(lift_file, 2)
        T = len(demo["actions"])
        assert T % h != 0 or T > h  # the last chunk starts before the success step
        dataset = load_robomimic_dataset(lift_file, action_chunk=h, gamma=gamma)
        episode_rows = dataset[dataset["episode"] == 2]
        env.reset_to_state(demo["states"][0])
        t = 0
        while True:
            chunk = demo["actions"][t : t + h]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], h - len(chunk), 0)])
            out = _step(env, padded.reshape(-1))["next"]
            k = min(h, T - t)
            assert env.episode_steps == t + k  # primitive steps, cut at the success step
            # the observation after the chunk is the one after its last executed action
            np.testing.assert_allclose(out["observation"].numpy(), demo["next_obs"][t + k - 1], atol=1e-4)
            expected_reward = gamma ** (T - 1 - t) if T - 1 - t < h else 0.0
            assert out["reward"].item() == pytest.approx(expected_reward, abs=1e-6)
            # same transition as the dataset's chunk starting at t
            assert out["reward"].item() == pytest.approx(episode_rows["next", "reward"][t].item(), abs=1e-6)
            assert out["terminated"].item() == episode_rows["next", "terminated"][t].item()
            t += k
            if out["done"].item():
                break
        assert t == T and out["success"].item() and out["terminated"].item()
        assert not out["truncated"].item()
    finally:
        env.close()


def test_episode_limit_counts_primitive_steps(short_env):
    short_env.reset()
    zeros = np.zeros(21)
    flags = []
    for expected_steps in (3, 6, 7):
        out = _step(short_env, zeros)["next"]
        assert short_env.episode_steps == expected_steps
        flags.append((out["done"].item(), out["truncated"].item(), out["terminated"].item()))
    assert flags == [(False, False, False), (False, False, False), (True, True, False)]
    assert out["reward"].item() == 0.0 and not out["success"].item()


def test_set_seed_reproduces_initial_states(short_env):
    short_env.set_seed(123)
    a = short_env.reset()["observation"]
    b = short_env.reset()["observation"]
    short_env.set_seed(123)
    c = short_env.reset()["observation"]
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, b)


def test_collector_with_random_policy(short_env):
    from torchrl.collectors import Collector

    collector = Collector(short_env, None, frames_per_batch=6, total_frames=12)
    batches = [b for b in collector]
    collector.shutdown()
    data = torch.cat(batches)
    assert data.shape == (12,)
    assert data["action"].shape == (12, 21)
    assert (data["action"].abs() <= 1).all()
    assert data["next", "observation"].shape == (12, 19)
    # each episode is exactly 3 env steps long (7-step limit, chunks of 3)
    assert data["next", "truncated"][:, 0].tolist() == [False, False, True] * 4
    assert (data["next", "reward"] == 0).all()
    # the step after a truncation starts from a fresh reset, not the old next state
    ends = data["next", "done"][:, 0].nonzero().squeeze(-1)
    for i in ends[:-1].tolist():
        assert not torch.allclose(data["observation"][i + 1], data["next", "observation"][i])


def test_env_pickles_by_rebuilding(short_env):
    clone = pickle.loads(pickle.dumps(short_env))
    try:
        assert type(clone) is type(short_env)
        assert clone.action_chunk == 3 and clone.max_episode_steps == 7
        assert clone.observation_spec == short_env.observation_spec
        assert clone.action_spec == short_env.action_spec
        rollout = clone.rollout(4, break_when_any_done=False)
        assert rollout["next", "done"][:, 0].tolist() == [False, False, True, False]
    finally:
        clone.close()


def test_multisync_collector_in_worker_process(lift_file):
    from torchrl.collectors import MultiSyncCollector

    create_env = functools.partial(make_robomimic_env, str(lift_file), action_chunk=2, max_episode_steps=4, seed=5)
    collector = MultiSyncCollector([create_env], None, frames_per_batch=4, total_frames=4)
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch["action"].shape[-1] == 14
    assert batch["next", "truncated"].reshape(-1).tolist() == [False, True, False, True]
