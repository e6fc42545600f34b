"""N-gram indexes for the train/test overlap audit after GPT-3 (Brown et al. 2020, appendix C).

Each n-gram is a uint64 (ngrams.py: GPT-3's normalisation, then a polynomial rolling hash over
64-bit xxh64 word hashes, so no per-n-gram Python), stored as sorted (hash, doc ordinal) numpy arrays: 16 bytes per n-gram
occurrence against ~80 bytes for a Python set (../shared/ANCHORS.md); lookups are np.searchsorted.
NgramIndex holds them in memory; ShardedNgramIndex (the default) streams the training documents
once, spills pairs into per-shard runs by hash prefix and sorts each shard alone into .npy files,
so neither the corpus nor the whole index has to fit in memory. Both give identical results, and
both ignore n-grams found in more than `max_doc_frequency` training documents, as GPT-3 did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.evaluation.ngrams import ngram_hashes, normalize, word_hashes
from pipeline.evaluation.train_corpus import TrainCorpus

# --- indexes ---------------------------------------------------------------------------------------
def _doc_ngrams(wh: np.ndarray, n: int, ordinal: int) -> tuple[np.ndarray, np.ndarray]:
    h = ngram_hashes(wh, n)  # repeats within a document are removed after the global sort
    return h, np.full(len(h), ordinal, dtype=np.int64)


def _sort_and_cut(hashes: np.ndarray, docs: np.ndarray, max_doc_frequency: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort (hash, doc) pairs, drop repeated pairs, and drop every n-gram present in more than
    max_doc_frequency documents. Callers pass docs in nondecreasing order, so one stable sort on
    the hashes orders the pairs by (hash, doc)."""
    if len(docs) > 1 and (docs[1:] < docs[:-1]).any():
        order = np.lexsort((docs, hashes))
    else:
        order = np.argsort(hashes, kind="stable")
    hashes, docs = hashes[order], docs[order]
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = (hashes[1:] != hashes[:-1]) | (docs[1:] != docs[:-1])
    hashes, docs = hashes[first], docs[first]  # one pair per (n-gram, document): run lengths are doc frequencies
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]]) if len(hashes) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(hashes)])
    frequent = counts > max_doc_frequency
    keep = ~np.repeat(frequent, counts)
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
        parts = [_doc_ngrams(wh, n, ordinal) for ordinal, wh in enumerate(corpus.words)]
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

    Documents stream through once; their (hash, doc) pairs collect in a buffer that spills, when
    `spill_pairs` is reached, into one unsorted run file per shard, routed by the top `shard_bits`
    bits of the hash. Each shard is then sorted and frequency-cut alone (an n-gram's every
    occurrence lands in one shard, so its document frequency is exact) and saved as two .npy files;
    queries go to their shard and np.searchsorted on a memory map. Peak memory is one buffer plus
    the largest shard, so it is the shard count, not the corpus, that has to grow. Shards in order
    concatenate to exactly NgramIndex's arrays (tests/test_contamination.py checks it).
    """

    def __init__(self, word_hash_docs: Iterable[np.ndarray], n: int, max_doc_frequency: int, folder: str | Path,
                 shard_bits: int = 4, spill_pairs: int = 1 << 20):
        if not 1 <= shard_bits <= 16:
            raise ValueError(f"shard_bits must be in 1..16, not {shard_bits}")
        self.n, self.folder, self.shards = n, Path(folder), 1 << shard_bits
        self.shift = np.uint64(64 - shard_bits)
        self.folder.mkdir(parents=True, exist_ok=True)
        runs: list[list[Path]] = [[] for _ in range(self.shards)]
        buf: list[tuple[np.ndarray, np.ndarray]] = []
        buffered = 0
        for ordinal, wh in enumerate(word_hash_docs):
            buf.append(_doc_ngrams(wh, n, ordinal))
            buffered += len(buf[-1][0])
            if buffered >= spill_pairs:
                self._spill(buf, runs)
                buf, buffered = [], 0
        self._spill(buf, runs)
        self.ignored_ngrams, self.sizes = 0, []
        for k, paths in enumerate(runs):
            pairs = [np.load(p) for p in paths]
            hashes = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, np.uint64)
            docs = np.concatenate([p[1] for p in pairs]).astype(np.int64) if pairs else np.zeros(0, np.int64)
            hashes, docs, ignored = _sort_and_cut(hashes, docs, max_doc_frequency)
            np.save(self._path(k, "hashes"), hashes)
            np.save(self._path(k, "docs"), docs)
            self.ignored_ngrams += ignored
            self.sizes.append(len(hashes))
            for p in paths:
                p.unlink()
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _path(self, k: int, what: str) -> Path:
        return self.folder / f"{self.n}gram-{k:05d}.{what}.npy"

    def _spill(self, buf: list[tuple[np.ndarray, np.ndarray]], runs: list[list[Path]]) -> None:
        if not buf:
            return
        hashes = np.concatenate([b[0] for b in buf])
        docs = np.concatenate([b[1] for b in buf]).astype(np.uint64)
        shard = (hashes >> self.shift).astype(np.int64)
        order = np.argsort(shard, kind="stable")
        hashes, docs, shard = hashes[order], docs[order], shard[order]
        bounds = np.searchsorted(shard, np.arange(self.shards + 1))
        for k in range(self.shards):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                path = self.folder / f"run-{self.n}-{k:05d}-{len(runs[k]):06d}.npy"
                np.save(path, np.stack([hashes[lo:hi], docs[lo:hi]]))
                runs[k].append(path)

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
