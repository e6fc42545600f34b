"""N-gram indexes for the train/test overlap audit after GPT-3 (Brown et al. 2020, appendix C).

Each n-gram is a uint64 (ngrams.py: GPT-3's normalisation, word hashes and a polynomial over them,
numpy over batches of whole documents, so no per-word or per-n-gram Python), stored as sorted
(hash, doc ordinal) numpy arrays: 16 bytes per n-gram occurrence against ~80 bytes for a Python set
(../shared/ANCHORS.md); lookups are np.searchsorted. NgramIndex holds them in memory;
ShardedNgramIndex (the default) streams the training documents once, spills pairs into per-shard
runs by hash prefix and sorts each shard alone into .npy files, so neither the corpus nor the whole
index has to fit in memory. Both give identical results, and both ignore n-grams found in more than
`max_doc_frequency` training documents, as GPT-3 did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipeline.evaluation.ngrams import BATCH_CHARS, ngram_hashes, normalize, runs, text_word_hashes, word_hashes
from pipeline.evaluation.train_corpus import TrainCorpus


# --- batches of documents -> (n-gram hash, doc ordinal) pairs ---------------------------------------
def doc_batches(docs: Iterable[str | np.ndarray], batch_chars: int = BATCH_CHARS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(word hashes, words per document) for consecutive runs of documents, each given as its text
    (hashed here, a batch at a time) or as its word hashes already (TrainCorpus.words)."""
    for run in runs(docs, batch_chars):
        yield _hash_batch(run)


def _hash_batch(docs: list) -> tuple[np.ndarray, np.ndarray]:
    if all(isinstance(d, str) for d in docs):
        return text_word_hashes(docs)
    words = [text_word_hashes([d])[0] if isinstance(d, str) else np.asarray(d, dtype=np.uint64) for d in docs]
    return np.concatenate(words), np.fromiter(map(len, words), dtype=np.int64, count=len(words))


def batch_ngrams(wh: np.ndarray, counts: np.ndarray, n: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram of a batch's documents (none across two of them), with its doc ordinal, in doc order."""
    h = ngram_hashes(wh, n)  # over the whole batch; windows across a document boundary are dropped below
    doc = np.repeat(np.arange(first, first + len(counts), dtype=np.int64), counts)
    inside = doc[:len(h)] == doc[n - 1:]
    return h[inside], doc[:len(h)][inside]


# --- sorting and the frequency cut ---------------------------------------------------------------
_TOP = (2, 3) if np.little_endian else (1, 0)  # the uint16 digits of a uint64 holding bits 32-47 and 48-63


def _stable_sort(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, hashes[order]) with order = np.argsort(hashes, kind="stable"), about twice as fast.

    Two stable 16-bit radix passes (numpy's O(n) sort for 16-bit keys) order by the top 32 bits;
    only hashes sharing those (repeats, and ~n**2/2**33 chance pairs) are then sorted again.
    """
    if len(hashes) < 1 << 12:
        order = np.argsort(hashes, kind="stable")
        return order, hashes[order]
    digits = np.ascontiguousarray(hashes).view(np.uint16).reshape(-1, 4)
    order = np.argsort(digits[:, _TOP[0]], kind="stable")
    order = order[np.argsort(digits[:, _TOP[1]][order], kind="stable")]
    out = hashes[order]
    tie = (out[1:] ^ out[:-1]) < np.uint64(1 << 32)
    if tie.any():
        at = np.flatnonzero(tie)
        at = np.union1d(at, at + 1)  # runs of equal top bits, in order: sorting them together keeps the runs apart
        sub = order[at]
        order[at] = sub = sub[np.argsort(hashes[sub], kind="stable")]
        out[at] = hashes[sub]
    return order, out


def _sort_and_cut(hashes: np.ndarray, docs: np.ndarray, max_doc_frequency: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort (hash, doc) pairs, drop repeated pairs, and drop every n-gram present in more than
    max_doc_frequency documents. Callers pass docs in nondecreasing order, so one stable sort on
    the hashes orders the pairs by (hash, doc). Only the few hashes that repeat are looked at twice."""
    if len(docs) > 1 and (docs[1:] < docs[:-1]).any():
        order = np.lexsort((docs, hashes))
        hashes = hashes[order]
    else:
        order, hashes = _stable_sort(hashes)
    docs = docs[order]
    if max_doc_frequency < 1:  # every n-gram is too frequent
        return hashes[:0], docs[:0], len(np.unique(hashes))
    at = np.flatnonzero(hashes[1:] == hashes[:-1])  # i where pair i+1 repeats pair i's n-gram
    if not len(at):
        return hashes, docs, 0
    keep = np.ones(len(hashes), dtype=bool)
    keep[at[docs[at + 1] == docs[at]] + 1] = False  # one pair per (n-gram, document)
    members = np.union1d(at, at + 1)  # the pairs of every n-gram seen more than once, runs in order
    group = np.cumsum(np.r_[True, hashes[members[1:]] != hashes[members[:-1]]]) - 1
    frequency = np.bincount(group, weights=keep[members])  # documents per n-gram
    frequent = frequency > max_doc_frequency
    keep[members[frequent[group]]] = False
    return hashes[keep], docs[keep], int(frequent.sum())


def _match(hashes: np.ndarray, docs: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, set[int]]:
    lo = np.searchsorted(hashes, q, "left")
    hi = np.searchsorted(hashes, q, "right")
    hit = np.nonzero(hi > lo)[0]
    return hit, {int(d) for i in hit for d in docs[lo[i]:hi[i]]}


class NgramIndex:
    """In memory: sorted (n-gram hash, doc ordinal) pairs; n-grams in too many documents dropped."""

    def __init__(self, corpus: TrainCorpus, n: int, max_doc_frequency: int):
        self.n = n
        parts, first = [], 0
        for wh, counts in doc_batches(corpus.words):
            parts.append(batch_ngrams(wh, counts, n, first))
            first += len(counts)
        hashes = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint64)
        docs = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        self.hashes, self.docs, self.ignored_ngrams = _sort_and_cut(hashes, docs, max_doc_frequency)

    def __len__(self) -> int:
        return len(self.hashes)

    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.docs.nbytes)

    def lookup(self, text: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Match an eval text: (matched n-gram start positions, doc ordinals, word spans)."""
        words, spans = normalize(text)
        hit, docs = _match(self.hashes, self.docs, ngram_hashes(word_hashes(words), self.n))
        return hit.tolist(), sorted(docs), spans


class ShardedNgramIndex:
    """Out of core: the same pairs as NgramIndex, in 2**shard_bits sorted shards on disk.

    Documents stream through once, hashed a batch at a time; their (hash, doc) pairs collect in a
    buffer that spills, when `spill_pairs` is reached, into one run file grouped by shard (the top
    `shard_bits` bits of the hash). Each shard is then sorted and frequency-cut alone (an n-gram's every
    occurrence lands in one shard, so its document frequency is exact) and saved as two .npy files;
    queries go to their shard and np.searchsorted on a memory map. Peak memory is one buffer plus
    the largest shard, so it is the shard count, not the corpus, that has to grow. Shards in order
    concatenate to exactly NgramIndex's arrays (tests/test_contamination.py checks it).
    """

    def __init__(self, docs: Iterable[str | np.ndarray], n: int, max_doc_frequency: int, folder: str | Path,
                 shard_bits: int = 4, spill_pairs: int = 1 << 20, batch_chars: int = BATCH_CHARS):
        """docs: the training documents in ordinal order, each its text or its word hashes (TrainCorpus.words)."""
        if not 1 <= shard_bits <= 16:
            raise ValueError(f"shard_bits must be in 1..16, not {shard_bits}")
        self.n, self.folder, self.bits, self.shards = n, Path(folder), shard_bits, 1 << shard_bits
        self.shift = np.uint64(64 - shard_bits)
        self.folder.mkdir(parents=True, exist_ok=True)
        runs: list[tuple[Path, np.ndarray]] = []  # spill files and their shard bounds
        buf: list[tuple[np.ndarray, np.ndarray]] = []
        buffered = first = 0
        for wh, counts in doc_batches(docs, batch_chars):
            buf.append(batch_ngrams(wh, counts, n, first))
            first += len(counts)
            buffered += len(buf[-1][0])
            if buffered >= spill_pairs:
                self._spill(buf, runs)
                buf, buffered = [], 0
        self._spill(buf, runs)
        self.ignored_ngrams, self.sizes = 0, []
        maps = [(np.load(path, mmap_mode="r"), bounds) for path, bounds in runs]
        for k in range(self.shards):
            hashes = np.concatenate([m[0, b[k]:b[k + 1]] for m, b in maps] or [np.zeros(0, np.uint64)])
            docs_k = np.concatenate([m[1, b[k]:b[k + 1]] for m, b in maps] or [np.zeros(0, np.uint64)]).view(np.int64)
            hashes, docs_k, ignored = _sort_and_cut(hashes, docs_k, max_doc_frequency)
            np.save(self._path(k, "hashes"), hashes)
            np.save(self._path(k, "docs"), docs_k)
            self.ignored_ngrams += ignored
            self.sizes.append(len(hashes))
        del maps
        for path, _ in runs:
            path.unlink()
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _path(self, k: int, what: str) -> Path:
        return self.folder / f"{self.n}gram-{k:05d}.{what}.npy"

    def _spill(self, buf: list[tuple[np.ndarray, np.ndarray]], runs: list[tuple[Path, np.ndarray]]) -> None:
        """Order the buffered pairs by shard (a stable 16-bit radix sort keeps doc order) into one run file."""
        if not buf:
            return
        hashes = np.concatenate([b[0] for b in buf])
        docs = np.concatenate([b[1] for b in buf])
        buf.clear()
        shard = np.ascontiguousarray(hashes).view(np.uint16)[_TOP[1]::4] >> np.uint16(16 - self.bits)
        order = np.argsort(shard, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(shard, minlength=self.shards))]
        del shard
        run = np.empty((2, len(hashes)), dtype=np.uint64)  # one file per spill: row 0 hashes, row 1 docs
        np.take(hashes, order, out=run[0], mode="clip")  # "clip": unbuffered (the indices are valid)
        np.take(docs.view(np.uint64), order, out=run[1], mode="clip")
        del hashes, docs, order
        path = self.folder / f"run-{self.n}-{len(runs):06d}.npy"
        np.save(path, run)
        runs.append((path, bounds))

    def shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, docs) of shard k, memory-mapped."""
        if k not in self._open:
            self._open[k] = (np.load(self._path(k, "hashes"), mmap_mode="r"), np.load(self._path(k, "docs"), mmap_mode="r"))
        return self._open[k]

    def __len__(self) -> int:
        return int(sum(self.sizes))

    def nbytes(self) -> int:
        """Bytes of the shards' arrays (the same 16 per pair as in memory; .npy headers not counted)."""
        return 16 * len(self)

    def lookup(self, text: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Match an eval text: (matched n-gram start positions, doc ordinals, word spans)."""
        words, spans = normalize(text)
        q = ngram_hashes(word_hashes(words), self.n)
        route = (q >> self.shift).astype(np.int64)
        hits, docs = [], set()
        for k in np.unique(route).tolist():
            at = np.nonzero(route == k)[0]
            hit, found = _match(*self.shard(k), q[at])
            hits.append(at[hit])
            docs |= found
        hit_all = np.sort(np.concatenate(hits)) if hits else np.zeros(0, np.int64)
        return hit_all.tolist(), sorted(docs), spans
