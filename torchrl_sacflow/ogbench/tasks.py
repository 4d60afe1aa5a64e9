"""OGBench's cube tasks: names, env ids, observation/state layout and the singletask reward.

OGBench (Park et al., 2025; package ``ogbench``, ``ogbench/manipspace``) names a manipulation
*environment* ``cube-<n>`` (``cube-single``, ``cube-double``, ...), its datasets
``cube-<n>-<type>-v0`` (``type`` is ``play`` or ``noisy``) and the reward-based single-task
variants ``cube-<n>-singletask-task<k>-v0`` (``k`` in 1..5; the default task is aliased by
``cube-<n>-singletask-v0``). Everything here follows that source:

* the state observation of ``CubeEnv.compute_observation``: 19 proprioceptive entries (6 joint
  positions, 6 joint velocities, end-effector position ``(p - (0.425, 0, 0)) * 10``, cos and sin
  of its yaw, gripper opening ``* 3``, gripper contact) then 9 per cube (position, scaled the same
  way, quaternion ``wxyz``, cos and sin of its yaw);
* the MuJoCo state ``qpos``: 14 robot entries (6 arm joints, 8 gripper joints) then a free joint
  per cube (position 3 + quaternion 4), as ``ogbench.relabel_utils`` indexes it;
* the singletask reward (``CubeEnv.compute_reward``, ``relabel_utils.relabel_dataset``): cube
  ``i`` is at its goal when its position is within 4 cm of the task's ``goal_xyzs[i]``; the
  reward is ``(#cubes at goal) - #cubes``, in ``{-n, ..., 0}``, and the task succeeds (the env
  terminates) when all are. Since OGBench 1.2 the singletask envs compute reward, success and
  termination from the *current* state ``s`` of a step ``(s, a, s')``.

``ogbench`` is imported lazily (it pulls ``dm_control``), only by the functions that need the
env's task list.
"""
from __future__ import annotations

import functools

import numpy as np

from torchrl_sacflow.errors import ConfigError

__all__ = [
    "ACTION_DIM",
    "CUBE_TASKS",
    "GOAL_TOLERANCE",
    "cube_positions",
    "dataset_env_id",
    "import_ogbench",
    "num_cubes",
    "observation_dim",
    "qpos_dim",
    "singletask_env_id",
    "singletask_reward",
    "task_goals",
]

#: The cube environments and their number of cubes (octuple, without an official dataset, is left out).
CUBE_TASKS: dict[str, int] = {"cube-single": 1, "cube-double": 2, "cube-triple": 3, "cube-quadruple": 4}

#: Width of one action: relative end-effector position (3), yaw (1) and gripper opening (1), each in [-1, 1].
ACTION_DIM = 5
#: Distance (m) within which a cube counts as at its goal.
GOAL_TOLERANCE = 0.04

_PROPRIO_OBS = 19  # joint pos 6, joint vel 6, effector pos 3, yaw cos/sin 2, gripper opening 1, contact 1
_CUBE_OBS = 9  # position 3, quaternion 4, yaw cos/sin 2
_ROBOT_QPOS = 14  # arm joints 6, gripper joints 8
_CUBE_QPOS = 7  # free joint: position 3, quaternion 4
_XYZ_CENTER = np.array([0.425, 0.0, 0.0])
_XYZ_SCALE = 10.0


def num_cubes(task: str) -> int:
    """The number of cubes of an OGBench cube environment (``"cube-double"`` → 2).

    Raises:
        ConfigError: ``task`` is not one of :data:`CUBE_TASKS`.
    """
    if task not in CUBE_TASKS:
        raise ConfigError(f"unknown OGBench task {task!r} (supported: {', '.join(CUBE_TASKS)})")
    return CUBE_TASKS[task]


def observation_dim(task: str) -> int:
    """Width of the state observation of ``task`` (37 for ``cube-double``)."""
    return _PROPRIO_OBS + _CUBE_OBS * num_cubes(task)


def qpos_dim(task: str) -> int:
    """Width of the MuJoCo ``qpos`` of ``task`` (28 for ``cube-double``)."""
    return _ROBOT_QPOS + _CUBE_QPOS * num_cubes(task)


def dataset_env_id(task: str) -> str:
    """The goal-conditioned env the datasets are collected in (``"cube-double-v0"``)."""
    num_cubes(task)
    return f"{task}-v0"


def singletask_env_id(task: str, task_id: int | None = None) -> str:
    """The reward-based single-task env id: ``"cube-double-singletask-task2-v0"``, or the default task's alias for ``None``."""
    num_cubes(task)
    if task_id is None:
        return f"{task}-singletask-v0"
    if int(task_id) != task_id or not 1 <= task_id <= 5:
        raise ConfigError(f"OGBench task_id must be an integer in 1..5 (or None for the default task), got {task_id!r}")
    return f"{task}-singletask-task{int(task_id)}-v0"


def import_ogbench():
    """Imports ``ogbench`` (which registers its gymnasium envs); a one-line :class:`ConfigError` if it is missing."""
    try:
        import ogbench.manipspace  # noqa: F401  (registers the manipspace envs)
    except ImportError as err:
        raise ConfigError(
            f"the OGBench tasks need the 'ogbench' package ({err}): pip install 'torchrl_sacflow[ogbench]'"
        ) from None
    import ogbench

    return ogbench


@functools.lru_cache(maxsize=None)
def _singletask_goals(task: str, task_id: int | None) -> tuple[int, tuple[tuple[float, ...], ...]]:
    import gymnasium

    import_ogbench()
    env = gymnasium.make(singletask_env_id(task, task_id))
    try:
        unwrapped = env.unwrapped
        resolved = int(unwrapped._reward_task_id)  # 0 (the alias) is resolved to the default task by the env
        goals = np.asarray(unwrapped.task_infos[resolved - 1]["goal_xyzs"], dtype=np.float64)
    finally:
        env.close()
    return resolved, tuple(map(tuple, goals))


def task_goals(task: str, task_id: int | None = None) -> tuple[int, np.ndarray]:
    """The task number and the goal position of each cube of a singletask env.

    Read from the env's own task list (``CubeEnv.set_tasks``); the singletask envs do not permute
    the cubes, so cube ``i`` must reach ``goal_xyzs[i]``. Builds the env once (no reset); cached.

    Args:
        task (str): a cube environment, e.g. ``"cube-double"``.
        task_id (int, optional): 1..5, or ``None`` for OGBench's default task (2 for the cube tasks).

    Returns:
        ``(task_id, goals)``: the task number actually used and a ``[n, 3]`` float64 array (m).
    """
    resolved, goals = _singletask_goals(task, None if task_id is None else int(task_id))
    return resolved, np.array(goals, dtype=np.float64)


def cube_positions(task: str, *, qpos: np.ndarray | None = None, observations: np.ndarray | None = None) -> np.ndarray:
    """The cubes' positions ``[N, n, 3]`` (m), from ``qpos`` (exact, as OGBench relabels) or else from observations.

    From observations the positions are unscaled from ``(p - (0.425, 0, 0)) * 10`` (float32 in the
    files, so within ~1e-7 m of ``qpos``).
    """
    n = num_cubes(task)
    if qpos is not None:
        cols = [np.arange(3) + _ROBOT_QPOS + _CUBE_QPOS * i for i in range(n)]
        return np.asarray(qpos, dtype=np.float64)[:, np.stack(cols)]
    if observations is None:
        raise ValueError("cube_positions needs qpos or observations")
    cols = [np.arange(3) + _PROPRIO_OBS + _CUBE_OBS * i for i in range(n)]
    return np.asarray(observations, dtype=np.float64)[:, np.stack(cols)] / _XYZ_SCALE + _XYZ_CENTER


def singletask_reward(cube_xyzs: np.ndarray, goals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OGBench's singletask reward and success of states, from their cube positions.

    Args:
        cube_xyzs (np.ndarray): ``[N, n, 3]`` cube positions (m), see :func:`cube_positions`.
        goals (np.ndarray): ``[n, 3]`` goal positions, see :func:`task_goals`.

    Returns:
        ``(reward, success)``: ``[N]`` float64 ``(#cubes within 4 cm of their goal) - n`` and
        ``[N]`` bool, all cubes at their goal.
    """
    at_goal = np.linalg.norm(cube_xyzs - goals[None], axis=-1) <= GOAL_TOLERANCE
    return at_goal.sum(-1).astype(np.float64) - at_goal.shape[-1], at_goal.all(-1)
