"""What only the offline-to-online regime needs (docs/algorithm.md §4, last paragraph), by concept:
``data`` (file → transitions → buffers), ``updates`` (schedules, pre-training step, loss), ``evaluation``,
``logs`` and ``config``.

* :func:`resolve_offline_data` — what ``dataset=robomimic[:FILE]`` / ``dataset=ogbench[:FILE]``
  select (``families``): the file (generated once into a cache folder when none is given: the
  official files cannot be downloaded here), the matching chunked env and the loader.
* :func:`resolve_dataset` — the Robomimic file to train on: the user's, or a scripted Lift set
  (optionally imperfect) generated once.
* :func:`load_offline_data` — the file as chunked transitions with exactly the keys the online
  collector also produces (:data:`TRANSITION_KEYS`), so offline and online batches concatenate.
* :class:`MixedReplayBuffer` — TorchRL's ``OfflineToOnlineReplayBuffer``: every batch holds
  ``round(offline_fraction · B)`` demonstration transitions and the rest online ones.
* :class:`LinearSchedule` — the β of the proximity term, annealed linearly over online frames.
* :class:`FlowMatchingUpdate` — one behaviour-cloning step, the pre-training counterpart of
  :class:`~torchrl_sacflow.training.SACUpdate`.
* :func:`make_chunked_sac_flow_loss` — the `critic` group's loss with a critic target discounted by γ^h.
* :func:`make_learner` — the ``algo=`` choice (SAC Flow, FQL, QC-FQL, BC) as one :class:`Learner`:
  the acting policy, the loss, and what the pre-training / offline / online phases step.
* :func:`evaluate_success` — success rate of the deterministic (ODE) policy.
* :func:`check_offline_online_config`, :func:`read_task_env_args`, :func:`check_chunking` — one-line
  errors (:class:`ConfigError`) for bad settings, a file of another task, mismatched chunk widths.
* :func:`truncate_phase_logs` — on resume, drop each phase's CSV rows past the checkpoint.
"""
from torchrl_sacflow.training.offline_online.config import check_offline_online_config
from torchrl_sacflow.training.offline_online.data import (
    TRANSITION_KEYS,
    MixedReplayBuffer,
    check_chunking,
    load_offline_data,
    make_offline_buffer,
    read_task_env_args,
    resolve_dataset,
    scripted_dataset_path,
)
from torchrl_sacflow.training.offline_online.evaluation import evaluate_success
from torchrl_sacflow.training.offline_online.families import (
    DATASET_FAMILIES,
    OfflineData,
    parse_dataset,
    resolve_offline_data,
    resolve_ogbench_dataset,
)
from torchrl_sacflow.training.offline_online.learners import ALGORITHMS, FQLUpdate, Learner, make_learner
from torchrl_sacflow.training.offline_online.logs import truncate_phase_logs
from torchrl_sacflow.training.offline_online.updates import (
    FlowMatchingUpdate,
    LinearSchedule,
    make_chunked_sac_flow_loss,
)

__all__ = [
    "DATASET_FAMILIES",
    "OfflineData",
    "parse_dataset",
    "resolve_offline_data",
    "resolve_ogbench_dataset",
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
    "ALGORITHMS",
    "Learner",
    "FQLUpdate",
    "make_learner",
    "evaluate_success",
    "check_offline_online_config",
    "truncate_phase_logs",
]
