"""Fault injection: a worker SIGKILLed or SIGTERMed mid-batch (then restarted, as ECS would), the
database refusing connections for a while (through a TCP proxy the workers reach it by), and the
database answering but refusing writes for a while (the workers' role loses its grants)."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from worker.local.emulator import free_port
from worker.local.load.report import log
from worker.local.load.workers import Cluster, WorkerRole


class FaultInjector:
    """Each fault waits for a worker to take a batch, so that it hits a batch in flight."""

    def __init__(self, cluster: Cluster, proxy: TcpProxy, faults: Counter, notes: list[str],
                 shutdown_deadline: float, outage_s: float, role: WorkerRole | None = None,
                 write_refusal_s: float = 12.0):
        self.cluster = cluster
        self.proxy = proxy
        self.faults = faults
        self.notes = notes
        self.shutdown_deadline = shutdown_deadline
        self.outage_s = outage_s
        self.role = role
        self.write_refusal_s = write_refusal_s

    def sigkill(self, timeout: float, clear: bool = True) -> None:
        """SIGKILL the first worker seen taking a batch, then restart it."""
        victim = self.cluster.next_busy(timeout, clear=clear)
        if victim is None:
            self.notes.append("SIGKILL skipped: no worker took a batch within 120 s")
            return
        victim.kill()
        self.faults["sigkill"] += 1
        log(f"SIGKILL worker {victim.slot} mid-batch")
        victim.start()

    def sigterm(self, timeout: float) -> None:
        """SIGTERM the next worker seen taking a batch: it must exit 0 within its deadline."""
        victim = self.cluster.next_busy(timeout)
        if victim is None:
            self.notes.append("SIGTERM skipped: no worker took a batch within 120 s")
            return
        code, took = victim.terminate(self.shutdown_deadline + 15)
        self.faults["sigterm"] += 1
        log(f"SIGTERM worker {victim.slot} mid-batch: exit {code} after {took:.1f} s")
        if code != 0:
            self.notes.append(f"the SIGTERM'd worker exited with {code} after {took:.1f} s")
        victim.start()

    def db_outage(self, timeout: float) -> None:
        """The database refuses connections (and open ones are cut) while a batch is in work."""
        self.cluster.next_busy(timeout)
        self.proxy.down()
        self.faults["db_outage"] += 1
        log(f"database down for {self.outage_s:.0f} s (connections refused)")
        time.sleep(self.outage_s)
        self.proxy.up()
        log(f"database back ({self.proxy.connections_cut} connections cut so far)")


    def db_refuses_writes(self, timeout: float) -> None:
        """The database answers (SELECT 1 works) but refuses every write while batches are in work."""
        if self.role is None:
            self.notes.append("write refusal skipped: the workers connect as the database's owner")
            return
        self.cluster.next_busy(timeout)
        self.role.refuse_writes()
        self.faults["db_refuses_writes"] += 1
        log(f"database refuses writes for {self.write_refusal_s:.0f} s (the workers' grants revoked)")
        try:
            time.sleep(self.write_refusal_s)
        finally:
            self.role.allow_writes()
        log("database takes writes again")


class TcpProxy:
    """A loopback TCP proxy whose listener can be closed (connections refused, open ones cut)
    and reopened on the same port: the database "refusing connections for a while"."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="db-proxy", daemon=True)
        self.connections_cut = 0

    def start(self) -> None:
        self.up()
        self._thread.start()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    listener.bind(("127.0.0.1", self.port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            listener.listen(64)
            listener.setblocking(False)
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self._wake()

    def down(self) -> None:
        """Close the listener (new connections are refused) and cut every open connection."""
        with self._lock:
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            pairs, self._pairs = self._pairs, set()
            for client, server in pairs:
                self.connections_cut += 1
                for sock in (client, server):
                    self._forget(sock)
        self._wake()

    def _forget(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def close(self) -> None:
        self._closed = True
        self.down()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=0.5):
                kind, pair = key.data
                if kind == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                elif kind == "accept":
                    self._accept()
                else:
                    self._pump(key.fileobj, pair)

    def _accept(self) -> None:
        with self._lock:
            if self._listener is None:
                return
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, OSError):
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                return
            client.setblocking(False)
            server.setblocking(False)
            pair = (client, server)
            self._pairs.add(pair)
            self._selector.register(client, selectors.EVENT_READ, ("data", pair))
            self._selector.register(server, selectors.EVENT_READ, ("data", pair))

    def _pump(self, source: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        target = pair[1] if source is pair[0] else pair[0]
        try:
            data = source.recv(65536)
            if data:
                target.setblocking(True)
                target.settimeout(10)
                target.sendall(data)
                target.setblocking(False)
                return
        except OSError:
            pass
        with self._lock:
            if pair in self._pairs:
                self._pairs.discard(pair)
                for sock in pair:
                    self._forget(sock)


def proxied_url(database_url: str, proxy_port: int) -> str:
    """The same database URL with host and port replaced by the proxy's."""
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy_port}").geturl()


def database_address(database_url: str) -> tuple[str, int]:
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432
