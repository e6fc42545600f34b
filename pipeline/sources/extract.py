"""HTML -> main text with trafilatura, shared by the WebText (scrape) and Common Crawl (cc) stages.

trafilatura options are params (`extract.*`), chosen by bench/extraction_quality.py on the 181
real pages of the article-extraction benchmark (its own 4-token-shingle metric): favor_precision
ties the balanced mode on F1 (0.957) with higher precision (0.956 vs 0.942), and boilerplate in
training text costs more than a missed paragraph. include_tables adds +0.007 F1 (inside the
bootstrap noise) but lets link-table spam pass the cc stage's filters, so it stays off.

After extraction, WebText documents pass filters (pipeline/sources/webarchive.py): minimum words,
language (GPT-2 removed non-English pages) and boilerplate line ratios in the spirit of
Gopher's repetition and C4's line rules (Rae et al. 2021; Raffel et al. 2020). GPT-2 only says
"some heuristic based cleaning", so the ratios are off by default: on the 181 real articles even
lenient bars drop good pages (duplicate lines > 0.3: 1 page, short lines > 0.5: 2, punctuated lines
< 0.3: 12; bench/extraction_quality.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import trafilatura
from datatrove.pipeline.filters.base_filter import BaseFilter


@dataclass(frozen=True)
class ExtractConfig:
    favor_precision: bool = True
    favor_recall: bool = False                # exclusive with favor_precision
    include_comments: bool = False
    include_tables: bool = False              # +0.007 F1 on articles (within noise), but lets link-table spam through cc
    min_words: int = 50
    languages: tuple[str, ...] = ("en",)      # WebText filter (cc has its own): kept languages; () = no filter
    max_duplicate_line_ratio: float = 1.0     # share of lines repeating an earlier line (Gopher: 0.3); 1.0 = off
    max_short_line_ratio: float = 1.0         # share of lines under SHORT_LINE_WORDS words; 1.0 = off
    min_punct_line_ratio: float = 0.0         # share of lines ending in terminal punctuation (C4); 0.0 = off


SHORT_LINE_WORDS = 3  # a line under this many words is a menu item, a byline, a share button
TERMINAL = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u2026")


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
    if cfg.favor_precision and cfg.favor_recall:
        raise ValueError("extract.favor_precision and extract.favor_recall are exclusive: set one of them")
    return trafilatura.extract(
        html,
        url=url,
        favor_precision=cfg.favor_precision,
        favor_recall=cfg.favor_recall,
        include_comments=cfg.include_comments,
        include_tables=cfg.include_tables,
        deduplicate=False,  # dedup is its own stage; trafilatura's cache would make output order-dependent
        with_metadata=False,
    )


def word_count(text: str) -> int:
    return len(text.split())


def too_short(text: str | None, cfg: ExtractConfig) -> bool:
    return text is None or word_count(text) < cfg.min_words


def line_ratios(text: str) -> dict[str, float]:
    """Boilerplate ratios of a text over its non-empty lines: duplicate_lines (lines repeating an earlier
    line), short_lines (under SHORT_LINE_WORDS words), punct_lines (ending in terminal punctuation)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return {"duplicate_lines": 0.0, "short_lines": 0.0, "punct_lines": 0.0}
    n = len(lines)
    return {"duplicate_lines": (n - len(set(lines))) / n,
            "short_lines": sum(len(line.split()) < SHORT_LINE_WORDS for line in lines) / n,
            "punct_lines": sum(line.endswith(TERMINAL) for line in lines) / n}


def boilerplate_reason(text: str, cfg: ExtractConfig) -> str | None:
    """The first boilerplate rule a text breaks (too_many_duplicate_lines, too_many_short_lines,
    too_few_punct_lines), or None."""
    r = line_ratios(text)
    if r["duplicate_lines"] > cfg.max_duplicate_line_ratio:
        return "too_many_duplicate_lines"
    if r["short_lines"] > cfg.max_short_line_ratio:
        return "too_many_short_lines"
    if r["punct_lines"] < cfg.min_punct_line_ratio:
        return "too_few_punct_lines"
    return None


class TooShortFilter(BaseFilter):
    """Drops documents under `min_words` whitespace words (reason too_short): books, WebText and crawl alike."""

    name = "📏 too short"

    def __init__(self, min_words: int, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_words = min_words

    def filter(self, doc):
        return word_count(doc.text or "") >= self.min_words or (False, "too_short")
