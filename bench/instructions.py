"""Instruction counts: a repeatable measure for a machine whose speed varies from run to run.

On a shared VM, wall and CPU time move by ±10-30% between runs of the same code, more than the
differences the benchmarks look for. valgrind's callgrind counts the instructions a process
executes instead: the same code, inputs and environment give (nearly) the same count whatever
else the machine is doing. Each figure is per item (request, change): the command runs with
``n`` and ``3n`` items and the difference is divided by ``2n``, so start-up, imports and
warm-up cancel out.

What it leaves out: the kernel's share (system calls, the network stack), which is the same on
both sides of a pair, so a ratio of instructions overstates corduroy2's share of the time; and
the cost of cache misses and mispredictions, which a count does not see.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

__all__ = ["available", "per_item"]

_COLLECTED = re.compile(r"Collected : (\d+)")


def available() -> str | None:
    """None if callgrind can run here, else what to do about it."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (Debian: apt-get install valgrind)"
    return None


def _count(argv: list[str]) -> int:
    # A fixed hash seed: dict and set layouts, and so the work done, are the same every run.
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, *argv], capture_output=True, text=True, env=env)
    found = _COLLECTED.search(out.stderr)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({' '.join(argv)}):\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_item(command: Callable[[int], list[str]], n: int) -> float:
    """Instructions per item of ``python <command(k)>``, a run over ``k`` items."""
    return (_count(command(3 * n)) - _count(command(n))) / (2 * n)
