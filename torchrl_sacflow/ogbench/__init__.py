"""OGBench cube tasks for the offline-to-online regime: datasets written here, official files read unchanged.

* :func:`generate_ogbench_dataset` (``python -m torchrl_sacflow.ogbench.generate``) writes a
  dataset in OGBench's ``.npz`` layout with the ``ogbench`` package's scripted oracles, following
  OGBench's ``play``/``noisy`` recipe, optionally made imperfect (noise, early stops, failed subtasks).
* :func:`load_ogbench_dataset` reads such a file (ours or an official one) into the chunked
  TorchRL transitions of the Robomimic loader, with OGBench's singletask reward.
* :func:`make_ogbench_env` builds the matching singletask env as a TorchRL env that reports ``success``.
* :mod:`~torchrl_sacflow.ogbench.tasks`: task names, env ids, layouts and the reward rule.

``ogbench`` (and ``dm_control``) are imported only when an env is built. See docs/ogbench_data.md.
"""
from torchrl_sacflow._lazy import lazy_attributes
from torchrl_sacflow.ogbench.dataset import (
    describe_ogbench_dataset,
    load_ogbench_dataset,
    OGBenchDatasetError,
    read_ogbench_npz,
)
from torchrl_sacflow.ogbench.env import make_ogbench_env, OGBenchEnv
from torchrl_sacflow.ogbench.tasks import (
    CUBE_TASKS,
    dataset_env_id,
    observation_dim,
    singletask_env_id,
    singletask_reward,
    task_goals,
)

# the ``python -m`` module's functions, imported on first use (see torchrl_sacflow._lazy)
__getattr__ = lazy_attributes(__name__, "generate", ["generate_ogbench_dataset", "val_path"])

__all__ = [
    "CUBE_TASKS",
    "OGBenchDatasetError",
    "OGBenchEnv",
    "dataset_env_id",
    "describe_ogbench_dataset",
    "generate_ogbench_dataset",
    "load_ogbench_dataset",
    "make_ogbench_env",
    "observation_dim",
    "read_ogbench_npz",
    "singletask_env_id",
    "singletask_reward",
    "task_goals",
    "val_path",
]
