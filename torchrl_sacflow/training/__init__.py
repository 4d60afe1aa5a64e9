"""What the training recipes share: builders for env, collector, buffer, policy, loss and optimisers;
the SAC update step; evaluation; checkpoint/resume; loggers; thread settings; config checks.

Data flows one way: config → these builders → TorchRL parts → the recipe's loop → logs/checkpoints.
"""
from torchrl_sacflow.training.checkpoint import (
    checkpoint_path,
    has_checkpoint,
    is_complete_checkpoint,
    load_checkpoint,
    load_trained_policy,
    make_checkpoint,
    read_checkpoint_metadata,
    recover_checkpoint,
    save_checkpoint,
)
from torchrl_sacflow.training.collectors import make_collector, round_up_frames
from torchrl_sacflow.training.config import (
    check_group_choices,
    config_fingerprint,
    fingerprint_groups,
    validate_train_config,
)
from torchrl_sacflow.training.diagnostics import critic_diagnostics, flow_diagnostics
from torchrl_sacflow.training.env_state import EnvState, supports_exact_state
from torchrl_sacflow.training.envs import (
    DirectGymEnv,
    action_dim,
    check_env_id,
    env_maker,
    load_env_factory,
    make_env,
    observation_dim,
)
from torchrl_sacflow.training.errors import ConfigError, exit_on_config_error
from torchrl_sacflow.training.evaluation import evaluate
from torchrl_sacflow.training.loggers import (
    csv_scalar_dir,
    episode_metrics,
    log_metrics,
    make_logger,
    read_csv_scalar,
    truncate_csv_logs,
    write_summary,
)
from torchrl_sacflow.training.losses import CRITICS, LossBundle, make_loss, register_critic
from torchrl_sacflow.training.optim import make_optimizers
from torchrl_sacflow.training.policies import make_gaussian_actor, make_policy
from torchrl_sacflow.training.replay import make_replay_buffer
from torchrl_sacflow.training.run_dir import check_resume, open_run_dir, previous_run_files, run_id
from torchrl_sacflow.training.threads import (
    available_cores,
    resolve_device,
    resolve_num_threads,
    seed_everything,
    set_learner_threads,
)
from torchrl_sacflow.training.update import SACUpdate

__all__ = [
    "SACUpdate",
    "make_env",
    "DirectGymEnv",
    "env_maker",
    "check_env_id",
    "observation_dim",
    "action_dim",
    "make_collector",
    "round_up_frames",
    "make_replay_buffer",
    "make_policy",
    "make_gaussian_actor",
    "make_loss",
    "LossBundle",
    "CRITICS",
    "register_critic",
    "make_optimizers",
    "evaluate",
    "load_env_factory",
    "critic_diagnostics",
    "flow_diagnostics",
    "make_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_trained_policy",
    "checkpoint_path",
    "has_checkpoint",
    "is_complete_checkpoint",
    "recover_checkpoint",
    "read_checkpoint_metadata",
    "make_logger",
    "log_metrics",
    "csv_scalar_dir",
    "read_csv_scalar",
    "truncate_csv_logs",
    "episode_metrics",
    "write_summary",
    "available_cores",
    "resolve_num_threads",
    "set_learner_threads",
    "resolve_device",
    "seed_everything",
    "ConfigError",
    "exit_on_config_error",
    "config_fingerprint",
    "fingerprint_groups",
    "check_group_choices",
    "check_resume",
    "previous_run_files",
    "run_id",
    "EnvState",
    "supports_exact_state",
    "open_run_dir",
    "validate_train_config",
]
from torchrl_sacflow.training import crossq as _crossq  # noqa: E402,F401  registers critic=crossq
