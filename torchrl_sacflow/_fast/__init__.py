"""Speed paths that reach into TorchRL / tensordict internals, all in one place, behind one switch.

Each class here is a TorchRL class (or a loss mixin) that computes the same values as its parent
with less Python overhead, and defers to the parent whenever it could behave differently
(``docs/fast_paths.md`` lists each one, its measured gain and the upstream change that would let us
delete it). They rely on private names of TorchRL 0.14 / tensordict 0.14, which is why
``pyproject.toml`` caps both below 0.15.

Switch them all off — every call then takes TorchRL's own path — with the environment variable
``TORCHRL_SACFLOW_FAST_PATHS=0`` (read at import), :func:`set_enabled`, or the :func:`disabled`
context manager. What is decided when an object is built (the loss's critic ensemble, fused Adam)
follows the switch as it was at construction; everything else checks it on each call.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

__all__ = ["enabled", "set_enabled", "disabled"]

_ENABLED = os.environ.get("TORCHRL_SACFLOW_FAST_PATHS", "1").strip().lower() not in ("0", "false", "off", "no")


def enabled() -> bool:
    """Whether the speed paths are on (default: on, unless ``TORCHRL_SACFLOW_FAST_PATHS=0``)."""
    return _ENABLED


def set_enabled(value: bool) -> None:
    """Turn every speed path on or off, process-wide."""
    global _ENABLED
    _ENABLED = bool(value)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, TorchRL's own code paths only."""
    previous = _ENABLED
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)
