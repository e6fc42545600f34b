"""Tests of the scrape stage (pipeline/sources/scrape.py, pipeline/sources/webarchive.py, pipeline/sample/loopback_site.py).

Every fetch goes to a real HTTP server on 127.0.0.1 (sitesrv, or a bare http.server for a body without
Content-Length); private addresses are refused before any socket connects, which an audit hook on
`socket.connect` checks for real. No traffic ever leaves loopback.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
import logging
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from warcio.archiveiterator import ArchiveIterator

from pipeline.core import io, params, records
from pipeline.sample import loopback_site as sitesrv
from pipeline.sources import connections, crawler, deadline, extract, scrape, webarchive
from pipeline.core.report import StageReport

ROOT = Path(__file__).resolve().parents[1]
CFG = dataclasses.replace(crawler.ScrapeConfig(), timeout_s=1.0, max_retries=1, retry_backoff_s=0.01)
ECFG = extract.ExtractConfig()
WORDS = ("the river ran past old mills and quiet farms while the town council argued about bridges taxes "
         "schools roads and the price of bread in a long winter that nobody would forget").split()

# --- socket.connect audit: proves the guard refuses before any connection attempt ---------------------
CONNECTS: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect":
        address = args[1]
        CONNECTS.append(address[0] if isinstance(address, tuple) else str(address))


sys.addaudithook(_audit)


def article(i: int, paras: int = 6) -> str:
    body = "".join(f"<p>{' '.join(WORDS[(i * 7 + j * 3 + k) % len(WORDS)] for k in range(45))}. "
                   f"Paragraph {j} of story {i}.</p>" for j in range(paras))
    return (f"<html><head><title>Story {i}</title></head><body><nav><a href='/'>Home</a> <a href='/about'>About</a>"
            f"</nav><article><h1>Story {i}</h1>{body}</article><footer>Copyright</footer></body></html>")


def make_site(root: Path, slow_delay: float = 3.0) -> tuple[Path, list[str]]:
    """A small sample-like site (every kind of page the sample plants) and its URL list."""
    site = root / "site"
    for host in ("news.sample.test", "blog.sample.test"):
        (site / host).mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (site / "news.sample.test" / f"a{i}.html").write_text(article(i))
    (site / "news.sample.test" / "posts" / "p1").mkdir(parents=True)
    (site / "news.sample.test" / "posts" / "p1" / "index.html").write_text(article(11))
    (site / "blog.sample.test" / "short.html").write_text("<html><body><p>Too short to keep.</p></body></html>")
    (site / "blog.sample.test" / "bad.html").write_bytes(article(9).encode().replace(b"Paragraph 2", b"Para\xff\xfe 2"))
    (site / "blog.sample.test" / "private").mkdir()
    (site / "blog.sample.test" / "private" / "x.html").write_text(article(7))
    (site / "blog.sample.test" / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    routes = {"news.sample.test/slow.html": {"delay_s": slow_delay},
              "news.sample.test/go": {"location": "http://10.0.0.5/secret"},
              "news.sample.test/doc.pdf": {"content_type": "application/pdf"},
              "news.sample.test/huge.html": {"body_bytes": 20_000_000},
              "news.sample.test/hop": {"status": 301, "location": "/a1.html"},
              "news.sample.test/loop": {"location": "/loop"},
              "news.sample.test/a2.html": {"fail_first": 1}}  # one 503, then the page: retried, kept
    (site / "_routes.json").write_text(json.dumps(routes))
    paths = [f"http://news.sample.test/a{i}.html" for i in range(4)] + [
        "http://news.sample.test/posts/p1/", "http://news.sample.test/slow.html", "http://news.sample.test/go",
        "http://news.sample.test/doc.pdf", "http://news.sample.test/huge.html", "http://news.sample.test/missing.html",
        "http://news.sample.test/hop", "http://news.sample.test/loop", "http://blog.sample.test/short.html",
        "http://blog.sample.test/bad.html", "http://blog.sample.test/private/x.html", "http://10.0.0.5/x",
        "http://192.168.1.20/y", "http://169.254.169.254/latest/meta-data/"]
    return site, paths


def write_urls(path: Path, urls: list[str]) -> Path:
    rows = [{"url": u, "post_id": f"p{i}", "score": 3 + i, "subreddit": "news", "created_utc": 1546300800 + i,
             "title": f"t{i}", "domain": "d", "n_posts": 1} for i, u in enumerate(urls)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def site(tmp_path):
    site_dir, urls = make_site(tmp_path)
    with sitesrv.serve(site_dir) as server:
        yield server, crawler.Fetcher(CFG, host_map=server.host_map, clock=server.clock), urls


# --- config ----------------------------------------------------------------------------------------
def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["scrape"]
    assert params.as_dict(crawler.ScrapeConfig()) == section
    assert params.build(crawler.ScrapeConfig, section) == crawler.ScrapeConfig()
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["extract"]
    assert params.as_dict(extract.ExtractConfig()) == section
    assert params.build(extract.ExtractConfig, section) == extract.ExtractConfig()


# --- fetcher against the live loopback site ------------------------------------------------------
def test_robots_disallow_fetches_robots_once_and_never_the_page(site):
    server, fetcher, _ = site
    assert fetcher.fetch("http://blog.sample.test/private/x.html").reason == "robots_disallowed"
    assert fetcher.fetch("http://blog.sample.test/short.html").reason == "ok"
    assert server.hits["blog.sample.test/robots.txt"] == 1
    assert server.hits["blog.sample.test/private/x.html"] == 0


def test_slow_page_times_out_and_timeouts_are_retried(site):
    server, fetcher, _ = site
    out = fetcher.fetch("http://news.sample.test/slow.html")
    assert out.reason == "timeout" and not out.hops and out.date == sitesrv.FIXED_WARC_DATE
    assert out.retries == 1 and server.hits["news.sample.test/slow.html"] == 2


def test_transient_failures_are_retried_with_exponential_backoff(tmp_path, caplog):
    site = tmp_path / "site"
    (site / "flaky.test").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (site / "flaky.test" / f"{name}.html").write_text(article(1))
    (site / "_routes.json").write_text(json.dumps({
        "flaky.test/a.html": {"fail_first": 2}, "flaky.test/b.html": {"fail_first": 2, "fail_with": "reset"},
        "flaky.test/c.html": {"fail_first": 5}, "flaky.test/gone.html": {"status": 410}}))
    cfg = dataclasses.replace(CFG, max_retries=2, retry_backoff_s=0.01, respect_robots=False)
    with sitesrv.serve(site) as server, caplog.at_level(logging.INFO, logger="pipeline.sources.crawler"):
        fetcher = crawler.Fetcher(cfg, host_map=server.host_map, clock=server.clock)
        a, b, c = (fetcher.fetch(f"http://flaky.test/{n}.html") for n in "abc")
        gone = fetcher.fetch("http://flaky.test/gone.html")
        once = crawler.Fetcher(dataclasses.replace(cfg, max_retries=0), host_map=server.host_map).fetch("http://flaky.test/c.html")
    # fails twice, then succeeds: 3 requests, both 503 answers kept as hops (so the WARC archives them)
    assert a.reason == "ok" and [h.status for h in a.hops] == [503, 503, 200] and a.retries == 2
    # resets leave no answer; b's first request goes over the connection a.html left open, so its reset looks like an
    # idle close racing the reuse: sent again at once on a new connection, uncounted (RFC 9112 sec. 9.3.1), then retried
    assert b.reason == "ok" and [h.status for h in b.hops] == [200] and b.retries == 1
    assert c.reason == "http_503" and c.retries == 2 and once.reason == "http_503" and once.retries == 0
    assert gone.reason == "http_410" and gone.retries == 0  # a final status is not retried
    assert server.hits == {"flaky.test/a.html": 3, "flaky.test/b.html": 3, "flaky.test/c.html": 4, "flaky.test/gone.html": 1}
    assert fetcher.retries == 5
    waits = [line.rsplit(" in ", 1)[1] for line in caplog.messages if line.startswith("http://flaky.test/a.html")]
    assert waits == ["0.01 s", "0.02 s"]  # backoff doubles
    kinds, meta = [], ""
    for record in ArchiveIterator(__import__("io").BytesIO(webarchive.entry_bytes(a))):
        kinds.append(record.rec_type)
        meta = record.content_stream().read().decode() if record.rec_type == "metadata" else meta
    assert kinds.count("response") == 3
    assert "retries: 2" in meta and "outcome: ok" in meta


def test_private_addresses_refused_without_connecting(site):
    server, fetcher, _ = site
    CONNECTS.clear()
    for url in ("http://10.0.0.5/x", "http://192.168.1.20/y", "http://169.254.169.254/latest/meta-data/",
                "http://[::1]/z", "http://0.0.0.0/"):
        assert fetcher.fetch(url).reason == "private_address", url
    redirected = fetcher.fetch("http://news.sample.test/go")  # 302 to http://10.0.0.5/secret
    assert redirected.reason == "private_address"
    assert redirected.tried == ["http://news.sample.test/go", "http://10.0.0.5/secret"]
    assert [h.status for h in redirected.hops] == [302]
    assert CONNECTS and set(CONNECTS) == {"127.0.0.1"}  # only the site server itself was ever connected to


def test_http_errors_caps_and_content_types(site):
    _, fetcher, _ = site
    assert fetcher.fetch("http://news.sample.test/missing.html").reason == "http_404"
    huge = fetcher.fetch("http://news.sample.test/huge.html")
    assert huge.reason == "too_large" and len(huge.hops[-1].body) <= CFG.max_bytes
    assert huge.hops[-1].truncated == "length"
    assert fetcher.fetch("http://news.sample.test/doc.pdf").reason == "not_html"
    assert fetcher.fetch("http://news.sample.test/loop").reason == "too_many_redirects"
    hop = fetcher.fetch("http://news.sample.test/hop")
    assert hop.reason == "ok" and [h.status for h in hop.hops] == [301, 200]
    assert fetcher.fetch("http://news.sample.test/posts/p1/").reason == "ok"  # trailing slash -> index.html


def test_streamed_body_without_length_is_capped(tmp_path):
    """A body with no Content-Length is read in chunks and cut at max_bytes."""

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"<p>" + b"x" * 10_000 + b"</p>")
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = dataclasses.replace(CFG, max_bytes=100_000, respect_robots=False)
        fetcher = crawler.Fetcher(cfg, host_map={"stream.test": ("127.0.0.1", server.server_address[1])})
        out = fetcher.fetch("http://stream.test/")
        assert out.reason == "too_large" and len(out.hops[0].body) == 100_000
    finally:
        server.shutdown()
        server.server_close()


# --- the stage: WARC, documents, resume, replay, determinism ----------------------------------------
def run_stage(root: Path, site_dir: Path, urls: Path, limit: int | None = None):
    return scrape.run(CFG, ECFG, urls, root / "out", site=site_dir, limit=limit)


def test_stage_outputs_reasons_and_invalid_utf8(in_tmp_cwd):
    site_dir, urls = make_site(in_tmp_cwd)
    rep = run_stage(in_tmp_cwd, site_dir, write_urls(in_tmp_cwd / "urls.parquet", urls)).to_dict()
    assert rep["dropped"] == {"http_404": 1, "not_html": 1, "private_address": 4, "robots_disallowed": 1,
                              "timeout": 1, "too_large": 1, "too_many_redirects": 1, "too_short": 1}
    assert rep["docs_out"] == 7 and rep["archived"] == len(urls)
    assert rep["retries"] == 2  # a2.html answered 503 once, slow.html timed out once
    assert rep["errors"] == {"decode_replaced": 1}  # bad.html: decoded with replacement, counted, kept
    docs = {d.metadata[records.URL]: d for d in io.iter_docs(in_tmp_cwd / "out")}
    bad = docs["http://blog.sample.test/bad.html"]
    assert "\ufffd" in bad.text and bad.id == records.webtext_id("http://blog.sample.test/bad.html")
    assert bad.metadata[records.REDDIT_SCORE] == 3 + urls.index("http://blog.sample.test/bad.html")
    # the WARC offset and record id of every document point at its response record
    warc = in_tmp_cwd / "out" / bad.metadata[records.WARC_FILE]
    with open(warc, "rb") as fh:
        fh.seek(bad.metadata[records.WARC_OFFSET])
        record = next(iter(ArchiveIterator(fh)))
        assert record.rec_type == "response"
        assert record.rec_headers.get_header("WARC-Record-ID") == bad.metadata[records.WARC_RECORD_ID]
        assert record.rec_headers.get_header("WARC-Target-URI") == "http://blog.sample.test/bad.html"
    log = pq.read_table(in_tmp_cwd / "out" / "fetch_log.parquet").to_pylist()
    assert [r["url"] for r in log] == sorted(urls)
    assert {r["url"]: r["reason"] for r in log}["http://news.sample.test/go"] == "private_address"
    assert (in_tmp_cwd / "out" / "removed" / "too_short").is_dir()


def test_kill_resume_replay_and_determinism(in_tmp_cwd, tmp_path_factory, monkeypatch):
    site_dir, urls = make_site(in_tmp_cwd, slow_delay=0.0)  # no slow page: this test is about the journal
    urls_path = write_urls(in_tmp_cwd / "urls.parquet", urls)
    rows = scrape.load_urls(urls_path, StageReport("scrape"))
    with sitesrv.serve(site_dir) as clean:  # reference: the server hits of one uninterrupted fetch
        scrape.fetch_all(rows, crawler.Fetcher(CFG, host_map=clean.host_map, clock=clean.clock),
                         webarchive.Journal(in_tmp_cwd / "clean.warc.gz"))
    with sitesrv.serve(site_dir) as server:
        fetcher = crawler.Fetcher(CFG, host_map=server.host_map, clock=server.clock)
        journal = webarchive.Journal(in_tmp_cwd / "j.warc.gz")
        assert sum(scrape.fetch_all(rows, fetcher, journal, limit=6).values()) == 6  # the "killed" run
        assert len(webarchive.Journal(journal.path).pages) == 6
        size = journal.path.stat().st_size
        with open(journal.path, "ab") as fh:  # a kill in the middle of an append leaves half a gzip member
            fh.write(webarchive.entry_bytes(crawler.Outcome("http://news.sample.test/a3.html", "page", "ok"))[:57])
        journal = webarchive.Journal(journal.path)  # detected and cut off
        assert journal.path.stat().st_size == size and len(journal.pages) == 6
        fetcher = crawler.Fetcher(CFG, host_map=server.host_map, clock=server.clock)
        assert sum(scrape.fetch_all(rows, fetcher, journal).values()) == len(urls) - 6
        journal.scan()
        # killed + resumed hit the server exactly as often as one clean run: nothing was refetched,
        # not even robots.txt (the resumed run read it back from the journal)
        assert server.hits == clean.hits and server.hits["news.sample.test/robots.txt"] == 1
        resumed = tmp_path_factory.mktemp("resumed") / "w.warc.gz"
        journal.export(resumed, urls)

    # one uninterrupted stage run in another folder gives the same WARC bytes as the killed + resumed one
    rep = run_stage(in_tmp_cwd, site_dir, urls_path).to_dict()
    out = in_tmp_cwd / "out"
    assert sha(out / "warc" / scrape.WARC_NAME) == sha(resumed)
    assert rep["fetched"] == len(urls) and rep["from_journal"] == 0
    # rerun: everything comes from the journal, nothing is refetched, outputs identical
    before = {p.relative_to(out): sha(p) for p in out.rglob("*") if p.is_file()}
    rep2 = run_stage(in_tmp_cwd, site_dir, urls_path).to_dict()
    assert rep2["fetched"] == 0 and rep2["from_journal"] == len(urls) and rep2["http_requests"] == 0
    assert {p.relative_to(out): sha(p) for p in out.rglob("*") if p.is_file()} == before
    # new crawler code: the sample world's journal is not reused (its entries may differ from a fresh clone's)
    edited = in_tmp_cwd / "crawler_edited.py"
    edited.write_text(Path(crawler.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(crawler, "__file__", str(edited))
    rep3 = run_stage(in_tmp_cwd, site_dir, urls_path).to_dict()
    assert rep3["from_journal"] == 0 and rep3["fetched"] == len(urls)
    assert {p.relative_to(out): sha(p) for p in out.rglob("*") if p.is_file()} == before
    # replay from the WARC alone rebuilds the documents byte for byte
    again = in_tmp_cwd / "replayed"
    webarchive.replay(out / "warc" / scrape.WARC_NAME, again, ECFG, logging_dir=in_tmp_cwd / "logs")
    for rel in ["fetch_log.parquet", *[str(p.relative_to(out)) for p in out.rglob("*.jsonl.zst")]]:
        assert sha(again / rel) == sha(out / rel), rel


# --- document filters after extraction: language, boilerplate ratios ----------------------------------
FRENCH = ("le chat de la voisine est dans le jardin et il ne veut pas que les enfants viennent jouer avec lui pour "
          "une heure sur la place du marché mais tout le monde sait qu il est très gentil avec les oiseaux").split()


def test_line_ratios_and_boilerplate_rules():
    text = "A real sentence about the harbour.\nMenu\nMenu\nShare\nAnother full sentence here!\n\n"
    r = extract.line_ratios(text)
    assert (r["duplicate_lines"], r["short_lines"], r["punct_lines"]) == (0.2, 0.6, 0.4)
    off = extract.ExtractConfig()
    assert extract.boilerplate_reason(text, off) is None  # every rule is off by default
    assert extract.boilerplate_reason(text, dataclasses.replace(off, max_duplicate_line_ratio=0.1)) == "too_many_duplicate_lines"
    assert extract.boilerplate_reason(text, dataclasses.replace(off, max_short_line_ratio=0.5)) == "too_many_short_lines"
    assert extract.boilerplate_reason(text, dataclasses.replace(off, min_punct_line_ratio=0.5)) == "too_few_punct_lines"
    assert extract.line_ratios("") == {"duplicate_lines": 0.0, "short_lines": 0.0, "punct_lines": 0.0}


def test_language_and_boilerplate_filters_in_the_stage_and_replay(in_tmp_cwd):
    site = in_tmp_cwd / "site"
    (site / "mix.test").mkdir(parents=True)
    (site / "mix.test" / "en.html").write_text(article(3))
    french = "".join(f"<p>{' '.join(FRENCH[(j * 3 + k) % len(FRENCH)] for k in range(40))}.</p>" for j in range(5))
    (site / "mix.test" / "fr.html").write_text(f"<html><body><article><h1>Histoire</h1>{french}</article></body></html>")
    tags = "".join(f"<p>Tag {k}</p>" for k in range(20))
    (site / "mix.test" / "tags.html").write_text(article(4).replace("</article>", tags + "</article>"))
    urls = write_urls(in_tmp_cwd / "u.parquet", [f"http://mix.test/{n}.html" for n in ("en", "fr", "tags")])
    strict = dataclasses.replace(ECFG, max_short_line_ratio=0.5)
    rep = scrape.run(CFG, strict, urls, in_tmp_cwd / "out", site=site).to_dict()
    assert rep["dropped"] == {"wrong_language": 1, "too_many_short_lines": 1} and rep["docs_out"] == 1
    (doc,) = io.iter_docs(in_tmp_cwd / "out")
    assert doc.metadata[records.URL] == "http://mix.test/en.html" and doc.metadata[records.LANG] == "en"
    (fr,) = io.iter_docs(in_tmp_cwd / "out", "removed/wrong_language")
    assert fr.metadata[records.LANG] == "fr" and fr.metadata[records.FILTER_REASON] == "wrong_language"
    # the same WARC replayed with the default (lenient) filters and no language filter keeps all three pages
    loose = webarchive.replay(in_tmp_cwd / "out" / "warc" / scrape.WARC_NAME, in_tmp_cwd / "loose",
                              dataclasses.replace(ECFG, languages=()), logging_dir=in_tmp_cwd / "logs")
    assert [r["reason"] for r in loose["rows"]] == ["ok", "ok", "ok"]


# --- real data: extraction quality on real article pages served over loopback -------------------------
def test_real_article_pages_extract_well(in_tmp_cwd, shared_data):
    bench = shared_data / "web" / "article-extraction-benchmark"
    truth = json.loads((bench / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(truth)[::15][:12]
    site = in_tmp_cwd / "site"
    (site / "bench.test").mkdir(parents=True)
    for page_id in ids:
        (site / "bench.test" / f"{page_id}.html").write_bytes(gzip.decompress((bench / "html" / f"{page_id}.html.gz").read_bytes()))
    urls = [f"http://bench.test/{page_id}.html" for page_id in ids]
    rep = scrape.run(CFG, dataclasses.replace(ECFG, min_words=1), write_urls(in_tmp_cwd / "u.parquet", urls),
                     in_tmp_cwd / "out", site=site).to_dict()
    docs = {d.metadata[records.URL]: d.text for d in io.iter_docs(in_tmp_cwd / "out")}
    recalls = []
    for page_id, url in zip(ids, urls):
        want = Counter(truth[page_id]["articleBody"].lower().split())
        got = Counter(docs.get(url, "").lower().split())
        recalls.append(sum((want & got).values()) / max(1, sum(want.values())))
    assert rep["archived"] == len(ids)
    assert sum(recalls) / len(recalls) > 0.8, recalls  # measured: 0.988 on these 12 pages


def test_page_mirror_is_archived_under_its_urls_and_replays(in_tmp_cwd, shared_data):
    """pages mode (the real-mini profile's WebText): real pages archived under their own URLs with no network,
    a page without HTML counted, the WARC replayable, and a second run byte-identical."""
    bench = shared_data / "web" / "article-extraction-benchmark"
    truth = json.loads((bench / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(truth)[::20][:8]
    pages = in_tmp_cwd / "pages"
    (pages / "html").mkdir(parents=True)
    for page_id in ids[:-1]:  # the last one has no HTML in the mirror
        shutil.copy(bench / "html" / f"{page_id}.html.gz", pages / "html")
    index = {page_id: truth[page_id] for page_id in ids}
    index["broken"] = {"url": "ftp://nope"}
    (pages / "pages.json").write_text(json.dumps(index))
    reps = []
    for out in ("a", "b"):
        shutil.rmtree(in_tmp_cwd / "data" / "resume", ignore_errors=True)
        reps.append(scrape.run(CFG, ECFG, None, in_tmp_cwd / out, pages=pages).to_dict())
    rep = reps[0]
    assert rep["mode"] == "pages" and rep["http_requests"] == 0 and rep["urls_in"] == len(ids)
    assert rep["errors"] == {"bad_url": 1} and rep["dropped"].get("not_found") == 1
    docs = {d.metadata[records.URL]: d for d in io.iter_docs(in_tmp_cwd / "a")}
    assert set(docs) <= {truth[i]["url"] for i in ids[:-1]} and len(docs) >= 5
    assert all(d.id == records.webtext_id(url) for url, d in docs.items())
    warc = in_tmp_cwd / "a" / "warc" / scrape.WARC_NAME
    assert sha(warc) == sha(in_tmp_cwd / "b" / "warc" / scrape.WARC_NAME)
    webarchive.replay(warc, in_tmp_cwd / "replayed", ECFG, logging_dir=in_tmp_cwd / "logs")
    assert {d.metadata[records.URL] for d in io.iter_docs(in_tmp_cwd / "replayed")} == set(docs)


def test_a_dripping_server_is_cut_at_the_deadline_not_held_for_its_drip(tmp_path):
    """One byte every 0.2 s never trips the 1 s socket timeout; the 1.5 s whole-exchange deadline cuts it, keeps the
    bytes received, does not retry it (scrape.retry_deadline: false), and other pages of the host go on."""
    site = tmp_path / "site"
    (site / "drip.test").mkdir(parents=True)
    (site / "drip.test" / "slow.html").write_text(article(1))  # ~2,000 bytes: 400 s at this drip rate
    (site / "drip.test" / "ok.html").write_text(article(2))
    (site / "_routes.json").write_text(json.dumps({"drip.test/slow.html": {"drip_s": 0.2}}))
    cfg = dataclasses.replace(CFG, timeout_s=1.0, deadline_s=1.5, max_retries=2, respect_robots=False)
    with sitesrv.serve(site) as server:
        fetcher = crawler.Fetcher(cfg, host_map={"drip.test": ("127.0.0.1", server.port)})
        t0 = time.monotonic()
        slow = fetcher.fetch("http://drip.test/slow.html")
        took = time.monotonic() - t0
        ok = fetcher.fetch("http://drip.test/ok.html")
        retried = crawler.Fetcher(dataclasses.replace(cfg, retry_deadline=True, retry_backoff_s=0.01),
                                  host_map={"drip.test": ("127.0.0.1", server.port)}).fetch("http://drip.test/slow.html")
    assert slow.reason == "timeout" and slow.retries == 0 and took < 3.0, (slow.reason, slow.retries, took)
    hop = slow.hops[-1]
    assert hop.truncated == "time" and hop.deadline_cut and 0 < len(hop.body) < len(article(1))
    assert server.hits["drip.test/slow.html"] == 1 + 3  # once here, three times with retry_deadline (1 + 2 retries)
    assert retried.reason == "timeout" and retried.retries == 2
    assert ok.reason == "ok"


def test_config_has_the_deadline_knobs():
    assert {"deadline_s", "retry_deadline"} <= set(params.as_dict(crawler.ScrapeConfig()))


def test_overlong_urls_in_the_table_are_counted_not_fetched(tmp_path):
    rep = StageReport("scrape")
    urls = write_urls(tmp_path / "u.parquet", ["http://a.test/" + "x" * 3000, "http://a.test/ok"])
    assert [r["url"] for r in scrape.load_urls(urls, rep)] == ["http://a.test/ok"]
    assert rep.errors == {"url_too_long": 1}


# --- kept-alive connections and the one deadline thread ----------------------------------------------
def _pages_site(root: Path, hosts: list[str], pages: int, routes: dict | None = None) -> Path:
    site = root / "site"
    for h in hosts:
        (site / h).mkdir(parents=True)
        for i in range(pages):
            (site / h / f"p{i}.html").write_text(article(i))
        (site / h / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    (site / "_routes.json").write_text(json.dumps(routes or {}))
    return site


def test_a_host_s_pages_share_one_kept_alive_connection(tmp_path):
    """Three pages and the robots.txt of each of two hosts: two TCP connections, not eight; the WARC's request
    records no longer ask the server to close."""
    site = _pages_site(tmp_path, ["a.test", "b.test"], 3)
    with sitesrv.serve(site) as server, crawler.Fetcher(CFG, host_map=server.host_map) as fetcher:
        outs = [fetcher.fetch(f"http://{h}/p{i}.html") for i in range(3) for h in ("a.test", "b.test")]
        connections = server.connections
    assert [o.reason for o in outs] == ["ok"] * 6 and fetcher.network_fetches == 8
    assert connections == 2
    assert all(o.hops[0].request.get_header("Connection") is None for o in outs)


def test_least_recently_used_hosts_give_their_connection_back(tmp_path, monkeypatch):
    """Past MAX_OPEN_HOSTS, the host used longest ago is closed: a crawl of millions of hosts holds a bounded
    number of sockets, and a host seen again simply connects again."""
    monkeypatch.setattr(connections, "MAX_OPEN_HOSTS", 2)
    hosts = ["a.test", "b.test", "c.test"]
    site = _pages_site(tmp_path, hosts, 2)
    cfg = dataclasses.replace(CFG, respect_robots=False)
    with sitesrv.serve(site) as server, crawler.Fetcher(cfg, host_map=server.host_map) as fetcher:
        outs = [fetcher.fetch(f"http://{h}/p{i}.html") for i in range(2) for h in hosts]
        open_pools, opened = len(fetcher.pools), server.connections
    assert [o.reason for o in outs] == ["ok"] * 6
    assert open_pools == 2 and opened == 6  # a, b, c, then a again after it was closed, and so on


def test_the_deadline_cuts_a_drip_on_a_kept_alive_connection(tmp_path):
    """The dripping answer comes over the connection an earlier page left open: the Watchdog must cut that
    socket too (it is handed out by the pool, not connected for this exchange)."""
    site = _pages_site(tmp_path, ["drip.test"], 2, routes={"drip.test/slow.html": {"drip_s": 0.2}})
    (site / "drip.test" / "slow.html").write_text("<html><body>drip drip</body></html>")  # uncut: 7 s
    cfg = dataclasses.replace(CFG, timeout_s=1.0, deadline_s=1.0, max_retries=0, respect_robots=False)
    with sitesrv.serve(site) as server, crawler.Fetcher(cfg, host_map=server.host_map) as fetcher:
        first = fetcher.fetch("http://drip.test/p0.html")
        t0 = time.monotonic()
        slow = fetcher.fetch("http://drip.test/slow.html")
        took = time.monotonic() - t0
        reused = server.connections
        after = fetcher.fetch("http://drip.test/p1.html")
        connections = server.connections
    assert first.reason == "ok" and reused == 1, reused
    assert slow.reason == "timeout" and slow.hops[-1].deadline_cut and took < 2.5, (slow.reason, took)
    assert after.reason == "ok" and connections == 2  # the cut connection is not reused


def test_a_watchdog_fires_at_its_deadline_and_never_after_its_exchange_ended():
    """A kept-alive socket outlives its exchange; a Watchdog that ended must never shut it down later."""
    ended_a, ended_b = socket.socketpair()
    with deadline.Watchdog(0.1) as dog:
        dog.add_socket(ended_a)
    assert dog.socks == []  # the alarm holds the Watchdog until its deadline, but not its sockets
    time.sleep(0.3)
    ended_a.sendall(b"x")
    assert ended_b.recv(1) == b"x" and not dog.fired

    cut_a, cut_b = socket.socketpair()
    with deadline.Watchdog(0.1) as dog:
        dog.add_socket(cut_a)
        cut_a.settimeout(2.0)
        t0 = time.monotonic()
        assert cut_a.recv(1) == b""  # a blocked read ends at the deadline, not at the socket timeout
        took = time.monotonic() - t0
    assert dog.fired and 0.05 < took < 1.5, took
    for s in (ended_a, ended_b, cut_a, cut_b):
        s.close()


def test_one_thread_keeps_every_exchange_s_deadline():
    """Fifty exchanges in flight: one alarm thread, not a timer thread each."""
    before = threading.active_count()
    dogs = [deadline.Watchdog(30).__enter__() for _ in range(50)]
    names = [t.name for t in threading.enumerate()]
    for dog in dogs:
        dog.__exit__(None, None, None)
    assert names.count("exchange-deadlines") == 1 and threading.active_count() <= before + 1


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(tmp_path, monkeypatch):
    """Servers close idle kept-alive connections (Apache after 5 s); the next page of the host must connect
    again and succeed, with no retry and no error."""
    monkeypatch.setattr(sitesrv._Handler, "timeout", 0.2)
    site = _pages_site(tmp_path, ["idle.test"], 2)
    cfg = dataclasses.replace(CFG, max_retries=0, respect_robots=False)
    with sitesrv.serve(site) as server, crawler.Fetcher(cfg, host_map=server.host_map) as fetcher:
        first = fetcher.fetch("http://idle.test/p0.html")
        time.sleep(0.6)  # the server has closed the connection by now
        second = fetcher.fetch("http://idle.test/p1.html")
        connections = server.connections
    assert first.reason == "ok" and second.reason == "ok" and second.retries == 0 and fetcher.retries == 0
    assert connections == 2


def test_a_kept_alive_connection_closed_as_it_is_reused_is_sent_again_on_a_new_one():
    """A server's idle timeout can close a connection just as the next request goes out on it: no answer comes
    back. The GET goes once more on a new connection (RFC 9112 sec. 9.3.1), with no retry counted and no page
    lost, even with max_retries 0; a failure on a new connection is not sent twice."""
    accepted: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def read_request(conn) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            data += chunk
        return True

    def serve() -> None:
        for n in range(3):
            conn, _ = listener.accept()
            accepted.append(n)
            with conn:
                for request in range(2 if n == 0 else 1):
                    if not read_request(conn):
                        break
                    if n == 0 and request == 1 or n == 2:  # the idle close racing the reuse; then a broken host
                        break
                    body = article(request + n).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    cfg = dataclasses.replace(CFG, max_retries=0, respect_robots=False)
    with crawler.Fetcher(cfg, host_map={".test": ("127.0.0.1", port)}) as fetcher:
        first = fetcher.fetch("http://race.test/p0.html")
        second = fetcher.fetch("http://race.test/p1.html")
        requests = fetcher.network_fetches
        fetcher.close()  # the next exchange starts on a new connection, which the server drops unanswered
        third = fetcher.fetch("http://race.test/p2.html")
    listener.close()
    assert first.reason == "ok" and second.reason == "ok" and second.retries == 0 and fetcher.retries == 0
    assert requests == 3 and accepted == [0, 1, 2]
    assert third.reason == "connection_error" and fetcher.network_fetches == 4


# --- robots.txt Crawl-delay ------------------------------------------------------------------------------
def test_a_crawl_delay_spaces_the_host_s_requests_and_fractions_round_up(tmp_path):
    """`Crawl-delay: 0.4` (which Python's parser alone would drop) spaces every request to its host by 1 s, from the
    server's own clock; a host without one is not slowed; ignoring robots.txt ignores it too."""
    site = _pages_site(tmp_path, ["slow.test", "fast.test"], 3)
    (site / "slow.test" / "robots.txt").write_text("User-agent: *\nCrawl-delay: 0.4\nDisallow: /private/\n")

    with sitesrv.serve(site) as server, crawler.Fetcher(CFG, host_map=server.host_map) as fetcher:
        outs = [fetcher.fetch(f"http://{h}/p{i}.html") for h in ("fast.test", "slow.test") for i in range(3)]
        slow, fast = server.gaps("slow.test"), server.gaps("fast.test")
        asked = fetcher.asked_delay("http://slow.test/p0.html")
    assert [o.reason for o in outs] == ["ok"] * 6 and asked == 1.0
    assert len(slow) == 3 and min(slow[1:]) >= 1.0, slow  # robots.txt, then three pages a second apart
    assert max(fast) < 0.5, fast
    ignoring = dataclasses.replace(CFG, respect_robots=False)
    with sitesrv.serve(site) as server, crawler.Fetcher(ignoring, host_map=server.host_map) as fetcher:
        [fetcher.fetch(f"http://slow.test/p{i}.html") for i in range(3)]
        assert max(server.gaps("slow.test")) < 0.5


def test_a_crawl_delay_over_the_cap_leaves_the_host_uncrawled_with_the_reason(tmp_path):
    """Honoured in full or not at all: a site asking more between requests than scrape.max_crawl_delay_s (2 s against
    a 1 s cap here; an hour, in the wild) is not fetched faster than it asked: it is dropped as crawl_delay_too_long,
    with the delay it asked in the fetch log's detail."""
    site = _pages_site(tmp_path, ["hour.test"], 2)
    (site / "hour.test" / "robots.txt").write_text("User-agent: *\nCrawl-delay: 2\n")
    capped = dataclasses.replace(CFG, max_crawl_delay_s=1.0)
    with sitesrv.serve(site) as server, crawler.Fetcher(capped, host_map=server.host_map) as fetcher:
        outs = [fetcher.fetch(f"http://hour.test/p{i}.html") for i in range(2)]
        hits = dict(server.hits)
    assert [o.reason for o in outs] == ["crawl_delay_too_long"] * 2
    assert "2 s" in outs[0].detail and hits == {"hour.test/robots.txt": 1}


def test_config_has_the_crawl_delay_cap():
    assert params.as_dict(crawler.ScrapeConfig())["max_crawl_delay_s"] == 30.0
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["scrape"]["max_crawl_delay_s"] == 30.0
