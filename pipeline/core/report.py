"""Per-stage metrics: `reports/<stage>.json`, declared as DVC metrics.

Every stage reports documents in and out, dropped per reason, bytes and throughput,
plus whatever is specific to it (precision/recall against the sample's planted truth,
loss, perplexity...). Counters fall out of the work: a filter that drops a document
names its reason, and the reason becomes a key here.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.core import io

REPORTS = Path("reports")


class StageReport:
    """Collects a stage's counters; `write()` puts them in reports/<stage>.json."""

    def __init__(self, stage: str):
        self.stage = stage
        self.started = time.perf_counter()
        self.docs_in = 0
        self.docs_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # bad input that was skipped: malformed line, broken record...
        self.extra: dict[str, Any] = {}

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def error(self, reason: str, n: int = 1) -> None:
        self.errors[reason] += n

    def add_datatrove_stats(self, stats_json: str | Path) -> None:
        """Fold a datatrove executor's stats.json into `dropped` (its `dropped_<reason>` counters)."""
        self.dropped.update(datatrove_counters(stats_json, "dropped_"))

    def to_dict(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        return {
            "stage": self.stage,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "errors": dict(sorted(self.errors.items())),
            "errors_total": sum(self.errors.values()),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(seconds, 3),
            "docs_per_s": round(self.docs_in / seconds, 2) if seconds > 0 else 0.0,
            **self.extra,
        }

    def write(self, path: str | Path | None = None) -> dict[str, Any]:
        data = self.to_dict()
        io.write_json(path or REPORTS / f"{self.stage}.json", data)
        return data


def datatrove_counters(stats_json: str | Path, prefix: str) -> Counter:
    """Sum the `<prefix><name>` counters of a datatrove stats.json over all steps (missing file: none)."""
    counts: Counter = Counter()
    path = Path(stats_json)
    if path.exists():
        for step in json.loads(path.read_text()):
            for key, value in step.get("stats", {}).items():
                if key.startswith(prefix):
                    counts[key[len(prefix):]] += int(value.get("total", 0) if isinstance(value, dict) else value)
    return counts


def write_plot(stage: str, name: str, rows: list[dict[str, Any]]) -> Path:
    """Plot data for `dvc plots show`: reports/plots/<stage>/<name>.json, a list of flat rows."""
    path = REPORTS / "plots" / stage / f"{name}.json"
    io.write_json(path, rows)
    return path
