"""Scripted demonstrations written in the Robomimic HDF5 format.

The official Robomimic datasets cannot be downloaded at run time here, so this
module records a small stand-in dataset with a scripted policy: same file
layout, same ``env_args`` metadata, sparse success rewards and ``done`` at the
success step. It lets the offline-to-online pipeline (loader, replay buffer,
env rebuilt from ``env_args``) run end to end on any machine.

Usage::

    python -m torchrl_sacflow.robomimic.scripted_demos --task lift --episodes 20 --out lift.hdf5

Lift and Can (``PickPlaceCan``: pick the can, carry it over its bin, let go) have a scripted policy;
Square raises a clear error.

**Imperfect demonstrations.** Three options weaken the data (all off by default, and with all of
them off the demos are the same as without them):

* ``action_noise`` (``--action-noise σ``): extra i.i.d. Gaussian noise of std σ on all 7 entries of
  every action, before clipping to ``[-1, 1]``; the stored actions are the executed, noisy ones.
* ``p_early_stop`` (``--p-early-stop p``): with probability p a successful demo is cut short
  before its success step, at a length drawn uniformly in ``[1, success step)``; it ends without
  success.
* ``failed_fraction`` (``--failed-fraction f``): ``round(f · episodes)`` of the demos are failed
  rollouts: the gripper closes on the cube for 1 to 8 steps (drawn uniformly), then opens again
  and the arm lifts without it, for the whole ``max_steps``.

Demos that end without success have no reward 1.0 and no ``done``, so the loader's
``terminal_rule="success"`` reads their last step as *truncated* (bootstrapped), never terminated;
each demo records what it is in its ``outcome`` attribute (``success``, ``early_stop``, ``failed``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ROBOMIMIC_TASKS",
    "DEMO_OUTCOMES",
    "SCRIPTED_TASKS",
    "ScriptedLiftPolicy",
    "ScriptedPickPlacePolicy",
    "generate_scripted_demos",
    "lift_env_args",
    "robomimic_env_args",
    "main",
]

#: Robomimic task names and the robosuite environments behind them.
ROBOMIMIC_TASKS = {
    "lift": "Lift",
    "can": "PickPlaceCan",
    "square": "NutAssemblySquare",
}

#: Tasks with a scripted policy, and the step limit of one attempt (scripted Lift succeeds in ~45
#: steps, Can in ~110-145).
SCRIPTED_TASKS = {"lift": 100, "can": 250}

#: What a recorded demo is (its ``outcome`` attribute): a success, a success cut short, a failed rollout.
DEMO_OUTCOMES = ("success", "early_stop", "failed")

#: The flat OSC_POSE controller config of robosuite 1.2-1.4 (the format of the
#: official Robomimic v0.1 datasets), with its pre-1.5 argument names.
_LEGACY_OSC_POSE = {
    "type": "OSC_POSE",
    "input_max": 1,
    "input_min": -1,
    "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
    "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
    "kp": 150,
    "damping": 1,
    "impedance_mode": "fixed",
    "kp_limits": [0, 300],
    "damping_limits": [0, 10],
    "position_limits": None,
    "orientation_limits": None,
    "uncouple_pos_ori": True,
    "control_delta": True,
    "interpolation": None,
    "ramp_ratio": 0.2,
}


def lift_env_args(controller_format: str = "composite") -> dict[str, Any]:
    """Robomimic ``env_args`` for Lift (:func:`robomimic_env_args` with ``task="lift"``)."""
    return robomimic_env_args("lift", controller_format)


def robomimic_env_args(task: str = "lift", controller_format: str = "composite") -> dict[str, Any]:
    """Robomimic ``env_args`` for ``task`` with a Panda arm under OSC_POSE control at 20 Hz.

    Args:
        task (str, optional): a key of :data:`ROBOMIMIC_TASKS`. Defaults to ``"lift"``.
        controller_format (str, optional): ``"composite"`` writes robosuite 1.5's
            composite controller config; ``"legacy"`` writes the flat pre-1.5
            config used by the official Robomimic datasets. Both describe the
            same controller. Defaults to ``"composite"``.
    """
    import robosuite
    from robosuite.controllers import load_composite_controller_config

    if controller_format == "composite":
        controller = load_composite_controller_config(robot="Panda")
    elif controller_format == "legacy":
        controller = copy.deepcopy(_LEGACY_OSC_POSE)
    else:
        raise ValueError(
            f"controller_format must be 'composite' or 'legacy', got {controller_format!r}"
        )
    env_kwargs = {
        "has_renderer": False,
        "has_offscreen_renderer": False,
        "ignore_done": True,
        "use_object_obs": True,
        "use_camera_obs": False,
        "control_freq": 20,
        "controller_configs": controller,
        "robots": ["Panda"],
        "camera_depths": False,
        "camera_heights": 84,
        "camera_widths": 84,
        "reward_shaping": False,
    }
    if controller_format == "composite":
        # pin the 1.5 physics default so the file says how it was recorded
        env_kwargs["lite_physics"] = True
    return {
        "env_name": ROBOMIMIC_TASKS[task],
        "env_version": robosuite.__version__,
        "type": 1,
        "env_kwargs": env_kwargs,
    }


class ScriptedPickPlacePolicy:
    """A closed-loop pick(-and-place) policy: hover over the object, descend, close the gripper,
    lift; with a ``place_at`` target, then carry the object above it (at the lift height) and let go.

    It reads Robomimic-named observations (``"robot0_eef_pos"`` and ``"object"``, whose entries
    ``object_slice`` are the object's position) and outputs a 7-d OSC_POSE delta action
    ``[dx, dy, dz, 0, 0, 0, gripper]`` in ``[-1, 1]`` (gripper ``-1`` open, ``+1`` closed).

    Args:
        noise (float, optional): std of Gaussian noise added to the translation
            part of the action, so demonstrations are not all identical.
            Defaults to ``0.1``.
        rng (np.random.Generator, optional): noise generator.
        place_at (array-like, optional): ``(x, y, z)`` where the object goes (robosuite world
            frame, m); ``None`` (Lift) holds it up. Defaults to ``None``.
        object_slice (slice, optional): the object's position in ``"object"``. Defaults to the
            first three entries (Lift's cube).
        hover (float, optional): height above the object's position to descend from (m).
        grasp (float, optional): height of the grasp point above the object's position (m).
        lift (float, optional): how high to lift after the grasp (m above the grasp point).

    A failed rollout is scripted with :meth:`reset`'s ``release_after``: the gripper opens again
    after that many closing steps and the arm lifts without the object.
    """

    _GAIN = 10.0
    _GRASP_STEPS = 8

    def __init__(self, noise: float = 0.1, rng: np.random.Generator | None = None, *, place_at=None,
                 object_slice: slice = slice(0, 3), hover: float = 0.06, grasp: float = -0.005,
                 lift: float = 0.15):
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.place_at = None if place_at is None else np.asarray(place_at, dtype=np.float64)
        self.object_slice = object_slice
        self.hover, self.grasp, self.lift = float(hover), float(grasp), float(lift)
        self.reset()

    def reset(self, release_after: int | None = None) -> None:
        """Starts a new episode (back to the hover phase).

        Args:
            release_after (int, optional): open the gripper again after this many closing steps
                (``1 <= release_after <= 8`` fails the grasp). Defaults to ``None`` (a normal grasp).
        """
        self.phase = "hover"
        self._grasp_count = 0
        self._lift_z = None
        self.release_after = release_after

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        eef = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        obj = np.asarray(obs["object"], dtype=np.float64)[self.object_slice]
        gripper = -1.0
        if self.phase == "hover":
            target = obj + np.array([0.0, 0.0, self.hover])
            err = target - eef
            if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target = obj + np.array([0.0, 0.0, self.grasp])
            err = target - eef
            if np.linalg.norm(err) < 0.01:
                self.phase = "grasp"
        if self.phase == "grasp":
            target = eef
            gripper = 1.0
            self._grasp_count += 1
            if self._grasp_count > self._GRASP_STEPS:
                self.phase = "lift"
                self._lift_z = eef[2] + self.lift
        if self.phase == "lift":
            target = np.array([eef[0], eef[1], self._lift_z])
            gripper = 1.0
            if self.place_at is not None and abs(self._lift_z - eef[2]) < 0.02:
                self.phase = "carry"
        if self.phase == "carry":  # above the target at the lift height, object held
            target = np.array([self.place_at[0], self.place_at[1], self._lift_z])
            gripper = 1.0
            if np.linalg.norm(target[:2] - eef[:2]) < 0.02:
                self.phase = "release"
        if self.phase == "release":  # let go above the target and stay
            target = np.array([self.place_at[0], self.place_at[1], self._lift_z])
            gripper = -1.0
        if gripper > 0 and self.release_after is not None and self._grasp_count > self.release_after:
            gripper = -1.0
        move = np.clip(self._GAIN * (target - eef), -1.0, 1.0)
        if self.phase != "grasp" and self.noise > 0:
            move = move + self.noise * self.rng.standard_normal(3)
        action = np.zeros(7)
        action[:3] = np.clip(move, -1.0, 1.0)
        action[6] = gripper
        return action


class ScriptedLiftPolicy(ScriptedPickPlacePolicy):
    """The Lift policy: hover over the cube, descend, close the gripper, lift (no place target).

    Args:
        noise (float, optional): std of Gaussian noise on the translation part of the action.
            Defaults to ``0.1``.
        rng (np.random.Generator, optional): noise generator.
    """

    def __init__(self, noise: float = 0.1, rng: np.random.Generator | None = None):
        super().__init__(noise, rng)


def _scripted_policy(task: str, env, *, noise: float, rng: np.random.Generator) -> ScriptedPickPlacePolicy:
    """The scripted policy of ``task`` for the robosuite ``env``.

    Can: the can's position is found in the ``"object"`` observation by value (robosuite 1.5
    orders it ``[Can_to_eef_pos, Can_to_eef_quat, Can_pos, Can_quat]``, the official files'
    robosuite 1.2 ``[Can_pos, Can_quat, ...]``), the target is the can bin's placement; the
    gripper closes 2 cm above the can's centre (lower, the fingers hit the table).
    """
    if task == "lift":
        return ScriptedLiftPolicy(noise=noise, rng=rng)
    raw = env.reset()
    state, position = np.asarray(raw["object-state"]), np.asarray(raw["Can_pos"])
    starts = [i for i in range(len(state) - 2) if np.allclose(state[i:i + 3], position)]
    if not starts:
        raise RuntimeError("the Can position is not part of robosuite's object-state observation")
    target = np.asarray(env.target_bin_placements[env.object_to_id["can"]], dtype=np.float64)
    return ScriptedPickPlacePolicy(noise=noise, rng=rng, place_at=target, object_slice=slice(starts[0], starts[0] + 3),
                                   hover=0.08, grasp=0.02, lift=0.2)


def _robomimic_obs(raw: dict[str, Any], prefix: str = "robot0_") -> dict[str, np.ndarray]:
    """Low-dim observations as Robomimic names them: ``object`` plus every robot-prefixed key."""
    out = {"object": np.asarray(raw["object-state"], dtype=np.float64)}
    for key, value in raw.items():
        if key.startswith(prefix) and not key.endswith("proprio-state"):
            out[key] = np.asarray(value, dtype=np.float64)
    return out


def _rollout(
    env,
    policy: ScriptedPickPlacePolicy,
    max_steps: int,
    *,
    release_after: int | None = None,
    action_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, Any], bool, int]:
    """Runs one episode until the first success or ``max_steps``; returns its arrays.

    ``release_after`` scripts a failed grasp (:meth:`ScriptedPickPlacePolicy.reset`); ``action_noise``
    adds Gaussian noise (drawn from ``rng``) to every action entry, then clips to ``[-1, 1]``.
    """
    policy.reset(release_after=release_after)
    raw = env.reset()
    obs = _robomimic_obs(raw)
    steps: dict[str, list] = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "dones": [], "states": []}
    success = False
    for _ in range(max_steps):
        steps["states"].append(np.asarray(env.sim.get_state().flatten(), dtype=np.float64))
        action = policy(obs)
        if action_noise > 0:
            action = np.clip(action + rng.normal(0.0, action_noise, action.shape), -1.0, 1.0)
        raw, _, _, _ = env.step(action)
        next_obs = _robomimic_obs(raw)
        success = bool(env._check_success())
        steps["obs"].append(obs)
        steps["next_obs"].append(next_obs)
        steps["actions"].append(action)
        steps["rewards"].append(float(success))
        steps["dones"].append(int(success))
        obs = next_obs
        if success:
            break
    return steps, success, len(steps["actions"])


def _truncate(steps: dict[str, list], length: int) -> dict[str, list]:
    """The first ``length`` steps of a recorded episode."""
    return {key: value[:length] for key, value in steps.items()}


def _write_demo(group, steps: dict[str, Any], model_xml: str, outcome: str) -> None:
    n = len(steps["actions"])
    group.attrs["num_samples"] = n
    group.attrs["model_file"] = model_xml
    group.attrs["outcome"] = outcome
    group.create_dataset("actions", data=np.stack(steps["actions"]))
    group.create_dataset("rewards", data=np.asarray(steps["rewards"], dtype=np.float64))
    group.create_dataset("dones", data=np.asarray(steps["dones"], dtype=np.int64))
    group.create_dataset("states", data=np.stack(steps["states"]))
    for where in ("obs", "next_obs"):
        sub = group.create_group(where)
        for key in steps[where][0]:
            sub.create_dataset(key, data=np.stack([o[key] for o in steps[where]]))


def generate_scripted_demos(
    path: str | os.PathLike,
    task: str = "lift",
    episodes: int = 20,
    seed: int = 0,
    controller_format: str = "composite",
    max_steps: int | None = None,
    valid_fraction: float = 0.1,
    noise: float = 0.1,
    max_attempts: int | None = None,
    action_noise: float = 0.0,
    p_early_stop: float = 0.0,
    failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """Records scripted episodes into a Robomimic-format HDF5 file.

    Each successful episode ends at the first success step, which has reward ``1.0`` and
    ``done = 1`` (all earlier steps have ``0``). Attempts that fail by themselves (no success
    within ``max_steps``) are discarded and retried, at most ``max_attempts`` times in total.
    The imperfect-data options (module docstring) add demos without success: cut-short
    successes and scripted failed grasps, whose rewards and ``dones`` are all ``0``. The demos
    are split into ``mask/train`` and ``mask/valid``.

    Args:
        path (str or path-like): output file (overwritten).
        task (str, optional): Robomimic task name with a scripted policy
            (:data:`SCRIPTED_TASKS`: ``"lift"``, ``"can"``). Defaults to ``"lift"``.
        episodes (int, optional): number of successful demos to record. Defaults to ``20``.
        seed (int, optional): seeds the environment (initial placements) and
            the policy noise. Defaults to ``0``.
        controller_format (str, optional): ``"composite"`` or ``"legacy"``
            (see :func:`robomimic_env_args`). Defaults to ``"composite"``.
        max_steps (int, optional): step limit of an attempt. Defaults to the task's
            :data:`SCRIPTED_TASKS` entry (Lift 100, Can 250).
        valid_fraction (float, optional): fraction of demos in ``mask/valid``
            (at least one when there are two demos or more). Defaults to ``0.1``.
        noise (float, optional): action noise of the scripted policy (:class:`ScriptedPickPlacePolicy`). Defaults to ``0.1``.
        max_attempts (int, optional): bound on attempts. Defaults to ``2 * episodes + 10``.
        action_noise (float, optional): std of extra Gaussian noise on every action entry
            (before clipping to ``[-1, 1]``). Defaults to ``0.0``.
        p_early_stop (float, optional): probability that a successful demo is cut short before
            its success step. Defaults to ``0.0``.
        failed_fraction (float, optional): fraction of the ``episodes`` demos that are failed
            grasps (``round(failed_fraction * episodes)``). Defaults to ``0.0``.

    Returns:
        a dict of statistics: ``path``, ``task``, ``episodes`` (demos in the file),
        ``successful_episodes``, ``early_stopped_episodes``, ``failed_episodes``, ``attempts``,
        ``failed_attempts`` (discarded), ``steps`` (recorded), ``simulated_steps``,
        ``mean_episode_length``, ``env_build_s``, ``wall_time_s`` and
        ``steps_per_s`` (simulated steps per second of rollout).

    Raises:
        ValueError: an unknown task, ``episodes < 1`` or an imperfect-data option out of range.
        NotImplementedError: a task without a scripted policy.
        RuntimeError: fewer demos of a kind than asked for within ``max_attempts``.
    """
    import h5py

    from torchrl_sacflow.robomimic.env import make_robosuite_env

    start = time.perf_counter()
    task_key = str(task).lower()
    if task_key not in ROBOMIMIC_TASKS:
        raise ValueError(
            f"unknown Robomimic task {task!r} (known: {sorted(ROBOMIMIC_TASKS)})"
        )
    if task_key not in SCRIPTED_TASKS:
        raise NotImplementedError(
            f"no scripted policy for task {task!r} ({ROBOMIMIC_TASKS[task_key]}); "
            f"only {', '.join(map(repr, SCRIPTED_TASKS))} can be generated, use an official Robomimic file for the others"
        )
    if max_steps is None:
        max_steps = SCRIPTED_TASKS[task_key]
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not action_noise >= 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    for name, value in (("p_early_stop", p_early_stop), ("failed_fraction", failed_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if max_attempts is None:
        max_attempts = 2 * episodes + 10

    env_args = robomimic_env_args(task_key, controller_format)
    env = make_robosuite_env(env_args, seed=seed)
    env_build_s = time.perf_counter() - start
    policy = _scripted_policy(task_key, env, noise=noise, rng=np.random.default_rng(seed + 1))
    model_xml = env.sim.model.get_xml()
    # the imperfections draw from their own generator: with all of them off, the demos are unchanged
    weak_rng = np.random.default_rng([seed, 2])
    n_failed = int(round(failed_fraction * episodes))
    failed_slots = set(weak_rng.permutation(episodes)[:n_failed].tolist()) if n_failed else set()

    demos, outcomes = [], []
    attempts = 0
    simulated = 0
    rollout_start = time.perf_counter()
    while len(demos) < episodes and attempts < max_attempts:
        fail = len(demos) in failed_slots
        release_after = int(weak_rng.integers(1, ScriptedPickPlacePolicy._GRASP_STEPS + 1)) if fail else None
        steps, success, n = _rollout(env, policy, max_steps, release_after=release_after,
                                     action_noise=action_noise, rng=weak_rng)
        attempts += 1
        simulated += n
        if fail and not success:
            demos.append(steps)
            outcomes.append("failed")
        elif success and not fail:
            if n > 1 and p_early_stop > 0 and weak_rng.random() < p_early_stop:
                demos.append(_truncate(steps, int(weak_rng.integers(1, n))))
                outcomes.append("early_stop")
            else:
                demos.append(steps)
                outcomes.append("success")
    rollout_s = time.perf_counter() - rollout_start
    env.close()
    if len(demos) < episodes:
        raise RuntimeError(
            f"scripted {task} policy recorded {len(demos)} of the {episodes} episodes asked for "
            f"({n_failed} of them failed grasps) in {attempts} attempts (max_attempts)"
        )

    order = np.random.default_rng(seed).permutation(episodes)
    n_valid = 0 if episodes < 2 else max(1, int(round(valid_fraction * episodes)))
    names = [f"demo_{i}" for i in range(episodes)]
    valid = sorted((names[i] for i in order[:n_valid]), key=lambda s: int(s[5:]))
    train = sorted((names[i] for i in order[n_valid:]), key=lambda s: int(s[5:]))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    total = sum(len(d["actions"]) for d in demos)
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["total"] = total
        data.attrs["date"] = time.strftime("%m-%d-%Y")
        data.attrs["time"] = time.strftime("%H:%M:%S")
        data.attrs["repository_version"] = env_args["env_version"]
        data.attrs["env"] = env_args["env_name"]
        data.attrs["generator"] = (
            f"torchrl_sacflow scripted {task_key} policy, seed={seed}, action_noise={action_noise}, "
            f"p_early_stop={p_early_stop}, failed_fraction={failed_fraction}"
        )
        for name, steps, outcome in zip(names, demos, outcomes):
            _write_demo(data.create_group(name), steps, model_xml, outcome)
        mask = f.create_group("mask")
        mask.create_dataset("train", data=np.array(train, dtype="S"))
        mask.create_dataset("valid", data=np.array(valid, dtype="S"))
    os.replace(tmp, path)

    wall = time.perf_counter() - start
    return {
        "path": str(path),
        "task": task_key,
        "controller_format": controller_format,
        "episodes": len(demos),
        "successful_episodes": outcomes.count("success"),
        "early_stopped_episodes": outcomes.count("early_stop"),
        "failed_episodes": outcomes.count("failed"),
        "attempts": attempts,
        "failed_attempts": attempts - len(demos),
        "steps": total,
        "simulated_steps": simulated,
        "mean_episode_length": total / len(demos),
        "env_build_s": env_build_s,
        "wall_time_s": wall,
        "steps_per_s": simulated / max(rollout_s, 1e-9),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; prints the statistics of :func:`generate_scripted_demos`."""
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_sacflow.robomimic.scripted_demos",
        description="Write scripted demonstrations in the Robomimic HDF5 format.",
    )
    parser.add_argument("--task", default="lift", help=f"Robomimic task with a scripted policy: {', '.join(SCRIPTED_TASKS)}")
    parser.add_argument("--episodes", type=int, default=20, help="demos to record (failed ones included)")
    parser.add_argument("--out", required=True, help="output .hdf5 path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--controller-format", choices=("composite", "legacy"), default="composite")
    parser.add_argument("--max-steps", type=int, default=None, help="step limit of one attempt (default: lift 100, can 250)")
    parser.add_argument("--noise", type=float, default=0.1, help="policy action noise std")
    parser.add_argument("--max-attempts", type=int, default=None, help="bound on attempts (default 2 x episodes + 10)")
    weak = parser.add_argument_group("imperfect demonstrations (all off by default)")
    weak.add_argument("--action-noise", type=float, default=0.0,
                      help="extra Gaussian noise std on every action entry, before clipping to [-1, 1]")
    weak.add_argument("--p-early-stop", type=float, default=0.0,
                      help="probability that a successful demo is cut short before its success step")
    weak.add_argument("--failed-fraction", type=float, default=0.0,
                      help="fraction of the demos that are failed grasps (the gripper lets go of the cube)")
    args = parser.parse_args(argv)
    try:
        stats = generate_scripted_demos(
            args.out,
            task=args.task,
            episodes=args.episodes,
            seed=args.seed,
            controller_format=args.controller_format,
            max_steps=args.max_steps,
            noise=args.noise,
            max_attempts=args.max_attempts,
            action_noise=args.action_noise,
            p_early_stop=args.p_early_stop,
            failed_fraction=args.failed_fraction,
        )
    except (ValueError, NotImplementedError, RuntimeError) as err:
        parser.exit(2, f"error: {err}\n")
    print(
        f"wrote {stats['episodes']} demos ({stats['steps']} steps) to {stats['path']}: "
        f"{stats['successful_episodes']} successful, {stats['early_stopped_episodes']} cut short, "
        f"{stats['failed_episodes']} failed grasps; {stats['attempts']} attempts, "
        f"mean length {stats['mean_episode_length']:.1f}, "
        f"{stats['steps_per_s']:.0f} steps/s, wall {stats['wall_time_s']:.1f} s"
    )
    return stats

if __name__ == "__main__":
    main(sys.argv[1:])
