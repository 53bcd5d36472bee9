"""Twisted without its TLS extra: plain HTTP works; HTTPS and TLS settings say what to install.

Runs in a fresh interpreter where pyOpenSSL, service_identity, cryptography and
``twisted.internet.ssl`` cannot be imported (a ``sys.meta_path`` finder refuses them before
anything else is imported), as for a user who installed ``twisted`` without ``twisted[tls]``.
The child talks to the loopback FaultServer of this process with the default reactor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..support.faultserver import Reply
from .conftest import WatchedFaultServer, closed_port

pytest.importorskip("twisted")

REPO = Path(__file__).resolve().parents[2]
VALUE = {"couchdb": "Welcome", "version": "3.3.3"}

_CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    HIDDEN = ("OpenSSL", "service_identity", "cryptography", "twisted.internet.ssl")
    asked = []


    class WithoutTLS(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith(tuple(h + "." for h in HIDDEN)) or name in HIDDEN:
                asked.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    already = [m for m in sys.modules if m.split(".")[0] in ("OpenSSL", "cryptography")]
    sys.meta_path.insert(0, WithoutTLS())

    from twisted.internet import defer, reactor, task

    import corduroy2.twisted_io as twisted_io
    from corduroy2.errors import ConnectError

    url, https_url = sys.argv[1], sys.argv[2]
    found = {"already": already}


    async def main(reactor):
        # Twisted's own modules may look for pyOpenSSL (and do without): count from here.
        del asked[:]
        couch = twisted_io.Couch(url)
        found["info"] = await couch.info()
        found["asked_for_plain_http"] = list(asked)
        await couch.close()

        secure = twisted_io.Couch(https_url)  # no TLS settings: nothing to load yet
        try:
            await secure.info()
        except ConnectError as exc:
            found["https"] = [str(exc), isinstance(exc.__cause__, ImportError)]
        await secure.close()

        for settings in ({"verify_tls": False}, {"ca_file": "ca.pem"}):
            try:
                twisted_io.Couch(https_url, **settings)
            except ImportError as exc:
                found.setdefault("settings", []).append(str(exc))
        print(json.dumps(found))


    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    """
)


def _run_without_tls(url: str, https_url: str) -> dict[str, object]:
    env = dict(os.environ)
    # The worktree's corduroy2, not an installed one.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, url, https_url],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_twisted_without_tls_extra(fault: WatchedFaultServer) -> None:
    fault.add("GET", "/", Reply.json(VALUE))
    found = _run_without_tls(fault.url, f"https://127.0.0.1:{closed_port()}")
    assert found["already"] == [], "TLS modules were loaded before the test could hide them"
    # Plain HTTP: the value came back, and corduroy2 did not even look for TLS.
    assert found["info"] == VALUE
    assert [(r.method, r.path) for r in fault.requests] == [("GET", "/")]
    assert found["asked_for_plain_http"] == []
    # HTTPS: a ConnectError that says what to install (caused by the ImportError).
    message, caused_by_import = found["https"]  # type: ignore[misc]
    assert "twisted[tls]" in message and caused_by_import, message
    # TLS settings: an ImportError naming the extra, when the Couch is made.
    settings = found["settings"]
    assert isinstance(settings, list) and len(settings) == 2
    assert all("twisted[tls]" in text for text in settings), settings
