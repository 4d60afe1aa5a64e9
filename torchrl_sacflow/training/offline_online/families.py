"""The dataset families of the offline-to-online recipe: what ``dataset=<family>[:<file>]`` selects.

==========================  ===========================================================================
``dataset=``                data, online env
==========================  ===========================================================================
``robomimic:FILE.hdf5``     a Robomimic low-dim file; the robosuite task rebuilt from its ``env_args``
``robomimic``               scripted Lift demos written once into ``datasets_dir`` (``scripted_*``)
``ogbench:FILE.npz``        an OGBench cube file (official or generated); the singletask env of
                            ``task`` / ``task_id``
``ogbench``                 OGBench play data written once into ``datasets_dir`` (``ogbench.*``)
``FILE`` or ``null``        the Robomimic forms (``python -m recipes.train_robomimic dataset=FILE``)
==========================  ===========================================================================

:func:`resolve_offline_data` turns a recipe config into an :class:`OfflineData`: the file (generated
if needed), the env factory and the loader, with everything downstream (phases, buffers, loss)
the same for both families. Rewards are each family's own (Robomimic: 1.0 at success; OGBench:
``#cubes at goal - #cubes`` per step, in ``{-n, ..., 0}``); the recipe counts success from the
envs' and loaders' ``success`` flag only.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase

from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.offline_online.data import (
    SCRIPTED_WEAK_OPTIONS,
    TRANSITION_KEYS,
    load_robomimic_transitions,
    read_task_env_args,
    resolve_dataset,
)

__all__ = [
    "DATASET_FAMILIES",
    "OGBENCH_GENERATE_OPTIONS",
    "OfflineData",
    "describe_transitions",
    "ogbench_dataset_path",
    "parse_dataset",
    "resolve_offline_data",
    "resolve_ogbench_dataset",
]

#: Each family's default ``task`` and ``max_episode_steps`` (primitive steps; ``None``: the env's registered limit).
DATASET_FAMILIES: dict[str, dict[str, Any]] = {
    "robomimic": {"task": "lift", "max_episode_steps": 200},
    "ogbench": {"task": "cube-double", "max_episode_steps": None},
}
#: The ``ogbench`` config block: keywords of :func:`~torchrl_sacflow.ogbench.generate_ogbench_dataset`
#: and their tags in a generated file's name (``None``: always in the name).
OGBENCH_GENERATE_OPTIONS: dict[str, str | None] = {
    "dataset_type": None, "transitions": None, "seed": None, "action_noise": "actnoise",
    "p_early_stop": "earlystop", "p_failed_subtask": "failedsub",
}


def parse_dataset(spec: str | os.PathLike | None) -> tuple[str, Path | None]:
    """``(family, file)`` of a ``dataset`` setting; ``file`` is ``None`` for data to generate.

    ``"ogbench:x.npz"`` → ``("ogbench", Path("x.npz"))``, ``"ogbench"`` → ``("ogbench", None)``;
    a bare path or ``None`` is the Robomimic form.

    Raises:
        ConfigError: a family prefix with an empty file (``"ogbench:"``).
    """
    if spec is None:
        return "robomimic", None
    text = str(spec)
    family, sep, rest = text.partition(":")
    if family in DATASET_FAMILIES:
        if sep and not rest:
            raise ConfigError(f"dataset={text!r} names no file: use dataset={family} (generated data) "
                              f"or dataset={family}:/path/to/file")
        return family, Path(rest).expanduser() if sep else None
    return "robomimic", Path(text).expanduser()


def ogbench_dataset_path(datasets_dir: str | os.PathLike, task: str, *, dataset_type: str = "play",
                         transitions: int, seed: int = 0, **weak_options: float) -> Path:
    """Where generated OGBench data are cached: ``cube-double_play_20000_seed0[_actnoise0.2...].npz``.

    Each imperfect-data option that is not 0 adds a tag, so files made with other options are never reused.
    """
    tags = "".join(f"_{OGBENCH_GENERATE_OPTIONS[key]}{float(value):g}" for key, value in weak_options.items() if value)
    return Path(datasets_dir) / f"{task}_{dataset_type}_{transitions}_seed{seed}{tags}.npz"


def resolve_ogbench_dataset(dataset: Path | None, *, task: str, datasets_dir: str | os.PathLike,
                            progress: bool = False, **generate_kwargs: Any) -> tuple[Path, bool]:
    """The OGBench file to use, and whether it was generated just now.

    A given ``dataset`` is returned as is (the loader reports a bad file). ``None`` means data
    written by :func:`~torchrl_sacflow.ogbench.generate_ogbench_dataset` with ``generate_kwargs``
    (:data:`OGBENCH_GENERATE_OPTIONS`), generated on first use (~5 ms per transition here) and
    reused afterwards.

    Raises:
        ConfigError: an unknown or bad generator setting, or ``ogbench`` not installed.
    """
    if dataset is not None:
        return dataset, False
    unknown = sorted(set(generate_kwargs) - set(OGBENCH_GENERATE_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown ogbench.{unknown[0]}: expected one of {', '.join(OGBENCH_GENERATE_OPTIONS)}")
    path = ogbench_dataset_path(datasets_dir, task, **generate_kwargs)
    if path.is_file():
        return path, False
    from torchrl_sacflow.ogbench import generate_ogbench_dataset

    print(f"generating {generate_kwargs['transitions']} OGBench {task} transitions into {path} (once)", flush=True)
    generate_ogbench_dataset(path, task=task, progress=progress, **generate_kwargs)
    return path, True


def describe_transitions(data: TensorDictBase) -> dict[str, int]:
    """Counts of loaded offline data (with its ``episode`` entry): ``episodes``,
    ``episodes_with_success``, ``transitions`` and ``success_transitions``."""
    success = data["next", "success"].reshape(-1)
    episodes = data["episode"]
    return {
        "episodes": int(episodes.unique().numel()),
        "episodes_with_success": int(episodes[success].unique().numel()),
        "transitions": int(success.numel()),
        "success_transitions": int(success.sum()),
    }


@dataclass
class OfflineData:
    """A resolved dataset: what the recipe builds its envs and offline buffer from.

    Attributes:
        family (str): ``"robomimic"`` or ``"ogbench"``.
        task (str): the task (``"lift"``, ``"cube-double"``, ...).
        path (Path): the data file.
        generated (bool): written by this call.
        max_episode_steps (int): the online and evaluation episode limit, in primitive steps.
        make_env (callable): ``make_env(seed=...)`` → the chunked online env (picklable partial).
        identity (dict): what a checkpoint must agree on about data and env (the config's ``env`` entry).
        description (dict): counts of the file for the start-of-run line (``episodes``,
            ``episodes_with_success``, ``transitions``, ...): OGBench's
            :func:`~torchrl_sacflow.ogbench.describe_ogbench_dataset` (read, and so checked, before
            any env is built), Robomimic's :func:`describe_transitions` of the loaded data.
    """

    family: str
    task: str
    path: Path
    generated: bool
    max_episode_steps: int
    make_env: Callable[..., EnvBase]
    identity: dict
    _load: Callable[[EnvBase], TensorDict]
    description: dict | None = None

    def load(self, env: EnvBase) -> TensorDict:
        """The file's chunked transitions with :data:`TRANSITION_KEYS` only, read in ``env``'s action bounds."""
        data = self._load(env)
        if self.description is None:
            self.description = describe_transitions(data)
        return data.select(*TRANSITION_KEYS)

    def summary_line(self) -> str:
        """One line on what the data hold; it says so when no episode reaches the task's success."""
        d = self.description
        line = (f"data: {self.family} {self.task} {self.path}{' (generated now)' if self.generated else ''}: "
                f"{d['transitions']} transitions, {d['episodes_with_success']}/{d['episodes']} episodes reach success")
        if not d["episodes_with_success"]:
            line += " -- no success in the data: pre-training cannot imitate one, online fine-tuning must find it"
        return line


def resolve_offline_data(cfg: Mapping[str, Any], *, progress: bool = False) -> OfflineData:
    """The :class:`OfflineData` of an offline-to-online config (plain dict, checked by
    :func:`~torchrl_sacflow.training.offline_online.check_offline_online_config`).

    Reads ``dataset``, ``task`` and ``max_episode_steps`` (``None``: the family's defaults,
    :data:`DATASET_FAMILIES`), ``action_chunk``, ``gamma``, ``action_out_of_bounds``,
    ``datasets_dir``; for Robomimic ``obs_keys``, ``filter_key``, ``terminal_rule`` and the
    ``scripted_*`` options, for OGBench ``task_id`` and the ``ogbench`` block. Generates the
    data when ``dataset`` names a family without a file.

    Raises:
        ConfigError: a bad or mismatched file (here for Robomimic's ``env_args``; the rest when loading).
    """
    family, file = parse_dataset(cfg["dataset"])
    defaults = DATASET_FAMILIES[family]
    task = cfg["task"] or defaults["task"]
    limit = cfg["max_episode_steps"] or defaults["max_episode_steps"]
    h, gamma, out_of_bounds = cfg["action_chunk"], cfg["gamma"], cfg["action_out_of_bounds"]
    if family == "robomimic":
        weak = {key: cfg[f"scripted_{key}"] for key in SCRIPTED_WEAK_OPTIONS}
        path, generated = resolve_dataset(file, task=task, datasets_dir=cfg["datasets_dir"],
                                          episodes=cfg["scripted_episodes"], seed=cfg["scripted_seed"], **weak)
        env_args = read_task_env_args(path, task)
        from torchrl_sacflow.robomimic import make_robomimic_env

        make_env = functools.partial(make_robomimic_env, env_args, obs_keys=cfg["obs_keys"], action_chunk=h,
                                     gamma=gamma, max_episode_steps=limit)
        identity = {"id": f"robomimic-{task}", "dataset": str(path.resolve()), "action_chunk": h, "gamma": gamma,
                    "obs_keys": cfg["obs_keys"], "filter_key": cfg["filter_key"]}

        def load(env: EnvBase) -> TensorDict:
            space, primitive = env.action_spec.space, env.action_spec.shape[-1] // h
            return load_robomimic_transitions(
                path, obs_keys=cfg["obs_keys"], action_chunk=h, gamma=gamma, filter_key=cfg["filter_key"],
                terminal_rule=cfg["terminal_rule"], out_of_bounds=out_of_bounds,
                action_bounds=(space.low.reshape(-1)[:primitive], space.high.reshape(-1)[:primitive]))

        return OfflineData(family, task, path, generated, limit, make_env, identity, load)

    from torchrl_sacflow.ogbench import describe_ogbench_dataset, load_ogbench_dataset, make_ogbench_env
    from torchrl_sacflow.ogbench.tasks import import_ogbench, singletask_env_id

    task_id = cfg["task_id"]
    path, generated = resolve_ogbench_dataset(file, task=task, datasets_dir=cfg["datasets_dir"], progress=progress,
                                              **cfg["ogbench"])
    description = describe_ogbench_dataset(path, task=task, task_id=task_id)  # a bad or mismatched file: one line
    if limit is None:  # the singletask env's registered limit (cube-double: 500)
        import gymnasium

        import_ogbench()
        limit = int(gymnasium.spec(singletask_env_id(task, task_id)).max_episode_steps)
    make_env = functools.partial(make_ogbench_env, task, task_id=task_id, action_chunk=h, gamma=gamma,
                                 max_episode_steps=limit)
    identity = {"id": f"ogbench-{task}", "dataset": str(path.resolve()), "action_chunk": h, "gamma": gamma,
                "task_id": task_id}

    def load(env: EnvBase) -> TensorDict:  # OGBench's actions are in [-1, 1], the env's bounds
        return load_ogbench_dataset(path, task=task, task_id=task_id, action_chunk=h, gamma=gamma,
                                    out_of_bounds=out_of_bounds)

    return OfflineData(family, task, path, generated, limit, make_env, identity, load, description)
