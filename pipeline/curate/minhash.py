"""MinHash signatures and LSH banding in numpy: the arithmetic behind the dedup stage (Broder 1997).

No per-word Python: words and shingles are hashed with vectorised 64-bit arithmetic, each shingle once,
then `num_perm` affine permutations take the minimum per document in cache-sized batches
(../shared/ANCHORS.md: the per-document Python shingle loop caps at ~10 MB/s; this is the part
bench/dedup_speed.py measures against datasketch and datatrove). Bands and rows come from the
threshold as datasketch picks them (`optimal_bands`). `DedupConfig` (params.yaml `dedup`) lives here,
with the arithmetic that reads it; the dedup stage imports it from here.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from pipeline.core import records
from pipeline.core.powers import mix64, powers


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """params.yaml `dedup`: shingle size, permutations, duplicate threshold, source priority."""

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.7
    priority: tuple[str, ...] = (records.BOOKS, records.WEBTEXT, records.CC)


# --- hashing: bytes -> words -> shingles, all numpy --------------------------------------------
_WORD_P = 0x100000001B3  # odd, so invertible mod 2**64: lets a prefix sum give any substring's hash
_WORD_R = pow(_WORD_P, -1, 1 << 64)
_SHINGLE_Q = np.uint64(0x9E3779B97F4A7C15)
_IS_WORD = np.zeros(256, dtype=bool)
_IS_WORD[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]] = True
_IS_WORD[0x80:] = True  # non-ASCII UTF-8 bytes count as letters (accents, other scripts)


# one C pass each (bytes.translate, ~0.5 ns/byte) instead of numpy table lookups and masks: _FOLD folds
# ASCII case and zeroes every separator (a word byte is a non-zero byte); _NONSPACE marks non-whitespace
_FOLD = bytes(((c | 32) if 65 <= c <= 90 else c) if _IS_WORD[c] else 0 for c in range(256))


def _join(texts: list[str]) -> tuple[bytes, np.ndarray]:
    """The texts' UTF-8 bytes joined, each followed by a newline, and each text's start (len n+1)."""
    blobs = [t.encode("utf-8", "replace") for t in texts]
    doc_start = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(b) + 1 for b in blobs), dtype=np.int64, count=len(blobs)), out=doc_start[1:])
    return b"\n".join(blobs) + b"\n", doc_start


def _word_hashes(blob: bytes, doc_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every word of the joined texts, and each text's first word index (len n+1).

    Normalisation as for MinHash in datatrove/GPT-3 practice: case-folded ASCII, punctuation and
    whitespace are separators; the Unicode punctuation of U+00A0-U+00BF and U+2000-U+207F
    (curly quotes, dashes) too, found among the non-ASCII lead bytes so no per-character Python runs.
    A word's hash is sum(byte_k * P**-k) + length, mixed: a prefix sum over the batch gives every word's.
    """
    lb = np.frombuffer(blob.translate(_FOLD), dtype=np.uint8)
    word = np.zeros(len(lb) + 2, dtype=bool)  # a separator each side, so every word has both edges
    inner = word[1:-1]
    np.not_equal(lb, 0, out=inner)
    hi = np.flatnonzero(lb >= 0xC2)
    if len(hi):
        lead, nxt = lb[hi], lb[np.minimum(hi + 1, len(lb) - 1)]
        e2 = hi[(lead == 0xE2) & ((nxt == 0x80) | (nxt == 0x81))]  # U+2000-U+207F: 3 bytes
        c2 = hi[(lead == 0xC2) & (nxt >= 0xA0) & (nxt <= 0xBF)]    # U+00A0-U+00BF: 2 bytes
        for pos, width in ((e2, 3), (c2, 2)):
            for k in range(width):
                inner[np.minimum(pos + k, len(lb) - 1)] = False
    edges = np.flatnonzero(word[1:] ^ word[:-1])  # flatnonzero is 5x faster on bool than on int8 (measured)
    starts, ends = edges[0::2], edges[1::2]
    pre = np.zeros(len(lb) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum(lb * powers(_WORD_R, len(lb)), out=pre[1:])  # wraps mod 2**64, as wanted
        h = (pre[ends] - pre[starts]) * powers(_WORD_P, len(lb))[starts] + (ends - starts).astype(np.uint64)
    return mix64(h), np.searchsorted(starts, doc_start)


def _shingles(blob: bytes, doc_start: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram of the joined texts (one shingle of all words for a text shorter than n).

    Returns (shingle hashes uint64, per-text offsets into them, len n+1); a text with no word has no
    shingle. The rolling polynomial runs over the whole batch as slices (shingles that straddle two texts
    are computed and never picked), so no per-position masks.
    """
    w, woff = _word_hashes(blob, doc_start)
    nw = np.diff(woff)
    count = np.where(nw >= ngram, nw - ngram + 1, np.minimum(nw, 1))
    out_off = np.zeros(len(nw) + 1, dtype=np.int64)
    np.cumsum(count, out=out_off[1:])
    src = np.arange(out_off[-1], dtype=np.int64) + np.repeat(woff[:-1] - out_off[:-1], count)
    m = len(w) - ngram + 1
    with np.errstate(over="ignore"):
        if m > 0:
            sh = w[:m].copy()
            for k in range(1, ngram):
                sh *= _SHINGLE_Q
                sh += w[k:m + k]
            out = sh[np.minimum(src, m - 1)]
        else:
            out = np.zeros(len(src), dtype=np.uint64)
        short = np.flatnonzero((nw > 0) & (nw < ngram))
        if len(short):  # the zero-padded polynomial of all the text's words
            h = np.zeros(len(short), dtype=np.uint64)
            for k in range(ngram):
                h = h * _SHINGLE_Q + np.where(k < nw[short], w[np.minimum(woff[short] + k, len(w) - 1)], np.uint64(0))
            out[out_off[short]] = h
    return mix64(out), out_off


def shingle_set(text: str, ngram: int) -> np.ndarray:
    """The distinct shingle hashes of one text (sorted uint64): the set behind the true Jaccard."""
    sh, _ = _shingles(*_join([text]), ngram)
    return np.unique(sh)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays."""
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (a odd, b) of num_perm affine maps h(x) = a*x + b mod 2**32.

    Each is a bijection of 32-bit keys, and the keys are already well-mixed shingle hashes, so
    each acts as a random permutation for MinHash; uint32 wrap-around arithmetic halves the memory
    traffic of datasketch's 64-bit (a*x + b) mod (2**61 - 1) (tests check the Jaccard estimates).
    """
    gen = np.random.Generator(np.random.PCG64(seed))
    a = (gen.integers(0, 1 << 31, size=num_perm, dtype=np.uint32) << np.uint32(1)) | np.uint32(1)
    b = gen.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def signatures(texts: list[str], cfg: DedupConfig, seed: int = 0, chunk: int = 8192,
               batch_bytes: int = 1_000_000, exact: list | None = None) -> np.ndarray:
    """MinHash signatures (n_docs, num_perm) uint32 of word n-gram shingles.

    Texts are hashed in groups of about `batch_bytes` (1 MB measured fastest: 256 KB pays more per-group
    overhead, 4 MB falls out of cache): once per byte (bytes.translate, vectorised prefix sums),
    once per word and once per shingle. The permutations then run on blocks of num_perm x `chunk`
    shingles (perm-major, so the per-document min is a contiguous reduceat; 8192-12000 measured fastest
    on a 2 MB L2, 4096 1.4x slower).
    A text without words gets the all-0xFFFFFFFF signature (the caller keeps it out of LSH).
    With `exact` (a list), each text's exact-duplicate key (text_hashes) is appended to it on the way.
    """
    a, b = permutations(cfg.num_perm, seed)
    a, b = a[:, None], b[:, None]
    sig = np.full((len(texts), cfg.num_perm), 0xFFFFFFFF, dtype=np.uint32)
    block = np.empty((cfg.num_perm, chunk), dtype=np.uint32)
    lo = 0
    while lo < len(texts):
        hi, size = lo, 0
        while hi < len(texts) and (hi == lo or size + len(texts[hi]) <= batch_bytes):
            size += len(texts[hi])
            hi += 1
        blob, doc_start = _join(texts[lo:hi])
        if exact is not None:
            exact.extend(_exact_keys(blob, doc_start))
        sh, off = _shingles(blob, doc_start, cfg.ngram)
        x = (sh >> np.uint64(32)).astype(np.uint32)  # the top 32 bits of the mixed shingle hash
        doc_of = np.repeat(np.arange(lo, hi), np.diff(off))
        for s0 in range(0, len(sh), chunk):
            s1 = min(s0 + chunk, len(sh))
            h = block[:, :s1 - s0]
            np.multiply(a, x[None, s0:s1], out=h)
            h += b
            docs = doc_of[s0:s1]
            heads = np.concatenate([[0], np.flatnonzero(np.diff(docs)) + 1])
            rows = docs[heads]
            sig[rows] = np.minimum(sig[rows], np.minimum.reduceat(h, heads, axis=1).T)
        lo = hi
    return sig


def has_words(sig: np.ndarray) -> np.ndarray:
    """Rows of a signature matrix that saw at least one shingle (the rest stay out of LSH)."""
    return ~(sig == 0xFFFFFFFF).all(axis=1)


_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # the ASCII whitespace str.split() splits on
_NONSPACE = bytes(0 if _SPACE[c] else 1 for c in range(256))  # a bytes.translate table, as _FOLD
_EXACT_P = (0x100000001B3, 0xC2B2AE3D27D4EB4F)  # two odd bases: a 128-bit key


def text_hashes(texts: list[str], batch_bytes: int = 1_000_000) -> list[str]:
    """Exact-duplicate keys: a 128-bit polynomial hash of each whitespace-normalised text, vectorised.

    Equal to hashing `" ".join(text.split())` (ASCII whitespace): every non-space byte counts, a byte
    after a whitespace run counts as byte + 256 unless it is the text's first, so leading, trailing and
    repeated whitespace change nothing. No per-text Python beyond encoding (the join/split loop cost half
    as much as the MinHash signatures themselves, measured in bench/dedup_speed.py). Texts go in groups
    of about `batch_bytes`, so the arrays stay in cache (as in `signatures`).
    """
    out, lo = [], 0
    while lo < len(texts):
        hi, size = lo, 0
        while hi < len(texts) and (hi == lo or size + len(texts[hi]) <= batch_bytes):
            size += len(texts[hi])
            hi += 1
        out += _exact_keys(*_join(texts[lo:hi]))
        lo = hi
    return out


def _exact_keys(blob: bytes, doc_start: np.ndarray) -> list[str]:
    """text_hashes of the joined texts (the same `_join` output `signatures` hashes words from)."""
    buf = np.frombuffer(blob, dtype=np.uint8)
    nonspace = np.frombuffer(blob.translate(_NONSPACE), dtype=bool)
    pos = np.flatnonzero(nonspace)
    first = np.searchsorted(pos, doc_start)  # index (into pos) of each text's first non-space byte, and the end
    code = buf.astype(np.uint16)
    code[1:] |= (~nonspace[:-1]).view(np.uint8).astype(np.uint16) << np.uint16(8)  # + 256 after whitespace
    val = code[pos].astype(np.uint64)
    val[first[:-1][first[:-1] < first[1:]]] &= np.uint64(0xFF)  # a text's first byte: no separator before it
    out, full = [], first[:-1] < first[1:]
    with np.errstate(over="ignore"):
        for p in _EXACT_P:  # per text: sum of val_j * p**(j + 1) over its bytes, then shifted to start at p**1
            s = np.zeros(len(full), dtype=np.uint64)
            if len(val):  # segments between the starts of non-empty texts (reduceat: ~5x cheaper than cumsum)
                s[full] = np.add.reduceat(val * powers(p, len(val) + 1)[1:], first[:-1][full])
            out.append(s * powers(pow(p, -1, 1 << 64), len(val) + 1)[first[:-1]])
    n = (first[1:] - first[:-1]).tolist()
    return [f"{a:016x}{b:016x}{c:x}" for a, b, c in zip(out[0].tolist(), out[1].tolist(), n)]


def text_hash(text: str) -> str:
    """Exact-duplicate key of one text (see text_hashes)."""
    return text_hashes([text])[0]


# --- LSH banding and clustering ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive + false-negative areas of the S-curve.

    The same objective as datasketch's `_optimal_param`, integrated on a fine grid.
    """
    best, best_err = (1, 1), float("inf")
    s_lo, s_hi = np.linspace(0.0, threshold, 2001), np.linspace(threshold, 1.0, 2001)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - s_lo ** rows) ** bands, s_lo)
            fn = np.trapezoid((1 - s_hi ** rows) ** bands, s_hi)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) uint64: one 64-bit hash per band of each signature (a bucket key 8 bytes wide, not 4 x rows)."""
    h = np.zeros((bands, len(sig)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            h = h * _SHINGLE_Q + sig[:, r::rows][:, :bands].T.astype(np.uint64)
    return mix64(h.ravel()).reshape(bands, len(sig))


def sorted_bands(sig: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the band hashes sorted and the (local) row of each: what a shard writes for the LSH pass."""
    h = band_hashes(sig, bands, rows)
    order = np.argsort(h, axis=1, kind="stable").astype(np.uint32)
    return np.take_along_axis(h, order.astype(np.int64), axis=1), order


def bucket_pairs(parts: list[tuple[np.ndarray, np.ndarray, int]], band: int, mask: np.ndarray | None,
                 range_docs: int = 4_000_000) -> np.ndarray:
    """Pairs (i < j, global rows) sharing a bucket of `band`, merged from per-shard sorted band tables.

    parts: (sorted hashes (bands, n), local rows (bands, n), global offset) per shard, typically np.load
    memmaps. The 64-bit hash space is cut into ranges of about `range_docs` documents and each range is
    merged on its own (a searchsorted into every shard), so memory holds one range, never all signatures.
    Rows where `mask` is False (exact copies of another document, wordless texts) take no part.
    """
    total = sum(p[0].shape[1] for p in parts)
    n_ranges = max(1, -(-total // range_docs))
    cuts = [0] + [(k << 64) // n_ranges for k in range(1, n_ranges)] + [1 << 64]
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        hs, rows = [], []
        for h, order, offset in parts:
            row = h[band]
            a = int(np.searchsorted(row, np.uint64(lo)))
            b = len(row) if hi == 1 << 64 else int(np.searchsorted(row, np.uint64(hi)))
            hs.append(np.asarray(row[a:b]))
            rows.append(np.asarray(order[band, a:b]).astype(np.int64) + offset)
        h, g = np.concatenate(hs), np.concatenate(rows)
        if mask is not None:
            keep = mask[g]
            h, g = h[keep], g[keep]
        o = np.argsort(h, kind="stable")
        h, g = h[o], g[o]
        same = np.flatnonzero(h[1:] == h[:-1])
        if not len(same):
            continue
        starts = np.flatnonzero(np.diff(np.concatenate([[-2], same])) != 1)  # runs of equal hashes
        ends = np.append(same[starts[1:] - 1], same[-1]) + 2
        two = ends - same[starts] == 2  # most buckets hold a pair: done in one vector step
        a, b = g[same[starts][two]], g[same[starts][two] + 1]
        out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        for s, e in zip(same[starts][~two], ends[~two]):
            members = np.sort(g[s:e])
            i, j = np.triu_indices(len(members), 1)
            out.append(np.stack([members[i], members[j]], axis=1))
    return np.unique(np.concatenate(out), axis=0) if out else np.zeros((0, 2), dtype=np.int64)


class SigStore:
    """Row access to per-shard signature files as if they were one matrix: sig[rows].

    Each access maps the files it needs (np.load memmaps) and drops them after, so the pages it read leave
    the process (its RSS) again: reading every signature once costs no more memory than one access.
    """

    def __init__(self, paths: list[Path]):
        self.paths = [str(p) for p in paths]
        shapes = [np.load(p, mmap_mode="r").shape for p in self.paths]
        self.width = shapes[0][1] if shapes else 0
        self.offsets = np.cumsum([0] + [s[0] for s in shapes])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim == 0:
            return self[rows[None]][0]
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.width), dtype=np.uint32)
        for p in np.unique(part):
            sel = part == p
            out[sel] = np.load(self.paths[p], mmap_mode="r")[rows[sel] - self.offsets[p]]
        return out
