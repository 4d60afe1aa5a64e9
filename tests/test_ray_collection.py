"""Collection on Ray (``collector.backend=ray``): TorchRL's ``RayCollector`` behind ``make_collector``
and the MuJoCo recipe, on a local Ray of 2 CPUs with 2 workers.

Ray is part of the ``dev`` extra, so it is imported outright: a missing Ray fails here, it is not
skipped. A Ray start costs ~10 s and each collector's workers 15-25 s on a busy 2-core machine
(they import torch and TorchRL), so the file builds four: the recipe's two (Ctrl-C, then a
resume), and two on one Ray for the weight checks.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
import ray
import torch
from torch import nn

from recipes.train_mujoco import train
from torchrl_sacflow.training import (
    ConfigError,
    env_maker,
    make_collector,
    make_env,
    make_gaussian_actor,
    read_checkpoint_metadata,
    read_csv_scalar,
)
from torchrl_sacflow.training.config import check_collector_backend

from test_train_mujoco import COMMON, TINY, _cfg, _signal_once_updating

RAY = ["collector.backend=ray", "collector.num_workers=2"]
PENDULUM_BOUND = 2.0  # Pendulum-v1 torques lie in [-2, 2]


def _ray_processes() -> set[int]:
    """Pids of Ray's processes on this machine (gcs_server, raylet, agents, ``ray::`` workers)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        if cmdline.startswith("ray::") or "/site-packages/ray/" in cmdline:
            pids.add(int(entry.name))
    return pids


def _assert_no_new_ray_process(before: set[int], timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while (left := _ray_processes() - before) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left behind: {sorted(left)}"


def test_recipe_on_ray_stops_cleanly_on_ctrl_c_and_resumes_to_the_same_frame_count(tmp_path):
    """The recipe CLI with 2 Ray workers, Ctrl-C'd (SIGINT to its whole process group, as a terminal
    sends it) once it is updating: exit 130, a checkpoint, no Ray process left. Resumed (in this
    process, asynchronous collection) it ends at the frame and update counts of an uninterrupted run,
    and shuts down the Ray it started."""
    assert not ray.is_initialized()
    before = _ray_processes()
    run_dir = tmp_path / "run"
    args = [*COMMON, "policy=flow_t", *TINY["flow_t"], *RAY, "collector.total_frames=100000",
            "checkpoint.interval=0", "eval.interval=0", f"hydra.run.dir={run_dir}"]
    proc, output, _ = _signal_once_updating(args, run_dir, signal.SIGINT, process_group=True, start_timeout=150)
    assert proc.returncode == 130, output
    assert "interrupted:" in output and "Traceback" not in output
    _assert_no_new_ray_process(before)
    frames = read_checkpoint_metadata(run_dir)["frames"]
    assert 100 <= frames < 100000 and frames % 100 == 0
    # the batches are the recipe's 100 frames (the two workers' halves stacked), logged with their updates
    steps = read_csv_scalar(run_dir, "train/loss_qvalue")[0]
    assert steps[0] == 100 and set(steps) <= set(range(100, frames + 100, 100))

    target = frames + 100
    summary = train(_cfg("flow_t", *RAY, "collector.sync=false", f"collector.total_frames={target}",
                         "eval.interval=0", f"resume={run_dir}"), "unused")
    assert summary["frames"] == target and not summary["interrupted"]
    assert summary["updates"] == target // 2  # utd 0.5 from frame 100 on, as if never stopped
    assert read_checkpoint_metadata(run_dir)["frames"] == target
    assert read_csv_scalar(run_dir, "eval/return_mean")[0] == [target]
    assert not ray.is_initialized()
    _assert_no_new_ray_process(before)


def _saturate(actor: nn.Module, sign: float) -> None:
    """Weights making every action ``sign * 2``: zero weights, the Tanh-Normal's loc bias at
    ``sign * 20`` and its scale at ~1e-4 (the last Linear's outputs are ``[loc, scale]``)."""
    last = [m for m in actor.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        for p in actor.parameters():
            p.zero_()
        last.bias[0], last.bias[1] = 20.0 * sign, -30.0


def _all_at(batch, value: float) -> bool:
    return bool(torch.allclose(batch["action"], torch.full_like(batch["action"], value), atol=1e-3))


@pytest.fixture
def local_ray():
    """A Ray runtime this test starts (2 CPUs) and stops: the collectors must leave it running."""
    before = _ray_processes()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
    _assert_no_new_ray_process(before)


def test_workers_act_at_random_first_then_with_the_weights_pushed_to_them(local_ray):
    env = make_env("Pendulum-v1")
    actor = make_gaussian_actor(env.action_spec, 3, num_cells=(8,))
    _saturate(actor, +1)

    # synchronous: one 50-frame rollout per worker, stacked; weights pushed by update_policy_weights_
    collector = make_collector(env_maker("Pendulum-v1"), actor, total_frames=300, frames_per_batch=100,
                               init_random_frames=100, num_workers=2, seed=0, backend="ray")
    batches = iter(collector)
    first = next(batches)
    assert first.shape == (2, 50)
    # init_random_frames: uniform in [-2, 2] (std 1.15), not the policy's constant +2
    assert first["action"].std() > 0.5 and not _all_at(first, PENDULUM_BOUND)
    assert _all_at(next(batches), PENDULUM_BOUND)  # the weights the collector was built with
    _saturate(actor, -1)
    collector.update_policy_weights_()
    third = next(batches)
    assert _all_at(third, -PENDULUM_BOUND)
    # the workers' actions are what the learner's actor does on the same observations
    local = actor(third.select("observation").reshape(-1).clone())["action"]
    torch.testing.assert_close(third["action"].reshape(-1, 1), local, atol=1e-3, rtol=0)
    assert next(batches, None) is None  # 300 frames delivered
    collector.shutdown()
    assert ray.is_initialized()  # a runtime the collector did not start is left alone

    # asynchronous (one worker: a deterministic order): the collector pushes the learner's current
    # weights to a worker as it hands that worker's batch over, without an explicit call
    _saturate(actor, +1)
    collector = make_collector(env_maker("Pendulum-v1"), actor, total_frames=300, frames_per_batch=100,
                               num_workers=1, seed=0, backend="ray", sync=False)
    batches = iter(collector)
    assert _all_at(next(batches), PENDULUM_BOUND)
    _saturate(actor, -1)
    second = next(batches)
    assert second.shape == (100,) and _all_at(second, -PENDULUM_BOUND)
    collector.shutdown()
    assert ray.is_initialized()


BAD_SETTINGS = {  # name: (check_collector_backend arguments, expected message)
    "backend": ((("spark",), {}), "unknown collector.backend 'spark': expected one of local, ray"),
    "sync value": ((("ray",), {"sync": "yes"}), "collector.sync must be true or false, got 'yes'"),
    "local async": ((("local",), {"sync": False}), "collector.sync=false (asynchronous collection) needs"),
    "local address": ((("local",), {"ray_address": "127.0.0.1:6379"}), "collector.ray_address=127.0.0.1:6379 needs"),
    "empty address": ((("ray",), {"ray_address": " "}), "collector.ray_address must be a Ray cluster address"),
    "cuda": ((("ray",), {"device": "cuda"}), "collector.backend=ray runs its workers' policy on CPU"),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_backend_settings_are_one_line_config_errors(name):
    (args, kwargs), message = BAD_SETTINGS[name]
    with pytest.raises(ConfigError) as err:
        check_collector_backend(*args, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ray_backend_without_ray_names_the_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError) as err:
        train(_cfg("flow_t", *RAY), tmp_path / "run")
    assert 'collector.backend=ray needs Ray' in str(err.value) and 'pip install -e ".[ray]"' in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs Ray"):
        make_collector(env_maker("Pendulum-v1"), None, total_frames=10, frames_per_batch=10, backend="ray")
    check_collector_backend("local")  # the default backend does not need it
