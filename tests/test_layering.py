"""The package's import direction (docs: LAYOUT): lower layers never import higher ones.

Read from the source with ``ast`` (nothing is imported), so a new upward import fails here with the
file and the module it names.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torchrl_sacflow"


def _imports(path: Path) -> set[str]:
    """Every ``torchrl_sacflow`` module a file imports (``from torchrl_sacflow import x`` counts as
    ``torchrl_sacflow.x``), at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "torchrl_sacflow":
                names.update(f"torchrl_sacflow.{alias.name}" for alias in node.names)
    return {name for name in names if name == "torchrl_sacflow" or name.startswith("torchrl_sacflow.")}


# (files, the torchrl_sacflow modules they may import: a prefix match)
LAYERS = {
    "_fast": (sorted((PACKAGE / "_fast").glob("*.py")), ("torchrl_sacflow._fast",)),
    "errors": ([PACKAGE / "errors.py"], ()),
    "ogbench": (sorted((PACKAGE / "ogbench").glob("*.py")),
                ("torchrl_sacflow.ogbench", "torchrl_sacflow.errors", "torchrl_sacflow._lazy",
                 "torchrl_sacflow.action_chunks", "torchrl_sacflow.envs")),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_upward_import(layer):
    files, allowed = LAYERS[layer]
    assert files, f"no files found for {layer}"
    upward = {}
    for path in files:
        bad = sorted(name for name in _imports(path)
                     if name != "torchrl_sacflow" and not name.startswith(allowed))
        if bad:
            upward[path.relative_to(PACKAGE.parent).as_posix()] = bad
    assert not upward, f"imports that run upward: {upward}"


def test_exit_helper_beside_config_error():
    """``exit_on_config_error`` lives in the bottom-layer ``errors`` module; the training package re-exports it."""
    from torchrl_sacflow import errors, training

    assert training.exit_on_config_error is errors.exit_on_config_error
    assert training.ConfigError is errors.ConfigError
