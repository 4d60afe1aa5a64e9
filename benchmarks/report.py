"""What the benchmarks' markdown reports share (a helper module, not a benchmark).

A timing is only comparable with the command that produced it and the machine it ran on, so every
report starts with both; the report is printed as well as written so that a run's log holds it.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path


def command_line(module: str, argv: list[str] | None = None) -> str:
    """``python -m <module> <args>`` as a report quotes it, ``argv`` as ``main`` got it (``None``: this
    process's ``sys.argv[1:]``)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def cpu_model(default: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo``; where that is unreadable (not Linux),
    ``default`` or else what ``platform.processor()`` knows (``"?"`` if nothing)."""
    cpu = default or platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        return cpu


def cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where the OS has none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> str:
    """The 1/5/15-minute load averages as ``"0.52 / 0.61 / 0.70"``, ``"?"`` where the OS has none:
    a busy machine slows every timing, so a report gives the load it started under."""
    if not hasattr(os, "getloadavg"):
        return "?"
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def memory_gib() -> int | str:
    """Total RAM in GiB (whole GiB, from ``/proc/meminfo``), ``"?"`` where that is unreadable."""
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) // (1024 * 1024)
    except (OSError, IndexError, ValueError):
        return "?"


def machine_lines(*, memory: bool = False, versions: dict[str, str] | None = None) -> list[str]:
    """The report's machine bullets: CPU and cores (and RAM with ``memory``), the load average now
    (call it before the timings), and the python / torch / torchrl / tensordict versions followed by
    ``versions`` (name -> version, e.g. ``{"ray": ray.__version__}``)."""
    import tensordict
    import torch
    import torchrl

    ram = f", {memory_gib()} GiB RAM" if memory else ""
    extra = "".join(f", {name} {version}" for name, version in (versions or {}).items())
    return [
        f"- machine: {cpu_model()}, {cores()} cores available{ram}, {platform.system()} {platform.release()}",
        f"- load average at start (1/5/15 min): {load_average()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, torchrl {torchrl.__version__}, "
        f"tensordict {tensordict.__version__}{extra}",
    ]


def table(columns: list[str], rows: list[list]) -> list[str]:
    """A markdown table as lines: the header, the separator, then one line per row (cells ``str``-ed)."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows
    ]


def section(title: str, *blocks: str | list[str], level: int = 2) -> list[str]:
    """A markdown section as lines: the ``level`` heading, then each block followed by a blank line;
    a block is a paragraph (one string) or a list of lines (a table, bullets)."""
    lines = ["#" * level + " " + title, ""]
    for block in blocks:
        lines += ([block] if isinstance(block, str) else list(block)) + [""]
    return lines


def write_report(lines: list[str], out: Path | str | None) -> str:
    """Print the report (``lines`` joined by newlines) and write it to ``out`` (its folder made if
    missing; ``None``: print only, as a smoke run does); returns the text."""
    text = "\n".join(lines)
    print()
    print(text)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out}")
    return text
