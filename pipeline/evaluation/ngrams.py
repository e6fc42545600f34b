"""The n-gram rule of GPT-3's overlap audit (Brown et al. 2020, appendix C): config, normalisation, hashing.

Text is compared after GPT-3's normalisation (lower-case, punctuation stripped, whitespace-split
words). Each n-gram is a uint64: a polynomial over 64-bit word hashes, and each word hash a
polynomial over the word's lower-cased code points, mixed. Both are numpy over whole batches of
documents (`text_word_hashes`: one table lookup, one prefix sum), so no per-word or per-n-gram
Python runs. n is 13, shortened per benchmark to its 5th-percentile example length but not below
`min_ngram` (`choose_n`). Everything else in the audit (corpus, indexes, decontamination) builds on
this module.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipeline.core.powers import mix64, powers

WORD = re.compile(r"[^\W_]+")  # letters and digits; every other character separates words
PRIME = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: odd, so multiplication is a bijection mod 2**64
BATCH_CHARS = 1 << 16  # text per numpy batch: per-call overhead vanishes, arrays stay in cache (1 << 18: 1.2x slower)
_CHAR_P = 0x9E3779B97F4A7C15  # odd, so invertible mod 2**64: a prefix sum gives any word's hash
_CHAR_R = pow(_CHAR_P, -1, 1 << 64)
# The only characters whose str.lower() is not one character chosen by the character alone: capital
# sigma (final or not, by context) and dotted capital I (two characters). Documents holding either
# take the exact per-word Python path; tests check that no other letter needs it.
_CONTEXT_LOWER = ("\u03a3", "\u0130")


def runs(items: Iterable[Any], limit: int = BATCH_CHARS, size: Callable[[Any], int] = len) -> Iterator[list[Any]]:
    """Consecutive runs of `items`, each closed once its sizes add up to `limit` (the last may be smaller):
    the batches the n-gram passes hash in one numpy call."""
    run: list[Any] = []
    total = 0
    for item in items:
        run.append(item)
        total += size(item)
        if total >= limit:
            yield run
            run, total = [], 0
    if run:
        yield run


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


# --- normalisation --------------------------------------------------------------------------------
def normalize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """GPT-3 normalisation: lower-cased words with punctuation stripped, and each word's char span."""
    words, spans = [], []
    for m in WORD.finditer(text):
        words.append(m.group().lower())
        spans.append(m.span())
    return words, spans


def normalize_words(text: str) -> list[str]:
    """normalize()'s words without their spans (the per-word reference text_word_hashes must equal).

    findall runs in C; lower-casing the joined words once equals lower-casing each (a lower-case
    mapping never yields a space), so the words are exactly normalize()'s.
    """
    words = WORD.findall(text)
    return " ".join(words).lower().split(" ") if words else []


# --- hashing --------------------------------------------------------------------------------------
@functools.cache
def _lower_table() -> np.ndarray:
    """Code point -> its lower-case code point if it is a word character (WORD: str.isalnum), else 0,
    for the Basic Multilingual Plane (40 ms once); rarer planes go through _lower_astral, and the
    _CONTEXT_LOWER characters' entries are never used."""
    return np.array([ord(c.lower()[0]) if c.isalnum() else 0 for c in map(chr, range(0x10000))], dtype=np.uint64)


def _span_hashes(chars: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash of each word chars[s:e] (lower-cased code points as uint64): mix(len + sum_k c_k R**(k-s)).

    The sum does not depend on where the word sits, so a long text is hashed in BATCH_CHARS pieces
    (cut between words): the prefix sums and powers stay cache-sized whatever the document's length.
    """
    if len(chars) <= 2 * BATCH_CHARS:
        return _piece_hashes(chars, starts, ends)
    cut = np.r_[np.searchsorted(starts, np.arange(0, len(chars), BATCH_CHARS)), len(starts)]
    out = np.empty(len(starts), dtype=np.uint64)
    for a, b in zip(cut[:-1].tolist(), cut[1:].tolist()):
        if b > a:
            lo = starts[a]
            out[a:b] = _piece_hashes(chars[lo:ends[b - 1]], starts[a:b] - lo, ends[a:b] - lo)
    return out


def _piece_hashes(chars: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        pre = np.zeros(len(chars) + 1, dtype=np.uint64)
        np.multiply(chars, powers(_CHAR_R, len(chars)), out=pre[1:])
        np.cumsum(pre[1:], out=pre[1:])
        h = pre[ends]
        h -= pre[starts]
        h *= powers(_CHAR_P, len(chars))[starts]
        h += (ends - starts).astype(np.uint64)
    return mix64(h)


def word_hashes(words: list[str]) -> np.ndarray:
    """uint64 per (already normalised) word; text_word_hashes gives the same values from raw text."""
    if not words:
        return np.zeros(0, dtype=np.uint64)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = np.cumsum(lens)
    chars = np.frombuffer("".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    return _span_hashes(chars, ends - lens, ends)


def _lower_astral(cp: np.ndarray, chars: np.ndarray) -> None:
    at = np.flatnonzero(cp > 0xFFFF)
    uniq, inv = np.unique(cp[at], return_inverse=True)
    low = [ord(chr(c).lower()) if chr(c).isalnum() else 0 for c in uniq.tolist()]
    chars[at] = np.array(low, dtype=np.uint64)[inv]


def _join(texts: list[str]) -> str:
    return "\x00".join(["", *texts, ""])  # NUL is no word character: texts never share a word


def _tokens(texts: list[str], joined: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All texts at once: lower-cased code points (0 off words), word starts and ends, words per text."""
    cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    chars = np.take(_lower_table(), cp, mode="clip")  # clip: U+FFFF (no word character) for rarer planes
    if len(cp) and cp.max() > 0xFFFF:
        _lower_astral(cp, chars)
    word = chars != 0
    edges = np.flatnonzero(word[1:] != word[:-1]) + 1  # alternate starts and ends: both ends are NUL
    starts, ends = edges[0::2], edges[1::2]
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1
    first = np.searchsorted(starts, np.cumsum(lens) - lens + 1)
    return chars, starts, ends, np.diff(np.append(first, len(starts)))


def text_word_counts(texts: list[str]) -> np.ndarray:
    """len(normalize_words(t)) for each text, in one pass."""
    return _tokens(texts, _join(texts))[3] if texts else np.zeros(0, dtype=np.int64)


def text_word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of many texts, concatenated, and each text's word count.

    Equal to word_hashes(normalize_words(t)) text by text (tests check it on real and odd text), but
    one numpy pass for the batch: per-document Python would cost more than the hashing.
    """
    if not texts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    joined = _join(texts)
    if any(c in joined for c in _CONTEXT_LOWER):  # rare: those texts word by word, the others batched
        parts, plain = [], []
        for t in texts:
            if any(c in t for c in _CONTEXT_LOWER):
                parts += [text_word_hashes(plain)] if plain else []
                parts.append(_words_and_count(t))
                plain = []
            else:
                plain.append(t)
        parts += [text_word_hashes(plain)] if plain else []
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    chars, starts, ends, counts = _tokens(texts, joined)
    return _span_hashes(chars, starts, ends), counts


def _words_and_count(text: str) -> tuple[np.ndarray, np.ndarray]:
    wh = word_hashes(normalize_words(text))
    return wh, np.array([len(wh)], dtype=np.int64)


def _prime_pow(k: int) -> np.uint64:
    return np.uint64(pow(int(PRIME), k, 1 << 64))


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-gram (position i covers words i..i+n-1): sum_j wh[i+j] * P**(n-1-j) mod 2**64.

    Built by doubling (H_2k[i] = H_k[i] P**k + H_k[i+k]) and joining the blocks n's binary digits
    name: about 2 log2(n) vector operations instead of n multiply-adds, same values.
    """
    m = len(wh) - n + 1
    if m <= 0 or n < 1:
        return np.zeros(0, dtype=np.uint64)
    acc, acc_len = None, 0
    block, size, k = np.asarray(wh, dtype=np.uint64), 1, n
    with np.errstate(over="ignore"):
        while True:
            if k & 1:  # append block H_size: H_{L+size}[i] = H_L[i] P**size + H_size[i+L]
                if acc is None:
                    acc, acc_len = block[:len(wh) - size + 1].copy(), size
                else:
                    keep = len(wh) - acc_len - size + 1
                    acc = acc[:keep] * _prime_pow(size) + block[acc_len:acc_len + keep]
                    acc_len += size
            k >>= 1
            if not k:
                return acc
            block = block[:len(block) - size] * _prime_pow(size) + block[size:]
            size *= 2


def choose_n(lengths: Iterable[int], cfg: ContaminationConfig) -> int:
    """GPT-3's rule: min(ngram, max(min_ngram, 5th-percentile example length in words))."""
    lengths = np.asarray(list(lengths))
    if not len(lengths):
        return cfg.ngram
    p5 = int(np.floor(np.percentile(lengths, 5)))
    return int(min(cfg.ngram, max(cfg.min_ngram, p5)))
