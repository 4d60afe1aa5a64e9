"""The flow actor as a policy inside TorchRL collectors on a gymnasium env."""
import pytest
import torch
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType

from torchrl_sacflow import get_flow_rollout, make_flow_actor


def make_env():
    return TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())


def _actor(velocity="transformer"):
    env = make_env()
    actor = make_flow_actor(
        env.action_spec, env.observation_spec["observation"].shape[-1], velocity=velocity
    )
    env.close()
    return actor


@pytest.mark.parametrize("velocity", ["transformer", "gru", "mlp"])
def test_actor_in_collector_with_init_random_frames(velocity):
    torch.manual_seed(0)
    actor = _actor(velocity)
    collector = Collector(
        make_env, actor, frames_per_batch=50, total_frames=200, init_random_frames=100,
        exploration_type=ExplorationType.RANDOM,
    )
    batches = list(collector)
    collector.shutdown()
    assert sum(b.numel() for b in batches) == 200
    assert all(b["action"].shape[-1] == 1 for b in batches)
    # after the random phase the policy wrote its path log-density next to the action
    last = batches[-1]
    assert torch.isfinite(last["action_log_prob"]).all()
    assert (last["action"].abs() <= 2.0).all()


def test_actor_in_multisync_collector_with_two_workers():
    torch.manual_seed(0)
    actor = _actor("transformer")
    collector = MultiSyncCollector(
        [make_env, make_env], actor, frames_per_batch=64, total_frames=128,
        exploration_type=ExplorationType.DETERMINISTIC,
    )
    batches = []
    for batch in collector:
        batches.append(batch)
        # new weights reach the workers through TorchRL's weight sync: a velocity head whose bias
        # drives every ODE action into the upper bound
        with torch.no_grad():
            get_flow_rollout(actor).velocity.head.bias.fill_(50.0)
        collector.update_policy_weights_()
    collector.shutdown()
    assert sum(b.numel() for b in batches) == 128
    assert batches[0]["action"].min() < 1.5  # the initial policy: actions spread over [-2, 2]
    torch.testing.assert_close(batches[1]["action"], torch.full_like(batches[1]["action"], 2.0))


def test_deterministic_collection_uses_the_ode():
    torch.manual_seed(0)
    actor = _actor("mlp")
    get_flow_rollout(actor).noise_std = 5.0  # would make random actions wildly different
    env = make_env()
    env.set_seed(0)
    from torchrl.envs.utils import set_exploration_type
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        r1 = env.rollout(20, actor)
        env.set_seed(0)
        r2 = env.rollout(20, actor)
    torch.testing.assert_close(r1["action"], r2["action"])


def _recipe_batches(actor, compile_policy):
    from torchrl_sacflow.training import env_maker, make_collector

    torch.manual_seed(1)
    collector = make_collector(env_maker("Pendulum-v1"), actor, total_frames=40, frames_per_batch=20, seed=3,
                               init_random_frames=5, compile_policy=compile_policy)
    batches = list(collector)
    collector.shutdown()
    return torch.cat(batches)


def test_recipe_collector_with_compiled_policy_collects_what_the_eager_one_does():
    import torch._dynamo

    from torchrl_sacflow.training import make_policy

    env = make_env()
    cfg = {"kind": "flow", "velocity": "gru", "num_steps": 2, "velocity_kwargs": {"hidden_sizes": [16]},
           "log_std_kwargs": {"hidden_sizes": [16]}}
    torch.manual_seed(0)
    actor = make_policy(cfg, env.action_spec, 3)
    eager = _recipe_batches(actor, False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = _recipe_batches(actor, True)
    # the policy really ran compiled (one graph: no recompilation after the warm-up calls)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    # fallback_random: the compiled policy draws the same noise, so the same actions and states
    for key in ["action", "action_log_prob", ("next", "observation"), ("next", "reward")]:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    assert not torch.equal(eager["action"][5:10], eager["action"][10:15])  # the policy acts (no constant)


def test_compile_policy_without_a_cpp_compiler_is_a_config_error(no_cpp_compiler):
    from torchrl_sacflow.training import ConfigError, env_maker, make_collector

    actor = _actor("mlp")
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler for torch.compile on CPU"):
        make_collector(env_maker("Pendulum-v1"), actor, total_frames=10, frames_per_batch=10, compile_policy=True)
    # not asked to compile: no compiler needed
    make_collector(env_maker("Pendulum-v1"), actor, total_frames=10, frames_per_batch=10).shutdown()
