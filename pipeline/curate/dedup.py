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
  3. `dedup_cluster.cluster` in the driver: exact groups, candidates streamed band file by band file and
     verified by signature agreement >= threshold (rows read from the shard files), union-find over int
     arrays, keep rule; decisions written per input shard. Deterministic numpy: datatrove's Rust cluster step
     is not (datatrove#106). It holds ~40 bytes per document in arrays plus the ids as one Arrow string
     array, never signatures (512 bytes per document at 128 permutations) nor all candidate pairs.
  4. `ShingleSets` then `DedupFilter` x2 with exclusion writers, one task per input shard: the shingle sets
     of clustered documents (for the report), removed/exact_duplicate, removed/duplicate.
     Then `dedup_report`: counts, clusters.parquet with each clustered document's true Jaccard, examples.
Bands and rows come from the threshold as datasketch picks them (`optimal_bands`).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.core import executor, io, params, records, report, truth
from pipeline.curate import dedup_cluster, dedup_report, dedup_steps, minhash
from pipeline.curate.dedup_steps import BandStep, DedupFilter, ShingleSets, SignatureStep
from pipeline.curate.minhash import DedupConfig, SigStore, optimal_bands

log = logging.getLogger(__name__)
STAGE = "dedup"
EXACT, NEAR = dedup_report.REASONS[dedup_cluster.EXACT_CODE], dedup_report.REASONS[dedup_cluster.NEAR_CODE]


def decide(ids: list[str], hashes: list, sig, has_words: np.ndarray, cfg: DedupConfig, pairs_fn=None) -> dict:
    """Cluster documents and pick the survivor of each cluster; a pure function of the inputs as sets.

    The in-memory form of what the stage does on disk (dedup_cluster.cluster), for tests and the sweep.

    Args:
        ids, hashes: document ids and exact-text keys (text_hashes, or any equal-means-equal label),
            row-aligned with `sig`.
        sig: (n, num_perm) signatures: an array, or a SigStore over shard files.
        has_words: rows that saw at least one shingle.
        cfg: params.yaml `dedup`.
        pairs_fn: `mask -> candidate pair arrays (rows)` among rows where mask is True (one per exact group,
            with words); None bands `sig` in memory.

    Returns {doc_id: {"cluster_id", "cluster_size", "reason" (None if kept), "est_jaccard"}} where
    est_jaccard is the signature agreement with the kept document. Input order does not matter: the
    keep rule is (priority rank, id), and candidates are verified (agreement >= threshold).
    """
    if not ids:
        return {}
    prio = {s: k for k, s in enumerate(cfg.priority)}
    source_rank = np.array([prio.get(records.source_of(d), len(prio)) for d in ids])
    rank = dedup_cluster.ranks(source_rank, np.argsort(np.array(ids), kind="stable"))
    group = np.unique(np.array(hashes), return_inverse=True)[1].ravel()
    cl = dedup_cluster.cluster(rank, group, has_words, sig, cfg, pairs_fn)
    reasons = [None, EXACT, NEAR]
    return {ids[i]: {"cluster_id": ids[r], "cluster_size": s, "reason": reasons[c], "est_jaccard": round(e, 4)}
            for i, (r, s, c, e) in enumerate(zip(cl.root.tolist(), cl.size.tolist(), cl.reason.tolist(), cl.est().tolist()))}


# --- the stage ------------------------------------------------------------------------------------
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # thresholds of the sweep plot (sample truth only)
SWEEP_MAX_DOCS = 200_000  # the sweep bands signatures in memory: skipped above this


def _load_meta(shards: dedup_report.Shards) -> dict:
    """The driver's per-document arrays from every shard's signature-pass metadata: ids (one Arrow string
    array), their sort order, source code (and names), exact group, size, has-words flag. ~70 bytes per
    document with the ids; the ids' string ops (sort, prefix) run in Arrow, without a Python object each."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("k1", pa.uint64()), ("k2", pa.uint64()), ("kn", pa.int64()),
                        ("bytes", pa.int64()), ("words", pa.bool_())])
    table = pa.concat_tables([schema.empty_table()] +
                             [pq.read_table(p, columns=schema.names, use_threads=False) for p in shards.meta])
    ids = table["id"]
    if ids.nbytes > 2**31 - 2**24:  # past 2 GB of ids (some 50 million documents) one array needs 64-bit offsets
        ids = ids.cast(pa.large_string())
    ids = ids.combine_chunks()
    n = len(ids)
    id_order = pc.sort_indices(ids).to_numpy().astype(np.int64)
    in_order = ids.take(pa.array(id_order))
    repeats = pc.sum(pc.equal(in_order.slice(1), in_order.slice(0, max(n - 1, 0)))).as_py() or 0
    del in_order
    src = pc.replace_substring_regex(ids, "/.*", "").dictionary_encode()  # records.source_of, vectorised
    group = dedup_cluster.exact_groups(*(table[k].to_numpy() for k in ("k1", "k2", "kn")))
    return {"ids": ids, "n": n, "repeats": repeats, "id_order": id_order,
            "src": src.indices.to_numpy().astype(np.int32), "src_names": src.dictionary.to_pylist(),
            "bytes": table["bytes"].to_numpy(), "words": table["words"].to_numpy(zero_copy_only=False),
            "group": group.astype(np.int32 if n < 2**31 else np.int64)}


def _ranks(meta: dict, cfg: DedupConfig) -> np.ndarray:
    """Keep-rule rank of each document (dedup_cluster.ranks): source priority, then id."""
    prio = {s: k for k, s in enumerate(cfg.priority)}
    code = np.array([prio.get(s, len(prio)) for s in meta["src_names"]] or [0], dtype=np.int64)
    return dedup_cluster.ranks(code[meta["src"]], meta["id_order"])


def _write_decisions(work: Path, shards: dedup_report.Shards, ids, cl: dedup_cluster.Clusters) -> None:
    """decisions/<source>/<rank>.parquet: id, cluster id, cluster size, reason, for the filter task of that shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reasons = pa.array([None, EXACT, NEAR], pa.string())
    for k, (source, meta) in enumerate(zip(shards.sources, shards.meta)):
        rows = np.arange(shards.starts[k], shards.starts[k + 1])
        t = pa.table({"id": ids.take(pa.array(rows)), "cluster_id": ids.take(pa.array(cl.root[rows])),
                      "cluster_size": pa.array(cl.size[rows], pa.int64()),
                      "reason": reasons.take(pa.array(cl.reason[rows].astype(np.int64)))})
        path = work / "decisions" / source / Path(meta).name.replace(".meta", "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(path) as tmp:
            pq.write_table(t, tmp)


def run(cfg: DedupConfig, seed: int, inputs: dict[str, str | Path], out: str | Path,
        truth_path: str | Path | None = None, ecfg=None) -> report.StageReport:
    """Deduplicate the document folders `inputs` ({source: folder}) into `out`/<source>/.

    Three datatrove passes on the executor of `ecfg` (pipeline.core.executor): signatures (one task per input
    shard), LSH bands (one task per band, merging per-shard sorted band tables from disk), filter (one task
    per input shard). Between them, in this process: exact groups, streamed candidate checks, union-find and
    the keep rule over compact arrays (signatures are read from the shard files, never all held).

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
    import pyarrow.parquet as pq

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
    code = [__file__, dedup_steps.__file__, minhash.__file__, dedup_cluster.__file__, dedup_report.__file__]
    work = io.work_dir(STAGE, io.run_fingerprint(cfg, seed, inputs=[inputs[s] for s in present], code=code))
    clock = [("start", time.perf_counter())]  # pass timings for the report (bench/dedup_scale.py reads them)
    files, sources, prefixes = [], [], []
    for source in present:
        paths = io.shard_paths(inputs[source])
        executor.run([io.doc_reader(inputs[source]), SignatureStep(cfg, seed, work / "sigs" / source)],
                     len(paths), work / "logs" / "signatures" / source, ecfg)
        files += paths
        sources += [source] * len(paths)
        prefixes += [work / "sigs" / source / f"{r:05d}" for r in range(len(paths))]
    shards = dedup_report.Shards(files, sources, [f"{p}.meta.parquet" for p in prefixes],
                                 [pq.read_metadata(f"{p}.meta.parquet").num_rows for p in prefixes])
    clock.append(("signatures", time.perf_counter()))
    meta = _load_meta(shards)
    ids = meta["ids"]
    if meta["repeats"]:
        dup = meta["repeats"]
        log.error("%d documents repeat an id already seen; each copy is decided on its own", dup)
        rep.error("duplicate_id", dup)
    store = SigStore([f"{p}.sig.npy" for p in prefixes])
    bands, _ = optimal_bands(cfg.threshold, cfg.num_perm)
    band_seconds = []

    def band_pass(mask: np.ndarray):
        np.save(work / "mask.npy", mask)
        logs = work / "logs" / "bands"
        shutil.rmtree(logs, ignore_errors=True)  # the mask is rewritten each run: no completion may be reused
        t0 = time.perf_counter()
        executor.run([BandStep([str(p) for p in prefixes], work / "mask.npy", bands, work / "pairs")],
                     bands, logs, ecfg)
        band_seconds.append(time.perf_counter() - t0)
        for b in range(bands):  # streamed: one band's candidate pairs in memory at a time
            yield np.load(work / "pairs" / f"{b:05d}.npy")

    if meta["n"]:
        cl = dedup_cluster.cluster(_ranks(meta, cfg), meta["group"], meta["words"], store, cfg, pairs_fn=band_pass)
    else:
        cl = dedup_cluster.Clusters(*(np.zeros(0, dtype=t) for t in (np.int32, np.int32, np.int8, np.uint16)))
    shutil.rmtree(work / "decisions", ignore_errors=True)
    _write_decisions(work, shards, ids, cl)
    clock.append(("bands_and_clusters", time.perf_counter()))

    staging = work / "out"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.rmtree(work / "sets", ignore_errors=True)
    for source in present:
        dst = staging / source
        pipe = [io.doc_reader(inputs[source]),
                ShingleSets(work / "decisions" / source, work / "sets" / source, cfg.ngram),
                DedupFilter(work / "decisions" / source, EXACT, io.removed_writer(dst, EXACT)),
                DedupFilter(work / "decisions" / source, NEAR, io.removed_writer(dst, NEAR)),
                io.doc_writer(dst)]
        logs = work / "logs" / "filter" / source
        shutil.rmtree(logs, ignore_errors=True)  # staging was wiped, so no completion may be skipped
        executor.run(pipe, len(io.shard_paths(inputs[source])), logs, ecfg)
        rep.add_datatrove_stats(logs / "stats.json")

    clock.append(("filter", time.perf_counter()))
    truth_data = truth.load(truth_path)
    clusters = dedup_report.summarise(rep, cfg, meta, cl, shards, present, truth_data, work / "sets")
    shutil.rmtree(work / "sets", ignore_errors=True)  # read once (none without inputs); the filter pass reruns each time
    _write_clusters(staging / "clusters.parquet", clusters)
    sweep = threshold_sweep(cfg, meta, shards, store, truth_data) if meta["n"] else []
    rep.extra["sweep"] = sweep
    report.write_plot(STAGE, "sweep", sweep)
    io.write_manifest(staging, STAGE, {"dedup": params.as_dict(cfg), "seed": seed}, inputs)
    io.publish(staging, out)
    clock.append(("report_and_publish", time.perf_counter()))
    rep.extra["pass_seconds"] = {name: round(t - clock[k][1], 3) for k, (name, t) in enumerate(clock[1:])}
    rep.extra["pass_seconds"]["band_pass"] = round(sum(band_seconds), 3)  # within bands_and_clusters
    return rep


def threshold_sweep(cfg: DedupConfig, meta: dict, shards: dedup_report.Shards, sig, truth_data: dict | None) -> list[dict]:
    """Threshold vs precision/recall of the drops, and recall of the planted near-duplicate pairs, on the
    sample's truth (rows for the DVC plot); [] without truth or above SWEEP_MAX_DOCS documents."""
    if not truth_data or meta["n"] > SWEEP_MAX_DOCS:
        return []
    ids, keys, group = meta["ids"].to_pylist(), shards.column("key"), meta["group"].tolist()
    full = sig[np.arange(len(ids))]
    rows = []
    for t in SWEEP:
        dec = decide(ids, group, full, meta["words"], dataclasses.replace(cfg, threshold=t))
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


def _write_clusters(path: Path, table) -> None:
    """clusters.parquet: one row per document of a cluster of two or more."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
