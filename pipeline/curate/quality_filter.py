"""GPT-3's crawl filter (the quality_filter stage): score each page, keep it by a Pareto draw.

Each page is scored by a classifier that never trained on it (quality.CrossFitScorer), tagged with
quality_score, quality_model, retention_draw and kept (tag, don't destroy), and dropped pages go to
removed/low_quality/. Retention is retention.py's keyed draw, so the output does not depend on workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.logging import logger

from pipeline.core import io, records
from pipeline.curate import quality
from pipeline.curate.quality import QUALITY_MODEL, CrossFitScorer
from pipeline.curate.quality_metrics import _buckets, _mean, truth_by_class
from pipeline.curate.retention import keep_probability, retention


@dataclass(frozen=True)
class FilterConfig:
    """quality_filter declares only quality.alpha (and seed): changing alpha reruns the filter alone."""

    alpha: float = 9.0


class QualityFilter(BaseFilter):
    """datatrove filter: tags quality_score, quality_model, retention_draw, kept; drops with reason low_quality."""

    name = "⭐ GPT-3 quality (Pareto)"

    def __init__(self, model_path: str | Path, seed: int, alpha: float, exclusion_writer=None, batch_size: int = 256):
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.scorer = CrossFitScorer(model_path)
        self.seed, self.alpha = seed, alpha

    def filter_batch(self, batch: list[Document]):
        results = []
        scores, names = self.scorer([d.id for d in batch], [d.text for d in batch])
        for doc, score, name in zip(batch, scores, names):
            draw, kept = retention(self.seed, doc.id, float(score), self.alpha)
            doc.metadata[records.QUALITY_SCORE] = round(float(score), 6)
            doc.metadata[QUALITY_MODEL] = name
            doc.metadata[records.RETENTION_DRAW] = round(draw, 6)
            doc.metadata[records.KEPT] = bool(kept)
            results.append(True if kept else (False, "low_quality"))
        return results

    def filter(self, doc: Document):
        return self.filter_batch([doc])[0]


def run(fcfg: FilterConfig, seed: int, in_dir: str | Path, model_path: str | Path, out_dir: str | Path,
               truth_path: str | Path | None = None, exec_cfg=None):
    """quality_filter: score every crawl document, keep by Pareto draw; docs/, removed/low_quality/,
    scores.parquet. Each page is scored by a model that never trained on it (CrossFitScorer).
    Returns the StageReport: expected vs observed kept fraction, pages per scoring model, and with
    truth: P/R of the drops plus kept fraction and mean score per truth class (good vs junk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pipeline.core import executor, report, truth

    rep = report.StageReport("quality_filter")
    models = CrossFitScorer(model_path).digest()
    key = io.run_fingerprint(fcfg, seed, models, inputs=[in_dir], code=[__file__, quality.__file__])
    work = io.work_dir("quality_filter", key)
    staged = work / "out"
    if io.shard_paths(in_dir):
        pipeline = [io.doc_reader(in_dir),
                    QualityFilter(model_path, seed, fcfg.alpha, exclusion_writer=io.removed_writer(staged, "low_quality")),
                    io.doc_writer(staged)]
        # params `executor` picks local, Ray or Slurm; one task, so the output never depends on it
        executor.run(pipeline, 1, work / "logs", exec_cfg or executor.ExecutorConfig())
    else:
        rep.error("empty_input_folder")
        logger.warning(f"{in_dir} holds no documents to score")
    staged.mkdir(parents=True, exist_ok=True)
    kept = io.read_records(staged, io.DOCS)
    dropped = io.read_records(staged, f"{io.REMOVED}/low_quality")
    rows = sorted(kept + dropped, key=lambda r: r["id"])
    md = lambda r, k: r["metadata"][k]  # noqa: E731
    table = pa.table({"id": [r["id"] for r in rows], "url": [r["metadata"].get(records.URL, "") for r in rows],
                      "score": [md(r, records.QUALITY_SCORE) for r in rows],
                      "draw": [md(r, records.RETENTION_DRAW) for r in rows],
                      "kept": [md(r, records.KEPT) for r in rows],
                      "model": [md(r, QUALITY_MODEL) for r in rows]}, schema=pa.schema(
        [("id", pa.string()), ("url", pa.string()), ("score", pa.float64()), ("draw", pa.float64()),
         ("kept", pa.bool_()), ("model", pa.string())]))
    with io.atomic_path(staged / "scores.parquet") as tmp:
        pq.write_table(table, tmp)
    scores = np.array([md(r, records.QUALITY_SCORE) for r in rows], float)
    kept_mask = np.array([md(r, records.KEPT) for r in rows], bool)
    rep.docs_in, rep.docs_out = len(rows), len(kept)
    rep.drop("low_quality", len(dropped))
    rep.bytes_out = sum(len(r.get("text", "").encode()) for r in kept)
    rep.bytes_in = rep.bytes_out + sum(len(r.get("text", "").encode()) for r in dropped)
    rows_plot = retention_table(scores, kept_mask, fcfg.alpha)
    rep.extra["retention"] = {
        "alpha": fcfg.alpha,
        "kept_fraction_observed": _mean(kept_mask),
        "kept_fraction_expected": _mean([keep_probability(s, fcfg.alpha) for s in scores]),
        "mean_score": _mean(scores),
    }
    by_model = [md(r, QUALITY_MODEL) for r in rows]
    rep.extra["scored_by"] = {name: by_model.count(name) for name in sorted(set(by_model))}
    keys = lambda rs: [records.natural_key(r["metadata"]) for r in rs]  # noqa: E731
    score = truth.score_drops(truth.load(truth_path), "quality_filter", keys(dropped), keys(kept))
    if score:
        rep.extra["truth"] = score
        rep.extra["truth_by_class"] = truth_by_class(truth.load(truth_path), rows, fcfg.alpha)
    report.write_plot("quality_filter", "retention", [r for r in rows_plot if r["docs"]])  # vega dislikes nulls
    io.write_manifest(staged, "quality_filter", {"alpha": fcfg.alpha, "seed": seed,
                                                  "model_sha256": io.sha256_file(model_path),
                                                  "models_digest": models}, {"cc": in_dir})
    io.publish(staged, out_dir)
    return rep


def retention_table(scores: np.ndarray, kept: np.ndarray, alpha: float) -> list[dict]:
    """Rows {score_bucket, docs, kept_fraction, expected_kept_fraction} for the retention plot."""
    return [{"score_bucket": name, "docs": int(mask.sum()), "kept_fraction": _mean(kept[mask]),
             "expected_kept_fraction": _mean([keep_probability(s, alpha) for s in scores[mask]])}
            for name, mask in _buckets(scores)]
