"""Robomimic data and environments for the offline-to-online regime.

* :func:`load_robomimic_dataset` / :func:`make_robomimic_replay_buffer` read a
  Robomimic low-dim HDF5 file into TorchRL transitions (optionally in action
  chunks); ``load_dataset("robomimic:<path>")`` does the same through TorchRL's
  dataset registry.
* :func:`make_robomimic_env` rebuilds the matching robosuite task from the
  file's ``env_args`` as a TorchRL environment with the same chunk semantics.
* :func:`generate_scripted_demos` writes a small scripted Lift or Can dataset in
  the Robomimic format for machines without the official files.

robosuite is imported lazily, so the data side works without it.
"""
from torchrl_sacflow._lazy import lazy_attributes
from torchrl_sacflow.robomimic.dataset import (
    DEFAULT_OBS_KEYS,
    list_demos,
    load_dataset,
    load_robomimic_dataset,
    make_robomimic_replay_buffer,
    read_env_args,
    register_robomimic_dataset,
    RobomimicDatasetError,
)
from torchrl_sacflow.robomimic.env import (
    make_robomimic_env,
    make_robosuite_env,
    robosuite_kwargs_from_env_args,
    RobomimicEnv,
    RobomimicEnvError,
    to_composite_controller_config,
)

# the ``python -m`` module's functions, imported on first use (see torchrl_sacflow._lazy)
__getattr__ = lazy_attributes(
    __name__, "scripted_demos", ["SCRIPTED_TASKS", "ScriptedLiftPolicy", "ScriptedPickPlacePolicy",
                                 "generate_scripted_demos", "lift_env_args", "robomimic_env_args"]
)

__all__ = [
    "DEFAULT_OBS_KEYS",
    "RobomimicDatasetError",
    "RobomimicEnv",
    "RobomimicEnvError",
    "SCRIPTED_TASKS",
    "ScriptedLiftPolicy",
    "ScriptedPickPlacePolicy",
    "generate_scripted_demos",
    "lift_env_args",
    "list_demos",
    "load_dataset",
    "load_robomimic_dataset",
    "make_robomimic_env",
    "make_robomimic_replay_buffer",
    "make_robosuite_env",
    "read_env_args",
    "register_robomimic_dataset",
    "robomimic_env_args",
    "robosuite_kwargs_from_env_args",
    "to_composite_controller_config",
]
