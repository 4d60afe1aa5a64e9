"""Re-export of :mod:`torchrl_sacflow.errors` (``ConfigError``, ``exit_on_config_error``), kept so that
``torchrl_sacflow.training.errors`` and ``torchrl_sacflow.training.exit_on_config_error`` stay importable."""
from __future__ import annotations

from torchrl_sacflow.errors import CONFIG_ERROR_EXIT_CODE, ConfigError, exit_on_config_error

__all__ = ["ConfigError", "exit_on_config_error", "CONFIG_ERROR_EXIT_CODE"]
