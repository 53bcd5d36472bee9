"""``bench fake``: corduroy2.testing.FakeCouch against pouchdb-server.

* start: ``FakeCouch().serve()`` until it has answered one request (target < 50 ms), the
  median of 50 starts in this process (imports excluded: they are paid once per test run);
  pouchdb-server's start, once, for scale;
* suite: the behaviour suite's wall time (``pytest tests/behaviour``) with
  ``COUCHDB_SERVER=fake`` next to ``COUCHDB_SERVER=pouchdb`` (target: the fake >= 3x faster).
  Each server runs in a process of its own (the fake: ``tests/support/fake_server.py``).
  Each run is timed whole (interpreter, imports, collection, server start, every test) with
  Python's bytecode cache on, in a temporary directory that an untimed run of one small test
  fills first: where ``PYTHONDONTWRITEBYTECODE`` is set, pytest would otherwise parse and
  rewrite the asserts of every test module, of corduroy2 and of hypothesis (both are pytest
  plugins) anew in each run, seconds that have nothing to do with either server. Besides the
  servers' work, both runs spend the same time on the tests' own waits (feeds, latency
  batches, stalls, retries: kept short, see tests/behaviour) and on the clients' work.

Options: ``--start-only`` skips the two suite runs (several minutes); ``-k EXPR`` passes a
selection to both runs.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _first_answer(url: str, admin: tuple[str, str] | None) -> None:
    request = urllib.request.Request(url + "/")
    if admin is not None:
        token = base64.b64encode(":".join(admin).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def fake_start_ms(runs: int = 50) -> list[float]:
    from corduroy2.testing import FakeCouch

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        server = FakeCouch().serve()
        _first_answer(server.url, server.admin)
        times.append((time.perf_counter() - started) * 1000)
        server.stop()
    return times


def pouchdb_start_ms() -> float:
    from corduroy2.testing import PouchDBServer, install_pouchdb_server

    install_pouchdb_server(REPO / ".cache")  # (installed by the first use; not timed)
    server = PouchDBServer(REPO / ".cache")
    started = time.perf_counter()
    server.start()
    elapsed = (time.perf_counter() - started) * 1000
    server.stop()
    return elapsed


def suite_env(kind: str, pycache: str) -> dict[str, str]:
    env = {**os.environ, "COUCHDB_SERVER": kind, "PYTHONPYCACHEPREFIX": pycache}
    env.pop("COUCHDB_URL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_once(pycache: str) -> None:
    """Fill the bytecode cache (untimed): a run that collects the suite and imports every
    backend (one small test, on the fake)."""
    cmd = [sys.executable, "-m", "pytest", "tests/behaviour", "-q", "-p", "no:cacheprovider",
           "-k", "test_info_and_version"]
    subprocess.run(cmd, cwd=REPO, env=suite_env("fake", pycache), capture_output=True)


def suite_seconds(kind: str, select: str | None, pycache: str) -> tuple[float, str]:
    env = suite_env(kind, pycache)
    cmd = [sys.executable, "-m", "pytest", "tests/behaviour", "-q", "-p", "no:cacheprovider"]
    if select:
        cmd += ["-k", select]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return elapsed, summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start-only", action="store_true")
    parser.add_argument("-k", dest="select", default=None)
    args = parser.parse_args(argv)

    starts = fake_start_ms()
    print(f"FakeCouch start to first answer: median {statistics.median(starts):.2f} ms, "
          f"max {max(starts):.2f} ms over {len(starts)} starts (target < 50 ms)")
    print(f"pouchdb-server start to first answer: {pouchdb_start_ms():.0f} ms")
    if args.start_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-fake-pycache-") as pycache:
        compile_once(pycache)
        fake_s, fake_summary = suite_seconds("fake", args.select, pycache)
        print(f"behaviour suite on FakeCouch:      {fake_s:7.1f} s   ({fake_summary})")
        pouch_s, pouch_summary = suite_seconds("pouchdb", args.select, pycache)
    print(f"behaviour suite on pouchdb-server: {pouch_s:7.1f} s   ({pouch_summary})")
    print(f"the fake is {pouch_s / fake_s:.2f}x faster (target >= 3x)")
    return 0
