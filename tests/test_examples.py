"""The README's "Your own task in 30 lines": the example loop learns, and the recipe runs the same env."""
from hydra import compose, initialize_config_dir

from examples.own_task import PointMass, point_mass, train
from recipes.train_mujoco import CONFIG_DIR
from recipes.train_mujoco import train as train_recipe
from torchrl_sacflow.training import ConfigError, make_env


def test_own_task_loop_learns():
    # a uniformly random policy scores about -90 (-35 to -210); trained, about -5
    assert train(total_frames=2000, seed=0) > -25


def test_point_mass_is_a_valid_torchrl_env():
    from torchrl.envs.utils import check_env_specs

    check_env_specs(PointMass())
    env = make_env(factory="examples.own_task:point_mass", observation_keys=["position", "velocity"])
    td = env.rollout(3)
    assert td["observation"].shape == (3, 4)
    assert (td["observation"][:, :2] == td["position"]).all() and td["next", "step_count"][-1].item() == 3


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train_mujoco", overrides=[
            "env=custom", "env.make=examples.own_task:point_mass", "collector.total_frames=300",
            "collector.init_random_frames=100", "optim.batch_size=32", "eval.num_episodes=1",
            "logger.progress_bar=false", "logger.plot=false", "threads=1",
            "policy.velocity_kwargs.d_model=16", "policy.log_std_kwargs.hidden_sizes=[16]", *overrides])


def test_recipe_trains_on_an_env_factory(tmp_path):
    summary = train_recipe(_cfg("env.observation_keys=[position,velocity]"), tmp_path)
    assert summary["frames"] == 300 and summary["updates"] == 300 and summary["eval_return_mean"] < 0


def test_env_factory_errors_are_one_line(tmp_path):
    for overrides, message in [
        (["env.make=examples.nope:point_mass"], "cannot import 'examples.nope'"),
        (["env.make=examples.own_task:nothing"], "has no callable 'nothing'"),
        (["env.observation_keys=[position,speed]"], "['speed'] are not observation entries of the env"),
    ]:
        try:
            train_recipe(_cfg(*overrides), tmp_path / "run")
        except ConfigError as err:
            assert message in str(err) and "\n" not in str(err), str(err)
        else:
            raise AssertionError(f"{overrides}: no ConfigError")
    assert callable(point_mass)
