"""The shared training pieces: the update step's schedule, checkpoint round trips, threads,
config checks, CSV logs and plots."""
import os
import signal

import pytest
import torch
from torchrl.data import Bounded

from torchrl_sacflow.training import (
    ConfigError,
    SACUpdate,
    check_group_choices,
    config_fingerprint,
    load_checkpoint,
    make_checkpoint,
    make_env,
    make_loss,
    make_optimizers,
    make_policy,
    make_replay_buffer,
    read_csv_scalar,
    resolve_num_threads,
    save_checkpoint,
    truncate_csv_logs,
    evaluate,
)
from torchrl_sacflow.training.loggers import csv_scalar_dir
from torchrl_sacflow.training.signals import StopOnSignal
from torchrl_sacflow.training.threads import available_cores, resolve_device, seed_everything

from _batches import random_transitions

N_OBS, N_ACT = 3, 2
SPEC = Bounded(-2.0, 2.0, shape=(N_ACT,))
POLICIES = {
    "flow_t": {"name": "flow_t", "kind": "flow", "velocity": "transformer", "num_steps": 3, "noise_std": None,
               "velocity_kwargs": {"d_model": 16}, "log_std_kwargs": {"hidden_sizes": [16]}},
    "flow_g": {"name": "flow_g", "kind": "flow", "velocity": "gru", "num_steps": 3, "noise_std": None,
               "velocity_kwargs": {"hidden_sizes": [16]}, "log_std_kwargs": {"hidden_sizes": [16]}},
    "flow_mlp": {"name": "flow_mlp", "kind": "flow", "velocity": "mlp", "num_steps": 3, "noise_std": None,
                 "velocity_kwargs": {"hidden_sizes": [16]}, "log_std_kwargs": {"hidden_sizes": [16]}},
    "gaussian": {"name": "gaussian", "kind": "gaussian", "num_cells": [16]},
}
CRITIC = {"name": "sac", "num_cells": [16, 16], "tau": 0.005, "policy_delay": 1}


def _batch(n=32, seed=0):
    return random_transitions(n, N_OBS, SPEC, seed=seed)


def _build(policy="flow_t", policy_delay=1, seed=0, critic=CRITIC):
    torch.manual_seed(seed)
    actor = make_policy(POLICIES[policy], SPEC, N_OBS)
    bundle = make_loss({**critic, "policy_delay": policy_delay}, actor, observation_dim=N_OBS, action_dim=N_ACT,
                       target_entropy="auto" if policy == "gaussian" else 0.0)
    actor_optim, critic_optim, alpha_optim = make_optimizers(bundle.loss_module)
    update = SACUpdate(bundle.loss_module, actor_optim=actor_optim, critic_optim=critic_optim,
                       alpha_optim=alpha_optim, target_updater=bundle.target_updater,
                       policy_delay=bundle.policy_delay)
    return actor, bundle, (actor_optim, critic_optim, alpha_optim), update


def _snapshot(params):
    return params.detach().clone()


def _changed(before, after):
    return any(not torch.equal(a, b) for a, b in zip(before.values(True, True), after.values(True, True)))


@pytest.mark.parametrize("policy", list(POLICIES))
def test_update_changes_critic_every_call_and_actor_every_policy_delay_calls(policy):
    _, bundle, _, update = _build(policy, policy_delay=3)
    loss = bundle.loss_module
    batch = _batch()
    actor_changed, critic_changed, alpha_changed = [], [], []
    for _ in range(7):
        actor0, critic0 = _snapshot(loss.actor_network_params), _snapshot(loss.qvalue_network_params)
        target0, alpha0 = _snapshot(loss.target_qvalue_network_params), loss.log_alpha.detach().clone()
        metrics = update(batch)
        actor_changed.append(_changed(actor0, loss.actor_network_params))
        critic_changed.append(_changed(critic0, loss.qvalue_network_params))
        alpha_changed.append(not torch.equal(alpha0, loss.log_alpha.detach()))
        assert _changed(target0, loss.target_qvalue_network_params), "soft target must move after every critic step"
        assert set(metrics.keys()) == {"loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy"}
        assert all(not v.requires_grad and v.ndim == 0 for v in metrics.values())
    assert critic_changed == [True] * 7
    assert actor_changed == [True, False, False, True, False, False, True]
    assert alpha_changed == actor_changed
    assert update.num_calls == 7


def test_update_policy_delay_one_updates_actor_every_call():
    _, bundle, _, update = _build("flow_g", policy_delay=1)
    for i in range(3):
        before = _snapshot(bundle.loss_module.actor_network_params)
        update(_batch(seed=i))
        assert _changed(before, bundle.loss_module.actor_network_params)


def test_update_rejects_bad_policy_delay():
    _, bundle, optims, _ = _build("gaussian")
    with pytest.raises(ValueError, match="policy_delay"):
        SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1], policy_delay=0)


@pytest.mark.parametrize("policy", ["flow_t", "gaussian"])
def test_bf16_autocast_runs_the_matmuls_in_bfloat16_and_keeps_float32_weights(policy):
    """optim.autocast=bf16: the critic's and actor's linear layers compute in bfloat16 while the
    parameters, their updates and the returned losses stay float32, close to the float32 step's."""
    losses = {}
    for autocast in (None, "bf16"):
        _, bundle, optims, _ = _build(policy, seed=3)
        update = SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1],
                           alpha_optim=optims[2], target_updater=bundle.target_updater, autocast=autocast)
        dtypes = set()
        hooks = [m.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
                 for m in bundle.loss_module.modules() if isinstance(m, torch.nn.Linear)]
        before = _snapshot(bundle.loss_module.qvalue_network_params)
        torch.manual_seed(0)
        metrics = update(_batch())
        for hook in hooks:
            hook.remove()
        # nn.Linear layers (the flow actor's; the critics' fast path calls batched matmuls instead)
        assert dtypes == ({torch.bfloat16} if autocast else {torch.float32}) or (policy == "gaussian" and not dtypes)
        params = bundle.loss_module.qvalue_network_params
        assert _changed(before, params) and all(p.dtype == torch.float32 for p in params.values(True, True))
        assert all(v.dtype == torch.float32 for v in metrics.values())
        losses[autocast] = metrics
    for key in ("loss_qvalue", "loss_actor"):  # bf16 rounding shows, within a few per cent
        assert float(losses["bf16"][key]) != float(losses[None][key]), key
        assert float(losses["bf16"][key]) == pytest.approx(float(losses[None][key]), rel=0.05, abs=0.02), key
    with pytest.raises(ValueError, match="autocast must be one of"):
        SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1], autocast="fp16")


@pytest.mark.parametrize("capability, warns", [("AVX2", True), ("DEFAULT", True), ("AVX512", False)])
def test_bf16_autocast_warns_on_cpus_without_native_bfloat16(monkeypatch, capability, warns):
    """On an AVX2 CPU bfloat16 matmuls fall back to generic code (~1 GFLOP/s measured): say so."""
    import warnings

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, bundle, optims, _ = _build("gaussian")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1], autocast="bf16")
        SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1], autocast=None)
    messages = [str(w.message) for w in caught if "bfloat16 matmuls" in str(w.message)]
    assert len(messages) == (1 if warns else 0)
    assert not warns or capability in messages[0]


def test_gaussian_policy_uses_auto_target_entropy():
    _, bundle, _, _ = _build("gaussian")
    assert bundle.loss_module.target_entropy.item() == pytest.approx(-N_ACT)
    _, bundle, _, _ = _build("flow_t")
    assert bundle.loss_module.target_entropy.item() == 0.0


def _components(seed, with_buffer=True):
    actor, bundle, (a_opt, q_opt, al_opt), update = _build("flow_t", policy_delay=2, seed=seed)
    rb = make_replay_buffer(100, 16)
    progress = {"frames": 0, "updates": 0}
    ckpt = make_checkpoint(
        loss_module=bundle.loss_module, update_step=update, progress=progress, config={"seed": seed},
        optimizers={"actor_optim": a_opt, "critic_optim": q_opt, "alpha_optim": al_opt},
        replay_buffer=rb if with_buffer else None, policy=actor,
    )
    return dict(actor=actor, loss=bundle.loss_module, optims=(a_opt, q_opt, al_opt), update=update, rb=rb,
                progress=progress, ckpt=ckpt)


def _assert_same_state(x, y):
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            _assert_same_state(x[k], y[k])
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y)
        for a, b in zip(x, y):
            _assert_same_state(a, b)
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y)
    else:
        assert x == y


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    a = _components(seed=0)
    a["rb"].extend(_batch(40, seed=1))
    for i in range(5):
        a["update"](a["rb"].sample())
    a["progress"].update(frames=40, updates=5)
    torch.manual_seed(123)
    save_checkpoint(a["ckpt"], tmp_path, metadata={"frames": 40})
    rng_after_save = torch.rand(3)

    b = _components(seed=7)  # different initial weights, empty buffer, fresh counters
    assert _changed(a["loss"].actor_network_params, b["loss"].actor_network_params)
    loaded = load_checkpoint(b["ckpt"], tmp_path)
    assert loaded == {"loss_module", "actor_optim", "critic_optim", "alpha_optim", "update_step", "rng",
                      "progress", "policy", "replay_buffer"}
    _assert_same_state(a["loss"].state_dict(), b["loss"].state_dict())  # actor, critics, targets, log α
    _assert_same_state(a["actor"].state_dict(), b["actor"].state_dict())
    for oa, ob in zip(a["optims"], b["optims"]):
        _assert_same_state(oa.state_dict(), ob.state_dict())
    assert b["update"].num_calls == 5 and b["progress"] == {"frames": 40, "updates": 5}
    assert len(b["rb"]) == 40
    _assert_same_state(a["rb"][:].to_dict(), b["rb"][:].to_dict())
    assert torch.equal(torch.rand(3), rng_after_save), "torch RNG state must be restored"
    # after loading, the actor the collector runs still shares its storage with the loss's copy
    loss_ptrs = {p.data_ptr() for p in b["loss"].actor_network_params.values(True, True)}
    assert {p.data_ptr() for p in b["actor"].parameters()} <= loss_ptrs


def test_checkpoint_without_replay_buffer_leaves_buffer_empty(tmp_path):
    a = _components(seed=0, with_buffer=False)
    save_checkpoint(a["ckpt"], tmp_path)
    b = _components(seed=1)
    loaded = load_checkpoint(b["ckpt"], tmp_path)
    assert "replay_buffer" not in loaded and len(b["rb"]) == 0


def test_checkpoint_save_is_atomic_replace(tmp_path):
    a = _components(seed=0)
    save_checkpoint(a["ckpt"], tmp_path, metadata={"frames": 1})
    a["progress"]["frames"] = 2
    save_checkpoint(a["ckpt"], tmp_path, metadata={"frames": 2})
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert entries == ["checkpoint"], f"no staging or backup dirs should remain: {entries}"


def test_resolve_num_threads():
    cores = available_cores()
    assert resolve_num_threads("auto", 1) == cores  # in-process collector: collection and updates alternate
    assert resolve_num_threads("auto", 1, "ray") == max(1, cores - 1)  # a worker process collects meanwhile
    assert resolve_num_threads("auto", 2) == max(1, cores - 2)
    assert resolve_num_threads("auto", 64) == 1
    assert resolve_num_threads(3, 2) == 3
    assert resolve_num_threads("2", 1) == 2
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="threads"):
            resolve_num_threads(bad, 1)


def test_resolve_device_and_seed_everything():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("gpu0")
    seed_everything(3)
    a = torch.rand(2)
    seed_everything(3)
    assert torch.equal(a, torch.rand(2))


def test_check_group_choices(tmp_path):
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "flow_t.yaml").write_text("name: flow_t\n")
    check_group_choices(["policy=flow_t", "policy.num_steps=2", "seed=3", "hydra.run.dir=x"], tmp_path)
    with pytest.raises(ConfigError, match="unknown policy 'flow_x': expected one of flow_t"):
        check_group_choices(["policy=flow_x"], tmp_path)


def test_config_fingerprint_covers_env_policy_critic_only():
    cfg = {"env": {"id": "Pendulum-v1"}, "policy": {"name": "flow_t", "num_steps": 4}, "critic": {"name": "sac"},
           "collector": {"total_frames": 100}, "seed": 0}
    base = config_fingerprint(cfg)
    assert config_fingerprint({**cfg, "collector": {"total_frames": 5}, "seed": 3}) == base
    assert config_fingerprint({**cfg, "policy": {"name": "flow_t", "num_steps": 2}}) != base
    assert config_fingerprint({**cfg, "env": {"id": "Hopper-v4"}}) != base
    assert config_fingerprint({**cfg, "critic": {"name": "crossq"}}) != base


def test_policy_config_errors():
    with pytest.raises(ConfigError, match="num_steps"):
        make_policy({**POLICIES["flow_t"], "num_steps": 0}, SPEC, N_OBS)
    with pytest.raises(ConfigError, match="noise_std"):
        make_policy({**POLICIES["flow_t"], "noise_std": -0.1}, SPEC, N_OBS)
    with pytest.raises(ConfigError, match="kind"):
        make_policy({"name": "x", "kind": "diffusion"}, SPEC, N_OBS)
    with pytest.raises(ConfigError, match="critic"):
        make_loss({"name": "nope"}, make_policy(POLICIES["flow_t"], SPEC, N_OBS), observation_dim=N_OBS,
                  action_dim=N_ACT)


def test_csv_truncate_and_read(tmp_path):
    d = csv_scalar_dir(tmp_path) / "eval"
    d.mkdir(parents=True)
    (d / "return_mean.csv").write_text("100,1.0\n200,2.0\n300,3.0\n200,2.5\n")
    assert read_csv_scalar(tmp_path, "eval/return_mean") == ([100, 200, 300], [1.0, 2.5, 3.0])
    truncate_csv_logs(tmp_path, 200)
    assert read_csv_scalar(tmp_path, "eval/return_mean") == ([100, 200], [1.0, 2.5])
    assert read_csv_scalar(tmp_path, "eval/missing") == ([], [])


def test_stop_on_signal_sets_flag_without_raising():
    # (the handler before may be SIG_IGN: a shell starting a background job ignores SIGINT in it)
    previous = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is previous  # given back


def test_evaluate_runs_fixed_number_of_episodes():
    env = make_env("Pendulum-v1", seed=0)
    actor = make_policy(POLICIES["flow_g"], env.action_spec, 3)
    result = evaluate(env, actor, num_episodes=2, max_steps=50)
    assert set(result) == {"return_mean", "return_std", "episode_length_mean"}
    assert result["episode_length_mean"] == 50 and result["return_mean"] < 0


def test_unknown_env_id_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown env id 'Hopper-v9'.*Hopper-v4"):
        make_env("Hopper-v9")


def _fake_run(root, name, policy, seed, steps, values, grad_norms=None):
    run = root / name
    (run).mkdir()
    (run / "config.yaml").write_text(f"seed: {seed}\nenv:\n  id: Pendulum-v1\npolicy:\n  name: {policy}\n")
    d = csv_scalar_dir(run)
    (d / "eval").mkdir(parents=True)
    (d / "eval" / "return_mean.csv").write_text("".join(f"{s},{v}\n" for s, v in zip(steps, values)))
    if grad_norms is not None:
        (d / "train").mkdir()
        for i, g in enumerate(grad_norms):
            (d / "train" / f"path_grad_norm_step_{i}.csv").write_text(f"10,{g}\n20,{g}\n")
    return run


def test_plot_learning_curves_and_grad_norms(tmp_path):
    from torchrl_sacflow.plot import grad_norm_table, group_runs, main, plot_runs

    runs = [
        _fake_run(tmp_path, "a", "flow_t", 0, [100, 200], [-1000, -300], grad_norms=[1.0, 2.0, 4.0]),
        _fake_run(tmp_path, "b", "flow_t", 1, [100, 200], [-900, -200], grad_norms=[3.0, 2.0, 4.0]),
        _fake_run(tmp_path, "c", "flow_mlp", 0, [100, 200], [-1200, -1100], grad_norms=[30.0, 5.0, 2.0]),
    ]
    groups = group_runs(runs)
    assert [len(v) for v in groups.values()] == [2, 1]
    out = plot_runs(runs, out=tmp_path / "curve.png")
    assert out.is_file() and out.stat().st_size > 1000
    table = grad_norm_table(runs)
    assert table["flow_t (2 seeds)"]["mean"].tolist() == [2.0, 2.0, 4.0]
    assert table["flow_mlp (seed 0)"]["mean"].tolist() == [30.0, 5.0, 2.0]
    assert main([*map(str, runs), "--grad-norms", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").is_file()


def test_make_logger_backends(tmp_path):
    from torchrl_sacflow.training import log_metrics, make_logger

    logger = make_logger("csv", tmp_path, video_format="pt")
    log_metrics(logger, {"eval/return_mean": torch.tensor(-3.0)}, step=7)
    assert read_csv_scalar(tmp_path, "eval/return_mean") == ([7], [-3.0])
    assert make_logger("none", tmp_path) is None
    with pytest.raises(ConfigError, match="logger.backend"):
        make_logger("mlflow2", tmp_path)
    with pytest.raises(ConfigError, match="video_format"):
        make_logger("csv", tmp_path, video_format="gif")


def test_replay_buffer_survives_two_checkpoint_round_trips(tmp_path):
    """A resumed run that is interrupted again re-saves a loaded buffer: writes must go on after it."""
    a = _components(seed=0)
    a["rb"].extend(_batch(40, seed=1))
    save_checkpoint(a["ckpt"], tmp_path / "1")
    b = _components(seed=1)
    load_checkpoint(b["ckpt"], tmp_path / "1")
    save_checkpoint(b["ckpt"], tmp_path / "2")
    c = _components(seed=2)
    load_checkpoint(c["ckpt"], tmp_path / "2")
    c["rb"].extend(_batch(10, seed=5))
    assert len(c["rb"]) == 50
    assert torch.equal(c["rb"][:40]["observation"], a["rb"][:40]["observation"])
    assert torch.equal(c["rb"][40:]["observation"], _batch(10, seed=5)["observation"])


CROSSQ = {"name": "crossq", "num_cells": [16, 16], "tau": 1.0, "policy_delay": 1, "warmup_steps": 2}


@pytest.mark.usefixtures("fast_paths_on")  # a test of the speed path itself
@pytest.mark.parametrize("policy, critic", [("gaussian", CRITIC), ("flow_g", CRITIC), ("flow_t", CROSSQ)],
                         ids=["gaussian-sac", "flow_g-sac", "flow_t-crossq"])
def test_compiled_update_matches_eager_and_runs_the_critics_between_two_graphs(policy, critic):
    """``SACUpdate(compile=True)``: the actor's draw and loss compiled around eager critics, the
    same losses and parameters as the eager step (same seed: compiled code draws with ATen's RNG).
    CrossQ too: its critic's eval mode for the actor is set in ``actor_min_q``, between the graphs
    (3 updates cross the batch-renorm warm-up)."""
    torch._dynamo.reset()
    results = []
    for compile_ in (False, True):
        _, bundle, optims, _ = _build(policy, critic=critic)
        update = SACUpdate(bundle.loss_module, actor_optim=optims[0], critic_optim=optims[1],
                           alpha_optim=optims[2], target_updater=bundle.target_updater, compile=compile_)
        assert (update.actor_losses == update._split_actor_losses) is compile_
        torch.manual_seed(1)
        metrics = [update(_batch(seed=i)) for i in range(3)]
        results.append((metrics, bundle.loss_module.actor_network_params.detach().clone(),
                        bundle.loss_module.qvalue_network_params.detach().clone()))
    (m_eager, actor_eager, critic_eager), (m_comp, actor_comp, critic_comp) = results
    for a, b in zip(m_eager, m_comp):
        for key in ("loss_qvalue", "loss_actor", "loss_alpha", "entropy"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actor_eager, actor_comp, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(critic_eager, critic_comp, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
