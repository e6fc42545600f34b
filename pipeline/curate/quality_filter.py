"""GPT-3's crawl filter (the quality_filter stage): score each page, keep it by a Pareto draw.

Each page is scored by a classifier that never trained on it (quality.CrossFitScorer), tagged with
quality_score, quality_model, retention_draw and kept (tag, don't destroy), and dropped pages go to
removed/low_quality/. Retention is retention.py's keyed draw, so the output does not depend on workers.

The stage is one datatrove step per task (ScoreShards) rather than reader -> filter -> writer: the same
files, with whole batches in every step (bulk shard reads, one model call, vectorised draws, one write
per batch compressed on a background thread) and the scores table kept from the work instead of re-read
from the outputs. bench/quality_speed.py measures it against bare fastText predict.
"""
from __future__ import annotations

import gc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice, repeat
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.logging import logger

from pipeline.core import io, records, shards
from pipeline.curate import quality, quality_worker, retention
from pipeline.curate.quality import QUALITY_MODEL, CrossFitScorer
from pipeline.curate.quality_metrics import N_BUCKETS, _mean, bucket_name, truth_by_class
from pipeline.curate.quality_worker import ScoringProcess
from pipeline.curate.retention import keep_probabilities, retention_batch

LOW_QUALITY = "low_quality"
SCORE_COLUMNS = (("id", "string"), ("url", "string"), ("score", "float64"), ("draw", "float64"),
                 ("kept", "bool_"), ("model", "string"))
PART_COLUMNS = SCORE_COLUMNS + (("key", "string"), ("bytes", "int64"))  # + truth key, UTF-8 bytes of the text
BATCH = 256
# zstd level of this stage's shards. The other stages write fsspec's level 10 through datatrove; here, where
# the model is fast, level-10 compression cost as much CPU as fastText itself (bench/quality_speed.py), while
# level 3 (zstd's default) costs ~0.15x of it for ~10% larger files. Readers take any level: the documents,
# and every decision downstream, are the same.
SHARD_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class FilterConfig:
    """quality_filter declares only quality.alpha (and seed): changing alpha reruns the filter alone."""

    alpha: float = 9.0


class QualityFilter(BaseFilter):
    """datatrove filter: tags quality_score, quality_model, retention_draw, kept; drops with reason low_quality."""

    name = "⭐ GPT-3 quality (Pareto)"

    def __init__(self, model_path: str | Path, seed: int, alpha: float, exclusion_writer=None, batch_size: int = BATCH):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.scorer = CrossFitScorer(model_path)
        self.seed, self.alpha = seed, alpha

    def tag(self, batch: list[Document], texts: list[str] | None = None,
            utf8: list[bytes] | None = None) -> tuple[list, list, list, list[bool]]:
        """Score a batch and tag each Document's metadata; returns (scores, draws, models, kept), rounded as tagged.
        `texts` and `utf8`: the batch's texts and their UTF-8, where the caller has them already."""
        ids = [d.id for d in batch]
        scores, names = self.scorer(ids, texts if texts is not None else [d.text for d in batch], utf8)
        return self.tag_scored(batch, ids, scores, names)

    def tag_scored(self, batch: list[Document], ids: list[str], scores, names: list[str]):
        """tag() once the batch is scored (scores: P(high quality) per page, names: the model of each)."""
        draws, kept = retention_batch(self.seed, ids, scores, self.alpha)
        scores, draws = list(map(round, scores.tolist(), repeat(6))), list(map(round, draws.tolist(), repeat(6)))
        kept = kept.tolist()
        for doc, score, name, draw, keep in zip(batch, scores, names, draws, kept):
            md = doc.metadata
            md[records.QUALITY_SCORE], md[QUALITY_MODEL], md[records.RETENTION_DRAW], md[records.KEPT] = (
                score, name, draw, keep)
        return scores, draws, names, kept

    def filter_batch(self, batch: list[Document]):
        return [True if keep else (False, LOW_QUALITY) for keep in self.tag(batch)[3]]

    def filter(self, doc: Document):
        return self.filter_batch([doc])[0]


class ScoreShards(PipelineStep):
    """The stage's datatrove step: a task reads its crawl shards (as io.doc_reader would), tags them in batches
    (QualityFilter.tag) and writes docs/ and removed/low_quality/ (as io.doc_writer would), plus its part of
    the scores table (`<parts_dir>/<rank>.parquet`, with each page's truth key and text bytes for the report)."""

    name = "⭐ GPT-3 quality (Pareto), batched"
    type = "🔻 - FILTER"

    def __init__(self, in_dir, out_dir, parts_dir, model_path, seed: int, alpha: float, batch_size: int = BATCH):
        super().__init__()
        self.in_dir, self.out_dir, self.parts_dir = str(in_dir), str(out_dir), str(parts_dir)
        self.model_path, self.seed, self.alpha, self.batch_size = str(model_path), seed, alpha, batch_size

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        reader = io.doc_reader(self.in_dir)
        files = reader.data_folder.get_shard(rank, world_size, recursive=reader.recursive,
                                             glob_pattern=reader.glob_pattern) or []
        flt = QualityFilter(self.model_path, self.seed, self.alpha, batch_size=self.batch_size)
        # first, so that its start overlaps the first reads
        remote = ScoringProcess({name: s.model_path for name, s in flt.scorer.scorers.items()})
        cols: dict[str, list] = {name: [] for name, _ in PART_COLUMNS}
        docs = chain.from_iterable(shards.read_shard(reader, path) for path in files)
        collect = gc.isenabled()
        gc.disable()  # millions of acyclic objects (parsed pages) that the collector would walk again and again
        try:
            with (remote, ThreadPoolExecutor(1, thread_name_prefix="zstd") as pool,
                  shards.ShardWriter(self.out_dir, io.DOCS, rank, pool, SHARD_ZSTD_LEVEL) as kept_out,
                  shards.ShardWriter(self.out_dir, f"{io.REMOVED}/{LOW_QUALITY}", rank, pool,
                                     SHARD_ZSTD_LEVEL) as dropped_out):
                pending = None  # the batch whose scores the child computes while this one is prepared
                while True:
                    batch = list(islice(docs, self.batch_size))
                    with self.track_time("batch"):
                        job = self._submit(flt, remote, batch) if batch else None
                        if pending:
                            self._finish(flt, remote, *pending, cols, kept_out, dropped_out)
                    if job is None:
                        break
                    pending = job
        finally:
            if collect:
                gc.enable()
        self.stat_update("input_files", value=len(files))
        self.stat_update("total", value=len(cols["id"]))
        self.stat_update("forwarded", value=sum(cols["kept"]))
        self.stat_update("dropped", f"dropped_{LOW_QUALITY}", value=len(cols["id"]) - sum(cols["kept"]))
        write_table(Path(self.parts_dir) / f"{rank:05d}.parquet", cols, PART_COLUMNS)
        return data

    @staticmethod
    def _submit(flt: QualityFilter, remote: ScoringProcess, batch: list[Document]) -> tuple:
        """Hand a batch's model lines to the scoring process; returns what _finish needs."""
        texts = [d.text for d in batch]
        utf8 = list(map(str.encode, texts))  # the model's input and the report's byte counts
        ids = [d.id for d in batch]
        names, parts = flt.scorer.plan(ids, texts, utf8)
        remote.submit([(name, lines) for name, _, lines in parts])
        return batch, ids, names, [(name, idx, None) for name, idx, _ in parts], utf8

    @staticmethod
    def _finish(flt: QualityFilter, remote: ScoringProcess, batch: list[Document], ids: list[str], names: list[str],
                parts: list, utf8: list[bytes], cols: dict, kept_out, dropped_out) -> None:
        """Tag a submitted batch with its scores, write it, and add its rows to the table."""
        scores = flt.scorer.gather(len(batch), parts, remote.result())
        scores, draws, names, kept = flt.tag_scored(batch, ids, scores, names)
        mds = [d.metadata for d in batch]
        kept_docs, dropped = [], []
        for d, keep in zip(batch, kept):  # one pass: this runs once per page
            if keep:
                kept_docs.append(d)
            else:
                d.metadata[records.FILTER_REASON] = LOW_QUALITY  # what BaseFilter.run sets before the exclusion writer
                dropped.append(d)
        kept_out.write_batch(kept_docs)
        dropped_out.write_batch(dropped)
        for name, values in (("id", [d.id for d in batch]), ("url", [md.get(records.URL, "") for md in mds]),
                             ("score", scores), ("draw", draws), ("kept", kept), ("model", names),
                             ("key", list(map(records.natural_key, mds))),
                             ("bytes", list(map(len, utf8)))):
            cols[name].extend(values)


def write_table(path: str | Path, cols: dict, columns=SCORE_COLUMNS) -> None:
    """A parquet table of `columns` (name, pyarrow type name), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns])
    with io.atomic_path(path) as tmp:
        pq.write_table(pa.table({name: cols[name] for name, _ in columns}, schema=schema), tmp)


def read_parts(parts_dir: str | Path):
    """Every task's part of the table, in task order then page order, sorted by id (ties: kept first).

    The same row order as sorting the kept pages then the dropped ones by id with a stable sort."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in PART_COLUMNS])
    parts = [pq.read_table(p, schema=schema) for p in sorted(Path(parts_dir).glob("*.parquet"))]
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending"), ("kept", "descending")])).combine_chunks()


def run(fcfg: FilterConfig, seed: int, in_dir: str | Path, model_path: str | Path, out_dir: str | Path,
        truth_path: str | Path | None = None, exec_cfg=None):
    """quality_filter: score every crawl document, keep by Pareto draw; docs/, removed/low_quality/,
    scores.parquet. Each page is scored by a model that never trained on it (CrossFitScorer).
    Returns the StageReport: expected vs observed kept fraction, pages per scoring model; and with
    truth: P/R of the drops plus kept fraction and mean score per truth class (good vs junk)."""
    from pipeline.core import executor, report, truth

    rep = report.StageReport("quality_filter")
    scorer = CrossFitScorer(model_path)
    models = scorer.digest()
    key = io.run_fingerprint(fcfg, seed, models, inputs=[in_dir],
                             code=[__file__, quality.__file__, quality_worker.__file__, retention.__file__,
                                   shards.__file__])
    work = io.work_dir("quality_filter", key)
    staged = work / "out"
    if io.shard_paths(in_dir):
        # params `executor` picks local, Ray or Slurm; one task, so the output never depends on it
        step = ScoreShards(in_dir, staged, work / "scores", model_path, seed, fcfg.alpha)
        executor.run([step], 1, work / "logs", exec_cfg or executor.ExecutorConfig())
    else:
        rep.error("empty_input_folder")
        logger.warning(f"{in_dir} holds no documents to score")
    staged.mkdir(parents=True, exist_ok=True)
    table = read_parts(work / "scores")
    write_table(staged / "scores.parquet", {name: table[name] for name, _ in SCORE_COLUMNS})
    scores = table["score"].to_numpy()
    kept_mask = table["kept"].to_numpy(zero_copy_only=False)
    nbytes = table["bytes"].to_numpy()
    rep.docs_in, rep.docs_out = len(table), int(kept_mask.sum())
    rep.drop(LOW_QUALITY, rep.docs_in - rep.docs_out)
    rep.bytes_out = int(nbytes[kept_mask].sum())
    rep.bytes_in = rep.bytes_out + int(nbytes[~kept_mask].sum())
    expected = keep_probabilities(scores, fcfg.alpha)
    rep.extra["retention"] = {
        "alpha": fcfg.alpha,
        "kept_fraction_observed": _mean(kept_mask),
        "kept_fraction_expected": _mean(expected),
        "mean_score": _mean(scores),
    }
    rep.extra["scored_by"] = dict(sorted(Counter(table["model"].to_pylist()).items()))
    truth_doc = truth.load(truth_path)
    keys = table["key"].to_pylist()
    score = truth.score_drops(truth_doc, "quality_filter", [k for k, keep in zip(keys, kept_mask) if not keep],
                              [k for k, keep in zip(keys, kept_mask) if keep])
    if score:
        rep.extra["truth"] = score
        rows = [{"metadata": {records.URL: k, records.QUALITY_SCORE: s, records.KEPT: bool(keep)}}
                for k, s, keep in zip(keys, scores.tolist(), kept_mask)]  # what truth_by_class reads of a page
        rep.extra["truth_by_class"] = truth_by_class(truth_doc, rows, fcfg.alpha)
    rows_plot = retention_table(scores, kept_mask, fcfg.alpha, expected)
    report.write_plot("quality_filter", "retention", [r for r in rows_plot if r["docs"]])  # vega dislikes nulls
    io.write_manifest(staged, "quality_filter", {"alpha": fcfg.alpha, "seed": seed,
                                                  "model_sha256": scorer.sha256[scorer.scorers[quality.FULL].model_path],
                                                  "models_digest": models}, {"cc": in_dir})
    io.publish(staged, out_dir)
    return rep


def retention_table(scores: np.ndarray, kept: np.ndarray, alpha: float,
                    expected: np.ndarray | None = None) -> list[dict]:
    """Rows {score_bucket, docs, kept_fraction, expected_kept_fraction} for the retention plot
    (quality_metrics' buckets: int(score * N_BUCKETS), the top one closed)."""
    scores, kept = np.asarray(scores, float), np.asarray(kept, bool)
    expected = keep_probabilities(scores, alpha) if expected is None else expected
    bucket = np.minimum((scores * N_BUCKETS).astype(np.int64), N_BUCKETS - 1)
    return [{"score_bucket": bucket_name((b + 0.5) / N_BUCKETS), "docs": int((bucket == b).sum()),
             "kept_fraction": _mean(kept[bucket == b]), "expected_kept_fraction": _mean(expected[bucket == b])}
            for b in range(N_BUCKETS)]
