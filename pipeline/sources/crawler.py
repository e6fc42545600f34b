"""The WebText crawler's HTTP client: one guarded, polite fetch per URL, every exchange kept for the WARC.

Fetching is polite and safe: robots.txt (RFC 9309, fetched once per origin, archived too), one request in
flight per host with a minimum gap over one kept-alive connection (connections.py), a deadline for the whole
request (deadline.py), a body cap, an HTML-only content-type
check, redirects followed by hand, retries with exponential backoff on transient failures (5xx, 429,
timeouts, connection resets; the failed answers are archived too), and a private-address guard before every
hop: the host is resolved once, the address must be public unless inside `allow_networks`, and the connection
goes to that vetted IP (no second lookup, so no DNS rebinding) with the URL's name in the Host header.
Drop reasons: private_address, robots_disallowed, robots_unreachable, crawl_delay_too_long, timeout, http_<status>,
too_large, not_html, too_many_redirects, connection_error, tls_error, bad_url, fetch_error; then, after extraction,
no_text, too_short.
"""
from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import urllib3
from warcio.statusandheaders import StatusAndHeaders

from pipeline.sources.connections import HostPools
from pipeline.sources.deadline import Watchdog
from pipeline.sources.robots import ROBOTS_MAX_BYTES, crawl_delay, robots_rules
from pipeline.sources.webarchive import origin

log = logging.getLogger(__name__)

REDIRECTS = {301, 302, 303, 307, 308}
HTML_TYPES = ("text/html", "application/xhtml+xml")
RETRY_STATUSES = {429, 500, 502, 503, 504}  # transient by RFC 9110's meaning; other 4xx/5xx are final
MAX_RETRY_WAIT_S = 60.0  # a Retry-After longer than this is cut to it
CHUNK = 1 << 16


@dataclass(frozen=True)
class ScrapeConfig:
    """The `scrape` section of params.yaml."""
    timeout_s: float = 2.0         # per socket operation (connect, each read)
    deadline_s: float = 10.0       # the whole exchange: connect, headers and body (a dripping server is cut here)
    retry_deadline: bool = False   # retry an exchange the deadline cut (a slow drip usually drips again)
    max_bytes: int = 5_000_000
    user_agent: str = "gpt-repro/0.1 (+https://github.com/gpt-repro; research crawler)"
    per_domain_delay_s: float = 0.0
    max_crawl_delay_s: float = 30.0  # a robots.txt Crawl-delay is honoured up to this; a host asking more is not crawled
    max_redirects: int = 5
    respect_robots: bool = True
    allow_networks: tuple[str, ...] = ("127.0.0.0/8",)
    concurrency: int = 8
    max_retries: int = 2           # extra attempts after a transient failure (5xx, 429, timeout, reset)
    retry_backoff_s: float = 0.5   # wait before retry k (0-based): retry_backoff_s * 2**k, or Retry-After if longer
    ca_bundle: str = ""            # PEM file of trusted CAs for https (sites behind a private CA); "" = certifi's


class FetchError(Exception):
    """A URL that cannot be fetched; `reason` is the drop reason."""

    def __init__(self, reason: str, detail: str = "", deadline: bool = False):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.deadline = deadline  # the whole-exchange deadline cut it (retried only if scrape.retry_deadline)


@dataclass
class Exchange:
    """One HTTP request and its (possibly cut) response."""
    url: str
    ip: str
    request: StatusAndHeaders
    status: int
    response: StatusAndHeaders
    body: bytes
    truncated: str | None  # WARC-Truncated value: length, time, disconnect, unspecified
    date: str
    deadline_cut: bool = False  # scrape.deadline_s ended it (truncated "time"), as opposed to a stalled read

    def header(self, name: str) -> str:
        return self.response.get_header(name) or ""


@dataclass
class Outcome:
    """Everything that happened to one URL: its hops and the verdict (`reason` is "ok" when it worked)."""
    url: str
    purpose: str  # page | robots
    reason: str
    hops: list[Exchange] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)  # every URL of the chain, the refused one included
    date: str = ""
    retries: int = 0  # attempts repeated after transient failures, over the whole chain
    detail: str = ""  # why, where the reason alone hides it (robots_unreachable: the robots.txt outcome; tls_error)


def warc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the fetcher ----------------------------------------------------------------------------
class Fetcher:
    """Guarded, polite HTTP fetcher.

    Args:
        cfg: scrape params.
        host_map: resolver override, host -> (ip, port); a key starting with "." matches every host under it
            (the sample maps ".test" to the loopback site server). Overridden addresses are still vetted.
        clock: WARC date of records that got no response (default: now, UTC).
        on_robots: called with the Outcome of every robots.txt fetch (the stage journals it).
    """

    def __init__(self, cfg: ScrapeConfig, host_map: dict[str, tuple[str, int]] | None = None,
                 clock: Callable[[], str] | None = None, on_robots: Callable[[Outcome], None] | None = None):
        self.cfg = cfg
        self.allow = [ipaddress.ip_network(n, strict=False) for n in cfg.allow_networks]
        self.host_map = dict(host_map or {})
        self.clock = clock or warc_now
        self.on_robots = on_robots
        self.robots: dict[str, RobotFileParser] = {}
        self.network_fetches = 0
        self.retries = 0
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}
        self._guard = threading.Lock()
        self.pools = HostPools(cfg.timeout_s, cfg.ca_bundle)  # one kept-alive connection per host

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def address_ok(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip.split("%")[0])
        if addr.version == 6 and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.allow if net.version == addr.version):
            return True
        return addr.is_global and not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
                                       or addr.is_multicast or addr.is_unspecified)

    def resolve(self, url: str) -> tuple[str, int]:
        """Resolve once and vet: (ip, port) to connect to, or FetchError(private_address / connection_error)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            raise FetchError("bad_url", url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for key, (ip, mapped_port) in self.host_map.items():
            if host == key or (key.startswith(".") and host.endswith(key)):
                candidates, port = [ip], mapped_port
                break
        else:
            try:
                candidates = list(dict.fromkeys(i[4][0] for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
            except (socket.gaierror, UnicodeError) as exc:
                raise FetchError("connection_error", f"cannot resolve {host}: {exc}") from None
        for ip in candidates:
            if self.address_ok(ip):
                return ip, port
        raise FetchError("private_address", f"{host} resolves to {', '.join(candidates)}, refused")

    def robots_allow(self, url: str) -> bool:
        key = origin(url)
        with self._lock("robots " + key):  # one robots.txt fetch per origin, even with many threads
            if key not in self.robots:
                outcome = self.fetch(key + "/robots.txt", purpose="robots")
                last = outcome.hops[-1] if outcome.hops else None
                self.robots[key] = robots_rules(outcome.reason, last.status if last else 0, last.body if last else b"")
                if self.on_robots:
                    self.on_robots(outcome)
        return self.robots[key].can_fetch(self.cfg.user_agent, url)

    def asked_delay(self, url: str) -> float:
        """The Crawl-delay of the robots.txt of `url`'s origin (0: none, not fetched yet, or robots ignored)."""
        return crawl_delay(self.robots.get(origin(url)), self.cfg.user_agent) if self.cfg.respect_robots else 0.0

    def gap(self, url: str) -> float:
        """Seconds between two requests to the host of `url`: per_domain_delay_s, or its Crawl-delay if longer."""
        return max(self.cfg.per_domain_delay_s, self.asked_delay(url))

    def robots_block(self, url: str) -> FetchError:
        """Why robots.txt blocks `url`: its rules (robots_disallowed), or no usable answer (robots_unreachable:
        RFC 9309 says disallow everything then, but the cause, say a TLS failure, must not be hidden)."""
        cause = getattr(self.robots.get(origin(url)), "unreachable", "")
        if cause:
            return FetchError("robots_unreachable", f"robots.txt of {origin(url)}: {cause}")
        return FetchError("robots_disallowed", url)

    def fetch(self, url: str, purpose: str = "page") -> Outcome:
        """Fetch `url`, following redirects by hand; every hop is vetted, robots-checked and rate limited."""
        page = purpose == "page"
        cap = self.cfg.max_bytes if page else min(self.cfg.max_bytes, ROBOTS_MAX_BYTES)
        out = Outcome(url, purpose, "too_many_redirects")
        current = url
        for _ in range(self.cfg.max_redirects + 1):
            out.tried.append(current)
            try:
                ip, port = self.resolve(current)
                if page and self.cfg.respect_robots and not self.robots_allow(current):
                    raise self.robots_block(current)
                asked = self.asked_delay(current) if page else 0.0
                if asked > self.cfg.max_crawl_delay_s:  # honoured in full, or not at all
                    raise FetchError("crawl_delay_too_long", f"robots.txt of {origin(current)} asks {asked:g} s "
                                     "between requests (scrape.max_crawl_delay_s)")
                ex = self._exchange_retrying(current, ip, port, cap, page, out)
            except FetchError as exc:
                out.reason = exc.reason
                if exc.reason in ("robots_unreachable", "tls_error", "crawl_delay_too_long"):
                    out.detail = str(exc).split(": ", 1)[-1]
                    log.warning("%s: %s", url, exc)
                break
            out.hops.append(ex)
            if ex.truncated in ("time", "disconnect"):
                out.reason = "timeout" if ex.truncated == "time" else "connection_error"
                break
            if ex.status in REDIRECTS and ex.header("Location"):
                current = urljoin(current, ex.header("Location").strip())
                continue
            out.reason = _verdict(ex, page)
            break
        out.date = out.hops[-1].date if out.hops else self.clock()
        return out

    def _exchange_retrying(self, url: str, ip: str, port: int, cap: int, html_only: bool, out: Outcome) -> Exchange:
        """_exchange, repeated after a transient failure up to max_retries times with exponential backoff.

        A transient answer that is retried (a 503 page, a cut body) goes into out.hops, so the WARC keeps
        every response the server gave; a failure with no answer (timeout, reset) is counted in out.retries.
        The backoff sleeps outside the host lock: other URLs of the host may go meanwhile, still spaced.
        """
        retries = max(0, self.cfg.max_retries)
        for attempt in range(retries + 1):
            final = attempt == retries
            try:
                ex = self._exchange(url, ip, port, cap, html_only)
            except FetchError as exc:
                if final or exc.reason not in ("timeout", "connection_error") or (
                        exc.deadline and not self.cfg.retry_deadline):
                    raise
                wait = self.cfg.retry_backoff_s * 2 ** attempt
            else:
                slow_drip = ex.deadline_cut and not self.cfg.retry_deadline  # it would drip again
                if final or slow_drip or not (ex.status in RETRY_STATUSES or ex.truncated in ("time", "disconnect")):
                    return ex
                out.hops.append(ex)
                wait = max(self.cfg.retry_backoff_s * 2 ** attempt, _retry_after(ex.header("Retry-After")))
            log.info("%s: transient failure, retry %d of %d in %.2f s", url, attempt + 1, retries, wait)
            out.retries += 1
            with self._guard:
                self.retries += 1
            time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _exchange(self, url: str, ip: str, port: int, cap: int, html_only: bool) -> Exchange:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [("Host", parts.netloc.rsplit("@", 1)[-1]), ("User-Agent", self.cfg.user_agent),
                   ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"), ("Accept-Encoding", "identity")]
        request = StatusAndHeaders(f"GET {target} HTTP/1.1", headers, is_http_request=True)
        host = (parts.hostname or "").lower()
        with self._lock("host " + host):  # politeness: one request in flight per host, spaced by its gap
            gap = self.gap(url)
            wait = self._last.get(host, -1e9) + gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                for attempt in (0, 1):
                    pool = self.pools.get(parts.scheme, host, ip, port)  # anew: a long exchange's pool may be evicted
                    with self._guard:
                        self.network_fetches += 1
                    try:
                        return self._read(pool, url, ip, target, request, cap, html_only)
                    except FetchError as exc:
                        if attempt or exc.reason != "connection_error" or not pool.reused:
                            raise
                    # RFC 9112 sec. 9.3.1: a kept-alive connection the server closed as it was reused (its idle
                    # timeout) ends with no answer; a GET goes once more on a new connection, after the host's gap
                    log.debug("%s: reused connection closed by the server, sending again on a new one", url)
                    time.sleep(gap)
            finally:
                self._last[host] = time.monotonic()

    def close(self) -> None:
        """Close every kept-alive connection."""
        self.pools.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, pool, url, ip, target, request, cap, html_only) -> Exchange:
        """One exchange, connect to last body byte, inside scrape.deadline_s (Watchdog)."""
        with Watchdog(self.cfg.deadline_s) as dog:
            dog.watch(pool)
            return self._read_within(dog, pool, url, ip, target, request, cap, html_only)

    def _read_within(self, dog, pool, url, ip, target, request, cap, html_only) -> Exchange:
        try:
            resp = pool.urlopen("GET", target, headers=dict(request.headers), redirect=False, retries=False,
                                preload_content=False, assert_same_host=False)
        except urllib3.exceptions.TimeoutError:
            raise FetchError("timeout", url) from None
        except urllib3.exceptions.SSLError as exc:  # bad, expired, self-signed or wrong-host certificate: final
            raise FetchError("tls_error", _tls_reason(exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if dog.fired:  # the deadline cut the headers short
                raise FetchError("timeout", f"{url}: no complete answer within {self.cfg.deadline_s} s",
                                 deadline=True) from None
            raise FetchError("connection_error", f"{url}: {exc}") from None
        protocol = "HTTP/1.0" if resp.version == 10 else "HTTP/1.1"
        response = StatusAndHeaders(f"{resp.status} {resp.reason or ''}".strip(), list(resp.headers.items()),
                                    protocol=protocol)
        ctype, length = resp.headers.get("Content-Type", ""), resp.headers.get("Content-Length", "")
        body, truncated = bytearray(), None
        if html_only and 200 <= resp.status < 300 and not _is_html(ctype):
            truncated = "unspecified"  # not_html: the body is not worth downloading
        elif length.isdigit() and int(length) > cap:
            truncated = "length"
        else:
            try:
                while True:  # read1: whatever has arrived, so a cut keeps every byte received
                    chunk = resp.read1(CHUNK, decode_content=False)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > cap:
                        del body[cap:]
                        truncated = "length"
                        break
            except urllib3.exceptions.TimeoutError:
                truncated = "time"
            except (urllib3.exceptions.HTTPError, OSError):
                truncated = "disconnect"
            if dog.fired and truncated != "length":
                truncated = "time"  # the deadline shut the socket: a slow drip, not a broken connection
            elif truncated is None and length.isdigit() and len(body) < int(length):
                truncated = "disconnect"  # EOF before Content-Length: the server went away
        resp.close()  # a body read to its end already went back to the pool; a cut one closes its connection
        resp.release_conn()
        return Exchange(url, ip, request, resp.status, response, bytes(body), truncated,
                        _warc_date(resp.headers.get("Date")) or self.clock(), deadline_cut=dog.fired)


def _retry_after(value: str) -> float:
    """Seconds of a Retry-After header in its delay-seconds form (an HTTP-date is read as 0), capped."""
    value = value.strip()
    return min(float(value), MAX_RETRY_WAIT_S) if value.isdigit() else 0.0


def _is_html(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in HTML_TYPES


def _verdict(ex: Exchange, page: bool) -> str:
    if not 200 <= ex.status < 300:
        return f"http_{ex.status}"
    if ex.truncated == "length":
        return "too_large"
    if page and not _is_html(ex.header("Content-Type")):
        return "not_html"
    return "ok"


def _warc_date(http_date: str | None) -> str | None:
    try:
        return email.utils.parsedate_to_datetime(http_date).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, IndexError):
        return None


def _tls_reason(exc: Exception) -> str:
    """The certificate error without addresses or memory: 'certificate verify failed: certificate has expired'."""
    text = str(getattr(exc, "reason", None) or exc)
    mismatch = re.search(r"hostname '[^']*' doesn't match '[^']*'", text)  # urllib3's own host check
    if mismatch:
        return f"certificate verify failed: {mismatch.group()}"
    for marker in ("certificate verify failed", "hostname mismatch", "wrong version number", "handshake failure"):
        if marker in text:
            start = text.index(marker)
            return text[start:].split(" (_ssl.c")[0].rstrip(")'\" ")
    return type(exc).__name__
