"""A loopback TCP proxy that tests can cut or stall, in front of a real server.

Runs on its own threads (like FaultServer) so it keeps forwarding while the test's event loop
is busy. ``cut_after(n)`` makes every open connection close after ``n`` more bytes from the
server (a cut mid-line when ``n`` is small and random); ``stall()`` stops forwarding on the
connections open now without closing them (a dead peer that TCP has not noticed), while new
connections work normally.

As a cluster's node (tests/behaviour/test_failover.py): ``kill()`` closes every connection and
stops listening (new connections are refused), ``hang()`` keeps accepting connections but
forwards nothing (a node that stops answering), ``restore()`` puts it back on the same port.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from .faultserver import wake_accept


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._stopped = threading.Event()
        self.hanging = False
        self.held = 0  # connections accepted while hanging
        self.connections = 0
        self.cuts = 0
        #: When set, each new connection is cut after this many bytes from the server.
        self.cut_new_after: int | None = None
        self._listen(self._listener)

    def _listen(self, listener: socket.socket) -> None:
        listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True,
                                        name="test-proxy")
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        held: list[socket.socket] = []  # connections accepted while hanging
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            if self.hanging:
                held.append(client)
                self.held += 1
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(self, client, upstream)
            if self.cut_new_after is not None:
                pair.cut_after(self.cut_new_after)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            pair.start()
        for client in held:
            client.close()

    def cut_after(self, nbytes: int) -> int:
        """Close every open connection after ``nbytes`` more bytes from the server (0: now).
        Returns how many connections were armed."""
        with self._lock:
            pairs = [p for p in self._pairs if not p.closed]
        for pair in pairs:
            pair.cut_after(nbytes)
        return len(pairs)

    def stall(self) -> int:
        """Stop forwarding on every open connection; returns how many."""
        with self._lock:
            pairs = [p for p in self._pairs if not p.closed]
        for pair in pairs:
            pair.stalled = True
        return len(pairs)

    def kill(self) -> None:
        """Die: close every connection and refuse new ones until :meth:`restore`."""
        self.stop()

    def hang(self) -> None:
        """Stop answering: open connections stall, new ones are accepted and then ignored."""
        self.hanging = True
        self.stall()

    def restore(self) -> None:
        """Come back (after :meth:`kill` or :meth:`hang`) on the same port."""
        self.hanging = False
        if not self._stopped.is_set():
            return
        self._stopped.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listen(self._listener)

    def stop(self) -> None:
        self._stopped.set()
        wake_accept(self._listener)
        self._listener.close()
        with self._lock:
            pairs, self._pairs = list(self._pairs), []
        for pair in pairs:
            pair.close()
        self._thread.join(2)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _Pair:
    def __init__(self, proxy: Proxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client, self.upstream = client, upstream
        self.closed = False
        self.stalled = False
        self._budget: int | None = None  # bytes still allowed downstream before a cut
        self._lock = threading.Lock()

    def start(self) -> None:
        for src, dst, down in ((self.client, self.upstream, False),
                               (self.upstream, self.client, True)):
            threading.Thread(target=self._pump, args=(src, dst, down), daemon=True,
                             name="test-proxy-pump").start()

    def cut_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes
        if nbytes == 0:
            self._cut()

    def _cut(self) -> None:
        if not self.closed:
            self.proxy.cuts += 1
        self.close()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            src.settimeout(0.05)
        except OSError:
            return  # cut before this pump began: its socket is closed already
        while not self.closed:
            try:
                data = src.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            if not data:
                break
            while self.stalled:
                if self.closed or self.proxy._stopped.wait(0.05):
                    return
            if down:
                with self._lock:
                    budget = self._budget
                    if budget is not None:
                        self._budget = max(0, budget - len(data))
                if budget is not None and budget < len(data):
                    try:
                        dst.sendall(data[:budget])
                    except OSError:
                        pass
                    self._cut()
                    return
            try:
                dst.sendall(data)
            except OSError:
                break
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
