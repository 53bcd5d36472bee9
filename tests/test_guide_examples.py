"""The guide's "Testing your application" examples run, each under its own test runner (a
subprocess: AsyncHTTPTestCase and trial each want their own loop or reactor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "guide" / "examples"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(EXAMPLES)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          cwd=EXAMPLES, env=env, timeout=120)


def test_tornado_example_with_async_http_test_case() -> None:
    pytest.importorskip("tornado")
    proc = _run("-m", "unittest", "-q", "test_tornado_notes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ran 4 tests" in proc.stderr and "OK" in proc.stderr


def test_twisted_example_with_trial() -> None:
    pytest.importorskip("twisted")
    proc = _run("-m", "twisted.trial", "test_twisted_counter")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED (successes=2)" in proc.stdout
