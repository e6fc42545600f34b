"""Real-text corpora for the benchmarks: 1-20 KB documents cut from ../shared/data/books.

ANCHORS.md measured its reference figures on book documents of this shape; the benchmarks that
need such a corpus (dedup, contamination index) share this one cutter so they measure the same thing.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from pipeline.sources.books import strip_gutenberg


def book_documents(books: Path, mb: float, rng: random.Random) -> list[str]:
    """Documents of 1-20 KB cut from each book on paragraph bounds, taken round robin over books up to `mb` MB."""
    per_book = []
    for path in sorted(books.glob("*.txt")):
        text = strip_gutenberg(path.read_text(encoding="utf-8"))
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        docs, cur, target = [], [], rng.randint(1000, 20000)
        for p in paras:
            cur.append(p)
            if sum(map(len, cur)) >= target:
                docs.append("\n\n".join(cur))
                cur, target = [], rng.randint(1000, 20000)
        per_book.append(docs)
    out, size, i = [], 0, 0
    while size < mb * 1e6 and any(per_book):
        book = per_book[i % len(per_book)]
        if book:
            out.append(book.pop(0))
            size += len(out[-1].encode())
        i += 1
    return out
