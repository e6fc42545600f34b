"""The crawler's connections: one kept-alive connection per host, each watched by its exchange's deadline.

RFC 9112 asks clients to reuse connections: no new TCP and TLS handshake per page, and less load on the site.
With one request in flight per host (crawler.py's host lock), a pool of one connection per (scheme, host, vetted
IP, port) is enough; the least recently used host is closed past MAX_OPEN_HOSTS, so a crawl over millions of
hosts holds a bounded number of sockets. A pool is created for the vetted IP, never the name, so reuse can not
skip the private-address guard.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import urllib3

from pipeline.sources.deadline import Watchdog

MAX_OPEN_HOSTS = 256  # kept-alive connections at once, one per host


class _Watched:
    """Pool mixin: report the socket of every connection handed out to the pool's current Watchdog.

    A new connection's socket is reported as it connects, so the Watchdog holds the socket itself: http.client
    drops conn.sock once a `Connection: close` answer arrives, while the response still reads from it."""

    watchdog: Watchdog | None = None
    reused = False  # the last connection handed out was kept alive from an earlier exchange

    def _new_conn(self):
        conn = super()._new_conn()
        connect = conn.connect

        def connect_and_report():
            connect()
            if self.watchdog is not None:
                self.watchdog.add_socket(conn.sock)
        conn.connect = connect_and_report
        return conn

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        self.reused = conn.sock is not None
        if self.reused and self.watchdog is not None:  # a kept-alive connection, already open
            self.watchdog.add_socket(conn.sock)
        return conn


class WatchedHTTPConnectionPool(_Watched, urllib3.HTTPConnectionPool):
    pass


class WatchedHTTPSConnectionPool(_Watched, urllib3.HTTPSConnectionPool):
    pass


class HostPools:
    """Pools of one kept-alive, watched connection each, keyed by (scheme, host, vetted ip, port), LRU-bounded."""

    def __init__(self, timeout_s: float, ca_bundle: str = ""):
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.ca_bundle = ca_bundle
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pools)

    def get(self, scheme: str, host: str, ip: str, port: int) -> urllib3.HTTPConnectionPool:
        """The pool of this host; only ever used under the host's lock, so it never serves two exchanges."""
        key = (scheme, host, ip, port)
        with self._lock:
            pool = self._pools.pop(key, None)
            if pool is None:
                pool = self._new(scheme, host, ip, port)
            self._pools[key] = pool
            while len(self._pools) > MAX_OPEN_HOSTS:  # an evicted pool still in use closes its connection on release
                self._pools.popitem(last=False)[1].close()
        return pool

    def _new(self, scheme: str, host: str, ip: str, port: int) -> urllib3.HTTPConnectionPool:
        if scheme == "https":  # to the vetted IP, but SNI and the certificate check use the URL's host
            import certifi

            return WatchedHTTPSConnectionPool(ip, port, timeout=self.timeout, retries=False, maxsize=1,
                                              cert_reqs="CERT_REQUIRED", ca_certs=self.ca_bundle or certifi.where(),
                                              server_hostname=host, assert_hostname=host)
        return WatchedHTTPConnectionPool(ip, port, timeout=self.timeout, retries=False, maxsize=1)

    def close(self) -> None:
        """Close every kept-alive connection."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()
