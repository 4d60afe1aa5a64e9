"""The run diagnostics the recipes log (issue 33's stall analysis): the critic's value scale and the
share of saturated action entries, computed as documented and without changing the run."""
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recipes.train_mujoco import CONFIG_DIR
from torchrl_sacflow.modules.flow_actor import get_flow_rollout
from torchrl_sacflow.training import (
    action_dim,
    critic_diagnostics,
    flow_diagnostics,
    make_env,
    make_loss,
    make_policy,
    observation_dim,
)


def _setup(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        c = OmegaConf.to_container(compose("train_mujoco", overrides=["env=pendulum", *overrides]), resolve=True)
    torch.manual_seed(0)
    env = make_env(c["env"]["id"], seed=0)
    actor = make_policy(c["policy"], env.action_spec, observation_dim(env))
    loss = make_loss(c["critic"], actor, observation_dim=observation_dim(env), action_dim=action_dim(env), gamma=0.99,
                     alpha_init=0.2, target_entropy=c["policy"]["target_entropy"], device="cpu",
                     alpha_objective="log_alpha").loss_module
    return env, actor, loss, env.rollout(40)


def test_critic_diagnostics_are_the_ensemble_q_of_the_buffer_actions():
    for overrides in ([], ["critic=crossq", "critic.num_cells=[32,32]"]):  # MLP critics; BatchRenorm critics
        env, actor, loss, batch = _setup(*overrides)
        rng, state = torch.get_rng_state(), {k: v.clone() for k, v in loss.state_dict().items()}
        out = critic_diagnostics(loss, batch)
        assert torch.equal(rng, torch.get_rng_state())  # the run goes on as if nothing was logged
        assert all(torch.equal(v, loss.state_dict()[k]) for k, v in state.items())  # running stats untouched
        qnet = loss.qvalue_network
        qnet.eval()
        qs = []
        for params in loss.qvalue_network_params.unbind(0):
            with params.to_module(qnet), torch.no_grad():
                qs.append(qnet(batch.select(*qnet.in_keys).clone())["state_action_value"])
        qs = torch.stack(qs)
        assert len(qs) == 2 and not torch.equal(qs[0], qs[1])  # two critics, both read
        torch.testing.assert_close(out["q_mean"], float(qs.mean()), rtol=0, atol=1e-6)
        torch.testing.assert_close(out["q_std"], float(qs.std(unbiased=False)), rtol=0, atol=1e-6)


def test_action_saturation_counts_entries_near_the_bounds():
    env, actor, loss, batch = _setup()
    rollout = get_flow_rollout(actor)
    assert flow_diagnostics(actor, batch)["action_saturation"] < 1.0
    # a huge base draw saturates the tanh: every entry within 1 % of a bound
    with torch.no_grad():
        rollout.action_scale.fill_(1.0)
    rollout_fn = rollout.rollout

    def saturated(obs, log_std, **kw):
        kw["base_noise"] = kw["base_noise"] * 1e4
        return rollout_fn(obs, log_std, **kw)

    rollout.rollout = saturated
    try:
        assert flow_diagnostics(actor, batch)["action_saturation"] == 1.0
    finally:
        del rollout.rollout
