"""A deadline for a whole HTTP exchange: connect, headers and body, not each socket read.

A socket timeout bounds one read; a server that sends one byte every second never trips it and holds a
fetch (and, with one request in flight per host, every other URL of its host) for as long as it drips.
The Watchdog shuts the exchange's sockets down when the deadline passes, which ends a blocked read at once;
the crawler then files the page as `timeout` with the bytes it received.
"""
from __future__ import annotations

import socket
import threading


class Watchdog:
    """Cuts an exchange at its deadline: shuts down the sockets of the pool's connections, which unblocks a
    read that a server feeding one byte at a time would otherwise hold for as long as it drips (a socket
    timeout bounds one read, not the exchange). `fired` tells the reader why its socket died."""

    def __init__(self, seconds: float):
        self.socks: list[socket.socket] = []
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def watch(self, pool) -> None:
        """Record the socket of every connection `pool` opens (urllib3 creates them in _new_conn). The socket
        itself, not the connection: http.client drops conn.sock once a `Connection: close` answer arrives,
        while the response still reads from it."""
        new_conn = pool._new_conn

        def recorded():
            conn = new_conn()
            connect = conn.connect

            def connect_and_record():
                connect()
                self.socks.append(conn.sock)
                if self.fired:  # connected after the deadline passed
                    self._fire()
            conn.connect = connect_and_record
            return conn
        pool._new_conn = recorded

    def _fire(self) -> None:
        self.fired = True
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
