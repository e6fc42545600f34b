"""The https path of the crawler against a real TLS server on loopback, with certificates from a test CA
(trustme): the fetcher connects to the vetted IP but still sends SNI and checks the certificate against the
URL's host. A valid certificate is fetched; another host's, an expired and a self-signed one are refused as
tls_error, and a robots.txt that fails that way blocks its pages as robots_unreachable with the cause kept."""
from __future__ import annotations

import dataclasses
import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.sources import crawler

trustme = pytest.importorskip("trustme", reason="trustme (in requirements.lock) makes the test certificates")
PAGE = b"<html><body><article><p>Served over TLS.</p></article></body></html>"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/robots.txt":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)


class TLSServer:
    """An HTTPS server on 127.0.0.1 presenting `cert` (a trustme LeafCert)."""

    def __init__(self, cert, handler=Handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.httpd.server_address[1]

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    authority = trustme.CA()
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return authority, str(pem)


def fetch(cert, bundle: str, robots: bool = False) -> crawler.Outcome:
    cfg = dataclasses.replace(crawler.ScrapeConfig(), ca_bundle=bundle, respect_robots=robots, max_retries=0,
                              timeout_s=2.0, deadline_s=5.0)
    with TLSServer(cert) as port:
        return crawler.Fetcher(cfg, host_map={"tls.test": ("127.0.0.1", port)}).fetch("https://tls.test/page.html")


def test_a_valid_certificate_for_the_host_is_fetched(ca):
    authority, bundle = ca
    out = fetch(authority.issue_cert("tls.test"), bundle, robots=True)  # robots.txt 404: allowed
    assert out.reason == "ok" and out.hops[-1].body == PAGE


def test_another_hosts_certificate_is_refused(ca):
    authority, bundle = ca
    out = fetch(authority.issue_cert("other.test"), bundle)
    assert out.reason == "tls_error" and "certificate verify failed" in out.detail and not out.hops


def test_an_expired_certificate_is_refused(ca):
    authority, bundle = ca
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    out = fetch(authority.issue_cert("tls.test", not_before=past, not_after=past + datetime.timedelta(days=1)), bundle)
    assert out.reason == "tls_error" and "expired" in out.detail


def test_a_self_signed_certificate_is_refused(ca):
    _, bundle = ca
    stranger = trustme.CA().issue_cert("tls.test")  # signed by a CA nobody trusts
    out = fetch(stranger, bundle)
    assert out.reason == "tls_error" and "certificate verify failed" in out.detail


def test_certifi_alone_does_not_trust_a_private_ca(ca):
    authority, _ = ca
    assert fetch(authority.issue_cert("tls.test"), "").reason == "tls_error"  # ca_bundle "" = certifi's bundle


def test_robots_txt_behind_a_bad_certificate_blocks_with_its_cause(ca):
    authority, bundle = ca
    out = fetch(authority.issue_cert("other.test"), bundle, robots=True)
    assert out.reason == "robots_unreachable" and "tls_error" in out.detail


class KeepAliveHandler(Handler):
    protocol_version = "HTTP/1.1"  # BaseHTTPRequestHandler's HTTP/1.0 closes after each answer


def test_a_host_s_https_pages_share_one_tls_connection(ca):
    """robots.txt and three pages over one kept-alive TLS connection: one handshake, not four, and the reused
    connection still belongs to the certificate checked for the URL's host."""
    authority, bundle = ca
    cfg = dataclasses.replace(crawler.ScrapeConfig(), ca_bundle=bundle, max_retries=0, timeout_s=2.0, deadline_s=5.0)
    server, accepted = TLSServer(authority.issue_cert("tls.test"), handler=KeepAliveHandler), []
    process = server.httpd.process_request
    server.httpd.process_request = lambda request, address: (accepted.append(address), process(request, address))
    with server as port, crawler.Fetcher(cfg, host_map={"tls.test": ("127.0.0.1", port)}) as fetcher:
        outs = [fetcher.fetch(f"https://tls.test/p{i}.html") for i in range(3)]
    assert [o.reason for o in outs] == ["ok"] * 3 and all(o.hops[-1].body == PAGE for o in outs)
    assert fetcher.network_fetches == 4 and len(accepted) == 1
