"""Reading Robomimic HDF5 datasets into TorchRL transitions.

Robomimic stores demonstrations as ``data/demo_<i>/{actions, rewards, dones,
obs/<key>, next_obs/<key>}`` plus a JSON ``env_args`` attribute on ``data``
that describes the robosuite environment the data was recorded in. The
``robomimic`` package itself cannot be installed next to robosuite 1.5 without
pulling ``mujoco_py``, so the format is read here with ``h5py`` only.

The loader returns a flat :class:`~tensordict.TensorDict` of transitions in
TorchRL's layout (``observation``, ``action``, ``("next", ...)``) so it can be
dropped into a :class:`~torchrl.data.TensorDictReplayBuffer` and mixed with the
data collected online by :func:`~torchrl_sacflow.robomimic.make_robomimic_env`.

**Action chunks.** With ``action_chunk=h > 1`` every transition starts at a
primitive step ``t`` and spans the primitive steps ``t, ..., t+k-1``, where
``k <= h`` is cut short by the first ``done`` inside the window or by the end of
the episode (a window never crosses an episode boundary). The reward is the
discounted sum ``sum_{j<k} gamma^j r_{t+j}``, ``("next", "observation")`` is the
observation after the last executed step and ``("next", "terminated")`` is
``True`` when a ``done`` was reached within the window. The ``h*d`` action of a
short window (``k < h``) is padded by repeating its last executed action.

Every step of an episode is the start of one transition (rather than keeping
full windows only) because that keeps every state as a start state and every
reward covered, including episodes shorter than ``h`` and the states right
before success, which are the most informative ones in sparse-reward data. It is
also exactly what the chunked online environment produces: when the episode
ends inside a chunk it stops early and the trailing actions are never executed.
A short window either terminates (``1 - terminated`` zeroes the bootstrap term,
so ``gamma^h`` vs ``gamma^k`` does not matter) or reaches an episode end that
has no ``done`` (``("next", "truncated")`` is then set); the number of executed
steps is kept in ``chunk_length`` for losses that want the exact ``gamma^k``.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from torchrl_sacflow.action_chunks import chunk_episode, transitions_tensordict
from torchrl_sacflow.errors import ConfigError

__all__ = [
    "DEFAULT_OBS_KEYS",
    "RobomimicDatasetError",
    "list_demos",
    "load_dataset",
    "load_robomimic_dataset",
    "make_robomimic_replay_buffer",
    "read_env_args",
    "register_robomimic_dataset",
]

#: Low-dimensional observation keys concatenated (in this order) into the flat
#: ``"observation"`` entry: end-effector position (3), end-effector quaternion
#: (4), gripper finger positions (2) and the task's object state ("object",
#: robosuite's ``"object-state"``; 10 entries for Lift).
DEFAULT_OBS_KEYS: tuple[str, ...] = (
    "robot0_eef_pos",
    "robot0_eef_quat",
    "robot0_gripper_qpos",
    "object",
)

PathLike = str | os.PathLike


class RobomimicDatasetError(ConfigError):
    """Raised when a file is not a usable Robomimic dataset.

    The message is always a single line naming the file and what is wrong,
    so it reads well at the end of a training log.
    """


def _demo_sort_key(name: str) -> tuple[int, int | str]:
    # robomimic sorts demos by their integer suffix ("demo_10" after "demo_9")
    match = re.search(r"(\d+)$", name)
    if match is None:
        return (1, name)
    return (0, int(match.group(1)))


def _open(path: PathLike):
    """Opens ``path`` read-only after checking it is an HDF5 file with a ``data`` group."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise RobomimicDatasetError(f"Robomimic dataset not found: {str(path)!r}")
    if path.is_dir():
        raise RobomimicDatasetError(
            f"Robomimic dataset path {str(path)!r} is a directory, expected an HDF5 file"
        )
    if not h5py.is_hdf5(path):
        raise RobomimicDatasetError(
            f"{str(path)!r} is not an HDF5 file (expected a Robomimic .hdf5 dataset)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RobomimicDatasetError(
            f"cannot open HDF5 file {str(path)!r}: {msg}"
        ) from None
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        f.close()
        raise RobomimicDatasetError(
            f"{str(path)!r} has no 'data' group: not a Robomimic dataset"
        )
    return f


def _select_demos(f, path: PathLike, filter_key: str | None) -> list[str]:
    import h5py

    data = f["data"]
    if filter_key is None:
        demos = [k for k in data.keys() if isinstance(data[k], h5py.Group)]
    else:
        masks = f["mask"] if "mask" in f else None
        available = sorted(masks.keys()) if masks is not None else []
        if filter_key not in available:
            raise RobomimicDatasetError(
                f"{str(path)!r} has no filter key {filter_key!r} "
                f"(available under 'mask/': {available})"
            )
        demos = [
            d.decode("utf-8") if isinstance(d, bytes) else str(d)
            for d in np.asarray(masks[filter_key][()]).reshape(-1)
        ]
        missing = [d for d in demos if d not in data]
        if missing:
            raise RobomimicDatasetError(
                f"{str(path)!r}: filter key {filter_key!r} lists demos absent "
                f"from 'data': {missing[:5]}"
            )
    demos = sorted(demos, key=_demo_sort_key)
    if not demos:
        where = "" if filter_key is None else f" for filter key {filter_key!r}"
        raise RobomimicDatasetError(f"{str(path)!r} contains no demonstrations{where}")
    return demos


def list_demos(path: PathLike, filter_key: str | None = None) -> list[str]:
    """Returns the demo names of a Robomimic file in loading order.

    The ``episode`` entry of :func:`load_robomimic_dataset` indexes this list,
    which lets a transition be traced back to its ``data/<demo>`` group.

    Args:
        path (str or path-like): the Robomimic HDF5 file.
        filter_key (str, optional): a ``mask/<filter_key>`` subset (e.g.
            ``"train"``). Defaults to ``None`` (every demo).
    """
    with _open(path) as f:
        return _select_demos(f, path, filter_key)


def read_env_args(path: PathLike) -> dict[str, Any]:
    """Reads the ``env_args`` metadata (``env_name``, ``type``, ``env_kwargs``) of a Robomimic file.

    Args:
        path (str or path-like): the Robomimic HDF5 file.

    Returns:
        the decoded ``data.attrs["env_args"]`` dictionary.
    """
    with _open(path) as f:
        raw = f["data"].attrs.get("env_args", None)
    if raw is None:
        raise RobomimicDatasetError(
            f"{str(path)!r} has no 'env_args' attribute on 'data': cannot rebuild its environment"
        )
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        env_args = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise RobomimicDatasetError(
            f"{str(path)!r}: 'env_args' is not valid JSON ({err.msg})"
        ) from None
    if not isinstance(env_args, dict) or "env_name" not in env_args:
        raise RobomimicDatasetError(
            f"{str(path)!r}: 'env_args' must be a JSON object with an 'env_name' entry"
        )
    env_args.setdefault("env_kwargs", {})
    return env_args


def _read_low_dim(group, demo: str, key: str, where: str, path: PathLike) -> np.ndarray:
    if where not in group:
        raise RobomimicDatasetError(
            f"{str(path)!r}: demo {demo!r} has no '{where}' group"
        )
    obs_group = group[where]
    if key not in obs_group:
        raise RobomimicDatasetError(
            f"{str(path)!r}: demo {demo!r} has no observation key {key!r} in "
            f"'{where}' (available: {sorted(obs_group.keys())})"
        )
    value = np.asarray(obs_group[key][()])
    if value.ndim == 1:
        value = value[:, None]
    if value.ndim != 2:
        raise RobomimicDatasetError(
            f"{str(path)!r}: observation {key!r} of demo {demo!r} has shape "
            f"{value.shape}, only low-dimensional (time, dim) observations are supported"
        )
    return value


def _check_action_bounds(path, action: np.ndarray, bounds, action_dim: int, out_of_bounds: str) -> np.ndarray:
    """The chunked actions checked against one primitive action's ``(low, high)`` (see the loader)."""
    import warnings

    low, high = (np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1), (action_dim,)) for b in bounds)
    reps = action.shape[-1] // action_dim
    low, high = np.tile(low, reps), np.tile(high, reps)
    tol = 1e-6 * np.maximum(high - low, 1.0)
    outside = (action < low - tol) | (action > high + tol)
    count = int(outside.sum())
    if not count:
        return action
    excess = float(np.max(np.maximum(low - action, action - high)))
    message = (
        f"{str(path)!r}: {count} of {action.size} action entries ({100 * count / action.size:.1f}%) lie outside "
        f"the env's action bounds [{low.min():g}, {high.max():g}] (by up to {excess:.3g})"
    )
    if out_of_bounds == "error":
        raise RobomimicDatasetError(
            f"{message}; is the env built with the controller the data was recorded with? "
            f"(out_of_bounds='clip' clips them, with this warning)"
        )
    warnings.warn(f"{message}; clipped to the bounds", stacklevel=3)
    return np.clip(action, low, high)


def load_robomimic_dataset(
    path: PathLike,
    *,
    obs_keys: Sequence[str] = DEFAULT_OBS_KEYS,
    filter_key: str | None = None,
    action_chunk: int = 1,
    gamma: float = 0.99,
    terminal_rule: str = "success",
    success_reward: float = 1.0,
    action_bounds: tuple[Any, Any] | None = None,
    out_of_bounds: str = "error",
    device: torch.device | str = "cpu",
) -> TensorDict:
    """Loads a Robomimic low-dim HDF5 file as a flat TensorDict of transitions.

    What each field of the file becomes (nothing is changed silently):

    * **terminal flags** — with ``terminal_rule="success"`` (default) a step is terminal exactly
      where the online env would terminate: at success, i.e. where its reward reaches
      ``success_reward`` (robomimic's sparse success reward, 1.0). A trajectory that ends without
      success is *truncated* at its last step (bootstrapped), whatever ``dones`` says there:
      robomimic writes ``dones`` in several senses (its conversion script's "done modes"; a
      failed rollout's last step is often marked done). ``terminal_rule="dones"`` takes the
      file's ``dones`` as terminal flags instead, for files where they mean exactly that.
    * **actions** — kept as stored, in the env's own units. With ``action_bounds`` (the env's
      bounds of one primitive action) every entry is checked against them: entries outside are
      an error (``out_of_bounds="error"``, default), or are clipped to them with a warning that
      counts them (``"clip"``). (The policy's flow-matching loss clips its own pre-tanh targets
      just inside the bounds; the critic and the proximity term see the stored actions.)
    * **rewards** — summed over a chunk with discount ``gamma``; **observations** — the
      ``obs_keys`` concatenated in order, float32.
    * **non-finite values** (NaN, ±inf) in actions, rewards, obs or next_obs are an error naming the
      demo, the key and the first bad row; nothing is dropped.

    Args:
        path (str or path-like): the Robomimic HDF5 file.

    Keyword Args:
        obs_keys (sequence of str, optional): observation keys concatenated, in
            this order, into ``"observation"``. Defaults to :data:`DEFAULT_OBS_KEYS`.
        filter_key (str, optional): load only the demos listed in
            ``mask/<filter_key>`` (e.g. ``"train"``). Defaults to ``None`` (all).
        action_chunk (int, optional): number ``h`` of consecutive primitive
            actions per transition (see the module docstring for windows that
            reach the end of an episode). Defaults to ``1``.
        gamma (float, optional): discount used to sum the rewards of a chunk.
            Defaults to ``0.99``.
        terminal_rule (str, optional): ``"success"`` (default) or ``"dones"``; see above.
        success_reward (float, optional): the reward that marks success. Defaults to ``1.0``.
        action_bounds (tuple of array-likes, optional): ``(low, high)`` of one primitive
            action in the env the data is for. Defaults to ``None`` (not checked).
        out_of_bounds (str, optional): ``"error"`` (default) or ``"clip"``; see above.
        device (torch.device or str, optional): device of the returned tensors.
            Defaults to ``"cpu"``.

    Returns:
        a TensorDict with batch size ``[N]`` and entries ``"observation"``
        (float32, ``[N, obs_dim]``), ``"action"`` (float32, ``[N, h*d]``),
        ``"episode"`` (int64, index into :func:`list_demos`), ``"chunk_length"``
        (int64, ``[N, 1]``, primitive steps spanned) and under ``"next"``:
        ``"observation"``, ``"reward"`` (float32, ``[N, 1]``), ``"done"``,
        ``"terminated"``, ``"truncated"`` and ``"success"`` (bool, ``[N, 1]``;
        success means a step with the success reward within the transition).

    Examples:
        >>> td = load_robomimic_dataset("lift.hdf5", action_chunk=4)
        >>> td["action"].shape[-1]
        28
    """
    if int(action_chunk) != action_chunk or action_chunk < 1:
        raise ValueError(f"action_chunk must be a positive integer, got {action_chunk!r}")
    if terminal_rule not in ("success", "dones"):
        raise ValueError(f"terminal_rule must be 'success' or 'dones', got {terminal_rule!r}")
    if out_of_bounds not in ("error", "clip"):
        raise ValueError(f"out_of_bounds must be 'error' or 'clip', got {out_of_bounds!r}")
    h = int(action_chunk)
    obs_keys = tuple(obs_keys)
    if not obs_keys:
        raise ValueError("obs_keys must name at least one observation key")

    pieces: dict[str, list[np.ndarray]] = {}
    episode_ids = []
    with _open(path) as f:
        demos = _select_demos(f, path, filter_key)
        data = f["data"]
        action_dim = None
        for episode, demo in enumerate(demos):
            group = data[demo]
            if "actions" not in group:
                raise RobomimicDatasetError(
                    f"{str(path)!r}: demo {demo!r} has no 'actions' dataset"
                )
            actions = np.asarray(group["actions"][()], dtype=np.float64)
            if actions.ndim != 2 or actions.shape[0] == 0:
                raise RobomimicDatasetError(
                    f"{str(path)!r}: demo {demo!r} has actions of shape "
                    f"{actions.shape}, expected a non-empty (time, dim) array"
                )
            if action_dim is None:
                action_dim = actions.shape[1]
            elif actions.shape[1] != action_dim:
                raise RobomimicDatasetError(
                    f"{str(path)!r}: demo {demo!r} has action dim {actions.shape[1]}, "
                    f"earlier demos have {action_dim}"
                )
            T = actions.shape[0]
            for name in ("rewards", "dones"):
                if name not in group:
                    raise RobomimicDatasetError(
                        f"{str(path)!r}: demo {demo!r} has no '{name}' dataset"
                    )
            rewards = np.asarray(group["rewards"][()], dtype=np.float64).reshape(-1)
            dones = np.asarray(group["dones"][()]).reshape(-1) > 0
            obs = np.concatenate(
                [_read_low_dim(group, demo, k, "obs", path) for k in obs_keys], -1
            )
            next_obs = np.concatenate(
                [_read_low_dim(group, demo, k, "next_obs", path) for k in obs_keys], -1
            )
            lengths = {
                "rewards": rewards.shape[0],
                "dones": dones.shape[0],
                "obs": obs.shape[0],
                "next_obs": next_obs.shape[0],
            }
            bad = {k: v for k, v in lengths.items() if v != T}
            if bad:
                raise RobomimicDatasetError(
                    f"{str(path)!r}: demo {demo!r} has {T} actions but lengths {bad}"
                )
            # a NaN or inf would train the policy and the critic to NaN weights without a word
            for name, value in (("actions", actions), ("rewards", rewards), ("obs", obs), ("next_obs", next_obs)):
                finite = np.isfinite(value).reshape(value.shape[0], -1).all(-1)
                if not finite.all():
                    row = int(np.argmin(finite))
                    raise RobomimicDatasetError(
                        f"{str(path)!r}: demo {demo!r} has a non-finite value in {name!r} at row {row} "
                        f"({int((~finite).sum())} of its {T} rows)"
                    )
            success = rewards >= success_reward
            terminal = success if terminal_rule == "success" else dones
            episode_data = chunk_episode(obs, next_obs, actions, rewards, terminal, h, gamma, success)
            for key, value in episode_data.items():
                pieces.setdefault(key, []).append(value)
            episode_ids.append(np.full(T, episode, dtype=np.int64))

    action = np.concatenate(pieces["action"], 0)
    if action_bounds is not None:
        action = _check_action_bounds(path, action, action_bounds, action_dim, out_of_bounds)
    return transitions_tensordict(pieces, episode_ids, action=action, device=device)


def make_robomimic_replay_buffer(
    path: PathLike,
    *,
    batch_size: int | None = None,
    obs_keys: Sequence[str] = DEFAULT_OBS_KEYS,
    filter_key: str | None = None,
    action_chunk: int = 1,
    gamma: float = 0.99,
    device: torch.device | str = "cpu",
    sampler=None,
    transform=None,
    prefetch: int | None = None,
    **load_kwargs,
):
    """Loads a Robomimic file into a :class:`~torchrl.data.TensorDictReplayBuffer`.

    The transitions of :func:`load_robomimic_dataset` are written once into a
    :class:`~torchrl.data.LazyTensorStorage` sized to the dataset, so sampling
    is a plain tensor gather.

    Args:
        path (str or path-like): the Robomimic HDF5 file.

    Keyword Args:
        batch_size (int, optional): default sample size. Defaults to ``None``
            (then pass it to :meth:`sample`).
        obs_keys, filter_key, action_chunk, gamma, device: see
            :func:`load_robomimic_dataset`.
        sampler (torchrl.data.Sampler, optional): defaults to uniform sampling
            with replacement.
        transform (torchrl.envs.Transform, optional): applied to sampled batches.
        prefetch (int, optional): number of batches prefetched in a background thread.
        **load_kwargs: the other keywords of :func:`load_robomimic_dataset` (``terminal_rule``,
            ``action_bounds``, ``out_of_bounds``, ...).

    Returns:
        a filled ``TensorDictReplayBuffer``.
    """
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    td = load_robomimic_dataset(
        path,
        obs_keys=obs_keys,
        filter_key=filter_key,
        action_chunk=action_chunk,
        gamma=gamma,
        device=device,
        **load_kwargs,
    )
    kwargs = {}
    if sampler is not None:
        kwargs["sampler"] = sampler
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(td.shape[0], device=device),
        batch_size=batch_size,
        transform=transform,
        prefetch=prefetch,
        **kwargs,
    )
    rb.extend(td)
    return rb


_PREFIX = "robomimic"


def register_robomimic_dataset() -> None:
    """Registers the ``"robomimic:<path>"`` source with TorchRL's dataset registry.

    After this, ``torchrl.data.datasets.load_dataset("robomimic:lift.hdf5",
    batch_size=256)`` returns :func:`make_robomimic_replay_buffer`'s buffer.
    It runs on import of this module and is idempotent.
    """
    from torchrl.data.datasets import register_dataset

    register_dataset(
        _PREFIX,
        "torchrl_sacflow.robomimic.dataset:make_robomimic_replay_buffer",
        replace=True,
    )


def load_dataset(dataset_id: str, **kwargs):
    """Builds a dataset replay buffer from a prefixed id such as ``"robomimic:/data/lift.hdf5"``.

    A thin entry point over TorchRL's :func:`~torchrl.data.datasets.load_dataset`
    that makes sure the ``robomimic`` prefix is registered first, so other
    prefixes (``"d4rl:..."``, ``"minari:..."``) keep working too.

    Args:
        dataset_id (str): ``"<prefix>:<id>"``; for Robomimic the id is the
            path of the HDF5 file.
        **kwargs: forwarded to the dataset factory (for Robomimic:
            :func:`make_robomimic_replay_buffer`).
    """
    from torchrl.data.datasets import load_dataset as _torchrl_load_dataset

    register_robomimic_dataset()
    return _torchrl_load_dataset(dataset_id, **kwargs)


register_robomimic_dataset()
