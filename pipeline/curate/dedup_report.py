"""What the dedup stage reports, from compact arrays: per-source counts, clusters.parquet, examples, truth.

Nothing here holds a Python object per document: counts are bincounts, ids stay one Arrow string array,
and the true Jaccard of each clustered document to its kept one (the check on the MinHash estimate) comes
from the shingle sets the filter pass's tasks wrote (dedup_steps.ShingleSets), read back per pair.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import report, truth
from pipeline.curate.dedup_cluster import EXACT_CODE, KEPT, NEAR_CODE, Clusters
from pipeline.curate.minhash import DedupConfig, jaccard, optimal_bands

OPEN_FILES = 256  # shard set files open at once while the pairs are read (well under the usual 1,024 fds)
REASONS = {EXACT_CODE: "exact_duplicate", NEAR_CODE: "duplicate"}  # the names dedup.EXACT and dedup.NEAR
SCHEMA = pa.schema([("cluster_id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()),
                    ("kept", pa.bool_()), ("reason", pa.string()), ("est_jaccard_to_kept", pa.float64()),
                    ("true_jaccard_to_kept", pa.float64())])


class Shards:
    """Where each row of the driver's arrays came from: shard k holds rows starts[k]:starts[k + 1] of
    input file files[k], source sources[k], with its signature-pass metadata at meta[k]."""

    def __init__(self, files: list[Path], sources: list[str], meta: list[str], counts: list[int]):
        self.files, self.sources, self.meta = files, sources, meta
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    def column(self, name: str, rows: np.ndarray | None = None) -> list:
        """One metadata column (e.g. the natural keys) for `rows` (sorted), or all rows."""
        out = []
        for k, path in enumerate(self.meta):
            lo, hi = self.starts[k], self.starts[k + 1]
            local = None if rows is None else rows[(rows >= lo) & (rows < hi)] - lo
            if local is None or len(local):
                col = pq.read_table(path, columns=[name])[name]
                out += (col if local is None else col.take(pa.array(local))).to_pylist()
        return out


def true_jaccards(shards: Shards, cl: Clusters, rows: np.ndarray, sets_dir: Path,
                  keep_text: set[int]) -> tuple[np.ndarray, dict[int, str]]:
    """True shingle Jaccard of each of `rows` (sorted) to its kept document, and the first characters of the
    `keep_text` rows, from the shingle sets the filter pass wrote per shard (dedup_steps.ShingleSets).

    Sets are read one pair at a time (os.pread: no mapped pages held, so the driver's RSS stays its own),
    with at most OPEN_FILES shard files open; a row without a set (empty text) keeps a Jaccard of None (NaN).
    """
    need = np.union1d(rows, cl.root[rows])
    shard = np.full(len(need), -1, dtype=np.int64)
    start = np.zeros(len(need), dtype=np.int64)
    length = np.zeros(len(need), dtype=np.int64)
    bins, texts = [], {}
    for k, meta in enumerate(shards.meta):
        base = Path(sets_dir) / shards.sources[k] / Path(meta).name.split(".")[0]
        bins.append(f"{base}.sets.bin")
        index = Path(f"{base}.sets.parquet")
        t = pq.read_table(index) if index.exists() else None
        if t is None or not t.num_rows:
            continue
        g = shards.starts[k] + t["row"].to_numpy()
        at = np.minimum(np.searchsorted(need, g), len(need) - 1)
        ok = need[at] == g
        shard[at[ok]], start[at[ok]], length[at[ok]] = k, t["start"].to_numpy()[ok], t["length"].to_numpy()[ok]
        wanted = [r for r in g.tolist() if r in keep_text]
        if wanted:
            texts.update(zip(wanted, t["head"].take(pa.array(np.flatnonzero(np.isin(g, wanted)))).to_pylist()))

    fds: dict[int, int] = {}

    def read(i: int) -> np.ndarray:
        k = int(shard[i])
        if k not in fds:
            if len(fds) >= OPEN_FILES:
                for fd in fds.values():
                    os.close(fd)
                fds.clear()
            fds[k] = os.open(bins[k], os.O_RDONLY)
        return np.frombuffer(os.pread(fds[k], int(length[i]) * 8, int(start[i]) * 8), dtype=np.uint64)

    result = np.full(len(rows), np.nan)
    a_at, b_at = np.searchsorted(need, rows), np.searchsorted(need, cl.root[rows])
    try:
        for k, (i, j) in enumerate(zip(a_at.tolist(), b_at.tolist())):
            if shard[i] >= 0 and shard[j] >= 0:
                result[k] = 1.0 if i == j else jaccard(read(i), read(j))
    finally:
        for fd in fds.values():
            os.close(fd)
    return result, texts


def summarise(rep: report.StageReport, cfg: DedupConfig, meta: dict, cl: Clusters, shards: Shards,
              present: list[str], truth_data: dict | None, sets_dir: Path) -> pa.Table:
    """Per-source counts, cross-source removals, cluster rows with true Jaccard, examples, truth P/R into
    `rep`; returns the clusters.parquet table. `meta`: the driver's arrays (dedup._load_meta); `sets_dir`:
    the filter pass's shingle sets of clustered documents (dedup_steps.ShingleSets)."""
    ids, n, nbytes, src, src_names = meta["ids"], meta["n"], meta["bytes"], meta["src"], meta["src_names"]
    removed = cl.reason != KEPT
    per_source = {s: Counter() for s in present}
    for k, s in enumerate(src_names):
        mine = src == k
        c = per_source.setdefault(s, Counter())
        c["docs_in"] += int(mine.sum())
        c["bytes_in"] += int(nbytes[mine].sum())
        for code, name in REASONS.items():
            if (cl.reason[mine] == code).any():
                c[name] += int((cl.reason[mine] == code).sum())
        c["docs_out"] += int((mine & ~removed).sum())
        c["bytes_out"] += int(nbytes[mine & ~removed].sum())
    for c in per_source.values():  # a Counter drops no zero entries it was given: match the old dict
        for k in [k for k, v in c.items() if v == 0 and k in ("docs_out", "bytes_out")]:
            del c[k]
    cross = Counter()
    moved = np.flatnonzero(removed & (src != src[cl.root]))
    pairs, counts = np.unique(np.stack([src[moved], src[cl.root[moved]]]), axis=1, return_counts=True)
    for (a, b), count in zip(pairs.T.tolist(), counts.tolist()):
        cross[f"{src_names[a]}_dup_of_{src_names[b]}"] += count
    rep.docs_in = sum(c["docs_in"] for c in per_source.values())
    rep.docs_out = sum(c["docs_out"] for c in per_source.values())
    rep.bytes_in = sum(c["bytes_in"] for c in per_source.values())
    rep.bytes_out = sum(c["bytes_out"] for c in per_source.values())

    multi = np.flatnonzero(cl.size > 1)
    est4 = np.array([round(e, 4) for e in cl.est(multi).tolist()], dtype=np.float64)
    # examples: the most telling first: near (not exact) duplicates, across sources, least similar, by id
    cand = multi[removed[multi]]
    id_pos = np.empty(n, dtype=np.int64)
    id_pos[meta["id_order"]] = np.arange(n)
    cand_est = est4[removed[multi]]
    pick = cand[np.lexsort((id_pos[cand], cand_est, src[cand] == src[cl.root[cand]], cl.reason[cand] != NEAR_CODE))][:10]
    true_j, texts = true_jaccards(shards, cl, multi, sets_dir, set(pick.tolist()) | set(cl.root[pick].tolist()))
    true4 = [None if np.isnan(t) else round(float(t), 4) for t in true_j]
    table = pa.table({"cluster_id": ids.take(pa.array(cl.root[multi])), "doc_id": ids.take(pa.array(multi)),
                      "removed": pa.array(removed[multi])})
    order = pc.sort_indices(table, [("cluster_id", "ascending"), ("removed", "ascending"), ("doc_id", "ascending")])
    order = order.to_numpy()
    rows = multi[order]
    clusters = pa.table({
        "cluster_id": table["cluster_id"].take(pa.array(order)), "doc_id": table["doc_id"].take(pa.array(order)),
        "source": pa.array([src_names[s] for s in src[rows]], pa.string()),
        "kept": pa.array(~removed[rows]),
        "reason": pa.array([REASONS.get(int(r), "") for r in cl.reason[rows]], pa.string()),
        "est_jaccard_to_kept": pa.array(est4[order], pa.float64()),
        "true_jaccard_to_kept": pa.array([true4[k] for k in order], pa.float64())}, schema=SCHEMA)

    shown = np.unique(np.concatenate([pick, cl.root[pick]]))
    keys = dict(zip(shown.tolist(), shards.column("key", shown) if len(shown) else []))
    shown_ids = dict(zip(shown.tolist(), ids.take(pa.array(shown)).to_pylist()))
    examples = []
    for r, at in zip(pick.tolist(), np.searchsorted(multi, pick).tolist()):
        kept = int(cl.root[r])
        examples.append({"removed_id": shown_ids[r], "kept_id": shown_ids[kept], "removed_key": keys.get(r, ""),
                         "kept_key": keys.get(kept, ""), "reason": REASONS[int(cl.reason[r])],
                         "est_jaccard": float(est4[at]), "true_jaccard": true4[at],
                         "removed_text": texts.get(r, ""), "kept_text": texts.get(kept, "")})
    sizes = Counter(cl.size[multi[~removed[multi]]].tolist())
    bands, rows_per_band = optimal_bands(cfg.threshold, cfg.num_perm)
    rep.extra.update({
        "per_source": {s: dict(sorted(c.items())) for s, c in sorted(per_source.items())},
        "cross_source_removals": dict(sorted(cross.items())),
        "clusters": {"n": sum(sizes.values()), "docs": len(multi), "max_size": max(sizes, default=0),
                     "sizes": {str(k): v for k, v in sorted(sizes.items())}},
        "lsh": {"bands": bands, "rows": rows_per_band, "num_perm": cfg.num_perm, "threshold": cfg.threshold},
        "examples": examples,
    })
    if truth_data:
        _score_truth(rep, ids, cl, shards, truth_data)
    return clusters


def _score_truth(rep: report.StageReport, ids: pa.Array, cl: Clusters, shards: Shards, truth_data: dict) -> None:
    """Precision/recall of the drops and recall of the planted near-duplicate pairs (the sample only)."""
    keys = shards.column("key")
    removed = (cl.reason != KEPT).tolist()
    scored = truth.score_drops(truth_data, "dedup", [k for k, r in zip(keys, removed) if r],
                               [k for k, r in zip(keys, removed) if not r]) or {}
    root_ids = ids.take(pa.array(cl.root)).to_pylist()
    cluster_of_key = dict(zip(keys, root_ids))
    pairs = [p for p in truth_data.get("near_duplicates", []) if p[0] in cluster_of_key and p[1] in cluster_of_key]
    found = [p for p in pairs if cluster_of_key[p[0]] == cluster_of_key[p[1]]]
    scored["near_duplicate_pairs"] = {
        "labelled": len(truth_data.get("near_duplicates", [])), "seen": len(pairs), "found": len(found),
        "recall": round(len(found) / len(pairs), 4) if pairs else 1.0,
        "missed": sorted(p for p in map(list, pairs) if p not in map(list, found))[:10]}
    rep.extra["truth"] = scored
