"""End-to-end smoke runs of ``recipes.train_mujoco``: every policy, several workers, resume,
SIGINT, and the one-line errors for bad input."""
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from recipes.train_mujoco import CONFIG_DIR, train
from torchrl_sacflow.training import ConfigError, check_group_choices, read_checkpoint_metadata, read_csv_scalar

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "env=pendulum",
    "collector.total_frames=300",
    "collector.init_random_frames=100",
    "collector.frames_per_batch=100",
    "optim.batch_size=32",
    "replay_buffer.size=2000",
    "critic.num_cells=[16,16]",
    "optim.utd_ratio=0.5",
    "eval.num_episodes=1",
    "eval.max_steps=50",
    "eval.interval=200",
    "checkpoint.interval=200",
    "logger.progress_bar=false",
    "logger.plot=false",
    "threads=1",
]
TINY = {
    "flow_t": ["policy.velocity_kwargs.d_model=16", "policy.log_std_kwargs.hidden_sizes=[16]"],
    "flow_g": ["policy.velocity_kwargs.hidden_sizes=[16]", "policy.log_std_kwargs.hidden_sizes=[16]"],
    "flow_mlp": ["policy.velocity_kwargs.hidden_sizes=[16]", "policy.log_std_kwargs.hidden_sizes=[16]"],
    "gaussian": ["policy.num_cells=[16]"],
}


def _cfg(policy="flow_t", *overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train_mujoco", overrides=[*COMMON, f"policy={policy}", *TINY[policy], *overrides])


def _cli(*args):
    return [sys.executable, "-m", "recipes.train_mujoco", *args]


@pytest.mark.parametrize("policy", list(TINY))
def test_smoke_run_every_policy_on_pendulum(policy, tmp_path):
    summary = train(_cfg(policy, "logger.log_path_grad_norms_every=50", "logger.diagnostics_every=200"), tmp_path)
    # updates start once init_random_frames are in: 3 batches x 100 frames x utd 0.5
    assert summary["frames"] == 300 and summary["updates"] == 150 and not summary["interrupted"]
    assert summary["eval_return_mean"] is not None and summary["eval_return_mean"] < 0
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == 300
    steps, returns = read_csv_scalar(tmp_path, "eval/return_mean")
    assert steps == [200, 300] and all(r < 0 for r in returns)
    for metric in ("train/loss_qvalue", "train/loss_actor", "train/alpha", "train/entropy", "eval/return_std"):
        assert read_csv_scalar(tmp_path, metric)[0], f"{metric} was not logged"
    grad_steps, _ = read_csv_scalar(tmp_path, "train/path_grad_norm_step_0")
    if policy == "gaussian":
        assert not grad_steps
    else:
        assert grad_steps == [100, 200, 300]  # after updates 50, 100, 150
        # σ and the ODE gap once the frame counter crosses a multiple of diagnostics_every (with updates)
        assert read_csv_scalar(tmp_path, "train/sigma_mean")[0] == [200]
        assert read_csv_scalar(tmp_path, "train/ode_action_gap")[0] == [200]
        assert read_csv_scalar(tmp_path, "train/path_grad_norm_step_3")[0] and \
            not read_csv_scalar(tmp_path, "train/path_grad_norm_step_4")[0]
    assert read_checkpoint_metadata(tmp_path)["frames"] == 300


def test_smoke_run_with_two_collector_workers(tmp_path):
    summary = train(_cfg("flow_g", "collector.num_workers=2", "collector.total_frames=200"), tmp_path)
    assert summary["frames"] == 200 and summary["updates"] == 100


def test_learning_curve_png_is_written(tmp_path):
    train(_cfg("gaussian", "collector.total_frames=200", "logger.plot=true"), tmp_path)
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_same_seed_reproduces_the_run_and_another_seed_does_not(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(_cfg("gaussian", "collector.total_frames=200", f"seed={seed}"), tmp_path / name)
        runs[name] = [read_csv_scalar(tmp_path / name, m)[1] for m in
                      ("train/episode_return", "train/loss_qvalue", "eval/return_mean")]
    assert runs["a"] == runs["b"]  # every logged value, exactly (the first episode included)
    assert runs["a"] != runs["c"]


def _component_state(run_dir, name):
    path = next((run_dir / "checkpoint" / "components").glob(f"*-{name}")) / "state.pt"
    return torch.load(path, weights_only=True)


def _assert_equal(x, y):
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            _assert_equal(x[k], y[k])
    elif isinstance(x, (list, tuple)):
        for a, b in zip(x, y, strict=True):
            _assert_equal(a, b)
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y)
    else:
        assert x == y


def test_resume_continues_frame_counter_and_loads_every_state(tmp_path):
    first = train(_cfg("flow_t", "collector.total_frames=200", "critic.policy_delay=2"), tmp_path)
    assert first["frames"] == 200 and first["updates"] == 100
    saved = {n: _component_state(tmp_path, n)
             for n in ("loss_module", "actor_optim", "critic_optim", "alpha_optim", "update_step", "policy")}

    # Resuming a finished run trains nothing: the checkpoint it re-saves must equal what it loaded.
    again = train(_cfg("flow_t", "collector.total_frames=200", "critic.policy_delay=2", f"resume={tmp_path}"), "unused")
    assert again["frames"] == 200 and again["updates"] == 100 and again["run_dir"] == str(tmp_path)
    for name, state in saved.items():
        _assert_equal(state, _component_state(tmp_path, name))

    # Continuing to a larger budget ends at the same counters as one uninterrupted 300-frame run.
    resumed = train(_cfg("flow_t", "collector.total_frames=300", "critic.policy_delay=2", f"resume={tmp_path}"), "x")
    assert resumed["frames"] == 300 and resumed["updates"] == 150
    assert _component_state(tmp_path, "update_step")["num_calls"] == 150
    steps, _ = read_csv_scalar(tmp_path, "eval/return_mean")
    assert steps == [200, 300]


def test_resume_from_another_config_is_refused(tmp_path):
    train(_cfg("flow_t", "collector.total_frames=100"), tmp_path)
    with pytest.raises(ConfigError, match="policy.velocity_kwargs.d_model=16 \\(now 32\\)"):
        train(_cfg("flow_t", "policy.velocity_kwargs.d_model=32", f"resume={tmp_path}"), "x")


def _signal_once_updating(args, run_dir, signum, *, process_group=False, start_timeout=120):
    """Run the recipe CLI, send ``signum`` once its first round of updates is logged; return
    ``(process, output, seconds from the signal to the exit)``. ``process_group``: the CLI in a
    session of its own and the signal sent to its whole process group, as a terminal's Ctrl-C is
    (the collector's worker processes get it too)."""
    proc = subprocess.Popen(_cli(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=process_group)
    send = functools.partial(os.killpg, proc.pid) if process_group else proc.send_signal
    try:
        deadline = time.time() + start_timeout
        while not (run_dir / "logs" / "scalars" / "train" / "loss_qvalue.csv").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the run never started updating"
            time.sleep(0.2)
        sent = time.time()
        send(signum)
        output, _ = proc.communicate(timeout=120)
        return proc, output, time.time() - sent
    finally:
        if proc.poll() is None:
            send(signal.SIGKILL)


def test_sigint_saves_checkpoint_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = [*COMMON, "policy=gaussian", *TINY["gaussian"], "collector.total_frames=100000",
            "checkpoint.interval=0", "eval.interval=0", f"hydra.run.dir={run_dir}"]
    proc, output, _ = _signal_once_updating(args, run_dir, signal.SIGINT)
    assert proc.returncode == 130, output
    assert "interrupted:" in output and "Traceback" not in output
    frames = read_checkpoint_metadata(run_dir)["frames"]
    assert 100 <= frames < 100000 and frames % 100 == 0
    summary = train(_cfg("gaussian", f"collector.total_frames={frames + 100}", f"resume={run_dir}"), "x")
    assert summary["frames"] == frames + 100 and not summary["interrupted"]
    # updates cut short by the signal are owed, not lost: 50 per 100-frame batch, as if never stopped
    assert summary["updates"] == (frames + 100) // 2


def test_sigterm_mid_round_exits_within_seconds_without_a_new_evaluation(tmp_path):
    """A scheduler's SIGTERM during an update round: the round stops, the evaluation that was due
    is not started (here it would take tens of seconds), the checkpoint is written, exit 130."""
    run_dir = tmp_path / "run"
    args = [*COMMON, "policy=gaussian", *TINY["gaussian"], "collector.total_frames=100000",
            "collector.frames_per_batch=100", "collector.init_random_frames=100", "optim.utd_ratio=30",
            "eval.interval=200", "eval.num_episodes=300", "eval.max_steps=200", "checkpoint.interval=0",
            f"hydra.run.dir={run_dir}"]
    # the signal comes once the first round (frame 100) is logged: the second (3000 updates) runs,
    # and an evaluation is due after it
    proc, output, exit_s = _signal_once_updating(args, run_dir, signal.SIGTERM)
    assert proc.returncode == 130, output
    assert exit_s < 15, f"took {exit_s:.1f} s to exit after SIGTERM"
    assert not read_csv_scalar(run_dir, "eval/return_mean")[0]  # no evaluation started after the request
    assert read_checkpoint_metadata(run_dir)["frames"] == 200


BAD_INPUTS = {  # name: (overrides, expected message)
    "env id": (["env.version=v9"], "unknown env id 'Pendulum-v9'"),
    "env option": (["env=cartpole"], "unknown env 'cartpole'"),
    "policy name": (["policy=flow_x"], "unknown policy 'flow_x'"),
    "K < 1": (["policy.num_steps=0"], "policy.num_steps (K, Euler steps) must be an integer >= 1"),
    "negative sigma": (["policy.noise_std=-0.1"], "policy.noise_std (σ) must be > 0"),
    "missing resume dir": (["resume={tmp}/nope"], "does not exist"),
    "other config": (["policy.num_steps=2", "resume={good}"], "another env/policy/critic config"),
    "compile mode": (["optim.compile=fastest"], "optim.compile must be true, false or a torch.compile mode"),
    "collector compile": (["collector.compile_policy=1"], "collector.compile_policy must be true, false or"),
    "autocast": (["optim.autocast=fp16"], "optim.autocast must be null or bf16, got 'fp16'"),
    "alpha objective": (["optim.alpha_objective=alpha2"], "optim.alpha_objective must be log_alpha or alpha"),
    "alpha entropy": (["optim.alpha_entropy=post_tanh"], "optim.alpha_entropy must be action or pre_tanh"),
    "velocity init": (["+policy.velocity_kwargs.init=xavier"], "init must be one of"),
    "log-prob kind": (["policy.log_prob=marginal"], "unknown policy.log_prob 'marginal'"),
    "sigma head on gru": (["policy.velocity=gru", "policy.sigma_head=velocity"], "policy.sigma_head=velocity needs"),
    "velocity option": (["policy.velocity=gru"], "'num_layers'] are not options of the gru velocity"),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished")
    train(_cfg("flow_t", "collector.total_frames=100"), run_dir)
    return run_dir


def _bad_overrides(name, tmp_path, good):
    return [o.format(tmp=tmp_path, good=good) for o in BAD_INPUTS[name][0]]


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_message(name, tmp_path, finished_run):
    """Every bad input is a ConfigError with its one-line message (checked in-process: fast)."""
    overrides = _bad_overrides(name, tmp_path, finished_run)
    with pytest.raises(ConfigError) as err:
        group_choices = [o for o in overrides if o.startswith(("env=", "policy="))]
        if group_choices:  # what the CLI checks before hydra composes the config
            check_group_choices(group_choices, CONFIG_DIR)
        train(_cfg("flow_t", *overrides), tmp_path / "run")
    assert BAD_INPUTS[name][1] in str(err.value) and "\n" not in str(err.value)


def test_compile_without_a_cpp_compiler_fails_before_training(tmp_path, no_cpp_compiler):
    with pytest.raises(ConfigError, match="optim.compile=true needs a C\\+\\+ compiler") as err:
        train(_cfg("flow_t", "optim.compile=true"), tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing started


def test_bad_inputs_exit_2_with_one_line_on_the_command_line(tmp_path, finished_run):
    """The CLI turns them into `train_mujoco: error: ...` on stderr and exit code 2, no traceback:
    a group choice (checked before hydra), a value and a resume mismatch (checked in train)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    names = ["env option", "K < 1", "other config"]
    procs = {
        name: subprocess.Popen(
            _cli(*COMMON, *TINY["flow_t"], *_bad_overrides(name, tmp_path, finished_run),
                 f"hydra.run.dir={tmp_path / f'case{i}'}"),
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, name in enumerate(names)
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, f"{name}: rc={proc.returncode}\n{err}"
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("train_mujoco: error: "), f"{name}: {err!r}"
        assert BAD_INPUTS[name][1] in lines[0], f"{name}: {lines[0]!r}"
        assert "Traceback" not in out + err


def test_load_trained_policy_acts_like_the_run(tmp_path):
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_sacflow.training import load_trained_policy

    train(_cfg("flow_t", "collector.total_frames=100"), tmp_path)
    actor, env = load_trained_policy(tmp_path)
    saved = torch.load(next((tmp_path / "checkpoint" / "components").glob("*-policy")) / "state.pt")
    for key, value in actor.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.rollout(5, actor)
    assert td["action"].shape == (5, 1)
    with pytest.raises(ConfigError, match="holds no finished run"):
        load_trained_policy(tmp_path / "nope")


@pytest.mark.parametrize("env, expected", [
    ({}, "3000"),                                # the recipes' default (benchmarks/results/learner_threads.md)
    ({"GOMP_SPINCOUNT": "7"}, "7"),              # a user's own spin count is kept
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "unset"),   # so is a user's wait policy (no spin count added)
])
def test_recipes_set_the_openmp_spin_count_before_torch_loads_unless_the_user_chose(env, expected):
    code = "import os, sys, recipes; print(os.environ.get('GOMP_SPINCOUNT', 'unset')); print('torch' in sys.modules)"
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [expected, "False"]  # set before torch (and with it libgomp) is imported
