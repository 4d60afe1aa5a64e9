"""The README stays short and true: its loop is the example's, its commands and links resolve."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_names_the_entry_points_on_its_first_screen():
    assert len(README.encode()) <= 10_000, f"README.md is {len(README.encode())} bytes"
    first_screen = "\n".join(README.splitlines()[:40])
    for name in ("make train", "make test", "make_flow_actor", "SACFlowLoss", "recipes.train_mujoco",
                 "examples/own_task.py"):
        assert name in first_screen, f"{name!r} is not on the README's first screen"
    assert README.index("make train") < README.index("A TorchRL implementation"), "the two commands come first"


def test_readme_loop_is_the_example_loop():
    """Every line of the README's Python block is a line of ``examples/own_task.py`` (so it cannot drift)."""
    (block,) = _blocks(README, "python")
    example = {line.strip() for line in (ROOT / "examples" / "own_task.py").read_text().splitlines()}
    lines = [line for line in block.splitlines() if line.strip()]
    assert 20 <= len(lines) <= 35
    missing = [line for line in lines if line.strip() not in example]
    assert not missing, f"README lines not in examples/own_task.py: {missing}"


def test_readme_commands_name_existing_modules():
    modules = set(re.findall(r"python -m ([\w.]+)", README))
    assert {"recipes.train_mujoco", "examples.own_task"} <= modules
    for module in sorted(modules):
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_links_to_docs_resolve(page):
    text = (ROOT / page).read_text()
    base = (ROOT / page).parent
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#([\w-]+))?\)", text)
    assert links
    for target, anchor in links:
        path = base / target
        assert path.is_file(), f"{page} links to {target}, which does not exist"
        if anchor:
            headings = [_slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)]
            assert anchor in headings, f"{page} links to {target}#{anchor}: no such heading ({headings})"
