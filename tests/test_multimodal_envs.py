"""The multimodal tasks (issue 15): rewards, optimal returns as documented, registration, TorchRL."""
import gymnasium as gym
import numpy as np
import pytest

from torchrl_sacflow.envs import BANDIT_PEAKS, MultimodalBandit, TwoPathNavigation
from torchrl_sacflow.training import make_env


@pytest.mark.parametrize("modes", [2, 4])
def test_bandit_has_equal_separated_peaks(modes):
    env = MultimodalBandit(modes)
    peaks = BANDIT_PEAKS[modes]
    np.testing.assert_allclose(env.reward(peaks), 1.0)
    assert env.reward(peaks.mean(0)) < 1e-5  # the valley between the peaks
    assert (env.nearest_peak(peaks + 0.05) == np.arange(modes)).all()
    # 3 actions on the first peak (one 2.9 widths off), one in the valley: fractions 3/4, 0, ...
    on_first = np.array([peaks[0], peaks[0] + [0.29, 0.0], peaks[0] + [0.0, -0.1], peaks.mean(0)])
    np.testing.assert_allclose(env.mode_fractions(on_first), [0.75] + [0.0] * (modes - 1))
    np.testing.assert_allclose(env.mode_fractions(peaks), np.full(modes, 1.0 / modes))
    obs, _ = env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(peaks[-1])
    assert reward == pytest.approx(1.0) and terminated and not truncated and (obs == 0).all()
    with pytest.raises(ValueError, match="num_modes"):
        MultimodalBandit(3)


def test_two_paths_left_and_right_are_equally_good_and_the_obstacle_blocks():
    returns = {}
    for side in (1, -1):
        env = TwoPathNavigation()
        env.reset(seed=0)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.scripted_action(side))
            total, done = total + r, terminated or truncated
        assert terminated
        returns[side] = total
    assert returns[1] == pytest.approx(returns[-1]) == pytest.approx(0.84)
    assert 1 - 0.01 * np.ceil(TwoPathNavigation.shortest_path_length() / (0.1 * np.sqrt(2))) == pytest.approx(0.88)
    # straight up runs into the obstacle and stays below it
    env = TwoPathNavigation()
    env.reset(seed=0)
    for _ in range(20):
        obs, *_ = env.step(np.array([0.0, 1.0]))
    assert obs[1] < 0 and np.linalg.norm(obs) >= TwoPathNavigation.OBSTACLE_RADIUS


@pytest.mark.parametrize("env_id", ["SACFlow/Bandit2-v0", "SACFlow/Bandit4-v0", "SACFlow/TwoPaths-v0"])
def test_registered_and_usable_through_torchrl(env_id):
    assert env_id in gym.envs.registry
    env = make_env(env_id, seed=0)
    td = env.rollout(5)
    assert td["observation"].shape[-1] == 2 and td["action"].shape[-1] == 2
    if "Bandit" in env_id:  # one-step episodes: every step ends one
        assert td.shape == (1,) and td["next", "terminated"].all()
