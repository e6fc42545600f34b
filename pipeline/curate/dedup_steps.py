"""The dedup stage's datatrove steps: signature pass, LSH band pass, and the filter that applies decisions.

Each step writes files the next one reads (datatrove's MinHash layout, STYLE.md example 7); the driver
that runs them on an executor and clusters in between is pipeline.curate.dedup.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from pipeline.core import io, records
from pipeline.curate.minhash import (DedupConfig, _join, _shingles, bucket_pairs, has_words, optimal_bands, signatures,
                                     sorted_bands)


class SignatureStep(PipelineStep):
    """Signature pass (yields nothing). Per rank it writes into `out_dir`: `<rank>.meta.parquet` (ids,
    natural keys, exact-text keys, sizes, has-words flags: Arrow strings, compact), `<rank>.sig.npy` (MinHash
    signatures) and `<rank>.bands.npy` / `<rank>.order.npy` (per LSH band: band hashes sorted, and the
    local row of each), the sorted runs the band pass merges."""

    name = "🔏 MinHash signatures"
    type = "🫂 - DEDUP"

    def __init__(self, cfg: DedupConfig, seed: int, out_dir: str | Path, batch_chars: int = 4_000_000):
        super().__init__()
        self.cfg, self.seed, self.out_dir, self.batch_chars = cfg, seed, str(out_dir), batch_chars

    def run(self, data, rank: int = 0, world_size: int = 1):
        from tqdm import tqdm

        cols = defaultdict(list)
        sigs, batch = [], []

        def flush():
            if batch:
                with self.track_time():
                    sigs.append(signatures(batch, self.cfg, self.seed, exact=cols["hash"]))
                batch.clear()

        size = 0
        for doc in tqdm(data, desc=f"minhash rank {rank}", unit="doc", disable=None, leave=False):
            self.stat_update("documents")
            cols["id"].append(doc.id)
            cols["key"].append(records.natural_key(doc.metadata))
            cols["bytes"].append(len(doc.text.encode("utf-8")))
            batch.append(doc.text)
            size += len(doc.text)
            if size >= self.batch_chars:
                flush()
                size = 0
        flush()
        sig = np.concatenate(sigs) if sigs else np.zeros((0, self.cfg.num_perm), np.uint32)
        bands, order = sorted_bands(sig, *optimal_bands(self.cfg.threshold, self.cfg.num_perm))
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for suffix, arr in (("sig", sig), ("bands", bands), ("order", order)):
            with io.atomic_path(out / f"{rank:05d}.{suffix}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
        import pyarrow as pa
        import pyarrow.parquet as pq

        # the exact key "<k1 hex16><k2 hex16><n hex>" as three integers: the driver groups them with a numpy
        # sort, where a dictionary over 1M strings took 240 bytes per document (measured)
        k1, k2, kn = (np.array([int(h[a:b], 16) for h in cols["hash"]], dtype=t)
                      for a, b, t in ((0, 16, np.uint64), (16, 32, np.uint64), (32, None, np.int64)))
        meta = pa.table({"id": pa.array(cols["id"], pa.string()), "key": pa.array(cols["key"], pa.string()),
                         "k1": k1, "k2": k2, "kn": kn, "bytes": pa.array(cols["bytes"], pa.int64()),
                         "words": pa.array(has_words(sig))})
        with io.atomic_path(out / f"{rank:05d}.meta.parquet") as tmp:  # last: its presence means the rank is whole
            pq.write_table(meta, tmp)
        return iter(())


class BandStep(PipelineStep):
    """LSH band pass (yields nothing): task `rank` merges the sorted band tables of every shard for bands
    rank, rank + world_size, ... and writes `<out_dir>/<band>.npy`, the candidate pairs (global rows)."""

    name = "🪣 LSH buckets"
    type = "🫂 - DEDUP"

    def __init__(self, shard_prefixes: list[str], mask_path: str | Path, bands: int, out_dir: str | Path):
        super().__init__()
        self.shard_prefixes, self.mask_path, self.bands, self.out_dir = shard_prefixes, str(mask_path), bands, str(out_dir)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        mask = np.load(self.mask_path)
        parts, offset = [], 0
        for prefix in self.shard_prefixes:
            h, order = (np.load(f"{prefix}.{s}.npy", mmap_mode="r") for s in ("bands", "order"))
            parts.append((h, order, offset))
            offset += h.shape[1]
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        for band in range(rank, self.bands, world_size):
            with self.track_time():
                pairs = bucket_pairs([p for p in parts if p[0].shape[1]], band, mask)
            self.stat_update("candidate_pairs", value=len(pairs))
            with io.atomic_path(Path(self.out_dir) / f"{band:05d}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, pairs)
        return iter(())


class ShingleSets(PipelineStep):
    """Pass-through step of the filter pass: for every document of a cluster (cluster_size > 1 in its
    shard's decisions) it keeps the distinct shingle hashes, the report's true-Jaccard check on the MinHash
    estimate. Task `rank` writes `<out_dir>/<rank>.sets.bin` (the sets, uint64, one after another) and
    `<rank>.sets.parquet` (local row, start and length in hashes, first HEAD_CHARS characters), so the
    report reads no input shard again and this work spreads over the executor with the filter."""

    name = "🧮 shingle sets of clustered docs"
    type = "🫂 - DEDUP"
    HEAD_CHARS = 200  # what the report's examples show of a document
    BATCH_CHARS = 1_000_000  # shingling peaks at ~60 bytes per character (tracemalloc): ~60 MB beside the writers

    def __init__(self, decisions_dir: str | Path, out_dir: str | Path, ngram: int):
        super().__init__()
        self.decisions_dir, self.out_dir, self.ngram = str(decisions_dir), str(out_dir), ngram

    def run(self, data, rank: int = 0, world_size: int = 1):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(f"{self.decisions_dir}/{rank:05d}.parquet")
        dec = pq.read_table(path, columns=["id", "cluster_size"]) if path.exists() else None
        ids = dec["id"].to_pylist() if dec is not None else []
        clustered = dec["cluster_size"].to_numpy() > 1 if dec is not None else np.zeros(0, bool)
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cols = defaultdict(list)
        batch: list[tuple[int, str]] = []
        written = 0
        with io.atomic_path(out / f"{rank:05d}.sets.bin") as tmp, open(tmp, "wb") as fh:
            def flush():
                nonlocal written
                if not batch:
                    return
                with self.track_time():
                    sh, off = _shingles(*_join([t for _, t in batch]), self.ngram)
                    doc = np.repeat(np.arange(len(batch)), np.diff(off))
                    o = np.lexsort((sh, doc))
                    sh, doc = sh[o], doc[o]
                    first = np.ones(len(sh), dtype=bool)
                    first[1:] = (sh[1:] != sh[:-1]) | (doc[1:] != doc[:-1])
                    fh.write(sh[first].tobytes())
                    length = np.bincount(doc[first], minlength=len(batch))
                cols["row"] += [r for r, _ in batch]
                cols["start"] += (written + np.concatenate([[0], np.cumsum(length)[:-1]])).tolist()
                cols["length"] += length.tolist()
                cols["head"] += [t[:self.HEAD_CHARS] for _, t in batch]
                written += int(length.sum())
                batch.clear()

            size = 0
            for row, doc in enumerate(data):
                if row >= len(ids) or ids[row] != doc.id:  # the signature pass saw these documents, in this order
                    raise RuntimeError(f"dedup shard {rank}: document {row} ({doc.id}) is not the one the "
                                       "signature pass saw: the inputs changed during the stage")
                if clustered[row] and doc.text:
                    self.stat_update("clustered_docs")
                    batch.append((row, doc.text))
                    size += len(doc.text)
                    if size >= self.BATCH_CHARS:
                        flush()
                        size = 0
                yield doc
            flush()
        table = pa.table({"row": pa.array(cols["row"], pa.int64()), "start": pa.array(cols["start"], pa.int64()),
                          "length": pa.array(cols["length"], pa.int64()), "head": pa.array(cols["head"], pa.string())})
        with io.atomic_path(out / f"{rank:05d}.sets.parquet") as tmp:
            pq.write_table(table, tmp)


@functools.lru_cache(maxsize=2)
def _decisions(path: str) -> dict:
    """id -> (cluster id, cluster size, reason) of one shard: what its two filters (one process) share."""
    import pyarrow.parquet as pq

    if not Path(path).exists():  # a shard the signature pass saw no document in
        return {}
    t = pq.read_table(path).to_pydict()
    return {d: (c, s, r) for d, c, s, r in zip(t["id"], t["cluster_id"], t["cluster_size"], t["reason"])}


class DedupFilter(BaseFilter):
    """Tags every document with its cluster (id of the kept doc, size) and drops those whose
    decision is `reason`; the exclusion writer keeps them under removed/<reason>/. Task `rank` reads
    `<decisions_dir>/<rank>.parquet`, the decisions of the documents its shard gave the signature pass."""

    name = "🫂 dedup filter"

    def __init__(self, decisions_dir: str | Path, reason: str, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.decisions_dir, self.reason, self._decisions = str(decisions_dir), reason, {}

    def run(self, data, rank: int = 0, world_size: int = 1):
        self._decisions = _decisions(f"{self.decisions_dir}/{rank:05d}.parquet")
        return super().run(data, rank, world_size)

    def filter(self, doc) -> bool | tuple[bool, str]:
        d = self._decisions.get(doc.id)
        if d is None:  # not seen by the signature pass: cannot happen unless inputs changed under us
            return True
        doc.metadata[records.DEDUP_CLUSTER_ID] = d[0]
        doc.metadata[records.DEDUP_CLUSTER_SIZE] = d[1]
        if d[2] == self.reason:
            return False, self.reason
        return True
