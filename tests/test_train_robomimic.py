"""The offline-to-online Robomimic recipe: a short run, chunking consistency, resume, bad input.

Runs use 2 scripted Lift demos, tiny networks, a few steps and 10-step episodes; the whole file
takes about a minute on 2 cores.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_sacflow.training import ConfigError, read_csv_scalar
from torchrl_sacflow.training.offline_online import (
    TRANSITION_KEYS,
    LinearSchedule,
    MixedReplayBuffer,
    check_chunking,
    load_offline_data,
    make_chunked_sac_flow_loss,
    make_offline_buffer,
)

pytest.importorskip("robosuite")

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "recipes" / "config"
TINY_POLICY = {  # small networks for each policy group option
    "flow_t": ["policy.velocity_kwargs.d_model=16", "policy.velocity_kwargs.num_heads=2",
               "policy.velocity_kwargs.num_layers=1"],
    "flow_g": ["policy.velocity_kwargs.hidden_sizes=[16]"],
}
TINY = [
    "critic.num_cells=[32,32]", "batch_size=16", "pretrain_steps=20", "offline_steps=4",
    "frames_per_batch=4", "max_episode_steps=10", "eval.num_episodes=1", "eval.interval=4",
    "logger.log_interval=10", "logger.progress_bar=false", "threads=1",
]


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory) -> Path:
    from torchrl_sacflow.robomimic import generate_scripted_demos

    path = tmp_path_factory.mktemp("robomimic") / "lift2.hdf5"
    generate_scripted_demos(path, episodes=2, seed=0)
    return path


def _train(lift_file: Path, run_dir: Path, *overrides: str) -> dict:
    from recipes.train_robomimic import train

    policy = next((o.split("=", 1)[1] for o in overrides if o.startswith("policy=")), "flow_t")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_robomimic", overrides=[f"dataset={lift_file}", *overrides, *TINY, *TINY_POLICY[policy]])
    return train(cfg, run_dir)


def _run_cli(*overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recipes.train_robomimic", *overrides, f"hydra.run.dir={tmp_path / 'cli'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_pretrain_then_finetune_logs_success_rate(lift_file, tmp_path):
    summary = _train(lift_file, tmp_path / "run", "online_frames=8", "action_chunk=2", "policy=flow_g")
    steps, success = read_csv_scalar(tmp_path / "run", "eval/success_rate")
    assert steps == [0, 4, 8] and all(0.0 <= s <= 1.0 for s in success)
    pre_steps, pre_loss = read_csv_scalar(tmp_path / "run", "pretrain/loss_flow_matching")
    assert pre_steps == [10, 20] and all(torch.isfinite(torch.tensor(pre_loss)))
    assert read_csv_scalar(tmp_path / "run", "offline/loss_qvalue")[0] == [4]
    assert read_csv_scalar(tmp_path / "run", "train/loss_actor")[0] == [4, 8]
    assert summary["frames"] == 8 and summary["updates"] == 8 and summary["offline_steps"] == 4
    assert summary["success_rate_after_pretrain"] is not None and summary["final_success_rate"] is not None
    assert (tmp_path / "run" / "success_rate.png").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["frames"] == 8


def test_critic_group_is_shared_with_the_mujoco_recipe(lift_file, tmp_path):
    """critic=crossq: BatchRenorm critics without a target network on the chunk, actor every 2nd step."""
    summary = _train(lift_file, tmp_path / "run", "online_frames=8", "action_chunk=2", "critic=crossq",
                     "critic.policy_delay=2", "critic.warmup_steps=4")
    assert summary["frames"] == 8 and summary["updates"] == 8 and summary["chunking"]["critic_gamma"] == pytest.approx(0.99**2)
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.critic.name == "crossq" and saved.critic.tau == 1.0
    steps, q_loss = read_csv_scalar(tmp_path / "run", "train/loss_qvalue")
    assert steps == [4, 8] and all(math.isfinite(v) for v in q_loss)


def test_chunking_is_consistent_between_data_env_and_loss(lift_file, tmp_path):
    summary = _train(lift_file, tmp_path / "run", "online_frames=4", "action_chunk=3", "offline_steps=0",
                     "logger.plot=false")
    chunk = summary["chunking"]
    assert chunk["offline_action_width"] == chunk["env_action_width"] == chunk["online_action_width"] == 3 * 7
    assert chunk["critic_gamma"] == pytest.approx(0.99**3)

    # the library pieces the recipe uses, checked directly: same width, γ^h, and a mismatch is caught
    from torchrl_sacflow import make_flow_actor
    from torchrl_sacflow.robomimic import make_robomimic_env

    data = load_offline_data(lift_file, obs_keys=("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                                                  "object"), action_chunk=2, gamma=0.9)
    assert set(data.keys(True, True)) == set(TRANSITION_KEYS)
    env = make_robomimic_env(lift_file, action_chunk=2, max_episode_steps=10)
    assert check_chunking(data, env, 2) == 14
    actor = make_flow_actor(env.action_spec, data["observation"].shape[-1], velocity="gru", noise_std=0.1)
    loss = make_chunked_sac_flow_loss(actor, {"name": "sac", "num_cells": [8]},
                                      observation_dim=data["observation"].shape[-1], action_width=14,
                                      action_chunk=2, gamma=0.9).loss_module
    assert float(loss.value_estimator.gamma) == pytest.approx(0.81)
    env3 = make_robomimic_env(lift_file, action_chunk=3, max_episode_steps=10)
    with pytest.raises(ConfigError, match="14 wide but the env's chunked action is 21 wide"):
        check_chunking(data, env3, 3)


def test_resume_restores_frame_counter(lift_file, tmp_path):
    run = tmp_path / "run"
    first = _train(lift_file, run, "online_frames=4", "logger.plot=false", "checkpoint.interval=4")
    assert first["frames"] == 4 and first["session_frames"] == 4
    second = _train(lift_file, tmp_path / "other", "online_frames=8", "logger.plot=false", f"resume={run}")
    # continued at frame 4: only 4 new frames collected, pre-training and offline updates not redone
    assert second["run_dir"] == str(run)
    assert second["frames"] == 8 and second["session_frames"] == 4 and second["updates"] == 8
    assert second["pretrain_steps"] == 20 and "pretrain_steps_per_s" not in second
    assert read_csv_scalar(run, "eval/success_rate")[0] == [0, 4, 8]
    assert read_csv_scalar(run, "pretrain/loss_flow_matching")[0] == [10, 20]
    # a different network config, or another size of the saved online buffer, cannot resume this run
    with pytest.raises(ConfigError, match="another env/policy/critic config"):
        _train(lift_file, tmp_path / "third", "online_frames=12", "policy.num_steps=2", f"resume={run}")
    with pytest.raises(ConfigError, match="pass online_buffer_size=100000 to resume it"):
        _train(lift_file, tmp_path / "fourth", "online_frames=12", "online_buffer_size=50", f"resume={run}")


def test_mixed_buffer_takes_exact_offline_share():
    def transitions(n, reward):
        return TensorDict({"observation": torch.zeros(n, 3), "action": torch.zeros(n, 2),
                           "next": {"observation": torch.zeros(n, 3), "reward": torch.full((n, 1), reward),
                                    "done": torch.zeros(n, 1, dtype=torch.bool),
                                    "terminated": torch.zeros(n, 1, dtype=torch.bool),
                                    "truncated": torch.zeros(n, 1, dtype=torch.bool),
                                    "success": torch.zeros(n, 1, dtype=torch.bool)}}, [n])

    offline = make_offline_buffer(transitions(50, 0.0))
    for fraction, expected_offline in ((0.25, 16), (0.0, 0), (1.0, 64)):
        rb = MixedReplayBuffer(offline, online_capacity=100, offline_fraction=fraction, batch_size=64)
        online = transitions(20, 1.0)
        online["collector_extra"] = torch.ones(20)  # dropped: not a transition key
        assert rb.sample(8)["is_offline"].all()  # no online data yet: every row is offline, whatever the fraction
        rb.extend(online)
        batch = rb.sample()
        assert batch.shape == (64,) and (batch["next", "reward"] == 0).sum() == expected_offline
        # the rows are marked: exactly the offline ones
        assert torch.equal(batch["is_offline"], batch["next", "reward"].squeeze(-1) == 0)
    schedule = LinearSchedule(1000.0, 100.0, 10)
    assert [schedule(s) for s in (0, 5, 10, 50)] == [1000.0, 550.0, 100.0, 100.0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset={missing}"], "Robomimic dataset not found"),
        (["dataset={broken}"], "is not an HDF5 file"),
        (["dataset={lift}", "policy.num_steps=0"], "policy.num_steps (K, Euler steps) must be an integer >= 1, got 0"),
        (["dataset={lift}", "offline_fraction=1.5"], "offline_fraction must be in [0, 1], got 1.5"),
        (["dataset={lift}", "policy=flow_x"], "unknown policy 'flow_x': expected one of flow_g, flow_mlp, flow_t"),
        (["dataset={lift}", "critic=td3"], "unknown critic 'td3': expected one of crossq, sac"),
    ],
)
def test_bad_input_exits_2_with_one_line(lift_file, tmp_path, overrides, message):
    broken = tmp_path / "broken.hdf5"
    broken.write_text("not hdf5")
    paths = {"missing": tmp_path / "missing.hdf5", "broken": broken, "lift": lift_file}
    proc = _run_cli(*(o.format(**paths) for o in overrides), tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_robomimic: error: ") and message in lines[0]


def test_env_side_errors_are_one_line_too(lift_file, tmp_path):
    """A file storing an observation key robosuite does not emit: the loader accepts it, the env
    builder rejects it; that is a one-line error and exit 2 as well (it was a Hydra traceback)."""
    import shutil

    import h5py

    path = tmp_path / "extra_key.hdf5"
    shutil.copy(lift_file, path)
    with h5py.File(path, "a") as f:
        for demo in f["data"]:
            for group in ("obs", "next_obs"):
                pos = f["data"][demo][group]["robot0_eef_pos"][()]
                f["data"][demo][group].create_dataset("robot0_eef_vel_lin", data=pos * 0.0)
    proc = _run_cli(f"dataset={path}", "obs_keys=[robot0_eef_pos,robot0_eef_vel_lin,object]", "pretrain_steps=1",
                    "online_frames=0", tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("[robosuite WARNING]")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("train_robomimic: error: ") and "robot0_eef_vel_lin" in lines[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy.noise_std=0", "policy.noise_std (σ) must be > 0"),
        ("policy.noise_std=-0.1", "policy.noise_std (σ) must be > 0"),
        ("action_chunk=0", "action_chunk (h, actions per chunk) must be an integer >= 1"),
        ("offline_fraction=-0.1", "offline_fraction must be in [0, 1]"),
        ("policy.velocity=lstm", "unknown policy.velocity 'lstm'"),
        ("policy.noise_std=null", "policy.noise_std (σ, fixed sampling noise) must be set"),
        ("compile_policy=fast", "compile_policy must be true, false or a torch.compile mode"),
        ("task=can", "records robosuite env 'Lift', not 'PickPlaceCan'"),
        ("critic.policy_delay=0", "critic.policy_delay must be an integer >= 1, got 0"),
    ],
)
def test_bad_config_values_raise_config_error(lift_file, tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _train(lift_file, tmp_path / "run", override)
