"""The base class of every error the library raises for user input (a setting, a file, an env spec)."""
from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad input the user can fix (unknown env id, K < 1, a broken dataset file, ...).

    The message is meant to be printed as is, on one line: the recipes turn any ``ConfigError``
    (subclasses included, e.g. the Robomimic loader's and env builder's errors) into
    ``<recipe>: error: <message>`` and exit code 2 (:func:`~torchrl_sacflow.training.exit_on_config_error`).
    """
