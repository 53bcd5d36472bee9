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
  So each run's CPU time (the tests' process and the server's) and idle time (wall less CPU)
  are shown too, with the fake's own CPU time, and what the ratio would be at most were the
  fake to answer in no time at all.

Options: ``--start-only`` skips the two suite runs (several minutes); ``-k EXPR`` passes a
selection to both runs.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
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


@dataclass
class SuiteRun:
    wall_s: float
    cpu_s: float  # the tests' process and the server's, together
    server_cpu_s: float | None  # the server's alone (the fake reports it; pouchdb-server not)
    summary: str


def run_suite(kind: str, select: str | None, pycache: str) -> SuiteRun:
    env = suite_env(kind, pycache)
    cmd = [sys.executable, "-m", "pytest", "tests/behaviour", "-q", "-p", "no:cacheprovider"]
    if select:
        cmd += ["-k", select]
    with tempfile.NamedTemporaryFile("r", prefix="bench-fake-cpu-") as report:
        env["FAKE_SERVER_CPU_FILE"] = report.name
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = report.read().strip()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return SuiteRun(elapsed, cpu, float(server_cpu) if server_cpu else None, summary)


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
        fake = run_suite("fake", args.select, pycache)
        pouch = run_suite("pouchdb", args.select, pycache)
    print(f"{'behaviour suite':<20}{'wall s':>8}{'CPU s':>8}{'server CPU s':>14}{'idle s':>8}")
    for name, run in (("on FakeCouch", fake), ("on pouchdb-server", pouch)):
        server = "" if run.server_cpu_s is None else f"{run.server_cpu_s:.1f}"
        print(f"{name:<20}{run.wall_s:>8.1f}{run.cpu_s:>8.1f}{server:>14}"
              f"{run.wall_s - run.cpu_s:>8.1f}   ({run.summary})")
    print(f"the fake is {pouch.wall_s / fake.wall_s:.2f}x faster (target >= 3x)")
    if fake.server_cpu_s is not None:
        # What the fake's own speed can still win: had it answered in no time at all, the
        # tests' own work and waits (both runs pay them) would remain.
        rest = fake.wall_s - fake.server_cpu_s
        print(f"without the fake's {fake.server_cpu_s:.1f} CPU s, the suite would still take "
              f"{rest:.1f} s (the tests' own CPU and waits): at most "
              f"{pouch.wall_s / rest:.2f}x faster than on pouchdb-server")
    return 0
