"""``algo=sac_flow|fql|qc_fql|bc`` of the offline-to-online recipe: every phase of FQL and QC-FQL on
the same data, buffers, chunked env, evaluation and checkpoints as SAC Flow; BC stops after
pre-training; resume; bad settings are one line and exit 2.

Tiny networks, generated OGBench play data (60 transitions), 20-step episodes: ~1 min on 2 cores.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from torchrl_sacflow.training import ConfigError, read_csv_scalar
from torchrl_sacflow.training.offline_online import check_offline_online_config

pytest.importorskip("ogbench")

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning"),  # ogbench's action Box
    pytest.mark.filterwarnings("ignore:.*DISPLAY environment variable is missing"),  # glfw, imported by ogbench
]

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "recipes" / "config"
TINY = [
    "dataset=ogbench", "ogbench.transitions=60", "policy=flow_g", "policy.velocity_kwargs.hidden_sizes=[16]",
    "fql.actor_cells=[16]", "critic.num_cells=[32,32]", "batch_size=16", "pretrain_steps=20", "offline_steps=4",
    "online_frames=8", "frames_per_batch=4", "max_episode_steps=20", "eval.num_episodes=1", "eval.interval=4",
    "logger.log_interval=10", "logger.progress_bar=false", "logger.plot=false", "threads=1",
]
ALGOS = {"fql": ["algo=fql", "action_chunk=1"], "qc_fql": ["algo=qc_fql", "action_chunk=2"]}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train_offline_online", overrides=list(overrides))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


def _train(data_dir: Path, run_dir: Path, *overrides: str) -> dict:
    from recipes.train_offline_online import train

    return train(_compose(*TINY, f"datasets_dir={data_dir}", *overrides), run_dir)


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_fql_trains_through_every_phase(algo, data_dir, tmp_path):
    run = tmp_path / "run"
    summary = _train(data_dir, run, *ALGOS[algo], "checkpoint.interval=4")
    h = 1 if algo == "fql" else 2
    assert summary["algo"] == algo and summary["phase"] == "online"
    # pre-training: the behaviour flow by flow matching and the one-step policy by distillation
    assert read_csv_scalar(run, "pretrain/loss_flow_matching")[0] == [10, 20]
    distill = read_csv_scalar(run, "pretrain/distill_loss")[1]
    assert len(distill) == 2 and all(torch.isfinite(torch.tensor(distill)))
    assert read_csv_scalar(run, "pretrain/eval_success_rate")[0] == [20]
    # offline and online: the whole FQL loss (critic, flow, distillation + Q)
    for key in ("loss_qvalue", "loss_flow", "distill_loss", "q_loss"):
        assert read_csv_scalar(run, f"offline/{key}")[0] == [4], key
        assert read_csv_scalar(run, f"train/{key}")[0] == [4, 8], key
    assert read_csv_scalar(run, "eval/success_rate")[0] == [0, 4, 8]
    assert read_csv_scalar(run, "train/beta")[0] == []  # FQL has no proximity term: no β logged
    assert summary["frames"] == 8 and summary["updates"] == 8 and summary["offline_steps"] == 4
    chunking = summary["chunking"]
    assert chunking["env_action_width"] == chunking["online_action_width"] == chunking["offline_action_width"] == 5 * h
    assert chunking["critic_gamma"] == pytest.approx(0.99 ** h)
    assert 0.0 <= summary["final_success_rate"] <= 1.0

    # resume continues the online phase from the checkpoint; another algo cannot resume it
    second = _train(data_dir, tmp_path / "other", *ALGOS[algo], "online_frames=12", f"resume={run}")
    assert second["frames"] == 12 and second["session_frames"] == 4 and second["pretrain_steps"] == 20
    assert read_csv_scalar(run, "train/loss_qvalue")[0] == [4, 8, 12]
    other = "qc_fql" if algo == "fql" else "fql"
    with pytest.raises(ConfigError, match="another env/policy/critic config: .*algo="):
        _train(data_dir, tmp_path / "third", *ALGOS[other], "online_frames=16", f"resume={run}")


def test_fql_acting_policy_is_the_clipped_one_step_policy(data_dir, tmp_path):
    """The collector's policy is z ~ N(0, I) -> μ_ω(s, z) clipped to [-1, 1], the loss's own network."""
    from torchrl_sacflow.training.offline_online import make_learner

    cfg = OmegaConf.to_container(_compose(*TINY, *ALGOS["qc_fql"]), resolve=True)
    check_offline_online_config(cfg)
    from torchrl.data import Bounded

    spec = Bounded(-1.0, 1.0, shape=(10,))
    learner = make_learner(cfg, spec, observation_dim=7, action_width=10)
    from tensordict import TensorDict

    td = TensorDict({"observation": torch.randn(64, 7) * 100}, [64])
    out = learner.policy(td)
    assert out["action"].shape == (64, 10) and out["action"].abs().max() <= 1.0
    assert out["flow_noise"].std() == pytest.approx(1.0, abs=0.15)
    one_step = learner.loss.actor_network.module(td["observation"], out["flow_noise"])
    torch.testing.assert_close(out["action"], one_step.clamp(-1, 1))
    assert (one_step.abs() > 1).any()  # the clip was needed: an unbounded network on large inputs
    with pytest.raises(ConfigError, match=re.escape("algo=fql/qc_fql acts in [-1, 1]")):
        make_learner(cfg, Bounded(-2.0, 2.0, shape=(10,)), observation_dim=7, action_width=10)


def test_bc_stops_after_pre_training(data_dir, tmp_path, capsys):
    from benchmarks.offline_to_online import action_errors

    run = tmp_path / "run"
    summary = _train(data_dir, run, "algo=bc", "action_chunk=2")
    assert summary["algo"] == "bc" and summary["phase"] == "done"
    assert summary["offline_steps"] == 0 and summary["frames"] == 0 and summary["updates"] == 0
    assert summary["final_success_rate"] == summary["success_rate_after_pretrain"] is not None
    assert read_csv_scalar(run, "pretrain/loss_flow_matching")[0] == [10, 20]
    assert read_csv_scalar(run, "offline/loss_qvalue")[0] == []
    # the benchmark's per-entry action error of the saved policy: one value per primitive action entry
    capsys.readouterr()
    action_errors([run], every=1)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{run}: ")
    errors = [float(x) for x in line.split(": ", 1)[1].split()]
    assert len(errors) == 5 and all(0.0 < e < 2.0 for e in errors)  # cube actions: 5 entries in [-1, 1]


@pytest.mark.parametrize("overrides, message", [
    (["algo=ppo"], "unknown algo 'ppo': expected one of sac_flow, fql, qc_fql, bc"),
    (["algo=fql", "action_chunk=5"], "algo=fql acts one action at a time: set action_chunk=1 (got 5)"),
    (["algo=qc_fql", "action_chunk=1"], "algo=qc_fql needs action_chunk > 1"),
    (["algo=qc_fql", "critic=crossq"], "algo=qc_fql needs critic=sac"),
    (["algo=qc_fql", "fql.q_agg=max"], "fql.q_agg must be 'mean' or 'min', got 'max'"),
    (["algo=qc_fql", "fql.alpha=-1"], "fql.alpha must be >= 0, got -1"),
    (["algo=qc_fql", "fql.actor_cells=[]"], "fql.actor_cells must be a non-empty list of positive integers"),
])
def test_bad_algo_settings_are_one_line(overrides, message):
    cfg = OmegaConf.to_container(_compose(*overrides), resolve=True)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_offline_online_config(cfg)


def test_bad_algo_on_the_command_line_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recipes.train_offline_online", "algo=ppo",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert lines[-1] == "train_offline_online: error: unknown algo 'ppo': expected one of sac_flow, fql, qc_fql, bc"
    assert "Traceback" not in proc.stderr
