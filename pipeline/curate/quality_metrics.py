"""Held-out evaluation of GPT-3's quality classifier (Brown et al. 2020, appendix A).

quality_train scores every training document out-of-fold (each by the cross-fitting fold model
that never saw it, see pipeline.curate.quality) and reports ROC AUC, precision/recall/F1 at 0.5 and a
calibration table over score buckets; quality_filter reports, per truth class (good vs junk page),
the kept fraction against the one the Pareto rule expects. Plain numpy, no sklearn.
"""
from __future__ import annotations

import numpy as np

from pipeline.core import records
from pipeline.curate.retention import keep_probability

N_BUCKETS = 10  # score buckets of the calibration and retention tables


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic, ties counted half (no sklearn)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if not n_pos or not n_neg:
        return float("nan")
    ordered = np.sort(scores)  # 1-based rank of a score, averaged over its ties
    ranks = (np.searchsorted(ordered, scores, "left") + np.searchsorted(ordered, scores, "right") + 1) / 2
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    labels, pred = np.asarray(labels, bool), np.asarray(scores) >= threshold
    tp, fp, fn = int((pred & labels).sum()), int((pred & ~labels).sum()), int((~pred & labels).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": threshold, "precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def bucket_name(score: float) -> str:
    b = min(int(score * N_BUCKETS), N_BUCKETS - 1)
    return f"{b / N_BUCKETS:.1f}-{(b + 1) / N_BUCKETS:.1f}"


def _buckets(scores) -> list[tuple[str, np.ndarray]]:
    """(bucket name, mask of the scores in it) for all N_BUCKETS buckets, empty ones included."""
    names = np.array([bucket_name(s) for s in scores], dtype=object)
    return [(n, names == n) for n in (bucket_name((b + 0.5) / N_BUCKETS) for b in range(N_BUCKETS))]


def _mean(values) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def calibration(labels: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Score bucket -> examples and their positive fraction (a calibrated model: fraction ~ score)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    return [{"score_bucket": name, "docs": int(mask.sum()), "positive_fraction": _mean(labels[mask]),
             "mean_score": _mean(scores[mask])} for name, mask in _buckets(scores)]


def truth_by_class(truth_doc: dict, rows: list[dict], alpha: float) -> dict:
    """Per truth class of quality_filter (good = expect_keep, junk = expect_drop): pages seen, kept,
    kept fraction, mean score and the kept fraction the Pareto rule expects from those scores. With
    alpha = 9 a good page is kept with probability (2 - score) ** -9 < 1: retention is a draw by design."""

    classes = {"good": set(truth_doc.get("expect_keep", {}).get("quality_filter", [])),
               "junk": set(truth_doc.get("expect_drop", {}).get("quality_filter", []))}
    out = {}
    for name, keys in classes.items():
        sel = [r for r in rows if records.natural_key(r["metadata"]) in keys]
        s = np.array([r["metadata"][records.QUALITY_SCORE] for r in sel], float)
        kept = sum(bool(r["metadata"][records.KEPT]) for r in sel)
        out[name] = {"docs": len(sel), "kept": kept, "kept_fraction": round(kept / len(sel), 4) if sel else None,
                     "mean_score": _mean(s), "expected_kept_fraction": _mean([keep_probability(x, alpha) for x in s])}
    return out
