"""GPT-2 WebText scraping: fetch the Reddit-linked URLs, archive every exchange to WARC, extract the text.

Radford et al. 2019 (GPT-2, sec. 2.2): WebText is the text of the pages linked from Reddit posts with at
least 3 karma, extracted with Dragnet/Newspaper (here trafilatura, pipeline/sources/extract.py). The live run is
two halves with a WARC between them, as Common Crawl and OpenWebText2 work:
  1. fetch (this module): every URL -> an append-only journal WARC in data/resume/scrape/<fingerprint>/
     (the resume state), then the published warc/webtext-00000.warc.gz, entries sorted by URL;
  2. replay (pipeline/sources/webarchive.py): that WARC alone -> documents, so a live run's documents can be
     rebuilt byte for byte with no network.

Fetching (crawler.py) is polite and safe: robots.txt, per-host gaps, whole-request timeouts, body caps,
retries with backoff, and a private-address guard before every hop.
"""
from __future__ import annotations

import gzip
import logging
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from tqdm import tqdm
from warcio.statusandheaders import StatusAndHeaders

from pipeline.core import io, params, records, truth
from pipeline.core.report import StageReport
from pipeline.sources import connections, crawler, deadline, extract, robots, webarchive
from pipeline.sources.crawler import Exchange, Fetcher, Outcome, ScrapeConfig
from pipeline.sources.webarchive import Journal, entry_bytes, replay

log = logging.getLogger(__name__)

WARC_NAME = "webtext-00000.warc.gz"
JOURNAL = "journal.warc.gz"


# --- fetch all URLs into the journal -----------------------------------------------------------
def load_urls(path: str | Path, report: StageReport) -> list[dict]:
    """Rows of the reddit_urls table (url, post_id, score, subreddit); bad or repeated URLs are counted, not fatal."""
    import pyarrow.parquet as pq

    rows, seen = [], set()
    for row in pq.read_table(path).to_pylist():
        url = row.get("url")
        problem = _url_problem(url)
        if problem:
            log.warning("url table row %r skipped: %s", row.get("post_id"), problem)
            report.error(problem)
            continue
        if url in seen:
            log.warning("url %s appears twice in the url table; the first row is kept", url)
            report.error("duplicate_url")
            continue
        seen.add(url)
        rows.append(row)
    return rows


def _url_problem(url) -> str | None:
    """bad_url (not an http(s) URL with a host) or url_too_long (records.MAX_URL_CHARS), else None."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return "bad_url"
    return "url_too_long" if len(url) > records.MAX_URL_CHARS else None


def _reddit_fields(row: dict) -> dict[str, str]:
    return {"reddit-post-id": str(row.get("post_id") or ""), "reddit-score": str(row.get("score") or 0),
            "subreddit": str(row.get("subreddit") or "")}


def fetch_all(rows: list[dict], fetcher: Fetcher, journal: Journal, limit: int | None = None) -> Counter:
    """Fetch every row's URL not already in the journal, appending one entry per URL as it finishes.

    Hosts are interleaved in the queue so the threads spread over hosts instead of queueing on one.

    Args:
        rows: url table rows (url, post_id, score, subreddit).
        fetcher: the Fetcher; robots.txt answers already in the journal are loaded into it.
        journal: the resume journal.
        limit: stop after that many URLs (tests use it to stand for a killed run).

    Returns:
        This run's fetch verdicts per reason ("ok" included).
    """
    for key, (reason, status, body) in journal.robots_answers().items():
        fetcher.robots[key] = robots.robots_rules(reason, status, body)
    fetcher.on_robots = lambda outcome: journal.append(entry_bytes(outcome))
    by_host: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["url"]):
        if row["url"] not in journal.pages:
            by_host.setdefault(urlsplit(row["url"]).hostname or "", []).append(row)
    queue = [row for group in _zip_longest(*by_host.values()) for row in group]
    queue = queue[:limit] if limit is not None else queue

    def one(row: dict) -> str:
        try:
            outcome = fetcher.fetch(row["url"])
        except Exception:  # a bug or an exotic failure must not lose the other URLs
            log.exception("fetching %s failed unexpectedly", row["url"])
            outcome = Outcome(row["url"], "page", "fetch_error", date=fetcher.clock())
        if outcome.reason != "ok":
            log.info("%s: %s", row["url"], outcome.reason)
        journal.append(entry_bytes(outcome, _reddit_fields(row)))
        return outcome.reason

    verdicts: Counter = Counter()
    with ThreadPoolExecutor(max(1, fetcher.cfg.concurrency)) as pool:
        futures = [pool.submit(one, row) for row in queue]
        for future in tqdm(as_completed(futures), total=len(futures), desc="scrape", unit="url", disable=not futures):
            verdicts[future.result()] += 1
    return verdicts


PAGES_INDEX = "pages.json"
PAGES_DATE = "2019-11-19T00:00:00Z"  # a page mirror has no fetch time; a fixed one keeps the WARC byte-identical


def page_mirror_rows(pages: str | Path, report: StageReport) -> list[dict]:
    """URL rows of a page mirror: `pages.json` maps a page name to {"url": ...} (the article-extraction
    benchmark's ground-truth.json has that shape); its HTML is html/<name>.html or html/<name>.html.gz."""
    index = io.read_json(Path(pages) / PAGES_INDEX)
    rows = []
    for name in sorted(index):
        url = index[name].get("url") if isinstance(index[name], dict) else None
        problem = _url_problem(url)
        if problem:
            log.warning("page mirror entry %s skipped: %s", name, problem)
            report.error(problem)
            continue
        rows.append({"url": url, "page": name, "post_id": "", "score": 0, "subreddit": ""})
    return rows


def archive_pages(rows: list[dict], pages: str | Path, journal: Journal) -> Counter:
    """Page mirror -> journal entries, each as if its URL had answered 200 with the mirrored HTML.

    For corpora someone already crawled (the 181 real pages of the real-mini profile, an OpenWebText
    HTML dump): extraction, filters, WARC and replay then run exactly as after a live fetch."""
    verdicts: Counter = Counter()
    html_dir = Path(pages) / "html"
    for row in rows:
        if row["url"] in journal.pages:
            continue
        candidates = (html_dir / f"{row['page']}.html", html_dir / f"{row['page']}.html.gz")
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            log.warning("page mirror has no HTML for %s (%s)", row["page"], row["url"])
            outcome = Outcome(row["url"], "page", "not_found", tried=[row["url"]], date=PAGES_DATE)
        else:
            raw = path.read_bytes()
            body = gzip.decompress(raw) if path.suffix == ".gz" else raw
            request = StatusAndHeaders(f"GET {urlsplit(row['url']).path or '/'} HTTP/1.1",
                                       [("Host", urlsplit(row["url"]).netloc)], is_http_request=True)
            response = StatusAndHeaders("200 OK", [("Content-Type", "text/html"),
                                                   ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            hop = Exchange(row["url"], "", request, 200, response, body, None, PAGES_DATE)
            outcome = Outcome(row["url"], "page", "ok", hops=[hop], tried=[row["url"]], date=PAGES_DATE)
        journal.append(entry_bytes(outcome, _reddit_fields(row)))
        verdicts[outcome.reason] += 1
    return verdicts


def _zip_longest(*groups: list) -> Iterator[list]:
    for i in range(max((len(g) for g in groups), default=0)):
        yield [g[i] for g in groups if i < len(g)]


# --- the stage ------------------------------------------------------------------------------------
def run(cfg: ScrapeConfig, ecfg: extract.ExtractConfig, urls: str | Path | None, out: str | Path,
        site: str | Path | None = None, truth_path: str | Path | None = None, limit: int | None = None,
        pages: str | Path | None = None) -> StageReport:
    """The scrape stage: URL table -> journal WARC (resumable) -> sorted WARC -> documents, published to `out`.

    Args:
        cfg: scrape params; ecfg: extract params (trafilatura, min_words).
        urls: urls.parquet of the reddit_urls stage.
        out: output folder (docs/, removed/<reason>/, warc/, fetch_log.parquet, _manifest.json).
        site: sample mode: serve this site folder on loopback (sitesrv) and resolve every .test host to it.
        pages: page-mirror mode (instead of `urls`): archive the pages of this folder (page_mirror_rows)
            under their URLs, with no network.
        truth_path: the sample's truth.json; adds precision/recall of the drops to the report.
        limit: fetch at most this many new URLs (stands for a killed run in tests).

    Returns:
        The StageReport (not yet written).
    """
    from pipeline.sample import loopback_site as sitesrv

    report, out = StageReport("scrape"), Path(out)
    source = Path(pages) if pages else Path(urls)
    rows = page_mirror_rows(source, report) if pages else load_urls(source, report)
    report.docs_in = len(rows)
    # the journal is only valid for one world: the live web, one version of the sample site, or one page mirror
    world = [site] if site else [pages] if pages else []
    # A fixed world (the sample site, a page mirror) also starts clean when the code that writes the journal
    # changes, so a resumed run and a fresh clone publish the same bytes. A live crawl keeps its journal across
    # code versions: it holds days of polite fetching, and its entries are valid WARC whatever wrote them.
    writers = [__file__, crawler.__file__, connections.__file__, deadline.__file__, robots.__file__,
               webarchive.__file__, *([sitesrv.__file__] if site else [])]
    code = writers if world else []
    work = io.work_dir("scrape", io.run_fingerprint(cfg, inputs=world, code=code))
    journal = Journal(work / JOURNAL)
    before = sum(row["url"] in journal.pages for row in rows)
    fetcher = None
    if pages:
        verdicts = archive_pages(rows, pages, journal)
    else:
        with sitesrv.serve(site) if site else nullcontext() as server:
            with Fetcher(cfg, host_map=server.host_map if server else None,
                         clock=server.clock if server else None) as fetcher:
                verdicts = fetch_all(rows, fetcher, journal, limit=limit)
    journal.scan()

    stage = work / "out"
    shutil.rmtree(stage, ignore_errors=True)
    archived = journal.export(stage / "warc" / WARC_NAME, [r["url"] for r in rows])
    result = replay(stage / "warc" / WARC_NAME, stage, ecfg, logging_dir=work / "replay")
    # The served site is recorded by its own files: the manifest above it (the whole sample's) changes with
    # every sample knob, which DVC rightly does not rerun scrape for, so it must not reach these bytes either.
    served = {"site_files": io.run_fingerprint(inputs=[site])} if site else {}
    io.write_manifest(stage, "scrape", {"scrape": params.as_dict(cfg), "extract": params.as_dict(ecfg), **served},
                      inputs={"pages" if pages else "urls": source if pages else source.parent})
    io.publish(stage, out)

    reasons = {r["url"]: r["reason"] for r in result["rows"]}
    kept = [u for u, r in reasons.items() if r == "ok"]
    for row in rows:
        reason = reasons.get(row["url"], "not_fetched")  # not_fetched: a run cut short by `limit`
        if reason != "ok":
            report.drop(reason)
    report.docs_out = len(kept)
    report.bytes_in = sum(r["bytes"] for r in result["rows"])
    report.bytes_out = sum(len(d.text.encode()) for d in io.iter_docs(out))
    if result["stats"].get("decode_replaced"):
        report.error("decode_replaced", result["stats"]["decode_replaced"])
    report.extra.update({
        "urls_in": len(rows), "fetched": sum(verdicts.values()), "from_journal": before,
        "http_requests": fetcher.network_fetches if fetcher else 0, "retries": fetcher.retries if fetcher else 0,
        "mode": "pages" if pages else "site" if site else "live",
        "archived": archived, "warc_bytes": (out / "warc" / WARC_NAME).stat().st_size})
    dropped_keys = [r["url"] for r in rows if reasons.get(r["url"], "not_fetched") != "ok"]
    score = truth.score_drops(truth.load(truth_path), "scrape", dropped_keys, kept)
    if score is not None:
        report.extra["truth"] = score
    return report
