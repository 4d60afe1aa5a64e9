"""The demonstrations of the offline-to-online regime: file, chunked transitions, mixed buffer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, OfflineToOnlineReplayBuffer, ReplayBuffer
from torchrl.envs import EnvBase

from torchrl_sacflow.training.errors import ConfigError


#: Entries shared by the Robomimic loader and the collector's output; everything else (the
#: loader's ``episode``/``chunk_length``, the collector's ``action_log_prob``, ``collector``,
#: top-level ``success``) is dropped so offline and online batches can be concatenated.
TRANSITION_KEYS: tuple = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "success"),
)


#: The scripted demo writer's imperfect-data options (``generate_scripted_demos``) and their file-name tags.
SCRIPTED_WEAK_OPTIONS: dict[str, str] = {"action_noise": "actnoise", "p_early_stop": "earlystop",
                                         "failed_fraction": "failed"}


def scripted_dataset_path(datasets_dir: str | os.PathLike, task: str, episodes: int, seed: int,
                          **weak_options: float) -> Path:
    """Where the scripted demonstrations for ``(task, episodes, seed)`` are cached.

    Each imperfect-data option of :data:`SCRIPTED_WEAK_OPTIONS` that is not 0 adds a tag to the
    name (``lift_scripted_30_seed0_failed0.5.hdf5``), so files made with other options are never reused.
    """
    tags = "".join(f"_{SCRIPTED_WEAK_OPTIONS[key]}{float(value):g}" for key, value in weak_options.items() if value)
    return Path(datasets_dir) / f"{task}_scripted_{episodes}_seed{seed}{tags}.hdf5"


def resolve_dataset(
    dataset: str | os.PathLike | None,
    *,
    task: str,
    datasets_dir: str | os.PathLike,
    episodes: int,
    seed: int = 0,
    **weak_options: float,
) -> tuple[Path, bool]:
    """The Robomimic file to use, and whether it was generated just now.

    A given ``dataset`` is returned as is (the loader reports a missing or broken file). ``None``
    means the scripted ``task`` demonstrations, generated on first use (~1.5 s per episode here)
    and reused afterwards; Lift and Can have a scripted policy.

    Keyword Args:
        task (str): the Robomimic task.
        datasets_dir (str or path-like): the cache folder of generated files.
        episodes (int): demos in a generated file.
        seed (int): seed of a generated file. Defaults to ``0``.
        **weak_options (float): ``action_noise``, ``p_early_stop``, ``failed_fraction`` of
            :func:`~torchrl_sacflow.robomimic.generate_scripted_demos` (imperfect demos; 0 = off).

    Raises:
        ConfigError: a task without a scripted policy, an unknown or out-of-range option, or
            options under which the scripted policy cannot record the demos asked for.
    """
    if dataset is not None:
        return Path(dataset).expanduser(), False
    from torchrl_sacflow.robomimic.scripted_demos import SCRIPTED_TASKS

    if task not in SCRIPTED_TASKS:
        raise ConfigError(
            f"no scripted demonstrations for task {task!r} (only {', '.join(map(repr, SCRIPTED_TASKS))}): "
            f"pass dataset=/path/to/{task}/mh/low_dim.hdf5"
        )
    unknown = sorted(set(weak_options) - set(SCRIPTED_WEAK_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown scripted-demo option {unknown[0]!r}: expected {', '.join(SCRIPTED_WEAK_OPTIONS)}")
    path = scripted_dataset_path(datasets_dir, task, episodes, seed, **weak_options)
    if path.is_file():
        return path, False
    from torchrl_sacflow.robomimic import generate_scripted_demos

    try:
        generate_scripted_demos(path, task=task, episodes=episodes, seed=seed, **weak_options)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"cannot generate scripted {task} demos: {err}") from None
    return path, True


def load_robomimic_transitions(path: str | os.PathLike, **load_kwargs: Any) -> TensorDict:
    """:func:`~torchrl_sacflow.robomimic.load_robomimic_dataset` with its errors as :class:`ConfigError`
    (all its entries, ``episode`` and ``chunk_length`` included)."""
    from torchrl_sacflow.robomimic import RobomimicDatasetError, load_robomimic_dataset

    try:
        return load_robomimic_dataset(path, **load_kwargs)
    except RobomimicDatasetError as err:
        raise ConfigError(str(err)) from None


def load_offline_data(path: str | os.PathLike, **load_kwargs: Any) -> TensorDict:
    """The file's transitions in chunks of ``action_chunk`` actions, restricted to :data:`TRANSITION_KEYS`.

    ``load_kwargs`` (``obs_keys``, ``action_chunk``, ``gamma``, ``filter_key``, the terminal rule, the
    env's action bounds, ...) go to :func:`~torchrl_sacflow.robomimic.load_robomimic_dataset`. A missing
    or malformed file, or actions outside the env's bounds, raise :class:`ConfigError` with the
    loader's one-line message.
    """
    return load_robomimic_transitions(path, **load_kwargs).select(*TRANSITION_KEYS)


def read_task_env_args(path: str | os.PathLike, task: str) -> dict[str, Any]:
    """The file's ``env_args`` (the online env is rebuilt from them), checked against ``task``."""
    from torchrl_sacflow.robomimic import RobomimicDatasetError, read_env_args
    from torchrl_sacflow.robomimic.scripted_demos import ROBOMIMIC_TASKS

    try:
        env_args = read_env_args(path)
    except RobomimicDatasetError as err:
        raise ConfigError(str(err)) from None
    env_name = env_args["env_name"]
    if env_name != ROBOMIMIC_TASKS[task]:
        named = {v: k for k, v in ROBOMIMIC_TASKS.items()}.get(env_name)
        hint = f"set task={named}" if named else "it is not a Robomimic task this recipe knows"
        raise ConfigError(
            f"{str(path)!r} records robosuite env {env_name!r}, not {ROBOMIMIC_TASKS[task]!r} (task={task}): {hint}"
        )
    return env_args


def check_chunking(offline: TensorDictBase, env: EnvBase, action_chunk: int) -> int:
    """Check that dataset and env agree on the chunked action and observation widths; return ``h·d``.

    The critic scores a whole chunk, so an offline action of another width (another controller,
    another ``h``) would be silently wrong.
    """
    env_width = int(env.action_spec.shape[-1])
    data_width = int(offline["action"].shape[-1])
    if data_width != env_width or env_width % action_chunk:
        raise ConfigError(
            f"dataset actions are {data_width} wide but the env's chunked action is {env_width} wide "
            f"(action_chunk={action_chunk}): the file's env_args do not match its actions"
        )
    env_obs = int(env.observation_spec["observation"].shape[-1])
    data_obs = int(offline["observation"].shape[-1])
    if env_obs != data_obs:
        raise ConfigError(f"dataset observations are {data_obs} wide but the env's are {env_obs} (obs_keys)")
    return env_width


def make_offline_buffer(offline: TensorDictBase) -> ReplayBuffer:
    """The demonstrations in a RAM buffer sized to them (sampled uniformly, with replacement).

    A plain ``ReplayBuffer`` (not ``TensorDictReplayBuffer``, which adds an ``index`` entry) so
    its batches have the same keys as the online buffer's.
    """
    buffer = ReplayBuffer(storage=LazyTensorStorage(offline.shape[0]))
    buffer.extend(offline)
    return buffer


class MixedReplayBuffer(OfflineToOnlineReplayBuffer):
    """:class:`~torchrl.data.OfflineToOnlineReplayBuffer` that also accepts ``offline_fraction`` 0 or 1.

    Each :meth:`sample` takes exactly ``round(offline_fraction · batch_size)`` transitions from the
    demonstrations and the rest from the online data (all offline while there is no online data
    yet), and marks which are which in a bool ``"is_offline"`` entry (``[batch_size]``; a loss can
    hold its proximity term to those rows: ``SACFlowLoss.set_keys(proximity_mask="is_offline")``).
    TorchRL's constructor wants the open interval (0, 1); its sampling already handles both
    ends, so they are allowed here: 0 is plain online SAC, 1 trains on demonstrations only.

    Args:
        offline_buffer (ReplayBuffer): the demonstrations (never written to).

    Keyword Args:
        online_capacity (int): online transitions kept (FIFO beyond that).
        offline_fraction (float): in ``[0, 1]``.
        batch_size (int): transitions per :meth:`sample`.
    """

    def __init__(self, offline_buffer, *, online_capacity: int, offline_fraction: float, batch_size: int):
        if not 0.0 <= offline_fraction <= 1.0:
            raise ValueError(f"offline_fraction must be in [0, 1], got {offline_fraction}")
        super().__init__(offline_buffer, online_capacity=int(online_capacity), offline_fraction=0.5,
                         batch_size=int(batch_size))
        self._offline_fraction = self._base_offline_fraction = float(offline_fraction)

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Store online transitions (only :data:`TRANSITION_KEYS`, flattened)."""
        return super().extend(data.reshape(-1).select(*TRANSITION_KEYS))

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        """A ``[batch_size]`` batch, offline rows first, with the bool ``"is_offline"`` entry."""
        batch_size = self._batch_size if batch_size is None else batch_size
        out = super().sample(batch_size)
        n_offline = round(self._offline_fraction * batch_size)
        if len(self._online_buffer) == 0:  # the same fallbacks as TorchRL's sample
            n_offline = batch_size
        out.set("is_offline", torch.arange(batch_size, device=out.device) < n_offline)
        return out
