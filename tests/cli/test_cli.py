"""The ``corduroy2`` command, run in a subprocess against the test server."""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from corduroy2.blocking import Couch, Database
from corduroy2.cli.dump import resume_point

from ..conftest import Server
from ..support.faultserver import FaultServer, Reply
from ..support.proxy import Proxy
from .conftest import Cli, Databases

# Attachment bodies: every byte value, and text; compared byte for byte after a round trip.
BINARY = bytes(range(256)) * 40 + b"\x00\xff"
TEXT = "naïve café ☕\n".encode()


def lines(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def raw_attachment(server: Server, db: str, doc_id: str, name: str) -> bytes:
    """An attachment's bytes as the server serves them (plain urllib, not corduroy2)."""
    request = urllib.request.Request(
        f"{server.url}/{db}/{quote(doc_id, safe='')}/{quote(name)}")
    if server.auth:
        token = base64.b64encode(":".join(server.auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


def fill(db: Database, count: int, body: str = "x" * 50) -> None:
    docs = [{"_id": f"doc-{i:05d}", "n": i, "body": body} for i in range(count)]
    for start in range(0, count, 2000):
        assert db.save(docs[start:start + 2000]).ok


def without_rev(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_rev"}


# -- dump and load ---------------------------------------------------------------------------


def test_dump_load_round_trip_with_attachments(cli: Cli, dbs: Databases, server: Server,
                                               tmp_path: Path) -> None:
    source = dbs.create()
    docs = [
        {"_id": "plain", "a": 1, "nested": {"list": [1, 2.5, None, True]}},
        {"_id": "ünïcødé/with slash", "text": "☕"},
        {"_id": "_design/app", "views": {"by_n": {"map": "function(doc){emit(doc.n, 1)}"}}},
        {"_id": "with-files", "_attachments": {
            "blob.bin": {"content_type": "application/octet-stream",
                         "data": base64.b64encode(BINARY).decode()},
            "note.txt": {"content_type": "text/plain; charset=utf-8",
                         "data": base64.b64encode(TEXT).decode()},
        }},
    ]
    assert source.save(docs).ok
    dump_file = tmp_path / "dump.ndjson"

    dumped = cli.run("dump", source.name, "-o", str(dump_file), "--attachments")
    assert (dumped.returncode, dumped.stdout, dumped.stderr) == (0, b"", b"")  # no progress
    target = dbs.name()
    loaded = cli.run("load", target, str(dump_file), "--create", "--batch", "2")
    assert (loaded.returncode, loaded.stdout, loaded.stderr) == (0, b"", b"")

    originals = {d["_id"]: d for d in lines(dump_file.read_bytes())}
    assert set(originals) == {d["_id"] for d in docs}
    again = cli.run("dump", target, "--attachments")  # to stdout this time
    assert again.returncode == 0
    copies = {d["_id"]: d for d in lines(again.stdout)}
    assert set(copies) == set(originals)
    for doc_id, original in originals.items():
        copy = copies[doc_id]
        atts = {n: {k: v for k, v in a.items() if k != "revpos"}
                for n, a in copy.pop("_attachments", {}).items()}
        orig_atts = {n: {k: v for k, v in a.items() if k != "revpos"}
                     for n, a in original.pop("_attachments", {}).items()}
        assert atts == orig_atts
        assert without_rev(copy) == without_rev(original)
    for name, body in (("blob.bin", BINARY), ("note.txt", TEXT)):
        assert raw_attachment(server, target, "with-files", name) == body


def test_dump_without_attachments_leaves_them_out(cli: Cli, dbs: Databases) -> None:
    db = dbs.create()
    db.save({"_id": "d", "_attachments": {"a.bin": {"content_type": "application/x",
                                                     "data": base64.b64encode(b"xyz").decode()}}})
    out = cli.run("dump", db.name)
    assert out.returncode == 0
    assert [without_rev(d) for d in lines(out.stdout)] == [{"_id": "d"}]


def test_interrupted_dump_resumes(cli: Cli, dbs: Databases, server: Server,
                                  tmp_path: Path) -> None:
    db = dbs.create()
    fill(db, 4000, body="y" * 1000)  # ~4 MB of rows: long enough to be cut in the middle
    whole = cli.run("dump", db.name)
    assert whole.returncode == 0
    host, port = server.url.rsplit("/", 1)[-1].split(":")
    out = tmp_path / "partial.ndjson"

    with Proxy((host, int(port))) as proxy:
        # Every connection is cut once half the dump's bytes have come through it (the
        # requests before the rows are small): a cut in the middle, whatever the machine's speed.
        proxy.cut_new_after = len(whole.stdout) // 2
        env = cli.env(COUCHDB_URL=cli.url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}"))
        proc = subprocess.run(
            [*cli_command(), "dump", db.name, "-o", str(out)], env=env, cwd=cli.home,
            capture_output=True, timeout=60)
        stdout, stderr = proc.stdout, proc.stderr
        assert proxy.cuts >= 1
    cli.check_no_secret(stdout, stderr)
    assert proc.returncode == 1, stderr
    assert b"corduroy2: ResponseCut" in stderr and stderr.count(b"\n") == 1
    partial = out.read_bytes()
    assert 0 < len(partial) < len(whole.stdout)

    resumed = cli.run("dump", db.name, "-o", str(out), "--resume")
    assert (resumed.returncode, resumed.stderr) == (0, b"")
    assert out.read_bytes() == whole.stdout


def test_resume_point_drops_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "dump.ndjson"
    docs = [{"_id": f"id{i}", "pad": "p" * 70_000} for i in range(3)]  # lines > one read block
    complete = b"".join(orjson.dumps(d) + b"\n" for d in docs)
    path.write_bytes(complete + b'{"_id":"id3","pa')
    with open(path, "r+b") as f:
        assert resume_point(f) == ("id2", 3)
    assert path.read_bytes() == complete
    path.write_bytes(b'{"_id":"only-part')
    with open(path, "r+b") as f:
        assert resume_point(f) == (None, 0)
    assert path.read_bytes() == b""


def test_load_reports_conflicts_and_bad_lines(cli: Cli, dbs: Databases, tmp_path: Path) -> None:
    db = dbs.create()
    db.save({"_id": "doc-00001", "already": "here"})
    db.save({"_id": "doc-00003", "already": "here"})
    source = tmp_path / "in.ndjson"
    body = [orjson.dumps({"_id": f"doc-{i:05d}", "_rev": "1-abc", "n": i}) for i in range(5)]
    body.insert(2, b"not json at all")
    source.write_bytes(b"\n".join(body) + b"\n")

    out = cli.run("load", db.name, str(source), "--batch", "2")
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith("corduroy2: 3 of 6 docs not written (2 conflict, 1 not a JSON object)")
    assert "conflict\tdoc-00001" in err and "conflict\tdoc-00003" in err
    assert "not a JSON object\tline 3" in err
    written = {d["_id"]: d for d in db.get(["doc-00000", "doc-00002", "doc-00004"])}
    assert [written[i]["n"] for i in sorted(written)] == [0, 2, 4]
    assert db.get("doc-00001")["already"] == "here"  # not overwritten


def test_load_keep_revs_writes_the_dumped_revisions(cli: Cli, dbs: Databases,
                                                    tmp_path: Path) -> None:
    source = dbs.create()
    fill(source, 3)
    source.save(source.get("doc-00001"))  # a second revision
    dump_file = tmp_path / "dump.ndjson"
    assert cli.run("dump", source.name, "-o", str(dump_file)).returncode == 0
    with open(dump_file, "ab") as f:
        f.write(b'{"_id": "no-rev"}\n')
    target = dbs.create()
    out = cli.run("load", target.name, str(dump_file), "--keep-revs", "--batch", "2")
    assert out.returncode == 1
    assert out.stderr.decode().startswith("corduroy2: 1 of 4 docs not written (1 no _rev to keep)")
    for doc_id in ("doc-00000", "doc-00001", "doc-00002"):
        assert target.get(doc_id) == source.get(doc_id)  # the same _rev too


def test_load_into_a_missing_database_fails_without_create(cli: Cli, dbs: Databases,
                                                           tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(b'{"_id":"a"}\n')
    out = cli.run("load", dbs.name(), str(source))
    assert out.returncode == 1
    assert out.stderr.startswith(b"corduroy2: NotFound: 404") and out.stderr.count(b"\n") == 1


# -- the small commands ----------------------------------------------------------------------


def test_put_get_view_find(cli: Cli, dbs: Databases) -> None:
    db = dbs.create()
    put = cli.run("put", db.name, "-", input=b'{"_id": "a", "kind": "x", "n": 1}')
    assert put.returncode == 0
    reply = orjson.loads(put.stdout)
    assert reply["id"] == "a" and reply["rev"].startswith("1-")
    doc_file = cli.home / "b.json"
    doc_file.write_bytes(b'{"_id": "b", "kind": "y", "n": 2}')
    assert cli.run("put", db.name, str(doc_file)).returncode == 0

    got = cli.run("get", db.name, "a")
    assert without_rev(orjson.loads(got.stdout)) == {"_id": "a", "kind": "x", "n": 1}
    rows = lines(cli.run("view", db.name, "_all_docs", "--opt", "startkey=b").stdout)
    assert [r["id"] for r in rows] == ["b"]
    found = lines(cli.run("find", db.name, '{"kind": "x"}').stdout)
    assert [d["_id"] for d in found] == ["a"]
    assert [name for name in cli.run("dbs").stdout.decode().split()
            if name == db.name] == [db.name]
    assert orjson.loads(cli.run("info", db.name).stdout)["doc_count"] == 2


def test_changes_pages_to_the_end_and_follows(cli: Cli, dbs: Databases) -> None:
    db = dbs.create()
    fill(db, 3)
    out = cli.run("changes", db.name)
    assert out.returncode == 0
    *changes, last = lines(out.stdout)
    assert sorted(c["id"] for c in changes) == ["doc-00000", "doc-00001", "doc-00002"]
    assert "last_seq" in last
    since = json.dumps(last["last_seq"]) if not isinstance(last["last_seq"], str) \
        else last["last_seq"]
    none_new = lines(cli.run("changes", db.name, "--since", since).stdout)
    assert [c for c in none_new if "id" in c] == []

    proc = subprocess.Popen([*cli_command(), "changes", db.name, "--follow", "--since", since],
                            env=cli.env(), cwd=cli.home, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        db.save({"_id": "new-one"})
        assert proc.stdout is not None
        first = orjson.loads(proc.stdout.readline())
        assert first["id"] == "new-one"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


# -- errors, exit codes, credentials, progress -------------------------------------------------


@pytest.mark.parametrize("args", [
    [],                                  # no command
    ["nonsense"],                        # unknown command
    ["get", "onlydb"],                   # missing argument
    ["load", "db", "f", "--batch", "x"],  # not a number
    ["find", "db", "{not json"],          # bad JSON argument
    ["get", "Bad Name", "x"],             # invalid database name
    ["dump", "db", "--resume"],           # resume needs a file
])
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    out = cli.run(*args)
    assert out.returncode == 2, out.stderr
    assert out.stdout == b""
    assert out.stderr


def test_server_errors_exit_1_with_one_line(cli: Cli, dbs: Databases) -> None:
    db = dbs.create()
    missing = cli.run("get", db.name, "nope")
    assert missing.returncode == 1
    assert missing.stderr.startswith(b"corduroy2: NotFound: 404")
    assert missing.stderr.count(b"\n") == 1


def test_transport_error_and_wrong_password_print_no_password(cli: Cli, server: Server) -> None:
    secret = "s3cr3t-Pa55"
    cli.secrets.append(secret)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = cli.run("info", "--url", f"http://admin:{secret}@127.0.0.1:{port}")
    assert refused.returncode == 1
    assert refused.stderr.startswith(b"corduroy2: ConnectError") and refused.stderr.count(b"\n") == 1
    scheme, rest = server.url.split("://", 1)
    wrong = cli.run("dbs", "--url", f"{scheme}://admin:{secret}@{rest}")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith(b"corduroy2: Unauthorized: 401")


@pytest.mark.parametrize("source", ["url", "environment", "netrc"])
def test_credentials_are_sent_from_each_source(cli: Cli, source: str) -> None:
    user, password = "carol", "pa:ss@w0rd/é"
    cli.secrets.append(password)
    with FaultServer() as fake:
        fake.add("GET", "/", Reply.json({"couchdb": "Welcome"}))
        env = cli.env(COUCHDB_URL=fake.url)
        if source == "url":
            env["COUCHDB_URL"] = fake.url.replace("://", f"://{quote(user)}:{quote(password, safe='')}@")
        elif source == "environment":
            env.update(COUCHDB_USER=user, COUCHDB_PASSWORD=password)
        else:
            netrc = cli.home / ".netrc"
            netrc.write_text(f'machine 127.0.0.1 login {user} password "{password}"\n')
            netrc.chmod(0o600)
        out = cli.run("info", env=env)
        assert out.returncode == 0, out.stderr
        [request] = fake.received("GET", "/")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {token}"


def test_progress_bar_on_a_terminal_only(cli: Cli, dbs: Databases, tmp_path: Path) -> None:
    db = dbs.create()
    fill(db, 50)
    primary, secondary = pty.openpty()
    try:
        out = cli.run("dump", db.name, "-o", str(tmp_path / "d.ndjson"), stderr=secondary)
        os.close(secondary)
        shown = io.BytesIO()
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown.write(chunk)
    finally:
        os.close(primary)
    assert out.returncode == 0
    assert b"50/50" in shown.getvalue() and b"docs" in shown.getvalue()
    piped = cli.run("dump", db.name, "-o", str(tmp_path / "e.ndjson"))
    assert piped.stderr == b""


def test_import_corduroy2_loads_no_cli_library(cli: Cli) -> None:
    probe = ("import sys, corduroy2, corduroy2.blocking; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'argparse') "
             "or m.startswith('corduroy2.cli')))")
    out = subprocess.run([cli_command()[0], "-c", probe], capture_output=True, env=cli.env(),
                         timeout=60)
    assert out.stdout.strip() == b"[]", out.stderr


def cli_command() -> list[str]:
    return [sys.executable, "-m", "corduroy2"]


# -- replicate -------------------------------------------------------------------------------


def endpoints(cli: Cli, server: Server, *names: str) -> list[str]:
    """How the command names databases for a replication: by name (the --url server's
    credentials go in CouchDB's auth object), or on pouchdb-server, which fails on that form
    (deviation replication_endpoint_objects) but lets anyone at its databases, plain URLs."""
    if server.deviates("replication_endpoint_objects"):
        return [f"{server.url}/{name}" for name in names]
    return list(names)


def replicator_docs(couch: Couch) -> list[str]:
    rows = couch.database("_replicator").all_docs()
    return [row.id for row in rows if not row.id.startswith("_design/")]


def test_replicate_follows_to_the_end(cli: Cli, dbs: Databases, server: Server,
                                      couch: Couch) -> None:
    source, target = dbs.create(), dbs.create()  # pouchdb-server hangs creating one anonymously
    fill(source, 30)
    before = replicator_docs(couch)
    out = cli.run("replicate", *endpoints(cli, server, source.name, target.name))
    assert (out.returncode, out.stderr) == (0, b""), out.stderr
    result = orjson.loads(out.stdout)
    assert result["state"] == "completed" and result["docs_written"] == 30
    assert set(result) <= {"id", "state", "docs_read", "docs_written", "doc_write_failures",
                           "missing_revisions_found", "revisions_checked", "changes_pending",
                           "checkpointed_source_seq", "last_seq", "through_seq"}
    assert len(target.all_docs(limit=100).rows) == 30
    assert replicator_docs(couch) == before  # the record of a finished one is removed


def test_continuous_replicate_runs_until_interrupted(cli: Cli, dbs: Databases, server: Server,
                                                     couch: Couch) -> None:
    source, target = dbs.create(), dbs.create()
    before = set(replicator_docs(couch))
    proc = subprocess.Popen(
        [*cli_command(), "replicate", "--continuous",
         *endpoints(cli, server, source.name, target.name)],
        env=cli.env(), cwd=cli.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        source.save({"_id": "live"})
        deadline = time.monotonic() + 30
        while target.get(["live"]) == [None]:
            assert time.monotonic() < deadline, "the replication did not carry the change"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        cli.check_no_secret(stdout, stderr)
        assert proc.returncode == 130
        [started] = set(replicator_docs(couch)) - before
        assert f"_replicator/{started}".encode() in stderr  # it goes on, and says where
    finally:
        if proc.poll() is None:
            proc.kill()
        for doc_id in set(replicator_docs(couch)) - before:
            couch.replication(doc_id).cancel()
