"""Choosing Common Crawl files the way practitioners do: a crawl id, a kind (WARC or WET), a count, a seed.

Every crawl publishes `crawl-data/<CRAWL-ID>/{warc,wet,wat}.paths.gz`, one file path a line (tens of
thousands per crawl). `pick_paths` takes `count` of them by a keyed draw per path (rng.uniform(seed,
path)), so the pick depends only on the seed and the listing, never on its order, and a larger count
keeps every file a smaller one picked. Files are read over HTTPS from data.commoncrawl.org, Common
Crawl's public endpoint for its `s3://commoncrawl/` bucket (no AWS credentials needed).
"""
from __future__ import annotations

import gzip

from pipeline.core import rng

CC_HTTP = "https://data.commoncrawl.org/"
CC_BUCKET = "s3://commoncrawl/"


def s3_to_https(uri: str) -> str:
    """s3://commoncrawl/<key> -> https://data.commoncrawl.org/<key>; other buckets are refused with a reason."""
    if uri.startswith(CC_BUCKET):
        return CC_HTTP + uri[len(CC_BUCKET):]
    raise ValueError(f"{uri}: only s3://commoncrawl/ is readable without credentials (via {CC_HTTP}); "
                     "download other buckets yourself and list the local path")


def listing_paths(raw: bytes) -> list[str]:
    """The paths of a `*.paths.gz` listing (gzip or plain text), blank lines dropped."""
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return [line.strip() for line in text.decode("utf-8").splitlines() if line.strip()]


def pick_paths(raw: bytes, count: int, seed: int) -> list[str]:
    """`count` paths of the listing chosen by a keyed draw per path; returned in listing order."""
    paths = listing_paths(raw)
    if count > len(paths):
        raise ValueError(f"asked for {count} files but the listing has {len(paths)}")
    chosen = set(sorted(paths, key=lambda p: (rng.uniform(seed, p, "cc_pick"), p))[:count])
    return [p for p in paths if p in chosen]
