"""TLS on every backend, against a loopback HTTPS FaultServer whose certificates the test makes
(``trustme``: a throwaway CA, a server certificate for 127.0.0.1, a client certificate).

What every backend must do: verify by default, so a server whose CA the system does not know
is refused with ``ConnectError`` saying it is a certificate problem; trust ``ca_file`` instead
when given; refuse a certificate for another host name; present ``cert_file``/``key_file`` to a
server that asks for a client certificate (and be refused without one); and, only with the
explicit ``verify_tls=False``, accept anything while logging one WARNING per ``Couch`` on the
"corduroy2" logger. The settings live on the backend, so they hold for every database and
view of the ``Couch``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from corduroy2.errors import ConnectError, CouchError, TransportError

from ..behaviour.conftest import make_couch
from ..support.faultserver import FaultServer, Reply
from ..support.wait import until
from .conftest import Harness, WatchedFaultServer

trustme = pytest.importorskip("trustme")

JSON = {"Content-Type": "application/json"}
VALUE = {"couchdb": "Welcome"}
ROWS = [{"id": "a", "key": 1, "value": None}]
WARNING_TEXT = "verification is disabled"


class PKI:
    """A CA and certificates, written to files as a user would have them."""

    def __init__(self, where: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = str(where / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.other_host = self.ca.issue_cert("db.example.org")
        client = self.ca.issue_cert("client.example.org")
        self.cert_file, self.key_file = str(where / "client.crt"), str(where / "client.key")
        client.cert_chain_pems[0].write_to_path(self.cert_file)
        client.private_key_pem.write_to_path(self.key_file)
        self.combined_file = str(where / "client-combined.pem")
        client.private_key_and_cert_chain_pem.write_to_path(self.combined_file)

    def server_context(self, cert: Any = None, client_cert: bool = False,
                       tls13: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (cert or self.server).configure_cert(context)
        if client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        if not tls13:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def _serve(server: FaultServer) -> FaultServer:
    server.add("GET", "/", Reply.json(VALUE))
    server.add("GET", "/db", Reply.json({"db_name": "db"}))
    server.add("GET", "/db/_all_docs", Reply.json({"total_rows": 1, "offset": 0, "rows": ROWS}))
    server.add("GET", "/db/_design/d/_view/v", Reply.json({"total_rows": 1, "offset": 0,
                                                           "rows": ROWS}))
    return server


class TLSHarness(Harness):
    """The backends' harness, pointed at an HTTPS FaultServer made per test."""

    def __init__(self, backend: str, pki: PKI) -> None:
        self.pki = pki
        self.servers: list[FaultServer] = []
        super().__init__(backend, cast(WatchedFaultServer, self.start()))

    def start(self, **context: Any) -> FaultServer:
        server = _serve(FaultServer(tls=self.pki.server_context(**context)))
        self.servers.append(server)
        return server

    def stop(self) -> None:
        self.close()
        for server in self.servers:
            server.stop()
            assert server.errors == [], f"fault server errors: {server.errors!r}"


@pytest.fixture
def t(backend: str, pki: PKI) -> Iterator[TLSHarness]:
    harness = TLSHarness(backend, pki)
    yield harness
    harness.stop()


async def _everything(t: TLSHarness, couch: Any) -> None:
    """A call on the server, on a database, and streamed rows from a view and _all_docs: the
    TLS settings must hold for every sub-resource."""
    db = couch.database("db")
    assert await t.run(couch.info) == VALUE
    assert await t.run(db.info) == {"db_name": "db"}
    assert [r.id for r in (await t.run(db.all_docs)).rows] == ["a"]
    assert [r.id for r in (await t.run(db.view, "d/v")).rows] == ["a"]


def _refused(exc: CouchError, meaning: str) -> None:
    """ConnectError, saying what went wrong in the same words on every backend."""
    assert type(exc) is ConnectError, f"{type(exc).__name__}: {exc}"
    assert str(exc).startswith(meaning), str(exc)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "corduroy2" and WARNING_TEXT in r.getMessage()]


# -- server certificates ---------------------------------------------------------------------


async def test_unknown_ca_rejected_by_default(t: TLSHarness,
                                              caplog: pytest.LogCaptureFixture) -> None:
    couch = t.couch()
    for call in (couch.info, couch.database("db").all_docs):
        with pytest.raises(TransportError) as info:
            await t.run(call)
        _refused(info.value, "TLS certificate verification failed")
    assert t.server.requests == [], "a request went to an unverified server"
    assert _warnings(caplog) == []


async def test_ca_file_trusted(t: TLSHarness, pki: PKI,
                               caplog: pytest.LogCaptureFixture) -> None:
    await _everything(t, t.couch(ca_file=pki.ca_file))
    assert len(t.server.requests) == 4
    # One kept-alive TLS connection carries them all, plain and streamed replies in turn (the
    # simple client opens one per request).
    connections = len({r.connection for r in t.server.requests})
    assert connections == (4 if t.backend == "tornado-simple" else 1)
    assert _warnings(caplog) == []


async def test_verify_off_accepts_and_warns_once(t: TLSHarness,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="corduroy2")
    couch = t.couch(verify_tls=False)
    await _everything(t, couch)
    await t.run(couch.info)
    warned = _warnings(caplog)
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING, warned
    assert "verify_tls=False" in warned[0].getMessage()
    t.couch(verify_tls=False)  # another Couch: its own warning
    assert len(_warnings(caplog)) == 2


async def test_hostname_mismatch_rejected(t: TLSHarness, pki: PKI) -> None:
    server = t.start(cert=pki.other_host)  # signed by the trusted CA, for another name
    couch = t.couch(server.url, ca_file=pki.ca_file)
    with pytest.raises(TransportError) as info:
        await t.run(couch.info)
    _refused(info.value, "TLS certificate verification failed: the certificate is not for "
                         "this host")
    assert server.requests == []
    # The same certificate is fine once verification is off (the opt-out skips both checks).
    assert await t.run(t.couch(server.url, verify_tls=False).info) == VALUE


def test_bad_ca_file_fails_at_construction(backend: str, pki: PKI, tmp_path: Path) -> None:
    """A CA bundle or client certificate that cannot be loaded is a configuration error,
    raised when the Couch is made rather than as a ConnectError at each request."""
    with pytest.raises(OSError):
        make_couch(backend, "https://127.0.0.1:1", None, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(OSError):
        make_couch(backend, "https://127.0.0.1:1", None, ca_file=pki.ca_file,
                   cert_file=str(tmp_path / "missing.crt"), key_file=pki.key_file)


# -- client certificates ---------------------------------------------------------------------


@pytest.mark.parametrize("files", ["cert+key", "combined"])
async def test_client_certificate_presented(t: TLSHarness, pki: PKI, files: str) -> None:
    server = t.start(client_cert=True)
    if files == "cert+key":
        couch = t.couch(server.url, ca_file=pki.ca_file, cert_file=pki.cert_file,
                        key_file=pki.key_file)
    else:
        couch = t.couch(server.url, ca_file=pki.ca_file, cert_file=pki.combined_file)
    assert await t.run(couch.info) == VALUE
    assert await t.run(couch.database("db").info) == {"db_name": "db"}
    assert server.tls_failures == 0


@pytest.mark.parametrize("version", ["tls1.3", "tls1.2"])
async def test_missing_client_certificate_refused(t: TLSHarness, pki: PKI,
                                                  version: str) -> None:
    """Under TLS 1.2 the server refuses in the handshake; under 1.3 the client's handshake has
    already ended when the refusal arrives, with the first read. ConnectError both ways."""
    server = t.start(client_cert=True, tls13=version == "tls1.3")
    couch = t.couch(server.url, ca_file=pki.ca_file)
    with pytest.raises(TransportError) as info:
        await t.run(couch.info)
    _refused(info.value, "TLS handshake refused by the server (a client certificate may be "
                         "required)")
    # Under TLS 1.3 the client can read the server's alert before the server's thread has
    # counted the failed handshake.
    await until(lambda: server.tls_failures >= 1)
    assert server.requests == [] and server.tls_failures >= 1
