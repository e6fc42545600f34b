"""The n-gram rule of GPT-3's overlap audit (Brown et al. 2020, appendix C): config, normalisation, hashing.

Text is compared after GPT-3's normalisation (lower-case, punctuation stripped, whitespace-split
words). Each n-gram is a uint64: a polynomial rolling hash over 64-bit xxh64 word hashes, so no
per-n-gram Python. n is 13, shortened per benchmark to its 5th-percentile example length but not
below `min_ngram` (`choose_n`). Everything else in the audit (corpus, indexes, decontamination)
builds on this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import xxhash

WORD = re.compile(r"[^\W_]+")  # letters and digits; every other character separates words
PRIME = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: odd, so multiplication is a bijection mod 2**64



@dataclass(frozen=True)
class ContaminationConfig:
    """params.yaml `contamination`."""

    ngram: int = 13  # GPT-3 appendix C
    min_ngram: int = 8  # floor for short-example benchmarks
    max_doc_frequency: int = 10  # GPT-3: n-grams in more than 10 training documents are ignored
    index: str = "sharded"  # "sharded": sorted .npy shards on disk (out of core); "memory": one in-memory array
    index_shard_bits: int = 4  # 2**bits shards by hash prefix; raise it when one shard outgrows memory
    decontaminate: bool = False  # true: also count what GPT-3 appendix C decontamination would cut (dry run)
    decontaminate_margin: int = 200  # GPT-3: characters removed either side of a colliding n-gram
    decontaminate_min_piece: int = 200  # GPT-3: pieces shorter than this are dropped
    decontaminate_max_pieces: int = 10  # GPT-3: a document split into more pieces is dropped whole


# --- normalisation and hashing --------------------------------------------------------------------
def normalize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """GPT-3 normalisation: lower-cased words with punctuation stripped, and each word's char span."""
    words, spans = [], []
    for m in WORD.finditer(text):
        words.append(m.group().lower())
        spans.append(m.span())
    return words, spans


def normalize_words(text: str) -> list[str]:
    """normalize()'s words without their spans: the fast path for indexing training text.

    findall runs in C; lower-casing the joined words once equals lower-casing each (a lower-case
    mapping never yields a space), so the words are exactly normalize()'s.
    """
    words = WORD.findall(text)
    return " ".join(words).lower().split(" ") if words else []


_WORD_CACHE: dict[str, int] = {}


def word_hashes(words: list[str]) -> np.ndarray:
    """uint64 per word (xxh64, cached: natural text reuses a small vocabulary)."""
    cache = _WORD_CACHE
    out = list(map(cache.get, words))  # a C loop over the cache; misses filled below
    if None in out:
        for i, h in enumerate(out):
            if h is None:
                out[i] = cache[words[i]] = xxhash.xxh64_intdigest(words[i])
    return np.array(out, dtype=np.uint64)


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-gram (position i covers words i..i+n-1): sum_j wh[i+j] * P**(n-1-j) mod 2**64."""
    m = len(wh) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):  # n vector ops; uint64 arithmetic wraps mod 2**64
        h = h * PRIME + wh[j: j + m]
    return h


def choose_n(lengths: Iterable[int], cfg: ContaminationConfig) -> int:
    """GPT-3's rule: min(ngram, max(min_ngram, 5th-percentile example length in words))."""
    lengths = np.asarray(list(lengths))
    if not len(lengths):
        return cfg.ngram
    p5 = int(np.floor(np.percentile(lengths, 5)))
    return int(min(cfg.ngram, max(cfg.min_ngram, p5)))
