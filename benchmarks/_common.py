"""Helpers shared by the benchmarks: timing, machine description, result files."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from ulcmod.app.report import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn, repeat=3):
    """Smallest wall time of `repeat` calls (and the last return value)."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def best_wall_and_cpu(fn, repeat=3):
    """Smallest wall time and smallest process CPU time (all threads) of `repeat` calls.

    On a shared machine the CPU time is the steadier figure: it does not count the time the
    process waits for a core, only the time its threads run (or wait on memory).
    """
    wall = cpu = np.inf
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, NumPy {np.__version__}"


def write_table(name: str, title: str, command: str, header, rows, notes=(), more=()):
    """Print a markdown table and write it to benchmarks/results/<name>.md.

    `more`: further (heading, header, rows, notes) tables after the first one's notes.
    """
    lines = [f"# {title}", "", f"Machine: {machine()}", f"Command: `{command}`", ""]
    lines += markdown_table(header, rows)
    lines += [""] + [f"- {n}" for n in notes]
    for heading, more_header, more_rows, more_notes in more:
        lines += ["", f"## {heading}", ""] + markdown_table(more_header, more_rows)
        lines += [""] + [f"- {n}" for n in more_notes]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
