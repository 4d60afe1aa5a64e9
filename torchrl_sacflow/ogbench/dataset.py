"""Reading OGBench ``.npz`` datasets into TorchRL transitions with a singletask reward.

An OGBench file (``ogbench.utils.load_dataset``; the official ``cube-*-play-v0.npz`` or one
written by :mod:`torchrl_sacflow.ogbench.generate`) is a flat sequence of rows::

                     |<------ episode 1 ------>|  |<-- episode 2 ...
    observations   : [s0, s1, ..., s999, s1000,   s0, ...]   float32 [N, D]
    actions        : [a0, a1, ..., a999, a1000,   a0, ...]   float32 [N, 5]
    terminals      : [ 0,  0, ...,    0,     1,    0, ...]   bool    [N]   (last row of each episode)
    qpos, qvel     : the MuJoCo state of each row's observation   float32

Row ``t`` and row ``t + 1`` of the same episode form the transition ``(s_t, a_t, s_{t+1})``; the
last row of an episode only provides the final observation (its action was never followed by a
stored state), exactly as ``ogbench.utils.load_dataset`` reads it, so an episode of ``L`` rows
gives ``L - 1`` transitions. ``terminals`` mark where the *data* trajectory ends (OGBench collects
without termination at the goal); they are not task terminations.

The singletask reward is reproduced as OGBench's singletask datasets define it
(``ogbench.relabel_utils.relabel_dataset``, and the ``cube-*-singletask`` envs since 1.2): from
the cubes' positions in ``qpos`` of the *current* state ``s_t``, ``r_t = #cubes at goal - #cubes``
and the transition is terminal (OGBench's ``masks == 0``) when all cubes are at their goals. The
chunked transitions then follow :func:`~torchrl_sacflow.action_chunks.chunk_episode`, the rule
the Robomimic loader and the chunked online envs share.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from torchrl_sacflow.action_chunks import chunk_episode, transitions_tensordict
from torchrl_sacflow.errors import ConfigError
from torchrl_sacflow.ogbench.tasks import (
    ACTION_DIM,
    cube_positions,
    num_cubes,
    observation_dim,
    qpos_dim,
    singletask_reward,
    task_goals,
)

__all__ = ["OGBenchDatasetError", "describe_ogbench_dataset", "load_ogbench_dataset", "read_ogbench_npz"]

PathLike = str | os.PathLike

#: The arrays every OGBench dataset has (``qpos``/``qvel`` are there too in the official files).
REQUIRED_KEYS = ("observations", "actions", "terminals")


class OGBenchDatasetError(ConfigError):
    """Raised when a file is not a usable OGBench dataset (one line naming the file and the problem)."""


def _read_array(npz, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OGBenchDatasetError(f"cannot read array {key!r} of {str(path)!r}: {msg}") from None


def read_ogbench_npz(path: PathLike, task: str) -> dict[str, np.ndarray]:
    """Reads and checks the raw arrays of an OGBench ``.npz`` file of ``task``, unchanged.

    Args:
        path (str or path-like): the ``.npz`` file.
        task (str): the cube environment the file must be of (its widths are checked).

    Returns:
        ``{"observations", "actions", "terminals"}`` and ``"qpos"`` when the file has it, as
        stored (``terminals`` as bool). Other arrays (``qvel``, ...) are not read.

    Raises:
        OGBenchDatasetError: missing file, not an ``.npz``, a missing or unreadable array, arrays of
            the wrong rank, width (another task's file) or length, ``terminals`` other than 0/1,
            non-finite values, or a last row that does not end an episode.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise OGBenchDatasetError(f"OGBench dataset not found: {str(path)!r}")
    if path.is_dir():
        raise OGBenchDatasetError(f"OGBench dataset path {str(path)!r} is a directory, expected an .npz file")
    if not zipfile.is_zipfile(path):
        raise OGBenchDatasetError(f"{str(path)!r} is not an .npz file (expected an OGBench dataset)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OGBenchDatasetError(f"cannot open {str(path)!r} as .npz: {msg}") from None
    with npz:
        missing = [key for key in REQUIRED_KEYS if key not in npz.files]
        if missing:
            raise OGBenchDatasetError(
                f"{str(path)!r} has no {missing[0]!r} array (it has {sorted(npz.files)}): not an OGBench dataset"
            )
        keys = REQUIRED_KEYS + (("qpos",) if "qpos" in npz.files else ())
        raw = {key: _read_array(npz, key, path) for key in keys}

    widths = {"observations": observation_dim(task), "actions": ACTION_DIM, "qpos": qpos_dim(task)}
    for key, width in widths.items():
        if key not in raw:
            continue
        value = raw[key]
        if value.ndim != 2:
            raise OGBenchDatasetError(
                f"{str(path)!r}: {key!r} has shape {value.shape}, expected (rows, {width})"
                + (" (pixel observations are not supported)" if key == "observations" and value.ndim > 2 else "")
            )
        if value.shape[1] != width:
            raise OGBenchDatasetError(
                f"{str(path)!r}: {key!r} are {value.shape[1]} wide but {task}'s are {width}: a file of another task?"
            )
        if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
            raise OGBenchDatasetError(f"{str(path)!r}: {key!r} has dtype {value.dtype}, expected real numbers")
    terminals = raw["terminals"]
    if terminals.ndim != 1:
        raise OGBenchDatasetError(f"{str(path)!r}: 'terminals' has shape {terminals.shape}, expected (rows,)")
    lengths = {key: int(value.shape[0]) for key, value in raw.items()}
    if len(set(lengths.values())) != 1:
        raise OGBenchDatasetError(f"{str(path)!r}: arrays have different numbers of rows {lengths}")
    if lengths["terminals"] == 0:
        raise OGBenchDatasetError(f"{str(path)!r} has no rows")
    if not np.isin(terminals, (0, 1)).all():
        bad = int((~np.isin(terminals, (0, 1))).sum())
        raise OGBenchDatasetError(f"{str(path)!r}: {bad} 'terminals' entries are neither 0 nor 1")
    raw["terminals"] = terminals.astype(bool)
    if not raw["terminals"][-1]:
        raise OGBenchDatasetError(
            f"{str(path)!r}: the last row does not end an episode (terminals[-1] = 0): a truncated file?"
        )
    for key in widths:
        if key in raw and not np.isfinite(raw[key]).all():
            finite = np.isfinite(raw[key]).reshape(len(raw[key]), -1).all(-1)
            raise OGBenchDatasetError(
                f"{str(path)!r}: {key!r} has a non-finite value at row {int(np.argmin(finite))} "
                f"({int((~finite).sum())} rows)")
    return raw


def _check_action_bounds(path: Path, actions: np.ndarray, out_of_bounds: str) -> np.ndarray:
    """The transitions' actions against the env's ``[-1, 1]``: kept, an error, or clipped with a counted warning."""
    outside = np.abs(actions) > 1.0 + 1e-6
    count = int(outside.sum())
    if not count:
        return actions
    excess = float(np.abs(actions).max() - 1.0)
    message = (
        f"{str(path)!r}: {count} of {actions.size} action entries ({100 * count / actions.size:.1f}%) lie outside "
        f"the env's action bounds [-1, 1] (by up to {excess:.3g})"
    )
    if out_of_bounds == "error":
        raise OGBenchDatasetError(f"{message} (out_of_bounds='clip' clips them, with a warning)")
    warnings.warn(f"{message}; clipped to the bounds", stacklevel=3)
    return np.clip(actions, -1.0, 1.0)


def load_ogbench_dataset(
    path: PathLike,
    *,
    task: str = "cube-double",
    task_id: int | None = None,
    action_chunk: int = 1,
    gamma: float = 0.99,
    out_of_bounds: str = "error",
    device: torch.device | str = "cpu",
) -> TensorDict:
    """Loads an OGBench ``.npz`` file as a flat TensorDict of (chunked) singletask transitions.

    What each array becomes (nothing is changed silently):

    * ``observations`` — ``"observation"`` and ``("next", "observation")`` (the next row of the
      same episode), float32, as stored.
    * ``actions`` — ``"action"``, as stored: OGBench's normalized actions, the env's bounds are
      ``[-1, 1]``. Entries outside are an error (``out_of_bounds="error"``, default) or are
      clipped with a warning that counts them (``"clip"``). The action of each episode's last row
      is not part of any transition (as in ``ogbench.utils.load_dataset``).
    * ``terminals`` — episode boundaries only: a window never crosses one, and the last transition
      of an episode is *truncated* (bootstrapped) unless it is terminal by the task.
    * ``qpos`` — the cubes' positions of ``s_t`` give the reward ``r_t`` (``#cubes at goal -
      #cubes``) and the terminal flag (all cubes at goal), as OGBench's singletask datasets and
      envs define them. A file without ``qpos`` is read from the cube positions in the
      observations instead, with a warning.

    With ``action_chunk=h > 1`` every step starts a transition of up to ``h`` steps whose reward is
    ``sum_{j<k} gamma^j r_{t+j}``; it stops after a terminal step or at the episode's end (see
    :func:`~torchrl_sacflow.action_chunks.chunk_episode`), matching
    :class:`~torchrl_sacflow.ogbench.OGBenchEnv` with the same ``h`` and ``gamma``.

    Args:
        path (str or path-like): the OGBench ``.npz`` file (e.g. ``cube-double-play-v0.npz``).

    Keyword Args:
        task (str): the cube environment of the file. Defaults to ``"cube-double"``.
        task_id (int, optional): the singletask goal, 1..5; ``None`` (default) is OGBench's
            default task (``cube-double-singletask-v0`` = task 2).
        action_chunk (int): primitive actions per transition. Defaults to ``1``.
        gamma (float): discount of the in-chunk reward sum. Defaults to ``0.99``.
        out_of_bounds (str): ``"error"`` (default) or ``"clip"``; see above.
        device (torch.device or str): device of the returned tensors. Defaults to ``"cpu"``.

    Returns:
        a TensorDict of batch size ``[N]`` (``N`` = rows - episodes) with the layout of
        :func:`~torchrl_sacflow.robomimic.load_robomimic_dataset`: ``"observation"`` (float32
        ``[N, D]``), ``"action"`` (float32 ``[N, 5h]``), ``"episode"`` (int64 ``[N]``, the
        episode's index in the file), ``"chunk_length"`` (int64 ``[N, 1]``) and under ``"next"``:
        ``"observation"``, ``"reward"`` (float32 ``[N, 1]``), ``"done"``, ``"terminated"``,
        ``"truncated"`` and ``"success"`` (bool ``[N, 1]``; success is the task's, reached within
        the transition).

    Raises:
        OGBenchDatasetError: (a :class:`~torchrl_sacflow.errors.ConfigError`) a corrupt or
            mismatched file (see :func:`read_ogbench_npz`) or out-of-bounds actions.
        ConfigError: an unknown ``task`` or ``task_id``.

    Examples:
        >>> td = load_ogbench_dataset("cube-double-play-v0.npz", task="cube-double", action_chunk=5)
        >>> td["action"].shape[-1]
        25
    """
    if int(action_chunk) != action_chunk or action_chunk < 1:
        raise ValueError(f"action_chunk must be a positive integer, got {action_chunk!r}")
    if out_of_bounds not in ("error", "clip"):
        raise ValueError(f"out_of_bounds must be 'error' or 'clip', got {out_of_bounds!r}")
    h = int(action_chunk)
    num_cubes(task)
    path = Path(path).expanduser()
    raw = read_ogbench_npz(path, task)
    _, goals = task_goals(task, task_id)

    observations = raw["observations"]
    if "qpos" in raw:
        cubes = cube_positions(task, qpos=raw["qpos"])
    else:
        warnings.warn(
            f"{str(path)!r} has no 'qpos' array: the reward of all {observations.shape[0]} rows is computed from the "
            f"cube positions in the observations (float32, scaled by 10) instead",
            stacklevel=2,
        )
        cubes = cube_positions(task, observations=observations)
    rewards, success = singletask_reward(cubes, goals)

    ends = np.flatnonzero(raw["terminals"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    single_row = int((ends == starts).sum())
    if single_row:
        warnings.warn(
            f"{str(path)!r}: {single_row} of {len(ends)} episodes have a single row (no transition): skipped",
            stacklevel=2,
        )
    transition_rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    if transition_rows.size == 0:
        raise OGBenchDatasetError(f"{str(path)!r} has no transitions (every episode is a single row)")
    actions = raw["actions"].astype(np.float64)
    actions[transition_rows] = _check_action_bounds(path, actions[transition_rows], out_of_bounds)

    pieces: dict[str, list[np.ndarray]] = {}
    episode_ids = []
    for episode, (s, e) in enumerate(zip(starts, ends)):
        if s == e:
            continue
        chunks = chunk_episode(observations[s:e], observations[s + 1 : e + 1], actions[s:e], rewards[s:e],
                               success[s:e], h, gamma, success[s:e])
        for key, value in chunks.items():
            pieces.setdefault(key, []).append(value)
        episode_ids.append(np.full(e - s, episode, dtype=np.int64))
    return transitions_tensordict(pieces, episode_ids, device=device)


def describe_ogbench_dataset(path: PathLike, *, task: str = "cube-double", task_id: int | None = None) -> dict[str, Any]:
    """Counts of an OGBench file for a log line (checked like :func:`load_ogbench_dataset`, nothing chunked).

    Returns:
        ``rows``, ``episodes``, ``transitions`` (rows minus episodes), ``success_transitions``
        (transitions whose state ``s_t`` completes the singletask goal), ``episodes_with_success``
        and ``reward_mean`` (the singletask reward per transition).
    """
    raw = read_ogbench_npz(path, task)
    _, goals = task_goals(task, task_id)
    rewards, success = singletask_reward(cube_positions(task, qpos=raw.get("qpos"), observations=raw["observations"]),
                                         goals)
    ends = np.flatnonzero(raw["terminals"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    rows = ~raw["terminals"]  # the rows that start a transition
    return {
        "rows": int(rows.size),
        "episodes": int(ends.size),
        "transitions": int(rows.sum()),
        "success_transitions": int(success[rows].sum()),
        "episodes_with_success": int(sum(bool(success[s:e].any()) for s, e in zip(starts, ends))),
        "reward_mean": float(rewards[rows].mean()) if rows.any() else float("nan"),
    }
