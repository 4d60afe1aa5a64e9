"""Write OGBench cube datasets with the package's scripted oracles (the official files cannot be downloaded here).

Command line (``--help`` lists every option)::

    python -m torchrl_sacflow.ogbench.generate --task cube-double --transitions 1000000 \\
        --out data/cube-double-play-v0.npz [--dataset-type play|noisy] [--noise 0.1] [--seed 0]

The collection follows OGBench's ``data_gen_scripts/generate_manipspace.py`` (the recipe behind
the official ``cube-*-play-v0`` / ``cube-*-noisy-v0`` files):

* the goal-conditioned env (``cube-double-v0``) in ``mode="data_collection"`` without
  termination at the goal: every episode starts from a random arm pose and random cube poses;
* the episode is a sequence of random *subtasks*: move one of the top cubes to a random position,
  or stack it on another cube with a per-episode probability ``p_stack`` (``cube-double``:
  ``U(0, 0.25)``); a new subtask is drawn as soon as the oracle reports the current one done;
* ``play``: the non-Markovian ``CubePlanOracle`` follows a keyframe plan with temporally correlated
  noise (``noise``, ``noise_smoothing``); ``noisy``: the closed-loop ``CubeMarkovOracle`` with
  Gaussian action noise of per-episode scale ``xi ~ U(0, noise)`` (``[xi, xi, xi, 3 xi, 10 xi]``
  per action entry) and, as in OGBench's commands, 10 % uniformly random actions;
* every action is clipped to ``[-1, 1]``; each episode has ``max_episode_steps`` rows (1001:
  1000 transitions) and the last row of each episode is marked in ``terminals``.

The file has OGBench's keys, dtypes and shapes (``observations`` float32 ``[N, D]``, ``actions``
float32 ``[N, 5]``, ``terminals`` bool ``[N]``, ``qpos``/``qvel`` float32), so ``ogbench``'s own
``load_dataset`` and :func:`~torchrl_sacflow.ogbench.load_ogbench_dataset` read it unchanged.
A JSON file next to it (``x.json`` for ``x.npz``) records the settings and what happened (subtasks, their
successes, the imperfections injected).

**Imperfect data.** Three options weaken the data beyond OGBench's recipe (all off by default):
``action_noise`` (extra Gaussian noise on every oracle action), ``p_early_stop`` (episodes cut
short at a random length, their last row marked in ``terminals`` like any episode end) and
``p_failed_subtask`` (subtasks in which the oracle drops the cube: the gripper is forced open a
few steps after it grasps, until the subtask ends, which then fails).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from torchrl_sacflow.errors import ConfigError, exit_on_config_error
from torchrl_sacflow.ogbench.tasks import (
    ACTION_DIM,
    dataset_env_id,
    import_ogbench,
    num_cubes,
    observation_dim,
    qpos_dim,
)

__all__ = ["DATASET_TYPES", "P_STACK_RANGES", "generate_ogbench_dataset", "main", "val_path"]

#: ``play`` (plan oracle, correlated noise) and ``noisy`` (Markov oracle, Gaussian noise, random actions).
DATASET_TYPES = ("play", "noisy")
#: Range of the per-episode probability of stacking the subtask's cube on another (OGBench's values).
P_STACK_RANGES: dict[str, tuple[float, float]] = {
    "cube-single": (0.0, 0.0),
    "cube-double": (0.0, 0.25),
    "cube-triple": (0.05, 0.35),
    "cube-quadruple": (0.1, 0.5),
}
#: Random-action probability of OGBench's official commands, per dataset type.
_DEFAULT_P_RANDOM_ACTION = {"play": 0.0, "noisy": 0.1}
#: Scale of the ``noisy`` recipe's Gaussian noise per action entry, times ``xi``.
_MARKOV_NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])
#: A failed subtask opens the gripper after it has held something for 1 to this many steps (drawn uniformly).
_MAX_DROP_DELAY = 15
#: The gripper holds something when its contact signal exceeds this (as ``CubeMarkovOracle`` tests).
_HOLDING_CONTACT = 0.5


def val_path(path: str | os.PathLike) -> Path:
    """OGBench's name of a dataset's validation file: ``x.npz`` → ``x-val.npz``."""
    path = Path(path)
    return path.with_name(path.name[: -len(".npz")] + "-val.npz")


def _check_settings(
    task, transitions, dataset_type, noise, noise_smoothing, p_random_action, max_episode_steps,
    action_noise, p_early_stop, min_episode_steps, p_failed_subtask, val_transitions,
) -> None:
    num_cubes(task)
    if dataset_type not in DATASET_TYPES:
        raise ConfigError(f"dataset_type must be one of {DATASET_TYPES}, got {dataset_type!r}")
    if int(transitions) != transitions or transitions < 1:
        raise ConfigError(f"transitions must be a positive integer, got {transitions!r}")
    if int(val_transitions) != val_transitions or val_transitions < 0:
        raise ConfigError(f"val_transitions must be a non-negative integer, got {val_transitions!r}")
    if int(max_episode_steps) != max_episode_steps or max_episode_steps < 2:
        raise ConfigError(f"max_episode_steps must be an integer >= 2 (rows per episode), got {max_episode_steps!r}")
    if not 2 <= min_episode_steps <= max_episode_steps:
        raise ConfigError(
            f"min_episode_steps must be in [2, max_episode_steps={max_episode_steps}], got {min_episode_steps!r}"
        )
    for name, value in (("p_random_action", p_random_action), ("p_early_stop", p_early_stop),
                        ("p_failed_subtask", p_failed_subtask)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    for name, value in (("noise", noise), ("noise_smoothing", noise_smoothing), ("action_noise", action_noise)):
        if not value >= 0.0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")


class _Collector:
    """Runs OGBench's collection loop, writing rows into preallocated OGBench-layout arrays."""

    def __init__(self, env, oracle, *, task, dataset_type, noise, p_random_action, action_noise, p_early_stop,
                 min_episode_steps, max_episode_steps, p_failed_subtask, seed, pbar):
        self.env, self.oracle, self.pbar = env, oracle, pbar
        self.rng, self.seed = np.random.default_rng(seed), seed
        self.task, self.dataset_type, self.noise = task, dataset_type, noise
        self.p_random_action, self.action_noise = p_random_action, action_noise
        self.p_early_stop, self.p_failed_subtask = p_early_stop, p_failed_subtask
        self.min_episode_steps, self.max_episode_steps = min_episode_steps, max_episode_steps
        self.first_reset = True
        self.stats = {"episodes": 0, "early_stopped_episodes": 0, "subtasks": 0, "subtask_successes": 0,
                      "failed_subtasks_injected": 0, "injected_subtask_successes": 0, "random_actions": 0}

    def collect(self, transitions: int) -> dict[str, np.ndarray]:
        """Episodes until exactly ``transitions`` transitions (rows minus one per episode)."""
        shortest = (self.min_episode_steps if self.p_early_stop > 0 else self.max_episode_steps) - 1
        capacity = transitions + math.ceil(transitions / shortest) + 1
        arrays = {
            "observations": np.empty((capacity, observation_dim(self.task)), np.float32),
            "actions": np.empty((capacity, ACTION_DIM), np.float32),
            "terminals": np.zeros(capacity, bool),
            "qpos": np.empty((capacity, qpos_dim(self.task)), np.float32),
            "qvel": np.empty((capacity, self.env.unwrapped._model.nv), np.float32),
        }
        rows, left = 0, transitions
        while left > 0:
            length = self.max_episode_steps
            if self.p_early_stop > 0 and self.rng.random() < self.p_early_stop:
                length = int(self.rng.integers(self.min_episode_steps, self.max_episode_steps))
                self.stats["early_stopped_episodes"] += 1
            length = min(length, left + 1)  # the last episode is shortened to give exactly ``transitions``
            self._episode(arrays, rows, length)
            rows += length
            left -= length - 1
        return {key: value[:rows] for key, value in arrays.items()}

    def _new_subtask(self, ob, info) -> None:
        self.oracle.reset(ob, info)
        self.sabotaged = self.p_failed_subtask > 0 and self.rng.random() < self.p_failed_subtask
        self.drop_delay = int(self.rng.integers(1, _MAX_DROP_DELAY + 1))
        self.held_steps = 0
        self.dropped = False

    def _episode(self, arrays: dict[str, np.ndarray], offset: int, length: int) -> None:
        env, unwrapped = self.env, self.env.unwrapped
        if self.first_reset:
            ob, info = env.reset(seed=self.seed)
            self.first_reset = False
        else:
            ob, info = env.reset()
        low, high = P_STACK_RANGES[self.task]
        p_stack = float(self.rng.uniform(low, high))
        xi = float(self.rng.uniform(0.0, self.noise)) if self.dataset_type == "noisy" else 0.0
        self._new_subtask(ob, info)
        self.stats["episodes"] += 1
        for step in range(length):
            if self.p_random_action > 0 and self.rng.random() < self.p_random_action:
                action = self.rng.uniform(-1.0, 1.0, ACTION_DIM)
                self.stats["random_actions"] += 1
            else:
                action = np.array(self.oracle.select_action(ob, info), dtype=np.float64)
                if xi > 0:
                    action = action + self.rng.normal(0.0, xi * _MARKOV_NOISE_SCALE)
                if self.action_noise > 0:
                    action = action + self.rng.normal(0.0, self.action_noise, ACTION_DIM)
            action = np.clip(action, -1.0, 1.0)
            if self.sabotaged and not self.dropped:
                self.held_steps += bool(info["proprio/gripper_contact"][0] > _HOLDING_CONTACT)
                self.dropped = self.held_steps >= self.drop_delay
            if self.sabotaged and self.dropped:
                action[4] = -1.0  # open the gripper: the cube falls wherever it is
            next_ob, _, _, _, info = env.step(action)
            if self.oracle.done:
                self.stats["subtasks"] += 1
                self.stats["subtask_successes"] += bool(info["success"])
                self.stats["failed_subtasks_injected"] += self.sabotaged
                self.stats["injected_subtask_successes"] += self.sabotaged and bool(info["success"])
                self._new_subtask(*unwrapped.set_new_target(p_stack=p_stack))
            row = offset + step
            arrays["observations"][row] = ob
            arrays["actions"][row] = action
            arrays["terminals"][row] = step == length - 1
            arrays["qpos"][row] = info["prev_qpos"]
            arrays["qvel"][row] = info["prev_qvel"]
            ob = next_ob
            if step < length - 1:
                self.pbar.update(1)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` compressed, atomically (a partial file never has the final name)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def generate_ogbench_dataset(
    path: str | os.PathLike,
    *,
    task: str = "cube-double",
    transitions: int,
    dataset_type: str = "play",
    noise: float = 0.1,
    noise_smoothing: float = 0.5,
    min_norm: float = 0.4,
    p_random_action: float | None = None,
    max_episode_steps: int = 1001,
    action_noise: float = 0.0,
    p_early_stop: float = 0.0,
    min_episode_steps: int | None = None,
    p_failed_subtask: float = 0.0,
    val_transitions: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Collects an OGBench-layout ``.npz`` dataset of ``task`` with OGBench's scripted oracles.

    See the module docstring for the recipe. The run is reproducible: ``seed`` seeds the env's
    first reset, this function's draws and NumPy's global generator (which the oracles draw from;
    its state is restored afterwards).

    Args:
        path (str or path-like): the ``.npz`` file to write (parent folders are created).

    Keyword Args:
        task (str): a cube environment of :data:`~torchrl_sacflow.ogbench.CUBE_TASKS`. Defaults to ``"cube-double"``.
        transitions (int): transitions in the file (each episode of ``L`` rows holds ``L - 1``; the
            last episode is shortened to hit the number exactly). 1 000 000 for the official size.
        dataset_type (str): ``"play"`` (default) or ``"noisy"``.
        noise (float): ``play``: the plan noise level; ``noisy``: the largest per-episode Gaussian
            noise scale. Defaults to ``0.1`` (OGBench's).
        noise_smoothing (float): ``play``: std (in steps) of the Gaussian filter over the plan noise. Defaults to ``0.5``.
        min_norm (float): ``noisy``: the Markov oracle's minimum relative-position norm. Defaults to ``0.4``.
        p_random_action (float, optional): probability of a uniformly random action instead of
            the oracle's. Defaults to ``None``: 0 for ``play``, 0.1 for ``noisy`` (OGBench's commands).
        max_episode_steps (int): rows per episode, including its final observation row. Defaults
            to ``1001`` (OGBench's: 1000 transitions per episode).
        action_noise (float): extra i.i.d. Gaussian noise (std, in the normalized action units) on
            every oracle action, before clipping. Defaults to ``0.0``.
        p_early_stop (float): probability that an episode is cut short, at a length drawn
            uniformly in ``[min_episode_steps, max_episode_steps)`` rows. Defaults to ``0.0``.
        min_episode_steps (int, optional): shortest cut episode, in rows (>= 2). Defaults to
            ``max(2, max_episode_steps // 10)``.
        p_failed_subtask (float): probability that a subtask fails on purpose: once the gripper
            has held something for 1 to 15 steps (drawn uniformly), it is forced open (the cube
            drops) until the oracle ends the subtask. Defaults to ``0.0``.
        val_transitions (int): also write OGBench's validation file ``<name>-val.npz`` with this
            many transitions, collected after the training file (the official files have a tenth
            as many episodes). Defaults to ``0`` (none).
        seed (int): Defaults to ``0``.
        progress (bool): show a tqdm progress bar (on stderr). Defaults to ``True``.

    Returns:
        the summary also written next to the file (``x.json`` for ``x.npz``): settings, counts
        (``episodes``, ``early_stopped_episodes``, ``subtasks`` the oracle finished,
        ``subtask_successes``, ``failed_subtasks_injected``, ``random_actions``, per file) and timing.

    Raises:
        ConfigError: a bad setting, ``path`` not ending in ``.npz``, or ``ogbench`` not installed.
    """
    import gymnasium
    from tqdm import tqdm

    path = Path(path).expanduser()
    if path.suffix != ".npz":
        raise ConfigError(f"the output file must end in .npz (OGBench's format), got {str(path)!r}")
    if p_random_action is None:
        p_random_action = _DEFAULT_P_RANDOM_ACTION.get(dataset_type, 0.0)
    if min_episode_steps is None:
        min_episode_steps = max(2, int(max_episode_steps) // 10)
    _check_settings(task, transitions, dataset_type, noise, noise_smoothing, p_random_action, max_episode_steps,
                    action_noise, p_early_stop, min_episode_steps, p_failed_subtask, val_transitions)
    import_ogbench()
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

    settings = {
        "task": task, "dataset_type": dataset_type, "transitions": int(transitions),
        "val_transitions": int(val_transitions), "noise": float(noise), "noise_smoothing": float(noise_smoothing),
        "min_norm": float(min_norm), "p_random_action": float(p_random_action),
        "max_episode_steps": int(max_episode_steps), "action_noise": float(action_noise),
        "p_early_stop": float(p_early_stop), "min_episode_steps": int(min_episode_steps),
        "p_failed_subtask": float(p_failed_subtask), "seed": int(seed),
        "env_id": dataset_env_id(task), "ogbench_version": _ogbench_version(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    global_state = np.random.get_state()
    np.random.seed(seed)
    env = gymnasium.make(dataset_env_id(task), terminate_at_goal=False, mode="data_collection",
                         max_episode_steps=int(max_episode_steps))
    if dataset_type == "play":
        oracle = CubePlanOracle(env=env, noise=noise, noise_smoothing=noise_smoothing)
    else:
        oracle = CubeMarkovOracle(env=env, min_norm=min_norm)
    start = time.perf_counter()
    pbar = tqdm(total=int(transitions) + int(val_transitions), unit="transition", dynamic_ncols=True,
                desc=f"{task} {dataset_type}", disable=not progress)
    try:
        collector = _Collector(
            env, oracle, task=task, dataset_type=dataset_type, noise=float(noise),
            p_random_action=float(p_random_action), action_noise=float(action_noise),
            p_early_stop=float(p_early_stop), min_episode_steps=int(min_episode_steps),
            max_episode_steps=int(max_episode_steps), p_failed_subtask=float(p_failed_subtask),
            seed=int(seed), pbar=pbar)
        files = {"train": (path, int(transitions))}
        if val_transitions:
            files["val"] = (val_path(path), int(val_transitions))
        counts = {}
        for split, (file, n) in files.items():
            arrays = collector.collect(n)
            counts[split] = {"file": str(file), "rows": int(arrays["terminals"].shape[0]),
                             **{k: int(v) for k, v in collector.stats.items()}}
            collector.stats = {k: 0 for k in collector.stats}
            _save_npz(file, arrays)
    finally:
        pbar.close()
        env.close()
        np.random.set_state(global_state)
    summary = {**settings, "counts": counts, "seconds": round(time.perf_counter() - start, 2)}
    path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _ogbench_version() -> str:
    from importlib.metadata import version

    return version("ogbench")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_sacflow.ogbench.generate",
        description="Write an OGBench-layout .npz dataset with OGBench's scripted oracles "
                    "(its play/noisy recipe), optionally made imperfect. See docs/ogbench_data.md.",
    )
    parser.add_argument("--task", default="cube-double", help="cube-single | cube-double | cube-triple | cube-quadruple")
    parser.add_argument("--transitions", type=int, required=True,
                        help="transitions in the file (1000000 for the official size)")
    parser.add_argument("--out", required=True, help="output .npz file (a .json summary is written next to it)")
    parser.add_argument("--dataset-type", default="play", choices=DATASET_TYPES)
    parser.add_argument("--noise", type=float, default=0.1,
                        help="play: plan noise level; noisy: largest per-episode Gaussian noise (default 0.1)")
    parser.add_argument("--noise-smoothing", type=float, default=0.5, help="play: plan noise smoothing (default 0.5)")
    parser.add_argument("--min-norm", type=float, default=0.4, help="noisy: Markov oracle minimum norm (default 0.4)")
    parser.add_argument("--p-random-action", type=float, default=None,
                        help="probability of a uniformly random action (default: 0 for play, 0.1 for noisy)")
    parser.add_argument("--max-episode-steps", type=int, default=1001,
                        help="rows per episode, final observation row included (default 1001)")
    parser.add_argument("--val-transitions", type=int, default=0,
                        help="also write <out>-val.npz with this many transitions (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    weak = parser.add_argument_group("imperfect data (all off by default)")
    weak.add_argument("--action-noise", type=float, default=0.0,
                      help="extra Gaussian noise std on every oracle action (normalized units)")
    weak.add_argument("--p-early-stop", type=float, default=0.0,
                      help="probability that an episode is cut short at a random length")
    weak.add_argument("--min-episode-steps", type=int, default=None,
                      help="shortest cut episode in rows (default max(2, max_episode_steps // 10))")
    weak.add_argument("--p-failed-subtask", type=float, default=0.0,
                      help="probability that a subtask fails: the oracle drops the cube after grasping it")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line; a bad setting prints ``generate: error: <message>`` and exits with code 2."""
    args = _parser().parse_args(argv)
    with exit_on_config_error("generate"):
        summary = generate_ogbench_dataset(
            args.out, task=args.task, transitions=args.transitions, dataset_type=args.dataset_type,
            noise=args.noise, noise_smoothing=args.noise_smoothing, min_norm=args.min_norm,
            p_random_action=args.p_random_action, max_episode_steps=args.max_episode_steps,
            action_noise=args.action_noise, p_early_stop=args.p_early_stop,
            min_episode_steps=args.min_episode_steps, p_failed_subtask=args.p_failed_subtask,
            val_transitions=args.val_transitions, seed=args.seed, progress=not args.no_progress)
    train = summary["counts"]["train"]
    print(f"wrote {train['file']}: {summary['transitions']} transitions, {train['episodes']} episodes, "
          f"{train['subtask_successes']}/{train['subtasks']} subtasks succeeded, {summary['seconds']:.1f} s", flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
