"""Runs that survive anything (issue 28): an exact resume, run directories never mixed, a checkpoint
that outlives a kill at any instant, and loaders that let no non-finite value in."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from recipes.train_mujoco import CONFIG_DIR, train
from torchrl_sacflow.training import (
    ConfigError,
    has_checkpoint,
    is_complete_checkpoint,
    read_checkpoint_metadata,
    read_csv_scalar,
    recover_checkpoint,
)
from torchrl_sacflow.training.loggers import csv_scalar_dir

REPO = Path(__file__).resolve().parents[1]

# Pendulum episodes are 200 steps: checkpoints at 150 or 250 frames fall mid-episode
TINY = [
    "env=pendulum", "policy=flow_t", "policy.velocity_kwargs.d_model=16", "policy.log_std_kwargs.hidden_sizes=[16]",
    "critic.num_cells=[16,16]", "collector.init_random_frames=100", "collector.frames_per_batch=50",
    "optim.batch_size=32", "optim.utd_ratio=0.5", "replay_buffer.size=2000", "eval.num_episodes=1",
    "eval.max_steps=30", "eval.interval=150", "checkpoint.interval=50", "logger.progress_bar=false",
    "logger.plot=false", "threads=1",
]


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train_mujoco", overrides=[*TINY, *overrides])


def _cli(*args):
    return [sys.executable, "-m", "recipes.train_mujoco", *TINY, *args]


def _components(run_dir, names=("loss_module", "actor_optim", "critic_optim", "alpha_optim", "update_step",
                                "train_env_state", "eval_env_state")):
    root = run_dir / "checkpoint" / "components"
    return {n: torch.load(next(root.glob(f"*-{n}")) / "state.pt", weights_only=True) for n in names}


def _scalars(run_dir):
    """Every logged scalar but the wall-clock ones: ``{metric: [(step, value), ...]}``."""
    root = csv_scalar_dir(run_dir)
    out = {}
    for path in sorted(root.rglob("*.csv")):
        metric = path.relative_to(root).with_suffix("").as_posix()
        if not metric.startswith("time/"):
            out[metric] = list(zip(*read_csv_scalar(run_dir, metric)))
    return out


def _assert_same(x, y, where=""):
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _assert_same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (a, b) in enumerate(zip(x, y)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    else:
        assert x == y, where


def _assert_runs_identical(a, b):
    _assert_same(_components(a), _components(b), "checkpoint")
    scalars_a, scalars_b = _scalars(a), _scalars(b)
    assert scalars_a["train/episode_return"] and scalars_a["eval/return_mean"]
    _assert_same(scalars_a, scalars_b, "scalars")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The 300-frame run left alone."""
    run_dir = tmp_path_factory.mktemp("alone")
    train(_cfg("collector.total_frames=300"), run_dir)
    return run_dir


def test_resume_from_a_mid_episode_checkpoint_ends_bit_identical(reference_run, tmp_path):
    """Stop at 150 frames (mid-episode: Pendulum episodes are 200 steps), resume to 300: weights,
    optimiser states, env states and every logged scalar equal the run left alone. Before the env
    state was checkpointed the resumed collector re-seeded its env and started a new episode, and
    this failed from the first transition after the resume."""
    train(_cfg("collector.total_frames=150"), tmp_path)
    assert read_checkpoint_metadata(tmp_path)["frames"] == 150
    train(_cfg("collector.total_frames=300", f"resume={tmp_path}"), "unused")
    _assert_runs_identical(reference_run, tmp_path)


class _SignalAtUpdate:
    """Wraps the recipe's ``SACUpdate``: sends this process a SIGINT during its ``at``-th call."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, cls):
        outer = self

        class Update(cls):
            def __call__(self, batch):
                outer.calls += 1
                if outer.calls == outer.at:
                    os.kill(os.getpid(), signal.SIGINT)
                return super().__call__(batch)

        return Update


# rounds of 25 updates (50 frames x utd 0.5) from frame 100; evaluations due at 150 and 300
@pytest.mark.parametrize("at, case", [(37, "mid-round"), (50, "last update of a round whose eval is due"),
                                      (25, "end of a round")])
def test_resume_after_sigint_ends_bit_identical(reference_run, tmp_path, monkeypatch, at, case):
    """A SIGINT (here sent during the ``at``-th update): the run checkpoints what the stop left of its
    round (updates owed, the running metric sums, an evaluation that was due), the resumed run finishes
    that first, and weights, optimisers, env states and every logged scalar equal the run left alone."""
    import recipes.train_mujoco as recipe

    monkeypatch.setattr(recipe, "SACUpdate", _SignalAtUpdate(at)(recipe.SACUpdate))
    first = train(_cfg("collector.total_frames=300"), tmp_path)
    assert first["interrupted"] and first["updates"] == at
    monkeypatch.undo()
    train(_cfg("collector.total_frames=300", f"resume={tmp_path}"), "unused")
    _assert_runs_identical(reference_run, tmp_path)


def test_fresh_run_into_a_used_run_dir_is_refused(reference_run, tmp_path):
    run_dir = tmp_path / "used"
    shutil.copytree(reference_run, run_dir)
    before = (run_dir / "summary.json").read_text(), _scalars(run_dir)
    with pytest.raises(ConfigError) as err:
        train(_cfg("collector.total_frames=300"), run_dir)
    message = str(err.value)
    assert "already holds a run" in message and f"resume={run_dir}" in message and "hydra.run.dir" in message
    assert "\n" not in message
    assert ((run_dir / "summary.json").read_text(), _scalars(run_dir)) == before  # nothing touched


def test_fresh_run_into_a_used_run_dir_exits_2_with_one_line(reference_run, tmp_path):
    run_dir = tmp_path / "used"
    shutil.copytree(reference_run, run_dir)
    proc = subprocess.run(_cli("collector.total_frames=300", f"hydra.run.dir={run_dir}"), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("train_mujoco: error: run directory") and "resume=" in lines[0]


def test_default_run_dir_names_cannot_collide():
    """Two jobs started in the same second get different folders: the default name carries the
    microseconds and the process id (it had one-second resolution)."""
    code = ("from hydra import compose, initialize_config_dir; import recipes.train_mujoco as r; "
            "from omegaconf import OmegaConf\n"
            "with initialize_config_dir(config_dir=str(r.CONFIG_DIR), version_base='1.3'):\n"
            "    cfg = compose('train_mujoco', return_hydra_config=True)\n"
            "print(cfg.hydra.run.dir)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    names = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(n.startswith("outputs/InvertedPendulum-v4_flow_t_seed0_") for n in names), names
    assert names[0] != names[1]
    assert all(n.endswith(f"-p{p.pid}") for n, p in zip(names, procs))


def _publish_window_copy(reference_run, tmp_path):
    """A run folder as a kill between TorchRL's two renames leaves it: no checkpoint/, a complete backup."""
    run_dir = tmp_path / "killed"
    shutil.copytree(reference_run, run_dir)
    (run_dir / "summary.json").unlink()
    os.replace(run_dir / "checkpoint", run_dir / ".checkpoint.backup-0123abcd")
    return run_dir


def test_resume_adopts_the_backup_a_kill_in_the_publish_window_leaves(reference_run, tmp_path):
    run_dir = _publish_window_copy(reference_run, tmp_path)
    # a partial backup (a kill while one was deleted) and a staging folder without a manifest
    partial = run_dir / ".checkpoint.backup-deadbeef"
    shutil.copytree(run_dir / ".checkpoint.backup-0123abcd", partial)
    next((partial / "components").glob("*-loss_module")).joinpath("state.pt").unlink()
    (run_dir / ".checkpoint.stage-feed").mkdir()
    assert not is_complete_checkpoint(partial) and is_complete_checkpoint(run_dir / ".checkpoint.backup-0123abcd")
    assert has_checkpoint(run_dir)
    summary = train(_cfg("collector.total_frames=350", f"resume={run_dir}"), "unused")
    assert summary["frames"] == 350
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".checkpoint")) == []
    assert read_checkpoint_metadata(run_dir)["frames"] == 350


def test_recover_prefers_the_newest_complete_checkpoint(reference_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    newer = run_dir / ".checkpoint.stage-newer"
    shutil.copytree(run_dir / "checkpoint", newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["metadata"]["frames"] = 350
    (newer / "manifest.json").write_text(json.dumps(manifest))
    assert recover_checkpoint(run_dir, verbose=False) == run_dir / "checkpoint"
    assert read_checkpoint_metadata(run_dir)["frames"] == 350 and not newer.exists()


def test_a_run_dir_with_only_partial_backups_has_no_checkpoint(reference_run, tmp_path):
    run_dir = _publish_window_copy(reference_run, tmp_path)
    (run_dir / ".checkpoint.backup-0123abcd" / "manifest.json").unlink()
    assert not has_checkpoint(run_dir) and recover_checkpoint(run_dir, verbose=False) is None
    with pytest.raises(ConfigError, match="has no complete checkpoint"):
        train(_cfg(f"resume={run_dir}"), "unused")


def _steps_strictly_increase(run_dir):
    for metric, rows in _scalars(run_dir).items():
        steps = [s for s, _ in rows]
        assert steps == sorted(set(steps)), f"{metric}: {steps}"


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path):
    """kill -9 at random moments (4 kills), each followed by a resume: every resume is accepted, at most
    one checkpoint interval (50 frames) is lost per kill, and every CSV log has strictly increasing steps."""
    run_dir = tmp_path / "run"
    rng = random.Random(1234)
    args = ["collector.total_frames=600", "checkpoint.interval=50", f"hydra.run.dir={run_dir}"]
    frames_seen = 0
    for kill in range(4):
        if run_dir.exists() and not has_checkpoint(run_dir):  # killed before its first checkpoint
            shutil.rmtree(run_dir)
        extra = [f"resume={run_dir}"] if has_checkpoint(run_dir) else []
        proc = subprocess.Popen(_cli(*args, *extra), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.time() + 120
        # wait for progress past the last checkpoint, then kill at a random moment of the next rounds
        while True:
            assert proc.poll() is None or proc.returncode == 0, proc.stderr.read()
            if proc.poll() == 0:
                break
            frames = _last_logged_frame(run_dir)
            if frames is not None and frames > frames_seen:
                break
            assert time.time() < deadline, "no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        logged = _last_logged_frame(run_dir) or 0
        if has_checkpoint(run_dir):
            recover_checkpoint(run_dir, verbose=False)
            saved = read_checkpoint_metadata(run_dir)["frames"]
            assert logged - saved <= 50, (logged, saved)  # at most one checkpoint interval lost
            frames_seen = saved
        _steps_strictly_increase(run_dir)
    summary = train(_cfg("collector.total_frames=600", f"resume={run_dir}"), "unused")
    assert summary["frames"] == 600 and not summary["interrupted"]
    _steps_strictly_increase(run_dir)
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".checkpoint")] == []


def _last_logged_frame(run_dir):
    steps, _ = read_csv_scalar(run_dir, "time/frames_per_s")
    return steps[-1] if steps else None
