"""One offline-to-online recipe for two dataset families (``dataset=robomimic[:FILE]``,
``dataset=ogbench[:FILE]``): short runs on generated OGBench data and on imperfect scripted Lift
demos, the imperfect-demo options themselves, bad files through the CLI, and
``python -m recipes.train_robomimic`` keeping its defaults.

Tiny networks, a few steps, 20-step episodes; the whole file takes about a minute on 2 cores.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from torchrl_sacflow.training import ConfigError, read_csv_scalar
from torchrl_sacflow.training.offline_online import (
    check_offline_online_config,
    parse_dataset,
    resolve_offline_data,
)

pytest.importorskip("robosuite")
pytest.importorskip("ogbench")

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning"),  # ogbench's action Box
    pytest.mark.filterwarnings("ignore:.*DISPLAY environment variable is missing"),  # glfw, imported by ogbench
]

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "recipes" / "config"
TINY = [
    "policy=flow_g", "policy.velocity_kwargs.hidden_sizes=[16]", "critic.num_cells=[32,32]", "batch_size=16",
    "pretrain_steps=20", "offline_steps=4", "online_frames=8", "frames_per_batch=4", "action_chunk=2",
    "max_episode_steps=20", "eval.num_episodes=1", "eval.interval=4", "logger.log_interval=10",
    "logger.progress_bar=false", "logger.plot=false", "threads=1",
]
WEAK_LIFT = ["scripted_episodes=4", "scripted_failed_fraction=0.25", "scripted_p_early_stop=0.5",
             "scripted_action_noise=0.05", "scripted_seed=1"]


def _compose(*overrides: str, config: str = "train_offline_online"):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config, overrides=list(overrides))


def _train(run_dir: Path, *overrides: str) -> dict:
    from recipes.train_offline_online import train

    return train(_compose(*TINY, *overrides), run_dir)


def _check_phase_logs(run_dir: Path, summary: dict) -> None:
    """Every phase logged its metrics, and the success rate was evaluated after each one."""
    assert read_csv_scalar(run_dir, "pretrain/loss_flow_matching")[0] == [10, 20]
    assert read_csv_scalar(run_dir, "pretrain/eval_success_rate")[0] == [20]
    assert read_csv_scalar(run_dir, "offline/loss_qvalue")[0] == [4]
    assert read_csv_scalar(run_dir, "train/loss_actor")[0] == [4, 8]
    steps, success = read_csv_scalar(run_dir, "eval/success_rate")
    assert steps == [0, 4, 8] and all(0.0 <= s <= 1.0 for s in success)
    assert summary["frames"] == 8 and summary["updates"] == 8 and summary["offline_steps"] == 4
    assert summary["success_rate_after_pretrain"] is not None and summary["final_success_rate"] is not None


def test_dataset_forms():
    assert parse_dataset("ogbench:/data/x.npz") == ("ogbench", Path("/data/x.npz"))
    assert parse_dataset("robomimic:lift.hdf5") == ("robomimic", Path("lift.hdf5"))
    assert parse_dataset("ogbench") == ("ogbench", None)
    assert parse_dataset("robomimic") == parse_dataset(None) == ("robomimic", None)
    assert parse_dataset("/data/lift/mh/low_dim.hdf5") == ("robomimic", Path("/data/lift/mh/low_dim.hdf5"))
    with pytest.raises(ConfigError, match="names no file"):
        parse_dataset("ogbench:")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset=ogbench", "task=lift"], "unknown OGBench task 'lift'"),
        (["dataset=ogbench", "task_id=7"], "task_id must be an integer in 1..5"),
        (["dataset=ogbench", "terminal_rule=dones"], "terminal_rule='dones' applies to Robomimic files only"),
        (["dataset=robomimic", "task_id=2"], "task_id=2 selects an OGBench singletask goal"),
        (["dataset=robomimic", "task=cube-double"], "unknown Robomimic task 'cube-double'"),
        (["dataset=robomimic", "task=square"], "no scripted demonstrations for task 'square' (only 'lift', 'can')"),
        (["scripted_failed_fraction=1.5"], "scripted_failed_fraction must be in [0, 1], got 1.5"),
        (["scripted_action_noise=-1"], "scripted_action_noise must be >= 0"),
        (["dataset=ogbench", "ogbench.transitions=0"], "ogbench.transitions must be an integer >= 1"),
        (["beta.loss=huber"], "beta.loss must be 'l2' or 'flow_matching', got 'huber'"),
        (["beta.rows=online"], "beta.rows must be 'all' or 'offline', got 'online'"),
    ],
)
def test_family_settings_are_checked(overrides, message):
    cfg = OmegaConf.to_container(_compose(*overrides), resolve=True)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_offline_online_config(cfg)


def test_ogbench_run_on_generated_data(tmp_path):
    """dataset=ogbench: a tiny play file generated into datasets_dir, then all three phases."""
    data_dir = tmp_path / "datasets"
    summary = _train(tmp_path / "run", "dataset=ogbench", f"datasets_dir={data_dir}", "ogbench.transitions=60",
                     "task_id=3")
    _check_phase_logs(tmp_path / "run", summary)
    generated = data_dir / "cube-double_play_60_seed0.npz"
    assert summary["family"] == "ogbench" and summary["task"] == "cube-double"
    assert summary["dataset"] == str(generated) and generated.is_file()
    assert summary["chunking"]["env_action_width"] == summary["chunking"]["offline_action_width"] == 2 * 5
    # describe_ogbench_dataset's counts are in the summary (play data: the goal is rarely reached)
    assert summary["data"]["transitions"] == 60 and summary["data"]["episodes"] == 1
    assert 0 <= summary["data"]["episodes_with_success"] <= 1 and summary["data"]["reward_mean"] <= 0
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.env.id == "ogbench-cube-double" and saved.env.task_id == 3 and saved.max_episode_steps == 20

    # reused, not regenerated; without max_episode_steps the singletask env's registered limit
    cfg = OmegaConf.to_container(_compose(*TINY, "dataset=ogbench", f"datasets_dir={data_dir}",
                                          "ogbench.transitions=60", "max_episode_steps=null"), resolve=True)
    data = resolve_offline_data(cfg)
    assert data.path == generated and not data.generated and data.max_episode_steps == 500
    env = data.make_env(seed=0)
    assert env.max_episode_steps == 500 and env.task_id == 2  # task_id=null: OGBench's default task
    env.close()


def test_imperfect_lift_run_and_file(tmp_path):
    """dataset=robomimic with the scripted_* options: weak demos generated once, then all three phases."""
    data_dir = tmp_path / "datasets"
    summary = _train(tmp_path / "run", "dataset=robomimic", f"datasets_dir={data_dir}", *WEAK_LIFT,
                     "beta.loss=flow_matching", "beta.rows=offline")
    _check_phase_logs(tmp_path / "run", summary)
    path = Path(summary["dataset"])
    assert path == data_dir / "lift_scripted_4_seed1_actnoise0.05_earlystop0.5_failed0.25.hdf5"
    assert summary["family"] == "robomimic" and summary["task"] == "lift"

    with h5py.File(path, "r") as f:
        demos = {name: f["data"][name] for name in f["data"]}
        outcomes = {name: g.attrs["outcome"] for name, g in demos.items()}
        rewards = {name: g["rewards"][()] for name, g in demos.items()}
        dones = {name: g["dones"][()] for name, g in demos.items()}
        lengths = {name: g["actions"].shape[0] for name, g in demos.items()}
        assert "failed_fraction=0.25" in f["data"].attrs["generator"]
    assert sorted(outcomes.values()).count("failed") == 1  # round(0.25 * 4)
    assert "early_stop" in outcomes.values() and "success" in outcomes.values()
    for name, outcome in outcomes.items():
        if outcome == "success":
            assert rewards[name][-1] == 1.0 and dones[name][-1] == 1 and rewards[name][:-1].sum() == 0
        else:  # no success anywhere: no reward 1.0, no done
            assert rewards[name].sum() == 0 and dones[name].sum() == 0
    assert lengths[next(n for n, o in outcomes.items() if o == "failed")] == 100  # the whole attempt
    assert summary["data"]["episodes"] == 4
    assert summary["data"]["episodes_with_success"] == list(outcomes.values()).count("success")

    # loaded with terminal_rule=success: each demo without success ends truncated, never terminated
    from torchrl_sacflow.robomimic import list_demos, load_robomimic_dataset

    td = load_robomimic_dataset(path)
    for index, name in enumerate(list_demos(path)):
        episode = td[td["episode"] == index]
        terminated, truncated = episode["next", "terminated"].reshape(-1), episode["next", "truncated"].reshape(-1)
        if outcomes[name] == "success":
            assert terminated[-1] and terminated.sum() == 1 and not truncated.any()
        else:
            assert not terminated.any() and truncated[-1] and truncated.sum() == 1
            assert not episode["next", "success"].any()


def test_can_run_on_scripted_demos(tmp_path):
    """dataset=robomimic task=can: scripted PickPlaceCan demos (one success, one failed grasp) generated
    once in the official layout, the env rebuilt from their env_args, then all three phases."""
    data_dir = tmp_path / "datasets"
    summary = _train(tmp_path / "run", "dataset=robomimic", "task=can", f"datasets_dir={data_dir}",
                     "scripted_episodes=2", "scripted_failed_fraction=0.5")
    _check_phase_logs(tmp_path / "run", summary)
    path = Path(summary["dataset"])
    assert path == data_dir / "can_scripted_2_seed0_failed0.5.hdf5"
    assert summary["family"] == "robomimic" and summary["task"] == "can"
    with h5py.File(path, "r") as f:
        assert f["data"].attrs["env"] == "PickPlaceCan"
        assert yaml.safe_load(f["data"].attrs["env_args"])["env_name"] == "PickPlaceCan"
        demos = {g.attrs["outcome"]: g for g in f["data"].values()}
        assert sorted(demos) == ["failed", "success"]
        success, failed = demos["success"], demos["failed"]
        assert success["rewards"][-1] == 1.0 and success["dones"][-1] == 1 and success["rewards"][:-1].sum() == 0
        assert failed["rewards"][()].sum() == 0 and failed["actions"].shape[0] == 250  # the whole attempt
        # the can (robosuite 1.5's object-state: Can_pos at 7:10) ends in its bin (y ≈ +0.40) in the
        # successful demo, and stays in the start bin (y < 0) in the failed one
        assert success["obs"]["object"].shape[1] == 14
        assert success["next_obs"]["object"][-1, 8] > 0.3 and failed["next_obs"]["object"][-1, 8] < 0.0
    assert summary["data"]["episodes"] == 2 and summary["data"]["episodes_with_success"] == 1
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.env.id == "robomimic-can"


def test_scripted_options_keep_default_demos(tmp_path):
    """With every imperfect option at 0 the demos are those of the plain writer; noise changes the actions."""
    from torchrl_sacflow.robomimic import generate_scripted_demos

    plain = generate_scripted_demos(tmp_path / "plain.hdf5", episodes=1, seed=0)
    zero = generate_scripted_demos(tmp_path / "zero.hdf5", episodes=1, seed=0, action_noise=0.0,
                                   p_early_stop=0.0, failed_fraction=0.0)
    noisy = generate_scripted_demos(tmp_path / "noisy.hdf5", episodes=1, seed=0, action_noise=0.2)
    assert plain["successful_episodes"] == zero["successful_episodes"] == noisy["successful_episodes"] == 1
    with h5py.File(tmp_path / "plain.hdf5") as a, h5py.File(tmp_path / "zero.hdf5") as b, \
            h5py.File(tmp_path / "noisy.hdf5") as c:
        plain_actions = a["data/demo_0/actions"][()]
        np.testing.assert_array_equal(plain_actions, b["data/demo_0/actions"][()])
        noisy_actions = c["data/demo_0/actions"][()]
        assert np.abs(noisy_actions).max() <= 1.0
        assert noisy_actions.shape != plain_actions.shape or not np.allclose(noisy_actions, plain_actions)
        assert b["data/demo_0"].attrs["outcome"] == "success"
    with pytest.raises(ValueError, match="failed_fraction must be in"):
        generate_scripted_demos(tmp_path / "bad.hdf5", episodes=1, failed_fraction=2.0)


def _run_cli(module: str, *overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *overrides, f"hydra.run.dir={tmp_path / 'cli'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("case", ["corrupt", "other_task"])
def test_bad_ogbench_file_exits_2_with_one_line(tmp_path, case):
    if case == "corrupt":
        path = tmp_path / "corrupt.npz"
        path.write_bytes(b"PK\x03\x04 not really a zip archive")
        overrides, message = [], "is not an .npz file"
    else:  # a cube-single layout read as cube-double: the widths disagree
        path = tmp_path / "single.npz"
        rows = 11
        np.savez(path, observations=np.zeros((rows, 28), np.float32), actions=np.zeros((rows, 5), np.float32),
                 terminals=np.eye(1, rows, rows - 1, dtype=bool)[0], qpos=np.zeros((rows, 21), np.float32))
        overrides, message = ["task=cube-double"], "'observations' are 28 wide but cube-double's are 37"
    proc = _run_cli("recipes.train_offline_online", f"dataset=ogbench:{path}", *overrides, tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_offline_online: error: ") and message in lines[0], lines


def test_train_robomimic_keeps_its_defaults():
    """``python -m recipes.train_robomimic`` composes what it always did: scripted Lift, 200-step episodes."""
    proc = subprocess.run([sys.executable, "-m", "recipes.train_robomimic", "--cfg", "job"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    job = yaml.safe_load(proc.stdout)
    expected = {"dataset": None, "task": "lift", "max_episode_steps": 200, "scripted_episodes": 30,
                "scripted_seed": 0, "filter_key": None, "terminal_rule": "success", "action_chunk": 5,
                "pretrain_steps": 5000, "offline_steps": 0, "online_frames": 2000, "batch_size": 256,
                "frames_per_batch": 50, "offline_fraction": 0.5, "online_buffer_size": 100000,
                "datasets_dir": "outputs/datasets", "seed": 0, "device": "cpu",
                "obs_keys": ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]}
    assert {key: job[key] for key in expected} == expected
    assert job["policy"]["name"] == "flow_t" and job["policy"]["noise_std"] == 0.1 and job["critic"]["name"] == "sac"
    assert job["beta"] == {"loss": "l2", "rows": "all", "offline": 10000.0, "online_start": 1000.0, "online_end": 1000.0,
                           "online_anneal_frames": "${online_frames}"}
    assert job["optim"]["alpha_init"] == 0.001 and job["optim"]["autotune_alpha"] is False
    assert job["collector"] == {"backend": "local", "num_workers": 1, "sync": True, "ray_address": None}
    assert job["eval"] == {"interval": 500, "num_episodes": 10}
    # the same recipe: the generic config differs only in the data defaults
    generic = OmegaConf.to_container(_compose(), resolve=False)
    robomimic = OmegaConf.to_container(_compose(config="train_robomimic"), resolve=False)
    assert {k for k in generic if generic[k] != robomimic[k]} == {"dataset", "task", "max_episode_steps"}
    assert resolve_offline_data.__module__ == "torchrl_sacflow.training.offline_online.families"
    from recipes import train_offline_online, train_robomimic

    assert train_robomimic.train is train_offline_online.train
