"""A deadline for a whole HTTP exchange: connect, headers and body, not each socket read.

A socket timeout bounds one read; a server that sends one byte every second never trips it and holds a
fetch (and, with one request in flight per host, every other URL of its host) for as long as it drips.
The Watchdog shuts the exchange's socket down when the deadline passes, which ends a blocked read at once;
the crawler then files the page as `timeout` with the bytes it received.

One alarm thread serves every Watchdog of the process (a heap of deadlines): a threading.Timer per exchange
started a thread per page, which cost a loopback crawl 15% of its pages/s (bench/scrape_throughput.py).
Connections are kept alive per host, so the socket to watch is the one the pool hands out for this exchange,
new or reused: the pools of connections.py report it.
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class Watchdog:
    """Cuts an exchange at its deadline: shuts down the socket of the connection the exchange uses, which
    unblocks a read that a server feeding one byte at a time would otherwise hold for as long as it drips
    (a socket timeout bounds one read, not the exchange). `fired` tells the reader why its socket died.
    Once the `with` block is left the Watchdog never fires, so a kept-alive socket is safe to reuse."""

    def __init__(self, seconds: float):
        self.seconds = max(0.0, seconds)
        self.socks: list[socket.socket] = []
        self.fired = False
        self.done = False
        self.pool = None
        self._lock = threading.Lock()

    def watch(self, pool) -> None:
        """Watch the connection `pool` (a connections.py pool) hands out while this Watchdog is active."""
        self.pool = pool
        pool.watchdog = self

    def add_socket(self, sock: socket.socket | None) -> None:
        """The socket of this exchange (the pool calls it when it hands a connection out, or connects one)."""
        if sock is None:
            return
        with self._lock:
            self.socks.append(sock)
            late = self.fired  # connected after the deadline passed
        if late:
            _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:  # the exchange ended first: its socket may already serve the next one
                return
            self.fired = True
            socks = list(self.socks)
        for sock in socks:
            _shutdown(sock)

    def __enter__(self) -> "Watchdog":
        _ALARM.add(time.monotonic() + self.seconds, self)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.done = True
            # The alarm's heap keeps this object until its deadline: it must not keep the sockets (and their file
            # descriptors: a closed-by-server socket is freed when its last reference goes) that long
            self.socks.clear()
        if self.pool is not None and self.pool.watchdog is self:
            self.pool.watchdog = None


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Alarm:
    """One daemon thread that fires each Watchdog at its deadline; a Watchdog that ended stays in the heap
    until its time comes and is then dropped (no removal from the middle of a heap)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._order = itertools.count()  # ties broken by arrival, never by comparing Watchdogs
        self._thread: threading.Thread | None = None

    def add(self, when: float, dog: Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), dog))
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._run, name="exchange-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is dog:  # earlier than anything the thread waits for
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                due = []
                while self._heap and self._heap[0][0] <= time.monotonic():
                    due.append(heapq.heappop(self._heap)[2])
            for dog in due:  # outside the lock: shutting sockets down must not hold up new exchanges
                dog.fire()


_ALARM = _Alarm()
