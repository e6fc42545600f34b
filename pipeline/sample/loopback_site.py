"""A loopback HTTP server that plays the embedded sample's web site to the scraper.

GPT-2's WebText was scraped from the live web; the embedded sample replaces the web with
`data/raw/sample/site/`, served over real HTTP on 127.0.0.1 so the scraper's network code
(timeouts, size caps, redirects, robots.txt, content types) runs for real.

Virtual hosting: http://<host><path> is the file site/<host><path> ("/" or a trailing slash
-> index.html), chosen by the Host header. `site/_routes.json` maps "<host><path>" to special
behaviour: {"status", "location", "delay_s", "drip_s", "content_type", "body_bytes", "fail_first", "fail_with"}
(drip_s: the body goes out one byte every drip_s seconds, the hostile server a whole-exchange deadline is for):
the first `fail_first` requests of a flaky route fail (`fail_with`: an HTTP status such as 503, or
"reset": the connection is dropped with no answer), later ones are served normally.

Every response carries a fixed Date and Server header: the site is a simulated world with its
own clock, which is what makes the scraper's WARC archive byte-identical from run to run. Ordinary
answers keep the connection alive (HTTP/1.1), as a real server's do; a drip or a filler body closes it.

Usage:
    with sitesrv.serve("data/raw/sample/site") as site:
        fetcher = crawler.Fetcher(cfg, host_map=site.host_map, clock=site.clock)
"""
from __future__ import annotations

import json
import logging
import mimetypes
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

# The sample's clock: RS_2019-01 links, fetched at the end of that month.
FIXED_DATE = "Thu, 31 Jan 2019 12:00:00 GMT"
FIXED_WARC_DATE = "2019-01-31T12:00:00Z"
SERVER = "gpt-repro-sitesrv/1"  # not BaseHTTPRequestHandler's default, which names the Python version
CHUNK = 1 << 16


class SiteServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over a site folder; counts hits per "<host><path>" for tests."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 overflows under a crawler's burst: a dropped SYN costs 1 s
    block_on_close = False  # a slow-page handler must not hold up shutdown

    def __init__(self, site_dir: str | Path, addr: tuple[str, int] = ("127.0.0.1", 0)):
        self.site_dir = Path(site_dir).resolve()
        routes = self.site_dir / "_routes.json"
        self.routes: dict[str, dict] = json.loads(routes.read_text(encoding="utf-8")) if routes.exists() else {}
        self.hits: Counter[str] = Counter()
        self.arrivals: dict[str, list[float]] = {}  # host -> time.monotonic() of each request (politeness checks)
        self.hits_lock = threading.Lock()
        self.connections = 0  # TCP connections accepted (tests of kept-alive connections count them)
        self.stopping = threading.Event()
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address) -> None:
        with self.hits_lock:
            self.connections += 1
        super().process_request(request, client_address)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def host_map(self) -> dict[str, tuple[str, int]]:
        """Resolver override for the scraper: every host under the reserved .test TLD is this server."""
        return {".test": ("127.0.0.1", self.port)}

    @staticmethod
    def clock() -> str:
        """The site's clock as a WARC date: the fetch time of records that got no response."""
        return FIXED_WARC_DATE

    def gaps(self, host: str) -> list[float]:
        """Seconds between consecutive requests to `host`, by the server's clock (politeness checks)."""
        times = sorted(self.arrivals.get(host, []))
        return [b - a for a, b in zip(times, times[1:])]

    def count(self, key: str, host: str = "") -> int:
        """Count a request of "<host><path>"; returns how many times it was asked for, this one included."""
        with self.hits_lock:
            self.hits[key] += 1
            self.arrivals.setdefault(host, []).append(time.monotonic())
            return self.hits[key]

    def file_for(self, host: str, path: str) -> Path | None:
        """site/<host><path>, or None when it is missing or escapes the site folder."""
        rel = unquote(path)
        if rel.endswith("/"):
            rel += "index.html"
        target = (self.site_dir / host / rel.lstrip("/")).resolve()
        if not target.is_relative_to(self.site_dir / host) or not target.is_file():
            return None
        return target


class _Handler(BaseHTTPRequestHandler):
    server: SiteServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; on a kept-alive connection Nagle's algorithm would hold the body
    # for the client's delayed ACK (40 ms a page). Real servers set TCP_NODELAY too (nginx's tcp_nodelay).
    disable_nagle_algorithm = True
    timeout = 5.0  # an idle kept-alive connection is closed after this (Apache's KeepAliveTimeout default)

    def version_string(self) -> str:
        return SERVER

    def date_time_string(self, timestamp=None) -> str:
        return FIXED_DATE

    def log_message(self, format, *args) -> None:  # quiet: the scraper logs what matters
        log.debug("sitesrv: " + format, *args)

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower().rstrip(".")
        path = urlsplit(self.path).path or "/"
        key = host + path
        n = self.server.count(key, host)
        route = self.server.routes.get(key, {})
        try:
            if n <= int(route.get("fail_first", 0)):
                self._fail(route.get("fail_with", 503))
                return
            self._serve(host, path, route)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, size cap): expected

    def _fail(self, how) -> None:
        if how == "reset":  # SO_LINGER 0: close() sends a TCP RST, the client sees a reset connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self._send(int(how), "text/html; charset=utf-8", b"<html><body>Try again later</body></html>")

    def _serve(self, host: str, path: str, route: dict) -> None:
        # Sleep before answering (a slow first byte), in slices so shutdown is not held up.
        deadline = time.monotonic() + float(route.get("delay_s", 0))
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        file = self.server.file_for(host, path)
        if file is None and not route:
            self._send(404, "text/html; charset=utf-8", b"<html><body><h1>Not Found</h1></body></html>")
            return
        status = int(route.get("status", 302 if route.get("location") else 200))
        ctype = route.get("content_type") or (_guess_type(file) if file else "text/html; charset=utf-8")
        if "body_bytes" in route:  # a huge page, made of filler
            body: bytes | int = int(route["body_bytes"])
        elif file is not None:
            body = file.read_bytes()
        else:  # a route with no file behind it (a redirect, an error, a typed blob)
            body = b"" if status >= 300 else b"placeholder body\n"
        self._send(status, ctype, body, location=route.get("location"), drip_s=float(route.get("drip_s", 0)))

    def _send(self, status: int, ctype: str, body: bytes | int, location: str | None = None,
              drip_s: float = 0.0) -> None:
        size = body if isinstance(body, int) else len(body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        if location:
            self.send_header("Location", location)
        # Kept alive like a real server's, unless the client asks to close or the answer is a hostile one
        # (a drip or a huge filler body, which a client cuts mid-body)
        if drip_s or not isinstance(body, bytes) or self.headers.get("Connection", "").lower() == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if isinstance(body, bytes) and drip_s:
            for i in range(len(body)):
                if self.server.stopping.is_set():
                    return
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(drip_s)
            return
        if isinstance(body, bytes):
            self.wfile.write(body)
            return
        filler = (b"<p>" + b"filler " * 9000 + b"</p>\n")[:CHUNK]
        sent = 0
        while sent < size and not self.server.stopping.is_set():
            piece = filler[: min(CHUNK, size - sent)]
            self.wfile.write(piece)
            sent += len(piece)


def _guess_type(file: Path) -> str:
    if file.suffix in (".html", ".htm"):
        return "text/html; charset=utf-8"
    if file.name == "robots.txt":
        return "text/plain; charset=utf-8"
    return mimetypes.guess_type(file.name)[0] or "application/octet-stream"


class serve:  # noqa: N801  (used as a context manager, like open())
    """Start a SiteServer on an ephemeral loopback port in a daemon thread; stop it on exit."""

    def __init__(self, site_dir: str | Path):
        self.server = SiteServer(site_dir)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> SiteServer:
        self.thread.start()
        log.info("serving sample site %s on 127.0.0.1:%d", self.server.site_dir.name, self.server.port)
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
