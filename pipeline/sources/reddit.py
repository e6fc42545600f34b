"""Reddit outbound links: the URL list behind WebText (GPT-2, Radford et al. 2019).

GPT-2 scraped "all outbound links from Reddit which received at least 3 karma", de-duplicated,
with Wikipedia removed, and no link created after December 2017. We read Pushshift submission
dumps (one JSON object per line; .jsonl, .zst as the real monthly dumps, .gz) matching a glob, in
a stream, or the live API through praw, and filter: posts outside the date range (a monthly file
wholly outside it is not even opened), self posts, NSFW, blocked domains (and their subdomains),
domains outside the allow list when one is given, non-http(s) URLs, score below `min_score` per
post (WebText) or summed over the posts of a URL (OpenWebText2). URLs are
normalised (lower-case scheme and host, no fragment, no utm_*/fbclid/gclid, no default port)
and de-duplicated, keeping the highest-scored post (tie: earliest created_utc, then smallest id).

Output folder: urls.parquet (url, post_id, score, subreddit, created_utc, title, domain, n_posts;
sorted by url), removed.parquet (url, post_id, reason; one row per dropped post, streamed in
file order), _manifest.json. Memory: dump lines are streamed by pipeline/sources/pushshift.py (a line longer
than its MAX_LINE_BYTES is skipped without being held), the removed table is written in batches;
only the per-URL table of kept links is held, which is what de-duplication needs.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import io, params, records, report, truth
from pipeline.sources.pushshift import _Errors, dump_files, file_in_window, iter_dump_submissions, parse_submission

log = logging.getLogger(__name__)

STAGE = "reddit_urls"
TRACKING_PARAMS = ("fbclid", "gclid")
DEFAULT_PORTS = {"http": 80, "https": 443}

URL_COLUMNS = pa.schema([
    ("url", pa.string()), ("post_id", pa.string()), ("score", pa.int64()), ("subreddit", pa.string()),
    ("created_utc", pa.int64()), ("title", pa.string()), ("domain", pa.string()), ("n_posts", pa.int64()),
])
REMOVED_COLUMNS = pa.schema([("url", pa.string()), ("post_id", pa.string()), ("reason", pa.string())])
SCORE_BUCKETS = (("<0", None, 0), ("0", 0, 1), ("1", 1, 2), ("2", 2, 3), ("3-9", 3, 10), ("10-99", 10, 100),
                 ("100-999", 100, 1000), ("1000+", 1000, None))


@dataclass(frozen=True)
class RedditConfig:
    source: str = "pushshift"      # pushshift (dump files) | praw (live API; credentials from env PRAW_*)
    min_score: int = 3             # GPT-2 WebText: at least 3 karma
    score_rule: str = "per_post"   # per_post (WebText) | summed (OpenWebText2)
    exclude_self_posts: bool = True
    exclude_nsfw: bool = True
    block_domains: tuple[str, ...] = ("reddit.com", "redd.it", "imgur.com", "i.imgur.com", "youtube.com",
                                      "youtu.be", "wikipedia.org")
    allow_domains: tuple[str, ...] = ()  # non-empty: only links to these domains (and subdomains) are kept
    max_url_chars: int = records.MAX_URL_CHARS  # longer URLs are dropped as url_too_long
    dump_glob: str = "**/*"        # which files under --in are dumps, e.g. "RS_2017-*.zst" (monthly Pushshift files)
    date_from: str = ""            # UTC date (YYYY-MM[-DD]) a post must be created at or after; "" = no bound
    date_to: str = ""              # UTC date a post must be created before; "" = no bound (GPT-2: 2018-01-01)
    praw_subreddits: tuple[str, ...] = ("all",)
    praw_listings: tuple[str, ...] = ("new", "top")
    praw_time_filter: str = "all"  # window of the `top` listing: hour, day, week, month, year, all
    praw_limit: int = 1000


# --- URLs ----------------------------------------------------------------------------------------
def normalize_url(url: str) -> str | None:
    """The dedup key of a URL: lower-case scheme and host, no fragment, no utm_*/fbclid/gclid query
    params (the others kept in order, bytes untouched), default port dropped, user:password@ dropped
    (credentials are no part of a page's identity and must not be stored). None if unparseable.

    >>> normalize_url("HTTP://News.Example.COM:80/a?utm_source=x&id=2#top")
    'http://news.example.com/a?id=2'
    """
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if not scheme or not host:
        return None
    netloc = host if ":" not in host else f"[{host}]"  # IPv6 literal
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    kept = [p for p in parts.query.split("&") if p and not _is_tracking(p.split("=", 1)[0])]
    return urlunsplit((scheme, netloc, parts.path, "&".join(kept), ""))


def _is_tracking(key: str) -> bool:
    key = key.lower()
    return key.startswith("utm_") or key in TRACKING_PARAMS


def url_domain(url: str) -> str:
    """Host of a URL without a leading "www." (the `domain` column and top-domains figure)."""
    host = urlsplit(url).hostname or ""
    return host[4:] if host.startswith("www.") else host


def in_domains(host: str, domains: Iterable[str]) -> bool:
    """True when host is one of the domains or a subdomain of one (en.wikipedia.org, m.youtube.com)."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains))


is_blocked = in_domains  # the block list's reading of in_domains


# --- date range ----------------------------------------------------------------------------------
def parse_date(text: str, name: str) -> int | None:
    """A params date (YYYY-MM or YYYY-MM-DD, UTC) as epoch seconds; None for ""."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d" if text.count("-") == 2 else "%Y-%m")
    except ValueError:
        raise params.ParamsError(f"reddit.{name}={text!r}: use YYYY-MM or YYYY-MM-DD (UTC)") from None
    return int(day.replace(tzinfo=timezone.utc).timestamp())


def date_bounds(cfg: RedditConfig) -> tuple[int | None, int | None]:
    """(from, to) epoch seconds of the configured window, half-open [from, to)."""
    lo, hi = parse_date(cfg.date_from, "date_from"), parse_date(cfg.date_to, "date_to")
    if lo is not None and hi is not None and lo >= hi:
        raise params.ParamsError(f"reddit.date_from {cfg.date_from} is not before date_to {cfg.date_to}")
    return lo, hi


# --- live mode (praw) ------------------------------------------------------------------------
def praw_client(env: dict | None = None, **settings):
    """A real praw.Reddit, credentials from the environment only (never params or logs).

    PRAW_SITE names a praw.ini section; else PRAW_CLIENT_ID, PRAW_CLIENT_SECRET, PRAW_USER_AGENT.
    PRAW_OAUTH_URL / PRAW_REDDIT_URL (or `settings`) point it at another endpoint, e.g. a test server.
    """
    import praw

    env = os.environ if env is None else env
    for key in ("oauth_url", "reddit_url"):
        if env.get(f"PRAW_{key.upper()}") and key not in settings:
            settings[key] = env[f"PRAW_{key.upper()}"]
    if env.get("PRAW_SITE"):
        return praw.Reddit(env["PRAW_SITE"], check_for_async=False, **settings)
    missing = [k for k in ("PRAW_CLIENT_ID", "PRAW_CLIENT_SECRET", "PRAW_USER_AGENT") if not env.get(k)]
    if missing:
        raise RuntimeError(f"reddit.source=praw needs credentials in the environment: {', '.join(missing)} "
                           "(or PRAW_SITE naming a praw.ini section)")
    return praw.Reddit(client_id=env["PRAW_CLIENT_ID"], client_secret=env["PRAW_CLIENT_SECRET"],
                       user_agent=env["PRAW_USER_AGENT"], check_for_async=False, **settings)


def iter_praw_submissions(cfg: RedditConfig, reddit, rep: report.StageReport) -> Iterator[dict]:
    """Submissions of the configured listings (new, top, hot, rising, controversial) of each configured
    subreddit, as Pushshift dicts; `top` and `controversial` cover `praw_time_filter`. praw itself keeps to
    Reddit's rate limit (it reads the X-Ratelimit headers and sleeps)."""
    errors = _Errors(rep)
    for listing in cfg.praw_listings:
        if listing not in ("new", "top", "hot", "rising", "controversial"):
            raise params.ParamsError(f"reddit.praw_listings: {listing!r} is not a subreddit listing")
    for name in cfg.praw_subreddits:
        sub = reddit.subreddit(name)
        for listing in cfg.praw_listings:
            kwargs = {"time_filter": cfg.praw_time_filter} if listing in ("top", "controversial") else {}
            for i, post in enumerate(getattr(sub, listing)(limit=cfg.praw_limit, **kwargs)):
                d = getattr(post, "__dict__", {})
                obj = {k: d.get(k) for k in ("id", "title", "url", "domain", "score", "is_self", "over_18",
                                               "created_utc", "permalink", "num_comments")}
                obj["subreddit"] = str(d.get("subreddit") or name)
                parsed, reason, detail = parse_submission(obj)
                if parsed is None:
                    errors(reason, f"r/{name}/{listing}#{i}", detail, "post skipped")
                    continue
                yield parsed


# --- selection ---------------------------------------------------------------------------------
class _RemovedSink:
    """removed.parquet written in batches: dropped posts never accumulate in memory."""

    def __init__(self, path: Path, batch: int = 50_000):
        self.writer = pq.ParquetWriter(str(path), REMOVED_COLUMNS)
        self.rows: list[tuple[str, str, str]] = []
        self.batch = batch

    def add(self, url: str, post_id: str, reason: str) -> None:
        self.rows.append((url, post_id, reason))
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows))
            self.writer.write_table(pa.table([pa.array(c, pa.string()) for c in cols], schema=REMOVED_COLUMNS))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _rank(sub: dict) -> tuple:
    """Smaller is better: highest score, then earliest created_utc, then smallest id."""
    return (-sub["score"], sub["created_utc"], sub["id"])


def _bucket(score: int) -> str:
    for name, lo, hi in SCORE_BUCKETS:
        if (lo is None or score >= lo) and (hi is None or score < hi):
            return name
    return SCORE_BUCKETS[-1][0]


def select(subs: Iterable[dict], cfg: RedditConfig, rep: report.StageReport, sink: _RemovedSink) -> list[dict]:
    """Filter and de-duplicate submissions; returns the kept URL rows sorted by url."""
    if cfg.score_rule not in ("per_post", "summed"):
        raise params.ParamsError(f"reddit.score_rule={cfg.score_rule!r}: use per_post or summed")
    best: dict[str, dict] = {}     # normalised url -> best post so far (+ n_posts, summed score)
    hist: Counter[str] = Counter()
    lo, hi = date_bounds(cfg)

    def drop(url: str, post_id: str, reason: str) -> None:
        rep.drop(reason)
        sink.add(url, post_id, reason)

    for sub in subs:
        rep.docs_in += 1
        hist[_bucket(sub["score"])] += 1
        if len(sub["url"]) > cfg.max_url_chars:  # recorded cut short: a 2 MB "URL" is damage, not a link
            drop(sub["url"][:200] + f"... ({len(sub['url'])} chars)", sub["id"], "url_too_long")
            continue
        url = normalize_url(sub["url"])
        shown = url or sub["url"]
        if (lo is not None and sub["created_utc"] < lo) or (hi is not None and sub["created_utc"] >= hi):
            drop(shown, sub["id"], "out_of_date_range")
        elif cfg.exclude_self_posts and sub["is_self"]:
            drop(shown, sub["id"], "self_post")
        elif cfg.exclude_nsfw and sub["over_18"]:
            drop(shown, sub["id"], "nsfw")
        elif url is None:
            drop(shown, sub["id"], "bad_url")
        elif urlsplit(url).scheme not in ("http", "https"):
            drop(url, sub["id"], "bad_scheme")
        elif is_blocked(urlsplit(url).hostname or "", cfg.block_domains):
            drop(url, sub["id"], "blocked_domain")
        elif cfg.allow_domains and not in_domains(urlsplit(url).hostname or "", cfg.allow_domains):
            drop(url, sub["id"], "domain_not_allowed")
        elif cfg.score_rule == "per_post" and sub["score"] < cfg.min_score:
            drop(url, sub["id"], "low_score")
        else:
            old = best.get(url)
            if old is None:
                best[url] = {**sub, "n_posts": 1, "summed": sub["score"]}
                continue
            winner, loser = (sub, old) if _rank(sub) < _rank(old) else (old, sub)
            drop(url, loser["id"], "duplicate")
            best[url] = {**winner, "n_posts": old["n_posts"] + 1, "summed": old["summed"] + sub["score"]}

    rows = []
    for url in sorted(best):
        b = best[url]
        score = b["summed"] if cfg.score_rule == "summed" else b["score"]
        if cfg.score_rule == "summed" and score < cfg.min_score:
            drop(url, b["id"], "low_score")
            continue
        rows.append({"url": url, "post_id": b["id"], "score": score, "subreddit": b["subreddit"],
                     "created_utc": b["created_utc"], "title": b["title"], "domain": url_domain(url),
                     "n_posts": b["n_posts"]})
    rep.extra["score_hist"] = [{"score_bucket": name, "count": hist[name]} for name, _, _ in SCORE_BUCKETS]
    return rows


# --- the stage -------------------------------------------------------------------------------
def run(cfg: RedditConfig, in_dir: str | Path | None, out_dir: str | Path, truth_path: str | Path | None = None,
        rep: report.StageReport | None = None, reddit=None) -> report.StageReport:
    """Build the WebText URL table from Pushshift dumps in `in_dir` (or praw when cfg.source == "praw").

    Args:
        cfg: reddit params.
        in_dir: folder of dump files (ignored in praw mode).
        out_dir: output folder: urls.parquet, removed.parquet, _manifest.json.
        truth_path: the sample's truth.json; adds precision/recall of the drops to the report.
        rep: report to fill (a new StageReport("reddit_urls") by default).
        reddit: a praw.Reddit to use in praw mode (default: `praw_client()` from the environment).

    Returns:
        The filled StageReport (not yet written); `extra` has links_in, kept, top_domains, score_hist.
    """
    rep = rep or report.StageReport(STAGE)
    out_dir = Path(out_dir)
    build = io.work_dir(STAGE, params.fingerprint(cfg)) / "out"
    if build.exists():  # nothing to resume: one streaming pass, rebuilt from scratch
        shutil.rmtree(build)
    build.mkdir(parents=True)
    if cfg.source == "pushshift":
        if in_dir is None or not Path(in_dir).is_dir():
            raise FileNotFoundError(f"reddit dump folder {in_dir} does not exist")
        lo, hi = date_bounds(cfg)
        matched = dump_files(in_dir, cfg.dump_glob)
        files = [p for p in matched if file_in_window(p, lo, hi)]
        if not matched:
            log.warning("no dump files (*.jsonl, *.zst, *.gz...) match %s in %s", cfg.dump_glob, in_dir)
        rep.extra["files"] = [str(p.relative_to(in_dir)) for p in files]
        rep.extra["files_outside_dates"] = len(matched) - len(files)
        subs = iter_dump_submissions(files, rep, root=Path(in_dir))
    elif cfg.source == "praw":
        subs = iter_praw_submissions(cfg, reddit if reddit is not None else praw_client(), rep)
    else:
        raise params.ParamsError(f"reddit.source={cfg.source!r}: use pushshift or praw")

    from tqdm import tqdm

    sink = _RemovedSink(build / "removed.parquet")
    try:
        rows = select(tqdm(subs, desc="reddit posts", unit="post", mininterval=5), cfg, rep, sink)
    finally:
        sink.close()
    table = pa.Table.from_pylist(rows, schema=URL_COLUMNS)
    pq.write_table(table, str(build / "urls.parquet"))

    rep.docs_out = len(rows)
    rep.bytes_out = (build / "urls.parquet").stat().st_size
    domains = Counter(r["domain"] for r in rows)
    rep.extra.update({
        "links_in": rep.docs_in,
        "kept": len(rows),
        "top_domains": [{"domain": d, "count": n} for d, n in sorted(domains.items(), key=lambda x: (-x[1], x[0]))[:20]],
    })
    truth_data = truth.load(truth_path)
    if truth_data is not None:
        kept = {r["url"] for r in rows}
        removed = set(pq.read_table(build / "removed.parquet", columns=["url"]).column("url").to_pylist())
        scored = truth.score_drops(truth_data, STAGE, removed - kept, kept)
        if scored is not None:
            rep.extra["truth"] = scored
    io.write_manifest(build, STAGE, params.as_dict(cfg), inputs={})
    io.publish(build, out_dir)
    return rep
