"""Shared helpers for the Robomimic tests: tiny generated and hand-written HDF5 files."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

#: per-key dims of the hand-written files (same names as real Robomimic low-dim data)
SYNTH_OBS_DIMS = {
    "robot0_eef_pos": 3,
    "robot0_eef_quat": 4,
    "robot0_gripper_qpos": 2,
    "object": 10,
}
SYNTH_ACTION_DIM = 7

LIFT_SEED = 0
LEGACY_SEED = 3


def write_synthetic_file(
    path: Path,
    episodes: list[dict],
    *,
    seed: int = 0,
    masks: dict[str, list[str]] | None = None,
    env_args: dict | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Writes a Robomimic-layout file from ``episodes`` (``{"rewards", "dones"}`` lists).

    Observations and actions are random; ``next_obs[t] == obs[t+1]`` inside an
    episode. Returns the raw arrays per demo name for independent checks.
    """
    rng = np.random.default_rng(seed)
    raw = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(
            env_args
            if env_args is not None
            else {"env_name": "Lift", "type": 1, "env_kwargs": {}}
        )
        total = 0
        for i, ep in enumerate(episodes):
            rewards = np.asarray(ep["rewards"], dtype=np.float64)
            dones = np.asarray(ep["dones"], dtype=np.int64)
            T = rewards.shape[0]
            total += T
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = T
            actions = rng.uniform(-1.2, 1.2, size=(T, SYNTH_ACTION_DIM))
            g.create_dataset("actions", data=actions)
            g.create_dataset("rewards", data=rewards)
            g.create_dataset("dones", data=dones)
            obs_all = {k: rng.normal(size=(T + 1, d)) for k, d in SYNTH_OBS_DIMS.items()}
            og, ng = g.create_group("obs"), g.create_group("next_obs")
            for k, v in obs_all.items():
                og.create_dataset(k, data=v[:-1])
                ng.create_dataset(k, data=v[1:])
            raw[f"demo_{i}"] = {
                "actions": actions,
                "rewards": rewards,
                "dones": dones,
                "obs": {k: v[:-1] for k, v in obs_all.items()},
                "next_obs": {k: v[1:] for k, v in obs_all.items()},
            }
        data.attrs["total"] = total
        if masks:
            mg = f.create_group("mask")
            for name, demos in masks.items():
                mg.create_dataset(name, data=np.array(demos, dtype="S"))
    return raw


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory) -> Path:
    """4 scripted Lift demos in the composite controller format, written through the CLI."""
    from torchrl_sacflow.robomimic.scripted_demos import main

    path = tmp_path_factory.mktemp("robomimic") / "lift.hdf5"
    stats = main(["--task", "lift", "--episodes", "4", "--out", str(path), "--seed", str(LIFT_SEED)])
    assert stats["episodes"] == 4 and path.exists()
    return path


@pytest.fixture(scope="module")
def legacy_lift_file(tmp_path_factory) -> Path:
    """2 scripted Lift demos whose env_args use the flat pre-1.5 controller config."""
    from torchrl_sacflow.robomimic import generate_scripted_demos

    path = tmp_path_factory.mktemp("robomimic") / "lift_legacy.hdf5"
    stats = generate_scripted_demos(
        path, episodes=2, seed=LEGACY_SEED, controller_format="legacy"
    )
    assert stats["episodes"] == 2
    return path


def concat_obs(group_obs, keys) -> np.ndarray:
    """Concatenates raw per-key observation arrays (h5py group or dict) in ``keys`` order."""
    arrays = [np.asarray(group_obs[k]) for k in keys]
    return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], -1)
