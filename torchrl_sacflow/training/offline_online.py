"""What only the offline-to-online regime needs (docs/algorithm.md §4, last paragraph).

* :func:`resolve_dataset` — the Robomimic file to train on: the user's, or a scripted Lift set
  generated once into a cache folder (the official files cannot be downloaded here).
* :func:`load_offline_data` — the file as chunked transitions with exactly the keys the online
  collector also produces (:data:`TRANSITION_KEYS`), so offline and online batches concatenate.
* :class:`MixedReplayBuffer` — TorchRL's ``OfflineToOnlineReplayBuffer``: every batch holds
  ``round(offline_fraction · B)`` demonstration transitions and the rest online ones.
* :class:`LinearSchedule` — the β of the proximity term, annealed linearly over online frames.
* :class:`FlowMatchingUpdate` — one behaviour-cloning step, the pre-training counterpart of
  :class:`~torchrl_sacflow.training.SACUpdate`.
* :func:`make_chunked_sac_flow_loss` — SACFlowLoss whose critic target discounts by γ^h.
* :func:`evaluate_success` — success rate of the deterministic (ODE) policy.
* :func:`check_offline_online_config`, :func:`read_task_env_args`, :func:`check_chunking` — one-line
  errors (:class:`ConfigError`) for bad settings, a file of another task, mismatched chunk widths.
* :func:`truncate_phase_logs` — on resume, drop each phase's CSV rows past the checkpoint.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.data import LazyTensorStorage, OfflineToOnlineReplayBuffer, ReplayBuffer
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_sacflow.objectives import FlowMatchingLoss, FusedSoftUpdate, SACFlowLoss
from torchrl_sacflow.training.config import check_compile_setting
from torchrl_sacflow.training.errors import ConfigError
from torchrl_sacflow.training.losses import make_loss
from torchrl_sacflow.training.policies import check_policy_config
from torchrl_sacflow.training.loggers import csv_scalar_dir
from torchrl_sacflow.training.threads import resolve_device

__all__ = [
    "TRANSITION_KEYS",
    "scripted_dataset_path",
    "resolve_dataset",
    "load_offline_data",
    "read_task_env_args",
    "check_chunking",
    "make_offline_buffer",
    "MixedReplayBuffer",
    "LinearSchedule",
    "FlowMatchingUpdate",
    "make_chunked_sac_flow_loss",
    "evaluate_success",
    "check_offline_online_config",
    "truncate_phase_logs",
]

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



# -- data --------------------------------------------------------------------------------------
def scripted_dataset_path(datasets_dir: str | os.PathLike, task: str, episodes: int, seed: int) -> Path:
    """Where the scripted demonstrations for ``(task, episodes, seed)`` are cached."""
    return Path(datasets_dir) / f"{task}_scripted_{episodes}_seed{seed}.hdf5"


def resolve_dataset(
    dataset: str | os.PathLike | None,
    *,
    task: str,
    datasets_dir: str | os.PathLike,
    episodes: int,
    seed: int = 0,
) -> tuple[Path, bool]:
    """The Robomimic file to use, and whether it was generated just now.

    A given ``dataset`` is returned as is (the loader reports a missing or broken file). ``None``
    means the scripted ``task`` demonstrations, generated on first use (~1.5 s per episode here)
    and reused afterwards; only Lift has a scripted policy.
    """
    if dataset is not None:
        return Path(dataset).expanduser(), False
    if task != "lift":
        raise ConfigError(
            f"no scripted demonstrations for task {task!r} (only 'lift'): pass dataset=/path/to/{task}/mh/low_dim.hdf5"
        )
    path = scripted_dataset_path(datasets_dir, task, episodes, seed)
    if path.is_file():
        return path, False
    from torchrl_sacflow.robomimic import generate_scripted_demos

    generate_scripted_demos(path, task=task, episodes=episodes, seed=seed)
    return path, True


def load_offline_data(
    path: str | os.PathLike,
    *,
    obs_keys: Sequence[str],
    action_chunk: int,
    gamma: float,
    filter_key: str | None = None,
    **load_kwargs: Any,
) -> TensorDict:
    """The file's transitions in chunks of ``action_chunk`` actions, restricted to :data:`TRANSITION_KEYS`.

    ``load_kwargs`` go to :func:`~torchrl_sacflow.robomimic.load_robomimic_dataset` (terminal rule,
    the env's action bounds, ...). A missing or malformed file, or actions outside the env's
    bounds, raise :class:`ConfigError` with the loader's one-line message.
    """
    from torchrl_sacflow.robomimic import RobomimicDatasetError, load_robomimic_dataset

    try:
        data = load_robomimic_dataset(
            path, obs_keys=obs_keys, filter_key=filter_key, action_chunk=action_chunk, gamma=gamma, **load_kwargs
        )
    except RobomimicDatasetError as err:
        raise ConfigError(str(err)) from None
    return data.select(*TRANSITION_KEYS)


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
    yet). TorchRL's constructor wants the open interval (0, 1); its sampling already handles both
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


class LinearSchedule:
    """``start`` at step 0, linear to ``end`` at ``duration``, constant afterwards (β of the proximity term).

    The paper keeps β = 1000 during online Robomimic fine-tuning and notes it limits how far the
    policy can move from the data; annealing it lets the critic take over as online data grows.
    """

    def __init__(self, start: float, end: float, duration: int):
        self.start, self.end, self.duration = float(start), float(end), int(duration)

    def __call__(self, step: int) -> float:
        if self.duration <= 0 or step >= self.duration:
            return self.end
        return self.start + (self.end - self.start) * max(step, 0) / self.duration


class FlowMatchingUpdate:
    """One flow-matching (behaviour-cloning) gradient step on a batch; returns the detached loss.

    It trains the actor's own velocity parameters (shared with the SAC loss), so SAC fine-tuning
    starts from the pre-trained policy without any copy.
    """

    def __init__(self, actor: nn.Module, *, lr: float = 3e-4, betas: Sequence[float] = (0.9, 0.999),
                 grad_clip: float | None = None):
        self.loss_module = FlowMatchingLoss(actor)
        self.params = [p for p in self.loss_module.actor_network_params.flatten_keys().values() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=tuple(betas))
        self.grad_clip = grad_clip

    def __call__(self, batch: TensorDictBase) -> TensorDict:
        loss = self.loss_module(batch)["loss_flow_matching"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return TensorDict({"loss_flow_matching": loss.detach()}, batch_size=[])


def make_chunked_sac_flow_loss(
    actor: nn.Module,
    *,
    observation_dim: int,
    action_width: int,
    action_chunk: int,
    gamma: float,
    critic_cells: Sequence[int] = (256, 256),
    num_qvalue_nets: int = 2,
    tau: float = 0.005,
    alpha_init: float = 0.2,
    fixed_alpha: bool = False,
    target_entropy: float = 0.0,
    proximity_coef: float = 0.0,
) -> tuple[SACFlowLoss, FusedSoftUpdate]:
    """SACFlowLoss with twin MLP critics on ``[s, a_{t:t+h}]`` and a γ^h critic target: the ``sac``
    critic option of :func:`~torchrl_sacflow.training.make_loss` at discount ``γ^h``.

    A chunk transition's reward is already the discounted sum over its ``h`` steps, so the
    bootstrap term is discounted by γ^h: ``y = Σ_j γ^j r_j + γ^h (1 − terminated) V(s_{t+h})``.
    A chunk cut short by the episode end either terminates (no bootstrap) or is truncated, so the
    constant γ^h is exact wherever it is used. The proximity term is on from the start (β set later).
    """
    bundle = make_loss(
        {"name": "sac", "num_cells": list(critic_cells), "num_qvalue_nets": num_qvalue_nets, "tau": tau},
        actor, observation_dim=observation_dim, action_dim=action_width, gamma=gamma**action_chunk,
        alpha_init=alpha_init, target_entropy=target_entropy, device=next(actor.parameters()).device,
        fixed_alpha=fixed_alpha, proximity_coef=proximity_coef,
    )
    return bundle.loss_module, bundle.target_updater


# -- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_success(env: EnvBase, policy: nn.Module, *, num_episodes: int) -> dict[str, float]:
    """Success rate of the noise-free policy over ``num_episodes`` full episodes.

    The env ends an episode at success (terminated) or at its own primitive-step limit
    (truncated); an episode counts as a success if any of its steps reports ``success``.

    Returns:
        ``{"success_rate", "return_mean", "episode_length_mean"}`` (length in env steps, i.e. chunks).
    """
    limit = getattr(env, "max_episode_steps", None)
    chunk = getattr(env, "action_chunk", 1)
    max_steps = math.ceil(limit / chunk) + 1 if limit else 10_000
    successes, returns, lengths = [], [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(num_episodes):
            rollout = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=True)
            successes.append(bool(rollout["next", "success"].any()))
            returns.append(float(rollout["next", "reward"].sum()))
            lengths.append(rollout.shape[-1])
    n = float(num_episodes)
    return {
        "success_rate": sum(successes) / n,
        "return_mean": sum(returns) / n,
        "episode_length_mean": sum(lengths) / n,
    }


def truncate_phase_logs(run_dir: str | os.PathLike, limits: Mapping[str, int], default: int) -> None:
    """Drop CSV rows logged after the checkpoint a run resumes from, phase by phase.

    Each phase logs against its own counter (``pretrain/*`` against pre-training steps,
    ``offline/*`` against offline updates, the rest against online frames), so each metric folder
    is cut at its own limit: ``limits[prefix]``, else ``default``.
    """
    root = csv_scalar_dir(run_dir)
    if not root.is_dir():
        return
    for path in root.rglob("*.csv"):
        limit = limits.get(path.relative_to(root).parts[0], default)
        with path.open() as file:
            rows = [row for row in csv.reader(file) if len(row) == 2 and int(float(row[0])) <= limit]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as file:
            csv.writer(file, lineterminator="\n").writerows(rows)
        os.replace(tmp, path)


# -- config checks -----------------------------------------------------------------------------
def _int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _number(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return float(value)


def check_offline_online_config(cfg: Mapping[str, Any]) -> None:
    """Check a ``train_robomimic`` config (plain dict, interpolations resolved)."""
    check_policy_config(cfg["policy"])
    if cfg["policy"]["kind"] != "flow":
        raise ConfigError(f"policy={cfg['policy']['name']}: offline-to-online needs a flow policy (flow_t, flow_g, flow_mlp)")
    if cfg["policy"]["noise_std"] is None:
        raise ConfigError("policy.noise_std (σ, fixed sampling noise) must be set for offline-to-online, got null")
    _int(cfg["action_chunk"], "action_chunk (h, actions per chunk)", 1)
    for key, options in (("terminal_rule", ("success", "dones")), ("action_out_of_bounds", ("error", "clip"))):
        if cfg.get(key, options[0]) not in options:
            raise ConfigError(f"unknown {key} {cfg.get(key)!r}: expected one of {', '.join(options)}")
    frac = _number(cfg, "offline_fraction")
    if not 0.0 <= frac <= 1.0:
        raise ConfigError(f"offline_fraction must be in [0, 1], got {cfg['offline_fraction']!r}")
    gamma = _number(cfg, "gamma")
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {cfg['gamma']!r}")
    for key in ("pretrain_steps", "offline_steps", "online_frames"):
        _int(cfg[key], key, 0)
    for key in ("batch_size", "frames_per_batch", "max_episode_steps", "scripted_episodes"):
        _int(cfg[key], key, 1)
    if not _number(cfg, "updates_per_frame") >= 0:
        raise ConfigError(f"updates_per_frame must be >= 0, got {cfg['updates_per_frame']!r}")
    beta = cfg["beta"]
    for key in ("offline", "online_start", "online_end"):
        if _number(beta, key) < 0:
            raise ConfigError(f"beta.{key} (proximity coefficient) must be >= 0, got {beta[key]!r}")
    _int(beta["online_anneal_frames"], "beta.online_anneal_frames", 0)
    check_compile_setting(cfg.get("compile_policy", False), "compile_policy", resolve_device(cfg.get("device", "cpu")))
    _int(cfg["eval"]["num_episodes"], "eval.num_episodes", 1)
    _int(cfg["eval"]["interval"], "eval.interval", 0)
    _int(cfg["checkpoint"]["interval"], "checkpoint.interval", 0)
    from torchrl_sacflow.robomimic.scripted_demos import ROBOMIMIC_TASKS

    if cfg["task"] not in ROBOMIMIC_TASKS:
        raise ConfigError(f"unknown task {cfg['task']!r}: expected one of {', '.join(ROBOMIMIC_TASKS)}")
    if cfg["dataset"] is None and cfg["task"] != "lift":
        raise ConfigError(
            f"no scripted demonstrations for task {cfg['task']!r} (only 'lift'): "
            f"pass dataset=/path/to/{cfg['task']}/mh/low_dim.hdf5"
        )
