"""User-facing configuration errors: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from torchrl_sacflow.errors import ConfigError

__all__ = ["ConfigError", "exit_on_config_error", "CONFIG_ERROR_EXIT_CODE"]

CONFIG_ERROR_EXIT_CODE = 2  # what argparse uses for bad command lines


@contextlib.contextmanager
def exit_on_config_error(prog: str = "train") -> Iterator[None]:
    """Turn a :class:`ConfigError` (or a subclass: the Robomimic data/env errors) into ``<prog>: error: <message>`` on stderr and exit code 2.

    Any other exception propagates unchanged (a bug should keep its traceback).
    """
    try:
        yield
    except ConfigError as err:
        message = " ".join(str(err).split())  # one line, whatever the message looked like
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None
