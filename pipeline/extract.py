"""HTML -> main text with trafilatura, shared by the WebText (scrape) and Common Crawl (cc) stages.

trafilatura options are params (`extract.*`); `favor_precision=True` is the default because
it measured best on real article pages (../shared/ANCHORS.md: F1 0.961 vs 0.953).
"""
from __future__ import annotations

from dataclasses import dataclass

import trafilatura


@dataclass(frozen=True)
class ExtractConfig:
    favor_precision: bool = True
    include_comments: bool = False
    include_tables: bool = False
    min_words: int = 50


def decode_html(body: bytes, declared_charset: str | None = None) -> tuple[str, bool]:
    """Bytes -> str. Returns (text, clean): clean is False when bytes had to be replaced.

    Invalid UTF-8 is not fatal: the page is decoded with replacement characters and the
    caller counts it, so one bad byte never loses a whole page silently.
    """
    for encoding in filter(None, (declared_charset, "utf-8")):
        try:
            return body.decode(encoding), True
        except (UnicodeDecodeError, LookupError):
            continue
    return body.decode("utf-8", errors="replace"), False


def extract_text(html: str | bytes, cfg: ExtractConfig, url: str | None = None) -> str | None:
    """Main text of an HTML page, or None when trafilatura finds none."""
    if isinstance(html, bytes):
        html, _ = decode_html(html)
    if not html.strip():
        return None
    return trafilatura.extract(
        html,
        url=url,
        favor_precision=cfg.favor_precision,
        include_comments=cfg.include_comments,
        include_tables=cfg.include_tables,
        deduplicate=False,  # dedup is its own stage; trafilatura's cache would make output order-dependent
        with_metadata=False,
    )


def word_count(text: str) -> int:
    return len(text.split())


def too_short(text: str | None, cfg: ExtractConfig) -> bool:
    return text is None or word_count(text) < cfg.min_words
