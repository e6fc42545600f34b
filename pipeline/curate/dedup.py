"""Fuzzy deduplication across sources: exact hashes, then MinHash LSH (Broder 1997; GPT-3 sec. 2.2).

GPT-3 "fuzzily deduplicated documents within each dataset using Spark's MinHashLSH with 10 hashes"
and removed WebText from Common Crawl. Here one run sees every source at once, so a crawl copy of a
WebText page (or of a book) is found like any other near-duplicate; within a cluster the document of
the highest-priority source survives (dedup.priority: books > webtext > cc), ties to the smallest id.

Steps (datatrove style, in dedup_steps.py, files between them, all under the stage's resume work dir; each pass runs on the
executor params.yaml `executor` picks: local, Ray or Slurm, see executor.py):
  1. `SignatureStep`, one task per input shard: exact-text keys (`text_hashes`) and MinHash signatures
     (`signatures`: numpy only, no per-word Python), plus per LSH band the band hashes sorted, on disk.
  2. `BandStep`, one task per band: merges the shards' sorted band tables range by range of the 64-bit
     hash space (memory: one range, never all signatures) into candidate pairs.
  3. `decide` in the driver: exact groups, candidates verified by signature agreement >= threshold (rows
     read from shard memmaps), union-find clusters, keep rule. Plain deterministic Python: datatrove's Rust
     cluster step is not deterministic (datatrove#106). It holds ids, text keys and parents in memory
     (~150 bytes per document), not signatures (512 bytes per document at 128 permutations).
  4. `DedupFilter` x2 with exclusion writers, one task per input shard: removed/exact_duplicate, removed/duplicate.
Bands and rows come from the threshold as datasketch picks them (`optimal_bands`).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from pipeline.core import executor, io, params, records, report, truth
from pipeline.curate import dedup_steps, minhash
from pipeline.curate.dedup_steps import BandStep, DedupFilter, SignatureStep
from pipeline.curate.minhash import DedupConfig, SigStore, candidate_pairs, jaccard, optimal_bands, shingle_set, verify

log = logging.getLogger(__name__)
STAGE = "dedup"
EXACT, NEAR = "exact_duplicate", "duplicate"


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def decide(ids: list[str], hashes: list[str], sig, has_words: np.ndarray, cfg: DedupConfig,
           pairs_fn=None) -> dict:
    """Cluster documents and pick the survivor of each cluster; a pure function of the inputs as sets.

    Args:
        ids, hashes: document ids and exact-text keys (text_hashes), row-aligned with `sig`.
        sig: (n, num_perm) signatures: an array, or a SigStore over shard files.
        has_words: rows that saw at least one shingle.
        cfg: params.yaml `dedup`.
        pairs_fn: `mask -> candidate pairs (i < j)` among rows where mask is True (one per exact group,
            with words); None bands `sig` in memory. The stage passes the on-disk band pass here.

    Returns {doc_id: {"cluster_id", "cluster_size", "reason" (None if kept), "est_jaccard"}} where
    est_jaccard is the signature agreement with the kept document. Input order does not matter: the
    keep rule is (priority rank, id), and candidates are verified (agreement >= threshold) here.
    """
    rank = {s: k for k, s in enumerate(cfg.priority)}
    key = [(rank.get(records.source_of(d), len(rank)), d) for d in ids]
    parent = list(range(len(ids)))

    def union(i: int, j: int) -> None:
        ri, rj = _find(parent, i), _find(parent, j)
        if ri != rj:
            parent[max(ri, rj, key=lambda r: key[r])] = min(ri, rj, key=lambda r: key[r])

    first: dict[str, int] = {}
    for i in sorted(range(len(ids)), key=lambda i: key[i]):  # exact groups: best doc first
        if hashes[i] in first:
            union(first[hashes[i]], i)
        else:
            first[hashes[i]] = i
    mask = np.zeros(len(ids), dtype=bool)
    mask[list(first.values())] = True
    mask &= np.asarray(has_words, dtype=bool)
    if pairs_fn is None:
        pairs, _ = candidate_pairs(sig, cfg, mask) if mask.any() else (np.zeros((0, 2), np.int64), None)
    else:
        pairs, _ = verify(sig, pairs_fn(mask), cfg.threshold)
    for i, j in pairs.tolist():
        union(i, j)
    roots = [_find(parent, i) for i in range(len(ids))]
    size = Counter(roots)
    rows = np.arange(len(ids))
    agree = np.concatenate([(sig[rows[k:k + 65536]] == sig[np.asarray(roots[k:k + 65536], np.int64)]).mean(axis=1)
                            for k in range(0, len(ids), 65536)]) if ids else np.zeros(0)
    out = {}
    for i, r in enumerate(roots):
        reason = None if i == r else (EXACT if hashes[i] == hashes[r] else NEAR)
        out[ids[i]] = {"cluster_id": ids[r], "cluster_size": size[r], "reason": reason,
                       "est_jaccard": round(float(agree[i]), 4)}
    return out


# --- the stage ------------------------------------------------------------------------------------
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # thresholds of the sweep plot (sample truth only)
SWEEP_MAX_DOCS = 200_000  # the sweep bands signatures in memory: skipped above this


def _load_meta(prefixes: list[Path]) -> dict[str, np.ndarray]:
    parts = defaultdict(list)
    for prefix in prefixes:
        with np.load(f"{prefix}.npz") as z:
            for k in z.files:
                parts[k].append(z[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def run(cfg: DedupConfig, seed: int, inputs: dict[str, str | Path], out: str | Path,
        truth_path: str | Path | None = None, ecfg=None) -> report.StageReport:
    """Deduplicate the document folders `inputs` ({source: folder}) into `out`/<source>/.

    Three datatrove passes on the executor of `ecfg` (pipeline.core.executor): signatures (one task per input
    shard), LSH bands (one task per band, merging per-shard sorted band tables from disk), filter (one task
    per input shard). Between them, in this process: exact groups, candidate checks, union-find and the keep
    rule over ids, text keys and the candidate pairs (signatures are read from shard memmaps, never all held).

    Args:
        cfg: params.yaml `dedup`.
        seed: params.yaml `seed` (MinHash permutations).
        inputs: source name -> document folder (layout of pipeline.core.io).
        out: output folder: <source>/docs, <source>/removed/{exact_duplicate,duplicate},
            clusters.parquet, _manifest.json.
        truth_path: the sample's truth.json, for precision/recall and the sweep plot (None on real data).
        ecfg: params.yaml `executor` (pipeline.core.executor.ExecutorConfig); None: local, one worker.

    Returns:
        The filled StageReport (the caller writes it).
    """
    ecfg = ecfg or executor.ExecutorConfig()
    rep = report.StageReport(STAGE)
    # absolute paths: fsspec caches a datatrove folder by its path string, so a relative one would
    # keep pointing at the first working directory it was resolved in (seen in tests that chdir)
    inputs = {s: Path(f).resolve() for s, f in inputs.items()}
    for source, folder in sorted(inputs.items()):
        if not folder.is_dir():
            log.error("dedup input %s: folder %s does not exist; the source contributes nothing", source, folder)
            rep.error("missing_input")
        elif not io.shard_paths(folder):
            log.warning("dedup input %s: %s holds no kept documents", source, folder)
    present = [s for s in sorted(inputs) if io.shard_paths(inputs[s])]
    work = io.work_dir(STAGE, io.run_fingerprint(cfg, seed, inputs=[inputs[s] for s in present],
                                                 code=[__file__, dedup_steps.__file__, minhash.__file__])).resolve()
    prefixes = []
    for source in present:
        n = len(io.shard_paths(inputs[source]))
        executor.run([io.doc_reader(inputs[source]), SignatureStep(cfg, seed, work / "sigs" / source)],
                     n, work / "logs" / "signatures" / source, ecfg)
        prefixes += [work / "sigs" / source / f"{r:05d}" for r in range(n)]
    table = _load_meta(prefixes) if prefixes else {}
    ids = table["id"].tolist() if table else []
    if len(set(ids)) != len(ids):
        dup = len(ids) - len(set(ids))
        log.error("%d documents repeat an id already seen; they share its dedup decision", dup)
        rep.error("duplicate_id", dup)
    store = SigStore([f"{p}.sig.npy" for p in prefixes])
    bands, _ = optimal_bands(cfg.threshold, cfg.num_perm)

    def band_pass(mask: np.ndarray) -> np.ndarray:
        np.save(work / "mask.npy", mask)
        logs = work / "logs" / "bands"
        shutil.rmtree(logs, ignore_errors=True)  # the mask is rewritten each run: no completion may be reused
        executor.run([BandStep([str(p) for p in prefixes], work / "mask.npy", bands, work / "pairs")],
                     bands, logs, ecfg)
        found = [np.load(work / "pairs" / f"{b:05d}.npy") for b in range(bands)]
        return np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), np.int64)

    decisions = decide(ids, table["hash"].tolist(), store, table["words"], cfg, pairs_fn=band_pass) if ids else {}
    io.write_json(work / "decisions.json", decisions)

    staging = work / "out"
    if staging.exists():
        shutil.rmtree(staging)
    for source in present:
        dst = staging / source
        pipe = [io.doc_reader(inputs[source]),
                DedupFilter(work / "decisions.json", EXACT, io.removed_writer(dst, EXACT)),
                DedupFilter(work / "decisions.json", NEAR, io.removed_writer(dst, NEAR)),
                io.doc_writer(dst)]
        logs = work / "logs" / "filter" / source
        shutil.rmtree(logs, ignore_errors=True)  # staging was wiped, so no completion may be skipped
        executor.run(pipe, len(io.shard_paths(inputs[source])), logs, ecfg)
        rep.add_datatrove_stats(logs / "stats.json")

    truth_data = truth.load(truth_path)
    _summarise(rep, cfg, table, decisions, staging, present, truth_data)
    _write_clusters(staging / "clusters.parquet", rep.extra.pop("_rows"))
    sweep = threshold_sweep(cfg, ids, table, store, truth_data) if ids else []
    rep.extra["sweep"] = sweep
    report.write_plot(STAGE, "sweep", sweep)
    io.write_manifest(staging, STAGE, {"dedup": params.as_dict(cfg), "seed": seed}, inputs)
    io.publish(staging, out)
    return rep


def threshold_sweep(cfg: DedupConfig, ids: list[str], table: dict, sig, truth_data: dict | None) -> list[dict]:
    """Threshold vs precision/recall of the drops, and recall of the planted near-duplicate pairs, on the
    sample's truth (rows for the DVC plot); [] without truth or above SWEEP_MAX_DOCS documents."""
    if not truth_data or len(ids) > SWEEP_MAX_DOCS:
        return []
    keys = table["key"].tolist()
    rows = []
    for t in SWEEP:
        dec = decide(ids, table["hash"].tolist(), sig[np.arange(len(ids))], table["words"],
                     dataclasses.replace(cfg, threshold=t))
        dropped = [k for d, k in zip(ids, keys) if dec[d]["reason"]]
        kept = [k for d, k in zip(ids, keys) if not dec[d]["reason"]]
        s = truth.score_drops(truth_data, STAGE, dropped, kept) or {}
        cluster = {k: dec[d]["cluster_id"] for d, k in zip(ids, keys)}
        pairs = [p for p in truth_data.get("near_duplicates", []) if p[0] in cluster and p[1] in cluster]
        found = sum(cluster[a] == cluster[b] for a, b in pairs)
        rows.append({"threshold": t, "precision": s.get("precision"), "recall": s.get("recall"),
                     "pair_recall": round(found / len(pairs), 4) if pairs else None,
                     "removed": len(dropped), "bands": optimal_bands(t, cfg.num_perm)[0],
                     "rows": optimal_bands(t, cfg.num_perm)[1]})
    return rows


def _summarise(rep: report.StageReport, cfg: DedupConfig, table: dict, decisions: dict, staging: Path,
               sources: list[str], truth_data: dict | None) -> None:
    """Per-source counts, cross-source removals, cluster rows with true Jaccard, examples, truth P/R."""
    ids = table["id"].tolist() if table else []
    key_of = dict(zip(ids, table["key"].tolist())) if table else {}
    nbytes = dict(zip(ids, table["bytes"].tolist())) if table else {}
    per_source = {s: Counter() for s in sources}
    cross = Counter()
    for d, dec in decisions.items():
        src = records.source_of(d)
        c = per_source.setdefault(src, Counter())
        c["docs_in"] += 1
        c["bytes_in"] += nbytes[d]
        if dec["reason"]:
            c[dec["reason"]] += 1
            kept_src = records.source_of(dec["cluster_id"])
            if kept_src != src:
                cross[f"{src}_dup_of_{kept_src}"] += 1
        else:
            c["docs_out"] += 1
            c["bytes_out"] += nbytes[d]
    rep.docs_in = sum(c["docs_in"] for c in per_source.values())
    rep.docs_out = sum(c["docs_out"] for c in per_source.values())
    rep.bytes_in = sum(c["bytes_in"] for c in per_source.values())
    rep.bytes_out = sum(c["bytes_out"] for c in per_source.values())

    multi = {d for d, dec in decisions.items() if dec["cluster_size"] > 1}
    texts = {}
    for source in sources:
        for doc in list(io.iter_docs(staging / source)) + list(io.iter_removed(staging / source)):
            if doc.id in multi:
                texts[doc.id] = doc.text
    shingles = {d: shingle_set(t, cfg.ngram) for d, t in texts.items()}
    rows, examples = [], []
    for d in sorted(multi, key=lambda d: (decisions[d]["cluster_id"], decisions[d]["reason"] is not None, d)):
        dec = decisions[d]
        kept = dec["cluster_id"]
        true_j = jaccard(shingles[d], shingles[kept]) if d in shingles and kept in shingles else None
        rows.append({"cluster_id": kept, "doc_id": d, "source": records.source_of(d), "kept": dec["reason"] is None,
                     "reason": dec["reason"] or "", "est_jaccard_to_kept": dec["est_jaccard"],
                     "true_jaccard_to_kept": None if true_j is None else round(true_j, 4)})
        if dec["reason"]:
            examples.append({"removed_id": d, "kept_id": kept, "removed_key": key_of.get(d, ""),
                             "kept_key": key_of.get(kept, ""), "reason": dec["reason"],
                             "est_jaccard": dec["est_jaccard"], "true_jaccard": rows[-1]["true_jaccard_to_kept"],
                             "removed_text": texts.get(d, "")[:200], "kept_text": texts.get(kept, "")[:200]})
    # the most telling examples first: near (not exact) duplicates, across sources, least similar
    examples.sort(key=lambda e: (e["reason"] != NEAR, records.source_of(e["removed_id"]) ==
                                 records.source_of(e["kept_id"]), e["est_jaccard"], e["removed_id"]))
    sizes = Counter(decisions[d]["cluster_size"] for d in multi if decisions[d]["reason"] is None)
    bands, rows_per_band = optimal_bands(cfg.threshold, cfg.num_perm)
    rep.extra.update({
        "per_source": {s: dict(sorted(c.items())) for s, c in sorted(per_source.items())},
        "cross_source_removals": dict(sorted(cross.items())),
        "clusters": {"n": sum(sizes.values()), "docs": len(multi), "max_size": max(sizes, default=0),
                     "sizes": {str(k): v for k, v in sorted(sizes.items())}},
        "lsh": {"bands": bands, "rows": rows_per_band, "num_perm": cfg.num_perm, "threshold": cfg.threshold},
        "examples": examples[:10],
        "_rows": rows,
    })
    if truth_data:
        dropped = [key_of[d] for d, dec in decisions.items() if dec["reason"]]
        kept = [key_of[d] for d, dec in decisions.items() if not dec["reason"]]
        scored = truth.score_drops(truth_data, STAGE, dropped, kept) or {}
        cluster_of_key = {key_of[d]: dec["cluster_id"] for d, dec in decisions.items()}
        pairs = [p for p in truth_data.get("near_duplicates", []) if p[0] in cluster_of_key and p[1] in cluster_of_key]
        found = [p for p in pairs if cluster_of_key[p[0]] == cluster_of_key[p[1]]]
        scored["near_duplicate_pairs"] = {
            "labelled": len(truth_data.get("near_duplicates", [])), "seen": len(pairs), "found": len(found),
            "recall": round(len(found) / len(pairs), 4) if pairs else 1.0,
            "missed": sorted(p for p in map(list, pairs) if p not in map(list, found))[:10]}
        rep.extra["truth"] = scored


def _write_clusters(path: Path, rows: list[dict]) -> None:
    """clusters.parquet: one row per document of a cluster of two or more."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("cluster_id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()),
                        ("kept", pa.bool_()), ("reason", pa.string()), ("est_jaccard_to_kept", pa.float64()),
                        ("true_jaccard_to_kept", pa.float64())])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
