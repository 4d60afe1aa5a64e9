"""Package attributes imported from a submodule on first use.

A package whose submodule is also a command (``python -m package.module``) must not import it
from ``__init__``: runpy imports the package first, would find the module already in
``sys.modules`` (a ``RuntimeWarning``) and then run a second copy of it as ``__main__``. The
package re-exports the command's functions lazily instead, through a module-level
``__getattr__`` (PEP 562).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_attributes(package: str, module: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``package.module`` when one of
    ``names`` is first looked up and returns that attribute of it.

    Raises (from the returned function):
        AttributeError: for any other name, worded as Python's own.

    Examples:
        >>> __getattr__ = lazy_attributes(__name__, "generate", ["generate_ogbench_dataset"])
    """
    names = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
