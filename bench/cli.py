"""The ``corduroy2`` command's dump and load next to ``@cloudant/couchbackup`` /
``couchrestore`` (npm, installed here into .cache on first use), on the same server.

A source database of ``--docs`` documents (about 250 bytes each; ``--attachments`` of them with
one ``--attachment-size`` binary attachment) is dumped to a file by each tool, and each tool's
file is loaded into a fresh database by the same tool. Each side runs in a fresh process; wall
time and the process's peak RSS (``wait4``) are reported, best of ``--repeats``. Both tools
include attachments (couchbackup's ``--attachments``, which it calls experimental) and both
write only the winning revisions (couchbackup in ``--mode shallow``: its ``full`` mode also
saves revision histories and conflicts, which ``corduroy2 dump`` does not). Each restored
database is checked: every document and attachment arrived.

The server is ``COUCHDB_URL`` (admin credentials in it) if set, else a pouchdb-server started
here. pouchdb-server needs a shim for couchbackup's client (``bench/pouchdb_shim.js``: it
inflates gzipped request bodies and adds ``doc_del_count``), and both tools go through it; its
databases are open to anonymous users, so there both tools run without credentials (couchbackup
logs in with ``POST /_session`` fields pouchdb-server does not know).

Targets (issue 18): faster than couchbackup in both directions; peak RSS under 100 MB.

Measured (``--repeats 2``, best runs; pouchdb-server on a shared 2-CPU machine whose load
average was 5 to 7 throughout, so single runs of the same command varied by up to 2.5x)::

    tool                          wall s    docs/s  peak RSS MB
    corduroy2              dump     3.80    26,298         37.2    (4 runs: 3.8 to 9.8 s)
    couchbackup            dump     6.52    15,337        159.8    (2 runs: 6.5, 9.8 s)
    corduroy2              load    24.53     4,077         40.8
    corduroy2 --keep-revs  load    18.06     5,536         40.4
    couchbackup            load    24.82     4,030        198.1    (couchrestore)

The dump keeps up with ``curl`` reading the same ``_all_docs`` body (and uses about 0.6 s of
CPU for 100,000 docs); the loads are bound by pouchdb-server (the client uses about 1.3 s of
CPU), which computes a new revision per document unless it is given one: ``--keep-revs``
(``new_edits=false``) is what couchrestore does, and the like-for-like comparison.

    python -m bench cli [--docs N] [--attachments K] [--attachment-size BYTES] [--repeats R]
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
COUCHBACKUP_VERSION = "2.11.12"
SHIM = Path(__file__).resolve().parent / "pouchdb_shim.js"
RSS_TARGET_MB = 100


@dataclass
class Run:
    tool: str
    direction: str
    wall: float
    rss_mb: float


def install_couchbackup() -> Path:
    """``@cloudant/couchbackup`` under .cache (once); returns its ``node_modules/.bin``."""
    prefix = CACHE / f"couchbackup-{COUCHBACKUP_VERSION}"
    bin_dir = prefix / "node_modules" / ".bin"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bin_dir / "couchrestore").exists():
            if shutil.which("npm") is None:
                raise SystemExit("bench cli needs node and npm (for @cloudant/couchbackup)")
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save",
                            "--prefix", str(prefix), f"@cloudant/couchbackup@{COUCHBACKUP_VERSION}"],
                           check=True, capture_output=True)
    return bin_dir


def timed(cmd: list[str], env: dict[str, str], stdin: Any = None) -> tuple[float, float]:
    """Run ``cmd``; its wall time (s) and peak RSS (MB). Fails loudly if it fails."""
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n"
                             f"{err.read().decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def with_credentials(url: str, auth: tuple[str, str] | None) -> str:
    if auth is None:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(auth[0], safe='')}:{quote(auth[1], safe='')}@{rest}"


def seed(db: Any, docs: int, attachments: int, size: int) -> dict[str, str]:
    """Fill ``db``; returns the md5 (base64, as CouchDB's digest) of each attachment by doc id."""
    digests: dict[str, str] = {}
    batch: list[dict[str, Any]] = []
    every = max(docs // max(attachments, 1), 1)
    for i in range(docs):
        doc: dict[str, Any] = {"_id": f"doc-{i:07d}", "type": "item", "n": i,
                               "title": f"Title number {i}", "tags": ["red", "green", "blue"],
                               "created": "2024-05-01T12:00:00Z", "body": "lorem ipsum " * 12}
        if attachments and i % every == 0 and len(digests) < attachments:
            data = os.urandom(size)
            doc["_attachments"] = {"blob.bin": {"content_type": "application/octet-stream",
                                                "data": base64.b64encode(data).decode()}}
            digests[doc["_id"]] = "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()
        batch.append(doc)
        if len(batch) == 2000 or i == docs - 1:
            assert db.save(batch).ok
            batch = []
    return digests


def check(db: Any, docs: int, digests: dict[str, str]) -> None:
    count = db.info()["doc_count"]
    if count != docs:
        raise SystemExit(f"{db.name}: {count} docs restored, not {docs}")
    for doc_id, digest in digests.items():
        stub = db.get(doc_id)["_attachments"]["blob.bin"]
        if stub["digest"] != digest:
            raise SystemExit(f"{db.name}/{doc_id}: attachment differs after the round trip")


class Target:
    """The server for one tool's round: ``COUCHDB_URL``, or a fresh pouchdb-server (which gets
    slower as it holds more data: each tool gets one in the same state) behind the shim."""

    def __init__(self) -> None:
        from corduroy2.protocol.urls import split_credentials
        from corduroy2.testing import PouchDBServer

        self._pouch: Any = None
        self._shim: subprocess.Popen[str] | None = None
        external = os.environ.get("COUCHDB_URL")
        if external:
            self.url, self.auth = split_credentials(external)
            self.tool_url = with_credentials(self.url, self.auth)
            return
        self._pouch = PouchDBServer(CACHE)
        self._pouch.start()
        self.url, self.auth = self._pouch.url, self._pouch.admin
        self._shim = subprocess.Popen(["node", str(SHIM), str(self._pouch.port)],
                                      stdout=subprocess.PIPE, text=True)
        assert self._shim.stdout is not None
        self.tool_url = f"http://127.0.0.1:{self._shim.stdout.readline().strip()}"

    def stop(self) -> None:
        if self._shim is not None:
            self._shim.terminate()
            self._shim.wait()
        if self._pouch is not None:
            self._pouch.stop()


def one_round(tool: str, args: argparse.Namespace, bin_dir: Path, work: Path,
              log: Any) -> tuple[list[Run], int]:
    """Seed a source, dump it with ``tool``, load the dump into a fresh database with it."""
    from corduroy2.blocking import Couch

    server = Target()
    couch = Couch(server.url, auth=server.auth)
    made: list[str] = []

    def fresh() -> Any:
        made.append(f"bench-cli-{uuid.uuid4().hex[:10]}")
        return couch.create(made[-1])

    try:
        source = fresh()
        digests = seed(source, args.docs, args.attachments, args.attachment_size)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_")}
        env.update(PYTHONPATH=str(REPO), COUCHDB_URL=server.tool_url)
        ours = [sys.executable, "-m", "corduroy2"]
        out = work / f"{tool}.dump"
        runs = []
        if tool == "couchbackup":
            dump = [str(bin_dir / "couchbackup"), "-u", server.tool_url, "-d", source.name,
                    "-o", str(out), "-m", "shallow", "-a", "-q"]
        else:
            dump = [*ours, "dump", source.name, "-o", str(out), "--attachments", "-q"]
        wall, rss = timed(dump, env)
        runs.append(Run(tool.split()[0], "dump", wall, rss))  # --keep-revs is a load option
        log(f"  {tool:<20} dump {wall:6.2f} s  {rss:6.1f} MB")
        target = fresh()
        if tool == "couchbackup":
            with open(out, "rb") as f:
                wall, rss = timed([str(bin_dir / "couchrestore"), "-u", server.tool_url,
                                   "-d", target.name, "-a", "-q"], env, stdin=f)
        else:
            keep = ["--keep-revs"] if tool.endswith("keep-revs") else []
            wall, rss = timed([*ours, "load", target.name, str(out), "-q", *keep], env)
        runs.append(Run(tool, "load", wall, rss))
        log(f"  {tool:<20} load {wall:6.2f} s  {rss:6.1f} MB")
        check(target, args.docs, digests)
        return runs, out.stat().st_size
    finally:
        for name in made:
            try:
                couch.delete(name)
            except Exception:
                pass
        couch.close()
        server.stop()


#: corduroy2's load writes new revisions by default (conflicts reported); couchrestore writes
#: the dumped revisions (new_edits=false), which ``load --keep-revs`` does too.
TOOLS = ("corduroy2", "couchbackup", "corduroy2 --keep-revs")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cli",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--attachments", type=int, default=20)
    parser.add_argument("--attachment-size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    log = (lambda text: print(text, file=sys.stderr, flush=True))
    sys.path.insert(0, str(REPO))

    bin_dir = install_couchbackup()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    log(f"{args.docs:,} docs ({args.attachments} with a {args.attachment_size:,}-byte "
        f"attachment), on {os.environ.get('COUCHDB_URL') and 'COUCHDB_URL' or 'pouchdb-server'}")
    runs: list[Run] = []
    sizes: dict[str, int] = {}
    try:
        for _ in range(args.repeats):
            for tool in TOOLS:
                done, sizes[tool.split()[0]] = one_round(tool, args, bin_dir, work, log)
                runs.extend(done)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(runs, args.docs, sizes)
    return 0


def report(runs: list[Run], docs: int, sizes: dict[str, int]) -> None:
    best: dict[tuple[str, str], Run] = {}
    for run in runs:
        key = (run.tool, run.direction)
        if key not in best or run.wall < best[key].wall:
            best[key] = run
    print(f"\n{docs:,} docs; dump files: " + ", ".join(
        f"{tool} {size / 1e6:.1f} MB" for tool, size in sizes.items()))
    print(f"{'tool':<22} {'':<5} {'wall s':>7} {'docs/s':>9} {'peak RSS MB':>12}")
    for (tool, direction), run in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{tool:<22} {direction:<5} {run.wall:7.2f} {docs / run.wall:9,.0f} "
              f"{run.rss_mb:12.1f}")
    theirs = {d: best[("couchbackup", d)] for d in ("dump", "load")}
    for (tool, direction), ours in sorted(best.items()):
        if tool == "couchbackup":
            continue
        other = theirs[direction]
        verdict = "faster" if ours.wall < other.wall else "NOT faster"
        print(f"{tool} {direction}: {other.wall / ours.wall:.2f}x couchbackup's speed "
              f"({verdict}); peak RSS {ours.rss_mb:.0f} MB "
              f"({'under' if ours.rss_mb < RSS_TARGET_MB else 'OVER'} {RSS_TARGET_MB} MB)")
