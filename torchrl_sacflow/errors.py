"""The base class of every error the library raises for user input (a setting, a file, an env spec),
and the one-line exit helper every command-line tool wraps its work in."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

__all__ = ["ConfigError", "exit_on_config_error", "CONFIG_ERROR_EXIT_CODE"]

CONFIG_ERROR_EXIT_CODE = 2  # what argparse uses for bad command lines


class ConfigError(ValueError):
    """A bad input the user can fix (unknown env id, K < 1, a broken dataset file, ...).

    The message is meant to be printed as is, on one line: the recipes and command-line tools turn any
    ``ConfigError`` (subclasses included, e.g. the Robomimic loader's and env builder's errors) into
    ``<prog>: error: <message>`` and exit code 2 (:func:`exit_on_config_error`).
    """


@contextlib.contextmanager
def exit_on_config_error(prog: str = "train") -> Iterator[None]:
    """Turn a :class:`ConfigError` (or a subclass: the Robomimic data/env errors) into ``<prog>: error: <message>`` on stderr and exit code 2.

    Args:
        prog (str): the program name printed before ``error:`` (e.g. ``"train_mujoco"``, ``"generate"``).

    Raises:
        SystemExit: with code :data:`CONFIG_ERROR_EXIT_CODE` (2) when the body raises a :class:`ConfigError`;
            the message is folded onto one line. Any other exception propagates unchanged (a bug keeps its traceback).
    """
    try:
        yield
    except ConfigError as err:
        message = " ".join(str(err).split())  # one line, whatever the message looked like
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None
