"""``critic=crossq`` and ``preset=paper`` in ``recipes.train_mujoco``: smoke runs with every policy,
the preset's composed values, BatchRenorm statistics across a resume, and the policy delay."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recipes.train_mujoco import CONFIG_DIR, train
from torchrl_sacflow.training import (
    CRITICS,
    ConfigError,
    SACUpdate,
    check_group_choices,
    evaluate,
    make_env,
    make_loss,
    make_optimizers,
    make_policy,
    read_checkpoint_metadata,
    read_csv_scalar,
)

from _batches import random_transitions
from test_train_mujoco import TINY  # the smallest networks of each policy

COMMON = [
    "env=pendulum",
    "critic=crossq",
    "collector.total_frames=200",
    "collector.init_random_frames=100",
    "collector.frames_per_batch=100",
    "optim.batch_size=32",
    "replay_buffer.size=2000",
    "critic.num_cells=[32,32]",
    "critic.warmup_steps=20",  # the renormalising branch (r, d clipped) runs too, not only plain BN
    "optim.utd_ratio=0.3",
    "eval.num_episodes=1",
    "eval.max_steps=20",
    "eval.interval=0",
    "checkpoint.interval=0",
    "logger.progress_bar=false",
    "logger.plot=false",
    "threads=1",
]


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train_mujoco", overrides=list(overrides))


def _cfg(policy="flow_t", *overrides):
    return _compose(*COMMON, f"policy={policy}", *TINY[policy], *overrides)


def _loss_state(run_dir: Path) -> dict:
    path = next((run_dir / "checkpoint" / "components").glob("*-loss_module")) / "state.pt"
    return torch.load(path, weights_only=True)


def _brn_stats(state: dict) -> dict:
    keys = [k for k in state if k.startswith("qvalue_network_params") and
            any(s in k for s in ("running_mean", "running_var", "num_batches_tracked"))]
    return {k: state[k].clone() for k in keys}


def test_crossq_is_registered():
    assert {"sac", "crossq"} <= set(CRITICS)


@pytest.mark.parametrize("policy", list(TINY))
def test_smoke_run_crossq_every_policy(policy, tmp_path):
    summary = train(_cfg(policy), tmp_path)
    # updates start once init_random_frames are in: 2 batches x 100 frames x utd 0.3
    assert summary["frames"] == 200 and summary["updates"] == 60 and not summary["interrupted"]
    assert summary["eval_return_mean"] is not None and summary["eval_return_mean"] < 0
    steps, values = read_csv_scalar(tmp_path, "train/loss_qvalue")
    assert steps and all(v == v for v in values)  # logged and finite
    assert read_csv_scalar(tmp_path, "train/loss_actor")[0]
    stats = _brn_stats(_loss_state(tmp_path))
    assert stats, "no BatchRenorm running statistics in the loss state dict"
    # the warm-up counter (one per critic step) stops at warmup_steps
    tracked = [v for k, v in stats.items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(t.flatten()[0]) == 20 for t in tracked)


def test_preset_paper_composes_paper_configuration():
    cfg = OmegaConf.to_container(_compose("env=halfcheetah", "policy=flow_t", "preset=paper"), resolve=True)
    critic, optim = cfg["critic"], cfg["optim"]
    assert critic["name"] == "crossq" and critic["num_cells"] == [1024, 1024]
    assert critic["policy_delay"] == 3 and critic["tau"] == 1.0
    assert critic["momentum"] == 0.01 and critic["warmup_steps"] == 100_000
    assert optim["actor_beta1"] == 0.5 and optim["critic_beta1"] == 0.5 and optim["alpha_beta1"] == 0.5
    assert optim["batch_size"] == 512 and optim["gamma"] == 0.99
    assert (optim["actor_lr"], optim["critic_lr"], optim["alpha_lr"]) == (3e-4, 1e-3, 1e-3)
    assert cfg["collector"]["init_random_frames"] == 50_000 and cfg["collector"]["frames_per_batch"] == 10
    # with Flow-T (preset_policy/paper_flow_t.yaml): the paper's math in the released actor, and the
    # temperature the exact density needs
    policy = cfg["policy"]
    assert (policy["log_prob"], policy["noise_scale"], policy["drift_correction"]) == ("path", "sqrt_dt", True)
    assert policy["sigma_head"] == "velocity" and policy["velocity_kwargs"]["norm_layout"] == "post_batchrenorm"
    assert policy["target_entropy"] == "auto_path" and optim["alpha_init"] == 0.005
    # with another policy: only the critic and optimiser
    cfg = OmegaConf.to_container(_compose("env=halfcheetah", "policy=flow_g", "preset=paper"), resolve=True)
    assert cfg["critic"]["name"] == "crossq" and cfg["optim"]["alpha_init"] == 0.2
    assert cfg["policy"]["target_entropy"] == 0.0 and cfg["policy"]["sigma_head"] == "state"
    # a later command-line override still wins over the preset
    cfg = _compose("env=halfcheetah", "preset=paper", "critic.num_cells=[256,256]", "optim.batch_size=256")
    assert list(cfg.critic.num_cells) == [256, 256] and cfg.optim.batch_size == 256
    # without the preset: textbook SAC
    cfg = _compose("env=halfcheetah", "policy=flow_t")
    assert cfg.critic.name == "sac" and cfg.critic.policy_delay == 1 and cfg.optim.critic_beta1 == 0.9


@pytest.mark.parametrize("preset", ["paper", "paper_code"])
def test_presets_run_and_log_flow_diagnostics(preset, tmp_path):
    """Both paper presets compose with the tiny budget and train; the flow diagnostics are logged."""
    cfg = _cfg("flow_t", f"preset={preset}", "collector.init_random_frames=100", "optim.batch_size=32",
               "critic.num_cells=[32,32]", "++policy.velocity_kwargs.obs_hidden=8", "logger.diagnostics_every=0")
    summary = train(cfg, tmp_path)
    assert summary["frames"] == 200 and summary["updates"] == 60 and not summary["interrupted"]
    for metric in ("alpha", "entropy", "sigma_mean", "ode_action_gap"):
        steps, values = read_csv_scalar(tmp_path, f"train/{metric}")
        assert steps and all(v == v for v in values), metric
    per_step = [read_csv_scalar(tmp_path, f"train/sigma_step_{i}")[0] for i in range(4)]
    assert all(per_step)  # both presets: σ per step from the released actor's decoder head
    entropy = read_csv_scalar(tmp_path, "train/entropy")[1][-1]
    # the released noise-only log-prob is ~ +(K+1)·d·1.42 (entropy-like, positive) at start; the exact
    # path log-density with σ ≈ 0.22 gives a negative "entropy" on Pendulum (d = 1)
    assert (entropy > 5) == (preset == "paper_code")


def test_preset_paper_code_composes_the_released_actor():
    cfg = OmegaConf.to_container(_compose("env=halfcheetah", "policy=flow_t", "preset=paper_code"), resolve=True)
    policy = cfg["policy"]
    assert (policy["log_prob"], policy["noise_scale"], policy["sigma_head"]) == ("noise", "dt", "velocity")
    assert policy["drift_correction"] is False
    vk = policy["velocity_kwargs"]
    assert vk["d_model"] == 96 and vk["norm_layout"] == "post_batchrenorm" and vk["input_norm"] is True
    assert vk["log_std_init"] == "lecun_normal"
    assert cfg["critic"]["name"] == "crossq" and cfg["critic"]["num_cells"] == [1024, 1024]
    assert cfg["optim"]["alpha_beta1"] == 0.5 and cfg["policy"]["target_entropy"] == 0.0
    assert cfg["optim"]["alpha_init"] == 0.2


def test_preset_choices_are_checked(tmp_path):
    check_group_choices(["env=halfcheetah", "policy=flow_t", "preset=paper"], CONFIG_DIR)
    check_group_choices(["preset=none", "critic=crossq"], CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"^unknown preset 'bogus': expected one of none, paper, paper_code$"):
        check_group_choices(["preset=bogus"], CONFIG_DIR)


def test_resume_restores_batchrenorm_statistics(tmp_path):
    common = ("flow_g", "critic.warmup_steps=1000")  # the counter then counts every critic step
    first = train(_cfg(*common, "collector.total_frames=200"), tmp_path)
    assert first["updates"] == 60
    saved = _brn_stats(_loss_state(tmp_path))
    means = {k: v for k, v in saved.items() if k.endswith("running_mean")}
    assert means and all(v.abs().sum() > 0 for v in means.values())  # moved away from their init (0)

    # Resuming a finished run trains nothing: the re-saved statistics are the loaded ones, not a
    # fresh critic's (running_mean 0, running_var 1, num_batches_tracked 0).
    train(_cfg(*common, "collector.total_frames=200", f"resume={tmp_path}"), "unused")
    reloaded = _brn_stats(_loss_state(tmp_path))
    assert reloaded.keys() == saved.keys()
    for key in saved:
        assert torch.equal(saved[key], reloaded[key]), key

    # Continuing: the statistics keep counting from the checkpoint's.
    resumed = train(_cfg(*common, "collector.total_frames=300", f"resume={tmp_path}"), "unused")
    assert resumed["updates"] == 90 and read_checkpoint_metadata(tmp_path)["frames"] == 300
    tracked = [v for k, v in _brn_stats(_loss_state(tmp_path)).items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(t.flatten()[0]) == 90 for t in tracked)


@pytest.mark.parametrize("policy", ["flow_t", "gaussian"])
def test_policy_delay_three_updates_actor_every_third_step(policy):
    torch.manual_seed(0)
    c = OmegaConf.to_container(_cfg(policy), resolve=True)
    env = make_env(c["env"]["id"], seed=0)
    obs_dim, act_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    actor = make_policy(c["policy"], env.action_spec, obs_dim)
    bundle = make_loss(c["critic"], actor, observation_dim=obs_dim, action_dim=act_dim,
                       target_entropy=c["policy"]["target_entropy"])
    assert bundle.target_updater is None and bundle.policy_delay == 3
    loss = bundle.loss_module
    actor_optim, critic_optim, alpha_optim = make_optimizers(loss)
    update = SACUpdate(loss, actor_optim=actor_optim, critic_optim=critic_optim, alpha_optim=alpha_optim,
                       policy_delay=bundle.policy_delay)
    batch = random_transitions(32, obs_dim, env.action_spec, seed=0)

    def actor_params():
        return [p.detach().clone() for p in loss.actor_network_params.flatten_keys().values()]

    def critic_state():
        return {k: v.clone() for k, v in loss.state_dict().items() if k.startswith("qvalue_network_params")}

    changed, alpha_changed = [], []
    for _ in range(7):
        before_actor, before_critic, before_alpha = actor_params(), critic_state(), loss.log_alpha.detach().clone()
        update(batch)
        changed.append(any(not torch.equal(a, b) for a, b in zip(before_actor, actor_params())))
        alpha_changed.append(not torch.equal(before_alpha, loss.log_alpha.detach()))
        after = critic_state()
        assert any(not torch.equal(v, after[k]) for k, v in before_critic.items())  # every step
    assert changed == [True, False, False, True, False, False, True]
    assert alpha_changed == changed

    # Scoring the actor uses the critic's running statistics without updating them (eval mode),
    # and evaluation only runs the actor: none of them changes any critic parameter or statistic.
    stats = critic_state()
    update.actor_step(batch)
    if policy != "gaussian":  # the recipe's logger.log_path_grad_norms_every diagnostic
        loss.path_grad_norms(batch)
    evaluate(env, actor, num_episodes=1, max_steps=10)
    after = critic_state()
    assert all(torch.equal(v, after[k]) for k, v in stats.items())
