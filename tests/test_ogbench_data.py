"""OGBench data side: the oracle generator's file layout and options, the loader (round trip against
OGBench's own loader and relabelling, chunks, bad files), and the singletask TorchRL env."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from torchrl_sacflow.ogbench import (
    describe_ogbench_dataset,
    generate_ogbench_dataset,
    load_ogbench_dataset,
    make_ogbench_env,
    observation_dim,
    task_goals,
    val_path,
)
from torchrl_sacflow.ogbench.tasks import cube_positions, qpos_dim
from torchrl_sacflow.training import ConfigError

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning"),  # ogbench's action Box
    pytest.mark.filterwarnings("ignore:.*DISPLAY environment variable is missing"),  # glfw, imported by ogbench
]

REPO = Path(__file__).resolve().parents[1]
OGBENCH_KEYS = {"observations": np.float32, "actions": np.float32, "terminals": np.bool_, "qpos": np.float32,
                "qvel": np.float32}
EPISODE_ROWS = 121  # 120 transitions per episode
TRANSITIONS = 300  # two full episodes and one of 60


@pytest.fixture(scope="module")
def play_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ogbench") / "cube-double-play-v0.npz"
    summary = generate_ogbench_dataset(path, task="cube-double", transitions=TRANSITIONS,
                                       max_episode_steps=EPISODE_ROWS, val_transitions=20, seed=0, progress=False)
    return path, summary


def test_generated_file_has_ogbench_layout(play_file):
    import ogbench

    path, summary = play_file
    with np.load(path) as f:
        raw = {k: f[k] for k in f.files}
    assert set(raw) == set(OGBENCH_KEYS)
    rows = TRANSITIONS + 3
    for key, dtype in OGBENCH_KEYS.items():
        assert raw[key].dtype == dtype and raw[key].shape[0] == rows, key
    assert raw["observations"].shape == (rows, observation_dim("cube-double")) == (rows, 37)
    assert raw["actions"].shape == (rows, 5) and np.abs(raw["actions"]).max() <= 1.0
    assert raw["qpos"].shape == (rows, qpos_dim("cube-double")) == (rows, 28)
    # the last row of each episode, and only it, is marked
    assert np.flatnonzero(raw["terminals"]).tolist() == [120, 241, 302]
    # qpos is the state of the row's own observation (the cube positions agree)
    np.testing.assert_allclose(cube_positions("cube-double", qpos=raw["qpos"]),
                               cube_positions("cube-double", observations=raw["observations"]), atol=1e-5)
    counts = summary["counts"]["train"]
    assert counts["episodes"] == 3 and counts["rows"] == rows and counts["subtasks"] >= 2
    assert json.loads(path.with_suffix(".json").read_text())["counts"] == summary["counts"]
    # OGBench's own loader reads it (train and -val file)
    data = ogbench.load_dataset(str(path))
    assert data["observations"].shape == data["next_observations"].shape == (TRANSITIONS, 37)
    assert ogbench.load_dataset(str(val_path(path)))["actions"].shape == (20, 5)


def test_loader_matches_ogbench_relabelled_dataset(play_file):
    import gymnasium
    import ogbench
    from ogbench.relabel_utils import relabel_dataset

    path, _ = play_file
    td = load_ogbench_dataset(path, task="cube-double", task_id=2)
    env_name = "cube-double-singletask-task2-v0"
    ref = ogbench.load_dataset(str(path), add_info=True)
    relabel_dataset(env_name, gymnasium.make(env_name), ref)
    assert td.shape == (TRANSITIONS,)
    np.testing.assert_array_equal(td["observation"].numpy(), ref["observations"])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), ref["next_observations"])
    np.testing.assert_array_equal(td["action"].numpy(), ref["actions"])
    np.testing.assert_array_equal(td["next", "reward"][:, 0].numpy(), ref["rewards"])
    np.testing.assert_array_equal(td["next", "terminated"][:, 0].numpy(), ref["masks"] == 0)
    # OGBench's loaded ``terminals`` (last transition of each episode) are truncations here
    np.testing.assert_array_equal(td["next", "truncated"][:, 0].numpy(), (ref["terminals"] == 1) & (ref["masks"] == 1))
    assert td["episode"].tolist() == [0] * 120 + [1] * 120 + [2] * 60
    assert (td["chunk_length"] == 1).all()


def _synthetic_rows(goals, patterns, rng):
    """OGBench-layout arrays whose cubes are at their goals in the rows ``patterns`` say
    (per episode, one code per row: 0 no cube, 1 the first cube only, 2 both)."""
    obs, qpos, terminals = [], [], []
    for episode in patterns:
        for t, code in enumerate(episode):
            cubes = goals + np.array([0.1, 0.0, 0.0])  # 10 cm off: not at goal
            cubes[:code] = goals[:code] + np.array([0.01, -0.01, 0.0])  # within the 4 cm tolerance
            q = rng.normal(size=qpos_dim("cube-double"))
            o = rng.normal(size=observation_dim("cube-double"))
            for i in range(2):
                q[14 + 7 * i : 17 + 7 * i] = cubes[i]
                o[19 + 9 * i : 22 + 9 * i] = (cubes[i] - np.array([0.425, 0.0, 0.0])) * 10
            obs.append(o)
            qpos.append(q)
            terminals.append(t == len(episode) - 1)
    n = len(terminals)
    return {
        "observations": np.array(obs, np.float32),
        "actions": rng.uniform(-1, 1, (n, 5)).astype(np.float32),
        "terminals": np.array(terminals, bool),
        "qpos": np.array(qpos, np.float32),
        "qvel": np.zeros((n, 26), np.float32),
    }


# rows per episode (the last row of each only closes the episode)
PATTERNS = [
    [0, 0, 1, 2, 0, 0, 0],  # success mid-episode, then the cubes leave the goal
    [0, 1, 0],  # shorter than a chunk, one cube only
    [0, 0, 0, 1, 2, 2],  # success on the last transition
    [0, 0],  # a single transition
]


def _expected(patterns, raw, h, gamma):
    """Plain-loop reference: r_t = #cubes at goal - 2 of row t, terminal where both are."""
    rows, start = [], 0
    for episode, pattern in enumerate(patterns):
        T = len(pattern) - 1  # transitions
        reward = [c - 2.0 for c in pattern]
        for t in range(T):
            ret, term, k = 0.0, False, 0
            while k < h and t + k < T and not term:
                ret += gamma**k * reward[t + k]
                term = pattern[t + k] == 2
                k += 1
            acts = [raw["actions"][start + t + j] for j in range(k)]
            acts += [acts[-1]] * (h - k)
            rows.append({"episode": episode, "obs": raw["observations"][start + t],
                         "next_obs": raw["observations"][start + t + k], "action": np.concatenate(acts),
                         "reward": ret, "terminated": term, "truncated": not term and t + k == T, "length": k})
        start += len(pattern)
    return rows


@pytest.mark.parametrize("h", [1, 3])
def test_chunks_and_singletask_flags(tmp_path, h):
    _, goals = task_goals("cube-double", 2)
    raw = _synthetic_rows(goals, PATTERNS, np.random.default_rng(h))
    path = tmp_path / "synthetic.npz"
    np.savez_compressed(path, **raw)
    gamma = 0.9
    td = load_ogbench_dataset(path, task="cube-double", task_id=2, action_chunk=h, gamma=gamma)
    expected = _expected(PATTERNS, raw, h, gamma)
    assert td.shape[0] == len(expected) == sum(len(p) - 1 for p in PATTERNS)
    assert td["action"].shape == (len(expected), 5 * h)
    for i, row in enumerate(expected):
        assert td["episode"][i].item() == row["episode"]
        np.testing.assert_array_equal(td["observation"][i].numpy(), row["obs"])
        np.testing.assert_array_equal(td["next", "observation"][i].numpy(), row["next_obs"])
        np.testing.assert_array_equal(td["action"][i].numpy(), row["action"])
        assert td["next", "reward"][i, 0].item() == pytest.approx(row["reward"], abs=1e-6), i
        assert td["next", "terminated"][i, 0].item() == row["terminated"], i
        assert td["next", "success"][i, 0].item() == row["terminated"], i
        assert td["next", "truncated"][i, 0].item() == row["truncated"], i
        assert td["next", "done"][i, 0].item() == (row["terminated"] or row["truncated"])
        assert td["chunk_length"][i, 0].item() == row["length"]
    if h == 1:
        info = describe_ogbench_dataset(path, task="cube-double", task_id=2)
        assert info == {"rows": 18, "episodes": 4, "transitions": 14, "success_transitions": 2,
                        "episodes_with_success": 2, "reward_mean": pytest.approx(-21 / 14)}
        # another task's goals: nothing is at goal there
        other = load_ogbench_dataset(path, task="cube-double", task_id=1)
        assert not other["next", "terminated"].any()


def test_missing_qpos_uses_observations_with_warning(tmp_path):
    _, goals = task_goals("cube-double", 2)
    raw = _synthetic_rows(goals, PATTERNS, np.random.default_rng(0))
    with_qpos = tmp_path / "with.npz"
    np.savez(with_qpos, **raw)
    without = tmp_path / "without.npz"
    np.savez(without, **{k: v for k, v in raw.items() if k != "qpos"})
    with pytest.warns(UserWarning, match="has no 'qpos' array: the reward of all 18 rows"):
        td = load_ogbench_dataset(without, task_id=2)
    ref = load_ogbench_dataset(with_qpos, task_id=2)
    assert torch.equal(td["next", "reward"], ref["next", "reward"])
    assert torch.equal(td["next", "terminated"], ref["next", "terminated"])


def _valid(rng=None):
    _, goals = task_goals("cube-double", 2)
    return _synthetic_rows(goals, PATTERNS, rng or np.random.default_rng(0))


def _corrupt(case: str, path: Path) -> dict:
    raw = _valid()
    n = raw["terminals"].shape[0]
    if case == "text":
        path.write_text("observations,actions\n1,2\n")
        return {}
    if case == "npy":
        np.save(path.with_suffix(".npy"), raw["observations"])
        path.with_suffix(".npy").rename(path)
        return {}
    if case == "truncated_zip":
        np.savez_compressed(path, **raw)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return {}
    if case == "no_actions":
        del raw["actions"]
    elif case == "action_width":
        raw["actions"] = raw["actions"][:, :4]
    elif case == "rank":
        raw["observations"] = raw["observations"][:, :, None]
    elif case == "lengths":
        raw["actions"] = raw["actions"][:-1]
    elif case == "terminal_values":
        raw["terminals"] = raw["terminals"].astype(np.float32) * 2
    elif case == "open_end":
        raw = {k: v[:-1] for k, v in raw.items()}
    elif case == "nan":
        raw["observations"][3, 0] = np.nan
    elif case == "empty":
        raw = {k: v[:0] for k, v in raw.items()}
    elif case == "out_of_bounds":
        raw["actions"][[0, 5], 2] = 1.5
    np.savez(path, **raw)
    return {"n": n}


CORRUPT = {
    "missing": "OGBench dataset not found: ",
    "text": "is not an .npz file (expected an OGBench dataset)",
    "npy": "is not an .npz file (expected an OGBench dataset)",
    "truncated_zip": "is not an .npz file (expected an OGBench dataset)",
    "no_actions": "has no 'actions' array (it has ['observations', 'qpos', 'qvel', 'terminals']): not an OGBench dataset",
    "action_width": "'actions' are 4 wide but cube-double's are 5: a file of another task?",
    "rank": "'observations' has shape (18, 37, 1), expected (rows, 37) (pixel observations are not supported)",
    "lengths": "arrays have different numbers of rows {'observations': 18, 'actions': 17, 'terminals': 18, 'qpos': 18}",
    "terminal_values": "4 'terminals' entries are neither 0 nor 1",
    "open_end": "the last row does not end an episode (terminals[-1] = 0): a truncated file?",
    "nan": "'observations' has a non-finite value at row 3 (1 rows)",
    "empty": "has no rows",
    "out_of_bounds": "2 of 70 action entries (2.9%) lie outside the env's action bounds [-1, 1] (by up to 0.5)",
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_bad_files_raise_one_line_config_error(tmp_path, case):
    path = tmp_path / "bad.npz"
    if case != "missing":
        _corrupt(case, path)
    with pytest.raises(ConfigError) as info:
        load_ogbench_dataset(path, task="cube-double")
    message = str(info.value)
    assert "\n" not in message
    assert CORRUPT[case] in message
    assert str(path) in message


def test_wrong_task_and_clipping(tmp_path):
    path = tmp_path / "double.npz"
    _corrupt("out_of_bounds", path)
    with pytest.raises(ConfigError, match=r"'observations' are 37 wide but cube-triple's are 46: a file of another task\?"):
        load_ogbench_dataset(path, task="cube-triple")
    with pytest.raises(ConfigError, match="unknown OGBench task 'cube-sextuple'"):
        load_ogbench_dataset(path, task="cube-sextuple")
    with pytest.warns(UserWarning, match=r"2 of 70 action entries .* clipped to the bounds"):
        td = load_ogbench_dataset(path, task_id=2, out_of_bounds="clip")
    assert td["action"].abs().max() == 1.0
    assert td["action"][0, 2] == 1.0 and td["action"][5, 2] == 1.0  # rows 0 and 5 are transitions 0 and 5


def test_single_row_episode_is_skipped_with_warning(tmp_path):
    raw = _valid()
    extra = {k: v[:1].copy() for k, v in raw.items()}
    extra["terminals"][:] = True
    path = tmp_path / "single.npz"
    np.savez(path, **{k: np.concatenate([raw[k], extra[k]]) for k in raw})
    with pytest.warns(UserWarning, match="1 of 5 episodes have a single row"):
        td = load_ogbench_dataset(path, task_id=2)
    assert td.shape == (14,)


def test_imperfect_data_options(tmp_path):
    path = tmp_path / "weak.npz"
    summary = generate_ogbench_dataset(path, transitions=250, max_episode_steps=EPISODE_ROWS, p_early_stop=1.0,
                                       min_episode_steps=100, p_failed_subtask=1.0, seed=0, progress=False)
    counts = summary["counts"]["train"]
    # every episode cut short, each still closed by a marked last row
    with np.load(path) as f:
        terminals = f["terminals"]
    ends = np.flatnonzero(terminals)
    lengths = np.diff(np.r_[-1, ends])
    assert counts["early_stopped_episodes"] == counts["episodes"] == len(ends) >= 3
    assert terminals[-1] and (lengths < EPISODE_ROWS).all() and (lengths[:-1] >= 100).all()
    assert lengths.sum() - len(ends) == 250
    # every finished subtask was a failed one: the cube dropped, the subtask not achieved
    assert counts["failed_subtasks_injected"] == counts["subtasks"] >= 1
    assert counts["subtask_successes"] == counts["injected_subtask_successes"] == 0
    # loaded: each episode ends truncated (bootstrapped), nothing reaches the task goal
    td = load_ogbench_dataset(path, task_id=2)
    assert td.shape == (250,)
    truncated = td["next", "truncated"][:, 0]
    assert truncated.sum() == len(ends) and not td["next", "terminated"].any()
    last_of_episode = torch.as_tensor(np.r_[td["episode"][1:].numpy() != td["episode"][:-1].numpy(), True])
    assert torch.equal(truncated, last_of_episode)


def test_action_noise_and_seed(tmp_path):
    a = generate_ogbench_dataset(tmp_path / "a.npz", transitions=10, max_episode_steps=11, seed=3, progress=False)
    b = generate_ogbench_dataset(tmp_path / "b.npz", transitions=10, max_episode_steps=11, seed=3, progress=False)
    c = generate_ogbench_dataset(tmp_path / "c.npz", transitions=10, max_episode_steps=11, seed=3, progress=False,
                                 action_noise=0.5)
    counts = [{k: v for k, v in s["counts"]["train"].items() if k != "file"} for s in (a, b)]
    assert counts[0] == counts[1]
    with np.load(tmp_path / "a.npz") as fa, np.load(tmp_path / "b.npz") as fb, np.load(tmp_path / "c.npz") as fc:
        for key in OGBENCH_KEYS:
            np.testing.assert_array_equal(fa[key], fb[key])  # reproducible
        np.testing.assert_array_equal(fa["observations"][0], fc["observations"][0])  # same start
        noise = fc["actions"][:-1] - fa["actions"][:-1]
        assert np.abs(noise[0]).max() > 0.05  # ... but noisy actions
        assert not np.array_equal(fa["observations"][5], fc["observations"][5])


def test_noisy_recipe_takes_random_actions(tmp_path):
    summary = generate_ogbench_dataset(tmp_path / "noisy.npz", transitions=80, max_episode_steps=81,
                                       dataset_type="noisy", seed=0, progress=False)
    assert summary["p_random_action"] == 0.1
    assert 1 <= summary["counts"]["train"]["random_actions"] <= 25
    assert load_ogbench_dataset(tmp_path / "noisy.npz").shape == (80,)


def test_bad_generator_settings(tmp_path):
    for kwargs, message in [
        ({"transitions": 0}, "transitions must be a positive integer"),
        ({"transitions": 5, "p_failed_subtask": 1.5}, r"p_failed_subtask must be a probability in \[0, 1\]"),
        ({"transitions": 5, "task": "cube-sextuple"}, "unknown OGBench task 'cube-sextuple'"),
        ({"transitions": 5, "dataset_type": "expert"}, "dataset_type must be one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            generate_ogbench_dataset(tmp_path / "x.npz", progress=False, **kwargs)
    with pytest.raises(ConfigError, match="must end in .npz"):
        generate_ogbench_dataset(tmp_path / "x.hdf5", transitions=5)


def test_command_line(tmp_path):
    out = tmp_path / "cli.npz"
    cmd = [sys.executable, "-m", "torchrl_sacflow.ogbench.generate", "--task", "cube-double", "--transitions", "15",
           "--out", str(out), "--max-episode-steps", "11", "--noise", "0.2", "--p-early-stop", "0.5"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}: 15 transitions" in done.stdout
    assert "transition" in done.stderr  # the tqdm bar
    assert load_ogbench_dataset(out).shape == (15,)
    assert json.loads(out.with_suffix(".json").read_text())["noise"] == 0.2


def test_command_line_errors(tmp_path, capsys):
    from torchrl_sacflow.ogbench.generate import main

    with pytest.raises(SystemExit) as info:
        main(["--task", "cube-double", "--transitions", "0", "--out", str(tmp_path / "x.npz")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "generate: error: transitions must be a positive integer, got 0"


def test_env_steps_and_reports_success():
    from torchrl.envs.utils import check_env_specs

    h, gamma = 2, 0.9
    env = make_ogbench_env("cube-double", task_id=2, action_chunk=h, gamma=gamma, seed=0)
    assert env.env_id == "cube-double-singletask-task2-v0" and env.max_episode_steps == 500
    assert env.action_spec.shape == (10,) and (env.action_spec.space.low == -1).all()
    assert env.observation_spec["observation"].shape == (37,)
    check_env_specs(env)
    # away from the goal: OGBench's reward -2 per primitive step, summed with discount over the chunk
    td = env.rollout(3)
    assert td["next", "reward"][:, 0].tolist() == pytest.approx([-2 * (1 + gamma)] * 3)
    assert not td["next", "success"].any() and not td["next", "done"].any()
    assert env.episode_steps == 6
    # both cubes put on their goals: the env reports it for the state the next action starts from
    env.reset()
    unwrapped = env.gym_env.unwrapped
    _, goals = task_goals("cube-double", 2)
    for i, goal in enumerate(goals):
        unwrapped._data.joint(f"object_joint_{i}").qpos[:3] = goal
    import mujoco

    mujoco.mj_forward(unwrapped._model, unwrapped._data)
    td = env.step(TensorDict({"action": torch.zeros(10)}, []))["next"]
    assert td["reward"].item() == 0.0
    assert td["success"].item() and td["terminated"].item() and td["done"].item() and not td["truncated"].item()
    assert env.episode_steps == 2
    # seeded resets repeat; the env pickles (for multi-process collectors)
    env.set_seed(5)
    first = env.reset()["observation"]
    env.set_seed(5)
    assert torch.equal(env.reset()["observation"], first)
    import pickle

    clone = pickle.loads(pickle.dumps(env))
    assert clone.action_chunk == h and clone.task_id == 2
    clone.close()
    env.close()
