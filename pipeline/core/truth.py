"""Score a filter against the embedded sample's planted ground truth (truth.json).

truth.json lists, per stage, the natural keys (URL, or book file name: see
records.natural_key) that the stage should drop and those it should keep.
A stage reports precision and recall of its drops over those labelled keys.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


def load(path: str | Path | None) -> dict | None:
    if not path or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def score_drops(truth: dict | None, stage: str, dropped: Iterable[str], kept: Iterable[str]) -> dict | None:
    """Precision/recall of a stage's drop decisions over the keys truth.json labels for it.

    Returns None when there is no truth for the stage (real data, not the sample).
    """
    if not truth or stage not in truth.get("expect_drop", {}):
        return None
    should_drop = set(truth["expect_drop"].get(stage, []))
    should_keep = set(truth.get("expect_keep", {}).get(stage, []))
    dropped, kept = set(dropped), set(kept)
    tp = len(dropped & should_drop)
    fp = len(dropped & should_keep)
    fn = len(kept & should_drop)
    missing = sorted((should_drop | should_keep) - dropped - kept)
    return {
        "labelled": len(should_drop | should_keep),
        "true_drops": tp,
        "false_drops": fp,
        "missed_drops": fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "labelled_not_seen": len(missing),
    }
