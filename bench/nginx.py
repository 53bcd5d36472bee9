"""A throwaway nginx for benchmarks: own config in a temp dir, a free loopback port, stopped on
exit (also on error).

    with Nginx({"/db/doc1": (body, headers)}) as server:
        server.url  # "http://127.0.0.1:PORT"

Each location answers ``200`` with a fixed body (``return 200 '...'``) plus the given headers.
nginx comes from Debian: when it is missing and we run as root, it is installed with apt-get.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["Nginx", "connections_accepted", "find_nginx", "free_port"]

Location = tuple[bytes, Sequence[tuple[str, str]]]


def find_nginx(install: bool = True) -> str:
    """Path of the nginx binary; installs the Debian package when missing and allowed."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: nginx missing, installing it with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, env=env,
                       stdout=sys.stderr)
        return find_nginx(install=False)
    raise RuntimeError("nginx is required for the benchmarks: apt-get install nginx")


def connections_accepted(port: int) -> int:
    """TCP connections the nginx on ``port`` has accepted so far (its stub_status
    ``accepts``, counting the one asking); to check that a client really keeps connections."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {Nginx.STATUS_PATH} HTTP/1.0\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    # "Active connections: 1 \nserver accepts handled requests\n 5 5 9 \n..."
    lines = reply.split(b"\r\n\r\n", 1)[1].decode().splitlines()
    return int(lines[2].split()[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quote(text: str) -> str:
    """An nginx single-quoted string. nginx expands ``$variables`` inside ``return`` and
    ``add_header`` text, so a ``$`` is refused rather than escaped."""
    if "$" in text:
        raise ValueError("'$' in a fixed nginx body would be read as a variable")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Nginx:
    #: nginx's stub_status page: ``accepts`` counts TCP connections, to check keep-alive.
    STATUS_PATH = "/_nginx_status"

    def __init__(self, locations: Mapping[str, Location], *, workers: int = 1,
                 cpu: int | None = None, port: int | None = None) -> None:
        """``cpu``: pin the (single) worker to that CPU, so that a client pinned to another one
        does not compete with it for a core (a benchmark's run-to-run noise). ``port``: listen
        there (None: a free port); a stopped server started again keeps its port."""
        if cpu is not None and workers != 1:
            raise ValueError("cpu= pins a single worker")
        self.locations = dict(locations)
        self.workers = workers
        self.cpu = cpu
        self.port = port or 0
        self.url = ""
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    def _config(self, root: Path) -> str:
        blocks = []
        for path, (body, headers) in self.locations.items():
            lines = [f"        location = {path} {{", "            default_type application/json;"]
            for name, value in headers:
                lines.append(f"            add_header {name} {_quote(value)} always;")
            lines.append(f"            return 200 {_quote(body.decode())};")
            lines.append("        }")
            blocks.append("\n".join(lines))
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        # nginx's CPU mask is a bit string, CPU 0 rightmost.
        affinity = "" if self.cpu is None else f"worker_cpu_affinity 1{'0' * self.cpu};"
        return f"""\
{user}
{affinity}
worker_processes {self.workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    tcp_nodelay on;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
{chr(10).join(blocks)}
        location = {self.STATUS_PATH} {{ stub_status; }}
        location / {{ return 404 '{{"error":"not_found","reason":"missing"}}'; }}
    }}
}}
"""

    def start(self) -> Nginx:
        binary = find_nginx()
        self.version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        self._dir = tempfile.TemporaryDirectory(prefix="corduroy2-bench-nginx-")
        root = Path(self._dir.name)
        os.chmod(root, 0o755)
        self.port = self.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = root / "nginx.conf"
        conf.write_text(self._config(root))
        self._proc = subprocess.Popen(
            [binary, "-p", str(root), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "stderr.log", "wb"),
        )
        deadline = time.monotonic() + 10
        while True:
            if self._proc.poll() is not None:
                log = "".join(
                    (root / name).read_text()
                    for name in ("stderr.log", "error.log")
                    if (root / name).exists()
                )
                self.stop()
                raise RuntimeError(f"nginx exited at start:\n{log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx did not start listening within 10 s") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int | None:
        """The master process's pid while running (``SIGSTOP`` it to freeze the server)."""
        return None if self._proc is None else self._proc.pid

    def connections_accepted(self) -> int:
        return connections_accepted(self.port)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown; the master stops its workers
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
