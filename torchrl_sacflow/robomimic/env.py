"""TorchRL environments for Robomimic tasks, rebuilt from a dataset's ``env_args``.

Offline-to-online training only makes sense if the online environment is the
one the data came from: same task, robot, controller, control frequency and
physics settings. :func:`make_robomimic_env` therefore reads the ``env_args``
stored in a Robomimic file and builds the robosuite environment directly
(the ``robomimic`` package cannot be installed next to robosuite 1.5), with
rendering switched off, cheap soft resets and our own episode limit.

Observations are flattened in the dataset's key order, the reward is the sparse
task success (``1.0``/``0.0``) and the episode terminates on success, exactly as
:func:`~torchrl_sacflow.robomimic.load_robomimic_dataset` reads the data.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase

from torchrl_sacflow.envs.chunked import ChunkedSuccessEnv
from torchrl_sacflow.errors import ConfigError
from torchrl_sacflow.robomimic.dataset import DEFAULT_OBS_KEYS, read_env_args

__all__ = [
    "RobomimicEnv",
    "RobomimicEnvError",
    "make_robomimic_env",
    "make_robosuite_env",
    "robosuite_kwargs_from_env_args",
    "robosuite_obs_to_numpy",
    "to_composite_controller_config",
]

#: Robomimic renames a few robosuite observables when it writes datasets.
_ROBOMIMIC_TO_ROBOSUITE_OBS = {"object": "object-state"}

#: robosuite part-controller types, i.e. the flat pre-1.5 ``controller_configs``.
_PART_CONTROLLER_TYPES = (
    "JOINT_VELOCITY",
    "JOINT_TORQUE",
    "JOINT_POSITION",
    "OSC_POSITION",
    "OSC_POSE",
    "IK_POSE",
)

#: Settings that must hold online whatever the file says: no rendering, no
#: camera observations and no robosuite horizon (the episode limit is ours,
#: counted in primitive steps).
_FORCED_KWARGS = {
    "has_renderer": False,
    "has_offscreen_renderer": False,
    "use_camera_obs": False,
    "use_object_obs": True,
    "ignore_done": True,
}


class RobomimicEnvError(ConfigError):
    """Raised when ``env_args`` cannot be turned into a robosuite environment (one-line message)."""


def _version_tuple(version: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in str(version).split(".")[:2])
    except (TypeError, ValueError):
        return None


def _is_part_config(config: Any) -> bool:
    return (
        isinstance(config, dict)
        and "body_parts" not in config
        and config.get("type") in _PART_CONTROLLER_TYPES
    )


def _rename_legacy_part_keys(config: dict) -> dict:
    """Maps pre-1.5 part-controller argument names to their robosuite 1.5 names.

    robosuite 1.5 silently ignores unknown controller arguments, so without this
    an old ``"control_delta": False`` (absolute control) would be dropped and the
    controller would fall back to delta inputs.
    """
    config = dict(config)
    if config.get("type") != "IK_POSE":  # IK_POSE still takes control_delta in 1.5
        if "control_delta" in config:
            delta = config.pop("control_delta")
            config.setdefault("input_type", "delta" if delta else "absolute")
    for old, new in (("damping", "damping_ratio"), ("damping_limits", "damping_ratio_limits")):
        if old in config:
            value = config.pop(old)
            config.setdefault(new, value)
    return config


def to_composite_controller_config(controller_configs: Any, robots: Sequence[str]) -> Any:
    """Converts robosuite <= 1.4 flat controller configs to the 1.5 composite format.

    Composite configs (and ``None``) are returned unchanged. Flat configs (a
    dict with ``"type": "OSC_POSE"`` etc., or a list of them, one per robot)
    have their legacy argument names updated and are then converted with
    robosuite's own ``refactor_composite_controller_config`` for each robot's arms.

    Args:
        controller_configs: the ``env_kwargs["controller_configs"]`` entry.
        robots (sequence of str): the robot names of the environment.
    """
    from robosuite.controllers.composite.composite_controller_factory import (
        refactor_composite_controller_config,
    )
    from robosuite.robots import REGISTERED_ROBOTS

    def convert(config: Any, robot: str) -> Any:
        if not _is_part_config(config):
            return config
        if robot not in REGISTERED_ROBOTS:
            raise RobomimicEnvError(
                f"unknown robosuite robot {robot!r} (known: {sorted(REGISTERED_ROBOTS)})"
            )
        arms = list(getattr(REGISTERED_ROBOTS[robot], "arms", ["right"]))
        return refactor_composite_controller_config(
            _rename_legacy_part_keys(config), robot, arms
        )

    if isinstance(controller_configs, (list, tuple)):
        if len(controller_configs) != len(robots):
            raise RobomimicEnvError(
                f"{len(controller_configs)} controller configs for {len(robots)} robots"
            )
        return [convert(c, r) for c, r in zip(controller_configs, robots)]
    return convert(controller_configs, robots[0])


def _init_parameters(cls: type) -> set[str]:
    """Keyword arguments ``cls(...)`` takes: its ``__init__``'s parameters and, where that passes
    ``**kwargs`` on (robosuite's ``PickPlaceCan(**kwargs)`` → ``PickPlace.__init__``), its bases'."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def robosuite_kwargs_from_env_args(
    env_args: dict[str, Any], *, seed: int | None = None, hard_reset: bool = False
) -> tuple[str, dict[str, Any]]:
    """Turns Robomimic ``env_args`` into ``(env_name, kwargs)`` for ``robosuite.make``.

    Legacy controller configs are converted to the composite format; files
    recorded with robosuite < 1.5 that do not say otherwise get
    ``lite_physics=False`` (the full ``forward``/``step`` physics they were
    recorded with); arguments the installed robosuite does not accept are
    dropped with a warning; rendering, camera observations and robosuite's
    own horizon are switched off.

    Args:
        env_args (dict): ``{"env_name", "type", "env_kwargs"}`` as stored in the file.

    Keyword Args:
        seed (int, optional): seed of the robosuite environment's generator.
        hard_reset (bool, optional): rebuild the MuJoCo model at every reset
            (~180 ms) instead of resetting the simulator (~1 ms). Defaults to ``False``.
    """
    import robosuite
    from robosuite.environments.base import REGISTERED_ENVS

    if not isinstance(env_args, dict):
        raise RobomimicEnvError(f"env_args must be a dict, got {type(env_args).__name__}")
    env_type = env_args.get("type", 1)
    if env_type != 1:
        raise RobomimicEnvError(
            f"env_args type {env_type!r} is not a robosuite environment (type 1); "
            "only robosuite Robomimic datasets are supported"
        )
    env_name = env_args.get("env_name")
    if env_name not in REGISTERED_ENVS:
        raise RobomimicEnvError(
            f"unknown robosuite environment {env_name!r} "
            f"(robosuite {robosuite.__version__} knows: {sorted(robosuite.ALL_ENVIRONMENTS)})"
        )
    kwargs = copy.deepcopy(dict(env_args.get("env_kwargs", {}) or {}))
    kwargs.pop("seed", None)
    robots = kwargs.get("robots", ["Panda"])
    if isinstance(robots, str):
        robots = [robots]
    kwargs["robots"] = list(robots)

    controller_configs = kwargs.get("controller_configs")
    legacy = _is_part_config(controller_configs) or (
        isinstance(controller_configs, (list, tuple))
        and any(_is_part_config(c) for c in controller_configs)
    )
    if controller_configs is not None:
        kwargs["controller_configs"] = to_composite_controller_config(
            controller_configs, kwargs["robots"]
        )
    version = _version_tuple(env_args.get("env_version"))
    recorded_pre_15 = version < (1, 5) if version is not None else legacy
    if recorded_pre_15 and "lite_physics" not in kwargs:
        kwargs["lite_physics"] = False

    accepted = _init_parameters(REGISTERED_ENVS[env_name])
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        warnings.warn(
            f"robosuite {robosuite.__version__} {env_name} does not take env_kwargs "
            f"{unknown}; they are ignored",
            stacklevel=2,
        )
        for key in unknown:
            kwargs.pop(key)
    kwargs.update(_FORCED_KWARGS)
    kwargs["hard_reset"] = bool(hard_reset)
    if seed is not None:
        kwargs["seed"] = int(seed)
    return env_name, kwargs


def make_robosuite_env(
    env_args: dict[str, Any], *, seed: int | None = None, hard_reset: bool = False
):
    """Builds the raw robosuite environment described by Robomimic ``env_args``.

    See :func:`robosuite_kwargs_from_env_args` for how the arguments are adapted.
    """
    import robosuite

    env_name, kwargs = robosuite_kwargs_from_env_args(env_args, seed=seed, hard_reset=hard_reset)
    return robosuite.make(env_name, **kwargs)


def robosuite_obs_to_numpy(obs: dict[str, Any], obs_keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Picks Robomimic-named observations out of a robosuite observation dict.

    Args:
        obs (dict): robosuite's observation dict.
        obs_keys (sequence of str): Robomimic key names (``"object"`` is
            robosuite's ``"object-state"``).

    Returns:
        a dict from each Robomimic key to a 1-d float64 array.
    """
    return {
        key: np.asarray(obs[_ROBOMIMIC_TO_ROBOSUITE_OBS.get(key, key)], dtype=np.float64).reshape(-1)
        for key in obs_keys
    }


class RobomimicEnv(ChunkedSuccessEnv):
    """A robosuite task rebuilt from Robomimic ``env_args``, with optional action chunking.

    Each step outputs ``"observation"`` (float32, the ``obs_keys`` concatenated
    in order), ``"reward"`` (the sparse success ``1.0``/``0.0``, or its
    discounted sum over a chunk), ``"terminated"`` (on success), ``"truncated"``
    (at ``max_episode_steps`` primitive steps), ``"done"`` and ``"success"``
    (bool, for success-rate evaluation).

    With ``action_chunk=h > 1`` the action is a flat ``h*d`` vector whose
    ``h`` primitive actions run in order within one step. The step returns
    ``sum_{j<k} gamma^j r_j`` over the ``k <= h`` executed actions and stops
    early when the episode ends inside the chunk, matching the chunked
    transitions of :func:`~torchrl_sacflow.robomimic.load_robomimic_dataset`,
    so a critic target ``r + gamma^h (1 - terminated) V(s')`` is consistent
    across offline and online data.

    TorchRL's :class:`~torchrl.envs.transforms.MultiAction` is not used for
    this: it wants a stacked ``[h, d]`` action, returns either the stacked
    per-step rewards (ragged when a chunk ends early, with a zero slot for the
    skipped steps) or only the last step's reward, never the discounted sum,
    and its early stop relies on partial-step machinery. Running the chunk
    inside ``_step`` is a few lines and keeps the primitive step counter exact.

    The instance pickles by rebuilding itself from its constructor arguments
    (a fresh episode), so it can be handed to multi-process collectors.

    Args:
        env_args (dict, str or path-like): Robomimic ``env_args`` (a dict or
            its JSON string) or the path of a Robomimic HDF5 file to read them from.

    Keyword Args:
        obs_keys (sequence of str, optional): Robomimic observation keys,
            concatenated in this order. Defaults to :data:`DEFAULT_OBS_KEYS`.
        max_episode_steps (int, optional): episode limit in primitive steps.
            Defaults to ``500``.
        action_chunk (int, optional): primitive actions per step. Defaults to ``1``.
        gamma (float, optional): discount of the in-chunk reward sum. Defaults to ``0.99``.
        seed (int, optional): seed of robosuite's generator (initial object
            placement and robot noise). Defaults to ``None`` (random).
        device (torch.device or str, optional): device of the outputs. Defaults to ``"cpu"``.
        hard_reset (bool, optional): rebuild the MuJoCo model at each reset.
            Defaults to ``False``: resets take ~1 ms instead of ~180 ms, but
            objects whose size robosuite draws when it builds the model (Lift's
            cube, 2.0-2.2 cm half-side) keep the size drawn at construction
            for the whole life of the env, so use several seeded envs (or
            ``hard_reset=True``) to see the size variation of the recordings.

    Raises:
        ValueError: a bad ``action_chunk`` or ``max_episode_steps``.
        RobomimicEnvError: ``env_args`` that are not a robosuite environment (unknown env,
            robot or controller), or an ``obs_keys`` entry the env does not produce.
    """

    def __init__(
        self,
        env_args: dict[str, Any] | str | os.PathLike,
        *,
        obs_keys: Sequence[str] = DEFAULT_OBS_KEYS,
        max_episode_steps: int = 500,
        action_chunk: int = 1,
        gamma: float = 0.99,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        hard_reset: bool = False,
    ):
        if int(action_chunk) != action_chunk or action_chunk < 1:
            raise ValueError(f"action_chunk must be a positive integer, got {action_chunk!r}")
        if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
        if isinstance(env_args, str) and env_args.lstrip().startswith("{"):
            env_args = json.loads(env_args)  # the raw ``data.attrs["env_args"]`` string
        elif not isinstance(env_args, dict):
            env_args = read_env_args(env_args)
        obs_keys = tuple(obs_keys)
        self._init_kwargs = {
            "env_args": copy.deepcopy(env_args),
            "obs_keys": obs_keys,
            "max_episode_steps": int(max_episode_steps),
            "action_chunk": int(action_chunk),
            "gamma": float(gamma),
            "seed": seed,
            "device": str(device),
            "hard_reset": bool(hard_reset),
        }
        super().__init__(device=device, batch_size=torch.Size([]))
        self.env_args = copy.deepcopy(env_args)
        self.obs_keys = obs_keys
        self.max_episode_steps = int(max_episode_steps)
        self.action_chunk = int(action_chunk)
        self.gamma = float(gamma)
        self._env = make_robosuite_env(env_args, seed=seed, hard_reset=hard_reset)
        self._episode_steps = 0

        # observations are only meaningful after a reset
        raw = self._env.reset()
        if self._activate_observables(raw):
            raw = self._env.reset()
        sizes = {k: v.shape[0] for k, v in robosuite_obs_to_numpy(raw, obs_keys).items()}
        self.obs_sizes = sizes
        obs_dim = sum(sizes.values())
        low, high = self._env.action_spec
        self._set_specs(obs_dim, low, high)

    def _activate_observables(self, raw: dict[str, Any]) -> bool:
        """Switches on requested observables that robosuite leaves off; returns whether any was."""
        names = set(getattr(self._env, "observation_names", ()))
        changed = False
        for key in self.obs_keys:
            name = _ROBOMIMIC_TO_ROBOSUITE_OBS.get(key, key)
            if name in raw:
                continue
            if name in names:
                self._env.modify_observable(observable_name=name, attribute="active", modifier=True)
                changed = True
                continue
            available = sorted(
                {k if k != "object-state" else "object" for k in raw}
            )
            raise RobomimicEnvError(
                f"observation key {key!r} is not produced by robosuite env "
                f"{self.env_args.get('env_name')!r} (available: {available})"
            )
        return changed

    @property
    def robosuite_env(self):
        """The wrapped robosuite environment (e.g. to set a simulator state)."""
        return self._env

    def _observation(self, raw: dict[str, Any]) -> torch.Tensor:
        parts = robosuite_obs_to_numpy(raw, self.obs_keys)
        flat = np.concatenate([parts[k] for k in self.obs_keys])
        return torch.as_tensor(flat, dtype=torch.float32, device=self.device)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        raw = self._env.reset()
        self._episode_steps = 0
        return self._transition(self._observation(raw))

    def reset_to_state(self, state: np.ndarray | torch.Tensor) -> TensorDictBase:
        """Starts an episode from a recorded simulator state (a row of a demo's ``states``).

        Setting the MuJoCo state alone is not enough in robosuite 1.5: the arm
        controllers cache the end-effector pose they were last updated with
        and the joint configuration they were created with (OSC's nullspace
        target), so replayed actions would be applied relative to the wrong
        pose. The controllers are rebuilt around the recorded joints, as a
        robosuite reset would have built them when the demo was recorded.

        Args:
            state (array): flattened ``[time, qpos, qvel]`` simulator state.

        Returns:
            the reset TensorDict (same entries as :meth:`reset`).
        """
        env = self._env
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        env.reset()
        # clear solver warm-starts too, as the reset that preceded the recording did
        env.sim.reset()
        env.sim.set_state_from_flattened(state)
        env.sim.forward()
        for robot in env.robots:
            default_qpos = robot.init_qpos
            robot.init_qpos = np.array(env.sim.data.qpos[robot._ref_joint_pos_indexes])
            try:
                robot.reset(deterministic=True)
            finally:
                robot.init_qpos = default_qpos
        # robot.reset moved the arm and zeroed nothing else: restore the exact state
        env.sim.set_state_from_flattened(state)
        env.sim.forward()
        for robot in env.robots:
            for controller in robot.composite_controller.part_controllers.values():
                controller.update(force=True)
            robot.composite_controller.update_state()
            robot.composite_controller.reset()
        # robosuite samples an observable at the first substep of each control
        # period after its timer wraps; every forced update advances that timer,
        # so restart the timers as ``env.reset()`` does before reading the state
        for observable in env._observables.values():
            observable.reset()
        raw = env._get_observations(force_update=True)
        self._episode_steps = 0
        return self._transition(self._observation(raw), success=bool(env._check_success()))

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = self._primitive_actions(tensordict.get("action"))
        reward, success, raw = 0.0, False, None
        for j in range(self.action_chunk):
            raw, _, _, _ = self._env.step(actions[j])
            self._episode_steps += 1
            success = bool(self._env._check_success())
            reward += (self.gamma**j) * float(success)
            if success or self._episode_steps >= self.max_episode_steps:
                break
        truncated = (not success) and self._episode_steps >= self.max_episode_steps
        return self._transition(self._observation(raw), reward=reward, success=success, terminated=success,
                                truncated=truncated)

    def _set_seed(self, seed: int | None) -> None:
        # robosuite's placement samplers keep a reference to ``env.rng``: reseed it in place
        fresh = np.random.default_rng(seed)
        self._env.rng.bit_generator.state = fresh.bit_generator.state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(env_name={self.env_args.get('env_name')!r}, "
            f"obs_keys={list(self.obs_keys)}, action_chunk={self.action_chunk}, "
            f"max_episode_steps={self.max_episode_steps}, device={self.device})"
        )


def make_robomimic_env(env_args: dict[str, Any] | str | os.PathLike, **kwargs) -> RobomimicEnv:
    """Builds the online TorchRL environment matching a Robomimic dataset.

    A module-level function so ``functools.partial(make_robomimic_env, path,
    ...)`` can be passed as ``create_env_fn`` to (multi-process) collectors.

    Args:
        env_args (dict, str or path-like): Robomimic ``env_args`` or the path
            of the HDF5 file that stores them.

    Keyword Args:
        obs_keys, max_episode_steps, action_chunk, gamma, seed, device,
        hard_reset: see :class:`RobomimicEnv`.

    Raises:
        ValueError, RobomimicEnvError: as :class:`RobomimicEnv` does.

    Examples:
        >>> env = make_robomimic_env("lift.hdf5", action_chunk=4)
        >>> td = env.rollout(10)
    """
    return RobomimicEnv(env_args, **kwargs)
