"""Robomimic data side: scripted file format, loader, chunking, replay buffer, bad files."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from _robomimic_fixtures import (
    SYNTH_ACTION_DIM,
    SYNTH_OBS_DIMS,
    concat_obs,
    legacy_lift_file,  # noqa: F401 (fixture)
    lift_file,  # noqa: F401 (fixture)
    write_synthetic_file,
)

from torchrl_sacflow.robomimic import (
    DEFAULT_OBS_KEYS,
    RobomimicDatasetError,
    generate_scripted_demos,
    list_demos,
    load_dataset,
    load_robomimic_dataset,
    make_robomimic_replay_buffer,
    read_env_args,
)


def test_default_obs_keys_order():
    assert DEFAULT_OBS_KEYS == (
        "robot0_eef_pos",
        "robot0_eef_quat",
        "robot0_gripper_qpos",
        "object",
    )


def test_scripted_file_follows_robomimic_format(lift_file):
    with h5py.File(lift_file, "r") as f:
        data = f["data"]
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        kwargs = env_args["env_kwargs"]
        assert kwargs["controller_configs"]["type"] == "BASIC"
        assert kwargs["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"
        assert kwargs["reward_shaping"] is False and kwargs["control_freq"] == 20
        demos = sorted(data.keys())
        assert demos == [f"demo_{i}" for i in range(4)]
        assert data.attrs["total"] == sum(data[d].attrs["num_samples"] for d in demos)
        train = {d.decode() for d in f["mask/train"][()]}
        valid = {d.decode() for d in f["mask/valid"][()]}
        assert train | valid == set(demos) and not train & valid and len(valid) >= 1
        for d in demos:
            g = data[d]
            T = g.attrs["num_samples"]
            assert g["actions"].shape == (T, 7) and g["states"].shape[0] == T
            assert np.all(np.abs(g["actions"][()]) <= 1.0)
            # sparse success: the episode ends at its first success step
            np.testing.assert_array_equal(g["rewards"][()], np.r_[np.zeros(T - 1), 1.0])
            np.testing.assert_array_equal(g["dones"][()], np.r_[np.zeros(T - 1), 1])
            for key, dim in (("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 10)):
                assert g["obs"][key].shape == (T, dim)
                assert g["next_obs"][key].shape == (T, dim)
                np.testing.assert_array_equal(g["obs"][key][1:], g["next_obs"][key][:-1])
            assert "model_file" in g.attrs


def test_loader_round_trip_matches_raw_arrays(lift_file):
    td = load_robomimic_dataset(lift_file)
    demos = list_demos(lift_file)
    with h5py.File(lift_file, "r") as f:
        total = f["data"].attrs["total"]
        assert td.batch_size == torch.Size([total])
        assert td["observation"].shape == (total, 19) and td["observation"].dtype == torch.float32
        assert td["action"].shape == (total, 7)
        for key in ("reward", "done", "terminated", "truncated", "success"):
            assert td["next", key].shape == (total, 1)
        start = 0
        for episode, demo in enumerate(demos):
            g = f["data"][demo]
            T = g.attrs["num_samples"]
            sl = slice(start, start + T)
            start += T
            assert (td["episode"][sl] == episode).all()
            np.testing.assert_allclose(
                td["observation"][sl].numpy(), concat_obs(g["obs"], DEFAULT_OBS_KEYS), rtol=0, atol=1e-6
            )
            np.testing.assert_allclose(
                td["next", "observation"][sl].numpy(),
                concat_obs(g["next_obs"], DEFAULT_OBS_KEYS),
                rtol=0,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                td["action"][sl].numpy(), g["actions"][()], atol=1e-6  # as stored: nothing clipped
            )
            np.testing.assert_array_equal(td["next", "reward"][sl, 0].numpy(), g["rewards"][()])
            np.testing.assert_array_equal(td["next", "terminated"][sl, 0].numpy(), g["dones"][()] > 0)
            np.testing.assert_array_equal(td["next", "done"][sl, 0].numpy(), g["dones"][()] > 0)
            assert not td["next", "truncated"][sl].any()
            np.testing.assert_array_equal(td["next", "success"][sl, 0].numpy(), g["rewards"][()] > 0)
        assert start == total


def test_obs_keys_select_and_order_columns(lift_file):
    keys = ("object", "robot0_gripper_qpos", "robot0_eef_pos")
    td = load_robomimic_dataset(lift_file, obs_keys=keys)
    with h5py.File(lift_file, "r") as f:
        g = f["data"][list_demos(lift_file)[0]]
        T = g.attrs["num_samples"]
        assert td["observation"].shape[-1] == 10 + 2 + 3
        np.testing.assert_allclose(td["observation"][:T].numpy(), concat_obs(g["obs"], keys), atol=1e-6)


def test_filter_key_honours_masks(lift_file):
    full = load_robomimic_dataset(lift_file)
    with h5py.File(lift_file, "r") as f:
        sizes = {}
        for key in ("train", "valid"):
            names = sorted((d.decode() for d in f[f"mask/{key}"][()]), key=lambda s: int(s[5:]))
            assert list_demos(lift_file, filter_key=key) == names
            td = load_robomimic_dataset(lift_file, filter_key=key)
            sizes[key] = td.shape[0]
            assert sizes[key] == sum(f["data"][n].attrs["num_samples"] for n in names)
            first = f["data"][names[0]]
            np.testing.assert_allclose(
                td["observation"][0].numpy(), concat_obs(first["obs"], DEFAULT_OBS_KEYS)[0], atol=1e-6
            )
    assert sizes["train"] + sizes["valid"] == full.shape[0]
    assert sizes["valid"] > 0


def test_actions_are_kept_in_env_units_and_checked_against_the_env_bounds(tmp_path):
    """A file whose arm actions reach ±1.8 for an env with bounds ±2 (a legacy OSC_POSE config with
    input_min/max ∓2): nothing is cut. Bounds that the data exceed are an error, or a counted clip."""
    path = tmp_path / "bounds.hdf5"
    raw = write_synthetic_file(path, [{"rewards": [0, 0, 1], "dones": [0, 0, 1]}])
    stored = np.concatenate([raw["demo_0"]["actions"]])
    assert np.abs(stored).max() > 1  # the synthetic actions go beyond ±1
    scale = 1.1 * np.abs(stored).max()
    td = load_robomimic_dataset(path, action_bounds=(-scale, scale))
    np.testing.assert_allclose(td["action"].numpy(), stored.astype(np.float32), rtol=0, atol=0)
    with pytest.raises(RobomimicDatasetError, match=r"action entries .* lie outside the env's action bounds \[-1, 1\]"):
        load_robomimic_dataset(path, action_bounds=(-1.0, 1.0))
    with pytest.warns(UserWarning, match="clipped to the bounds"):
        clipped = load_robomimic_dataset(path, action_bounds=(-1.0, 1.0), out_of_bounds="clip")
    assert clipped["action"].abs().max() == 1.0


def test_terminal_flags_follow_the_env_not_the_files_dones(tmp_path):
    """A demo that never succeeds (rewards all 0) but whose dones mark its end: the online env would
    never terminate there, so the last step is truncated (bootstrapped), not terminated."""
    path = tmp_path / "failed.hdf5"
    write_synthetic_file(path, [{"rewards": [0, 0, 0, 0], "dones": [0, 0, 0, 1]}])
    td = load_robomimic_dataset(path, obs_keys=tuple(SYNTH_OBS_DIMS))
    assert not td["next", "terminated"].any()
    assert td["next", "truncated"][:, 0].tolist() == [False, False, False, True]
    assert td["next", "done"][:, 0].tolist() == [False, False, False, True]
    # the file's own convention, when asked for explicitly
    as_dones = load_robomimic_dataset(path, obs_keys=tuple(SYNTH_OBS_DIMS), terminal_rule="dones")
    assert as_dones["next", "terminated"][:, 0].tolist() == [False, False, False, True]
    assert not as_dones["next", "truncated"].any()


def _expected_chunks(raw, h, gamma):
    """Plain-loop reference: windows from every step, cut by the first done or the episode end."""
    rows = []
    for episode, demo in enumerate(sorted(raw, key=lambda s: int(s[5:]))):
        r = raw[demo]
        T = len(r["rewards"])
        for t in range(T):
            acts, ret, term, k = [], 0.0, False, 0
            for j in range(h):
                if t + j >= T or term:
                    break
                acts.append(r["actions"][t + j])
                ret += gamma**j * r["rewards"][t + j]
                term = bool(r["dones"][t + j])
                k += 1
            last = t + k - 1
            acts += [acts[-1]] * (h - k)
            rows.append(
                {
                    "episode": episode,
                    "obs": np.concatenate([r["obs"][key][t] for key in SYNTH_OBS_DIMS]),
                    "next_obs": np.concatenate([r["next_obs"][key][last] for key in SYNTH_OBS_DIMS]),
                    "action": np.concatenate(acts),
                    "reward": ret,
                    "terminated": term,
                    "truncated": (not term) and last == T - 1,
                    "length": k,
                }
            )
    return rows


@pytest.mark.parametrize("h", [1, 3, 4])
def test_chunking_at_episode_ends(tmp_path, h):
    rng = np.random.default_rng(1)
    episodes = [
        {"rewards": [0, 0, 0, 0, 1], "dones": [0, 0, 0, 0, 1]},  # success at the end
        {"rewards": [0.5, 1], "dones": [0, 1]},  # shorter than the chunk
        {"rewards": list(rng.uniform(size=6)), "dones": [0] * 6},  # ends without done
        {"rewards": [0, 0, 0, 1, 0, 0, 1], "dones": [0, 0, 0, 1, 0, 0, 1]},  # done mid-episode
    ]
    path = tmp_path / "chunks.hdf5"
    raw = write_synthetic_file(path, episodes, seed=h)
    gamma = 0.9
    td = load_robomimic_dataset(path, action_chunk=h, gamma=gamma, obs_keys=tuple(SYNTH_OBS_DIMS))
    expected = _expected_chunks(raw, h, gamma)
    assert td.shape[0] == len(expected) == sum(len(e["rewards"]) for e in episodes)
    assert td["action"].shape == (len(expected), h * SYNTH_ACTION_DIM)
    for i, row in enumerate(expected):
        assert td["episode"][i].item() == row["episode"]
        np.testing.assert_allclose(td["observation"][i].numpy(), row["obs"], atol=1e-6)
        np.testing.assert_allclose(td["next", "observation"][i].numpy(), row["next_obs"], atol=1e-6)
        np.testing.assert_allclose(td["action"][i].numpy(), row["action"], atol=1e-6)
        assert td["next", "reward"][i, 0].item() == pytest.approx(row["reward"], abs=1e-6)
        assert td["next", "terminated"][i, 0].item() == row["terminated"]
        assert td["next", "truncated"][i, 0].item() == row["truncated"]
        assert td["next", "done"][i, 0].item() == (row["terminated"] or row["truncated"])
        assert td["chunk_length"][i, 0].item() == row["length"]
    # every reward of the file is counted by the transition starting at its own step
    if h == 1:
        np.testing.assert_allclose(
            td["next", "reward"][:, 0].numpy(),
            np.concatenate([e["rewards"] for e in episodes]),
            atol=1e-6,
        )


def test_chunks_never_cross_episodes_in_scripted_data(lift_file):
    h = 4
    td = load_robomimic_dataset(lift_file, action_chunk=h, gamma=0.99)
    with h5py.File(lift_file, "r") as f:
        start = 0
        for demo in list_demos(lift_file):
            g = f["data"][demo]
            T = g.attrs["num_samples"]
            actions = g["actions"][()]
            next_obs = concat_obs(g["next_obs"], DEFAULT_OBS_KEYS)
            for t in range(T):
                row = start + t
                k = min(h, T - t)
                chunk = td["action"][row].numpy().reshape(h, 7)
                np.testing.assert_allclose(chunk[:k], actions[t : t + k], atol=1e-6)
                np.testing.assert_allclose(chunk[k:], np.repeat(actions[t + k - 1][None], h - k, 0), atol=1e-6)
                np.testing.assert_allclose(td["next", "observation"][row].numpy(), next_obs[t + k - 1], atol=1e-6)
                expected_r = 0.99 ** (T - 1 - t) if T - 1 - t < h else 0.0
                assert td["next", "reward"][row, 0].item() == pytest.approx(expected_r, abs=1e-6)
                assert td["next", "terminated"][row, 0].item() == (T - 1 - t < h)
            start += T


def test_replay_buffer_and_load_dataset(lift_file):
    n = load_robomimic_dataset(lift_file).shape[0]
    rb = make_robomimic_replay_buffer(lift_file, batch_size=16, action_chunk=2)
    assert len(rb) == n
    batch = rb.sample()
    assert batch["action"].shape == (16, 14) and batch["next", "reward"].shape == (16, 1)
    rb2 = load_dataset(f"robomimic:{lift_file}", batch_size=8, filter_key="valid")
    assert len(rb2) == load_robomimic_dataset(lift_file, filter_key="valid").shape[0]
    assert rb2.sample()["observation"].shape == (8, 19)
    from torchrl.data.datasets import load_dataset as torchrl_load_dataset

    assert len(torchrl_load_dataset(f"robomimic:{lift_file}", batch_size=4)) == n


def test_legacy_format_file_loads(legacy_lift_file):
    env_args = read_env_args(legacy_lift_file)
    controller = env_args["env_kwargs"]["controller_configs"]
    assert controller["type"] == "OSC_POSE" and "body_parts" not in controller
    assert controller["control_delta"] is True and controller["damping"] == 1
    td = load_robomimic_dataset(legacy_lift_file, action_chunk=2)
    assert td["observation"].shape[-1] == 19 and td["action"].shape[-1] == 14
    assert td["next", "terminated"].sum().item() == 2 * 2  # 2 demos, last 2 windows each reach success


def test_unsupported_tasks_raise_clear_errors(tmp_path):
    with pytest.raises(NotImplementedError, match="no scripted policy for task 'square'"):
        generate_scripted_demos(tmp_path / "x.hdf5", task="square", episodes=1)
    with pytest.raises(ValueError, match="unknown Robomimic task 'stack'"):
        generate_scripted_demos(tmp_path / "x.hdf5", task="stack", episodes=1)
    assert not (tmp_path / "x.hdf5").exists()


def _drop(path, member):
    with h5py.File(path, "a") as f:
        del f[member]


def _bad_files(tmp_path):
    ok = [{"rewards": [0, 1], "dones": [0, 1]}]
    cases = {}
    cases["missing"] = (tmp_path / "nope.hdf5", "not found")
    text = tmp_path / "text.hdf5"
    text.write_text("definitely not hdf5\n")
    cases["not_hdf5"] = (text, "not an HDF5 file")
    no_data = tmp_path / "no_data.hdf5"
    with h5py.File(no_data, "w") as f:
        f.create_group("something_else")
    cases["no_data"] = (no_data, "no 'data' group")
    no_obs = tmp_path / "no_obs.hdf5"
    write_synthetic_file(no_obs, ok)
    _drop(no_obs, "data/demo_0/obs/object")
    cases["missing_obs_key"] = (no_obs, "no observation key 'object'")
    no_actions = tmp_path / "no_actions.hdf5"
    write_synthetic_file(no_actions, ok)
    _drop(no_actions, "data/demo_0/actions")
    cases["missing_actions"] = (no_actions, "no 'actions' dataset")
    empty = tmp_path / "empty.hdf5"
    write_synthetic_file(empty, [])
    cases["zero_demos"] = (empty, "contains no demonstrations")
    # non-finite values: named with the demo, key and first bad row (they were accepted: NaN weights)
    for case, member, index, value, message in (
        ("nan_action", "data/demo_0/actions", (1, 0), np.nan, "demo 'demo_0' has a non-finite value in 'actions' at row 1"),
        ("inf_reward", "data/demo_0/rewards", (0,), np.inf, "non-finite value in 'rewards' at row 0"),
        ("nan_obs", "data/demo_0/obs/object", (1, 2), np.nan, "non-finite value in 'obs' at row 1"),
        ("nan_next_obs", "data/demo_0/next_obs/robot0_eef_pos", (0, 0), -np.inf,
         "non-finite value in 'next_obs' at row 0"),
    ):
        path = tmp_path / f"{case}.hdf5"
        write_synthetic_file(path, ok)
        with h5py.File(path, "a") as f:
            data = f[member][()].astype(np.float64)
            data[index] = value
            del f[member]
            f[member] = data
        cases[case] = (path, message)
    return cases


@pytest.mark.parametrize(
    "case", ["missing", "not_hdf5", "no_data", "missing_obs_key", "missing_actions", "zero_demos",
             "nan_action", "inf_reward", "nan_obs", "nan_next_obs"]
)
def test_bad_files_give_one_line_errors(tmp_path, case):
    path, message = _bad_files(tmp_path)[case]
    with pytest.raises(RobomimicDatasetError, match=message) as info:
        load_robomimic_dataset(path)
    text = str(info.value)
    assert "\n" not in text and str(path.name) in text
    assert isinstance(info.value, ValueError)


def test_unknown_filter_key_and_missing_env_args(tmp_path):
    path = tmp_path / "masked.hdf5"
    write_synthetic_file(
        path,
        [{"rewards": [0, 1], "dones": [0, 1]}, {"rewards": [1], "dones": [1]}],
        masks={"train": ["demo_1"], "valid": ["demo_0"]},
    )
    expected = r"no filter key 'test' \(available under 'mask/': \['train', 'valid'\]\)"
    with pytest.raises(RobomimicDatasetError, match=expected):
        load_robomimic_dataset(path, filter_key="test")
    assert load_robomimic_dataset(path, filter_key="train")["episode"].tolist() == [0]
    assert load_robomimic_dataset(path, filter_key="valid").shape[0] == 2
    with h5py.File(path, "a") as f:
        del f["data"].attrs["env_args"]
    with pytest.raises(RobomimicDatasetError, match="no 'env_args' attribute"):
        read_env_args(path)


def test_demos_load_in_numeric_order(tmp_path):
    path = tmp_path / "many.hdf5"
    raw = write_synthetic_file(path, [{"rewards": [0, 1], "dones": [0, 1]}] * 12)
    names = list_demos(path)
    assert names == [f"demo_{i}" for i in range(12)]  # demo_10 after demo_9, not after demo_1
    td = load_robomimic_dataset(path, obs_keys=tuple(SYNTH_OBS_DIMS))
    for episode, name in enumerate(names):
        rows = td[td["episode"] == episode]
        expected = np.concatenate([raw[name]["obs"][k] for k in SYNTH_OBS_DIMS], -1)
        np.testing.assert_allclose(rows["observation"].numpy(), expected, atol=1e-6)
