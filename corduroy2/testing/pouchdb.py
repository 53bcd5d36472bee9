"""Helpers for running the test suite against a throwaway pouchdb-server.

Stdlib only: importing this module must not pull in Tornado or Twisted, so
tests of either backend (and plain scripts) can use it.

pouchdb-server is a CouchDB 1.x-flavoured stand-in. It is started here so
that it resembles CouchDB 3 as far as it can: an admin exists (no admin
party), data lives in memory, and it binds to loopback only.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["POUCHDB_SERVER_VERSION", "install_pouchdb_server", "PouchDBServer"]

POUCHDB_SERVER_VERSION = "4.2.0"

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def install_pouchdb_server(cache_dir: Path) -> Path:
    """Install the pinned pouchdb-server under *cache_dir* unless present.

    Returns the path of its ``pouchdb-server`` executable. Safe to call from
    several processes at once (e.g. pytest-xdist workers).
    """
    prefix = Path(cache_dir).resolve() / f"pouchdb-server-{POUCHDB_SERVER_VERSION}"
    exe = prefix / "node_modules" / ".bin" / "pouchdb-server"
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [
        "npm", "install",
        # Optional deps are the native LevelDB/SQLite adapters; --in-memory
        # needs neither, and skipping them avoids a ~60 s sqlite3 compile.
        "--omit=optional", "--no-audit", "--no-fund", "--no-save",
        "--prefix", str(prefix),
        f"pouchdb-server@{POUCHDB_SERVER_VERSION}",
    ]
    with open(prefix / ".install.lock", "w") as lock:
        # Check only under the lock: npm creates the bin link before it has
        # finished, so a racing process must wait for the installer to end.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists():
            return exe
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise RuntimeError(
                f"node and npm are required to run {' '.join(cmd)!r}; "
                "install Node.js (e.g. apt-get install nodejs npm)"
            )
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not exe.exists():
            raise RuntimeError(
                f"{' '.join(cmd)!r} failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stderr or proc.stdout)}"
            )
    return exe


def _free_port(host: str) -> int:
    # pouchdb-server treats "-p 0" as unset and binds 5984, so pick a port
    # ourselves. Another process could grab it before the server binds; that
    # window is tiny and start() then fails loudly rather than silently.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PouchDBServer:
    """An in-memory pouchdb-server on a free loopback port, with one admin.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        cache_dir: Path,
        admin: tuple[str, str] = ("admin", "secret"),
        host: str = "127.0.0.1",
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.host = host
        self._admin = admin
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None

    @property
    def admin(self) -> tuple[str, str]:
        """The ``(user, password)`` of the server admin."""
        return self._admin

    @property
    def url(self) -> str:
        """Base URL without credentials, e.g. ``http://127.0.0.1:5985``."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """Base URL with the admin's credentials embedded."""
        user, password = (urllib.parse.quote(part, safe="") for part in self._admin)
        return self.url.replace("http://", f"http://{user}:{password}@", 1)

    def __repr__(self) -> str:
        where = self.url if self.port is not None else "not started"
        return f"<PouchDBServer {where} admin={self._admin[0]!r}>"

    def __enter__(self) -> PouchDBServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Install if needed, launch the server and wait until it answers."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        exe = install_pouchdb_server(self.cache_dir)
        self.port = _free_port(self.host)
        # The server writes log.txt and rewrites config.json in its cwd,
        # even with --in-memory: keep that out of the caller's tree.
        self._tmpdir = Path(tempfile.mkdtemp(prefix="pouchdb-server-"))
        config = self._tmpdir / "config.json"
        user, password = self._admin
        # Configuring an admin up front disables "admin party", like CouchDB 3.
        config.write_text(json.dumps({"admins": {user: password}}))
        env = dict(os.environ)
        # Node >= 15 exits on unhandled rejections, which several of the
        # server's request handlers produce; downgrade them to warnings.
        env["NODE_OPTIONS"] = "--unhandled-rejections=warn"
        env.pop("PORT", None)  # would change the default port
        cmd = [
            str(exe), "--in-memory", "-n",
            "-o", self.host, "-p", str(self.port), "-c", str(config),
        ]
        with open(self._tmpdir / "output.txt", "wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self._tmpdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own process group, so stop() also reaches node's children.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _output_tail(self) -> str:
        if self._tmpdir is None:
            return ""
        try:
            text = (self._tmpdir / "output.txt").read_text(errors="replace")
        except OSError:
            return ""
        return _tail(text)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        token = base64.b64encode(":".join(self._admin).encode()).decode()
        request = urllib.request.Request(
            self.url + "/", headers={"Authorization": f"Basic {token}"}
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"pouchdb-server exited with code {self._proc.returncode} "
                    f"during startup:\n{self._output_tail()}"
                )
            try:
                with urllib.request.urlopen(request, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pouchdb-server did not answer on {self.url} within "
                    f"{_START_TIMEOUT:.0f} s:\n{self._output_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and delete its files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
