"""Running the ``corduroy2`` command in a subprocess against the test server.

Every run is checked for the passwords in play: none may appear in stdout or stderr, whatever
the command and however it ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from corduroy2.blocking import Couch, Database

from ..conftest import REPO, Server


@dataclass
class Cli:
    """Runs ``python -m corduroy2`` with ``COUCHDB_URL`` pointing at the test server (with its
    credentials in it), a private ``HOME`` (no stray ~/.netrc) and no other COUCHDB_ settings."""

    server: Server
    home: Path
    secrets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The server's URL with the admin credentials in it."""
        if self.server.auth is None:
            return self.server.url
        user, password = (quote(part, safe="") for part in self.server.auth)
        scheme, rest = self.server.url.split("://", 1)
        return f"{scheme}://{user}:{password}@{rest}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_")}
        env.update(PYTHONPATH=str(REPO), HOME=str(self.home), COUCHDB_URL=self.url)
        env.update(extra)
        return env

    def run(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            stderr: Any = subprocess.PIPE, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [sys.executable, "-m", "corduroy2", *args], input=input, stdout=subprocess.PIPE,
            stderr=stderr, env=env if env is not None else self.env(), cwd=self.home,
            timeout=timeout,
        )
        self.check_no_secret(proc.stdout, proc.stderr or b"")
        return proc

    def check_no_secret(self, *outputs: bytes) -> None:
        for secret in self.secrets:
            for output in outputs:
                assert secret.encode() not in output, "a password was printed"


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    runner = Cli(server, home)
    if server.auth is not None:
        runner.secrets.append(server.auth[1])
    return runner


@pytest.fixture
def couch(server: Server) -> Iterator[Couch]:
    couch = Couch(server.url, auth=server.auth)
    yield couch
    couch.close()


class Databases:
    """Fresh database names for one test; every database made through it is deleted after."""

    def __init__(self, couch: Couch) -> None:
        self.couch = couch
        self.names: list[str] = []

    def name(self) -> str:
        name = f"cli-{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return name

    def create(self) -> Database:
        return self.couch.create(self.name())  # type: ignore[no-any-return]


@pytest.fixture
def dbs(couch: Couch) -> Iterator[Databases]:
    made = Databases(couch)
    yield made
    for name in made.names:
        try:
            couch.delete(name)
        except Exception:
            pass
