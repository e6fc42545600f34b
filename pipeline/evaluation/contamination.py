"""Train/test overlap audit after GPT-3 (Brown et al. 2020, appendix C).

An eval example is dirty when one of its n-grams (GPT-3 normalisation: lower-case, punctuation
stripped, whitespace-split words) also occurs in a training document. n is 13 (GPT-2 used
8-grams in Bloom filters), shortened per benchmark to its 5th-percentile example length but not
below `min_ngram`: n = min(ngram, max(min_ngram, p5)). N-grams found in more than
`max_doc_frequency` training documents are ignored (common phrases, licence boilerplate), as
GPT-3 did. Scores are then compared on the full, clean and dirty subsets, and every dirty
example is traced to the training documents carrying it and to the stages they came through.

The n-gram rule and hashing live in ngrams.py, the training corpus and its lineage in train_corpus.py,
the in-memory / out-of-core indexes in ngram_index.py; the appendix C decontamination (a dry-run count here when `contamination.decontaminate: true`) lives
in pipeline.evaluation.decontaminate. Their public names are re-imported here, and `python -m
pipeline.evaluation.contamination decontaminate ...` still runs pipeline.evaluation.decontaminate's CLI.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.core import records
from pipeline.evaluation import tasks
from pipeline.evaluation.decontaminate import DECON_PIECE, decontaminate, decontaminate_folder, eval_ngrams, main, split_text
from pipeline.evaluation.ngram_index import NgramIndex, ShardedNgramIndex
from pipeline.evaluation.ngrams import ContaminationConfig, choose_n, ngram_hashes, normalize, normalize_words, word_hashes
from pipeline.evaluation.train_corpus import TrainCorpus, iter_train_docs

__all__ = ["ContaminationConfig", "TrainCorpus", "iter_train_docs", "merge_spans", "load_scores", "subset_score",
           "audit", "compare_leaks", "metrics", "run",
           # re-imported from ngrams, train_corpus, ngram_index and decontaminate
           "NgramIndex", "ShardedNgramIndex", "choose_n", "ngram_hashes", "normalize", "normalize_words",
           "word_hashes", "DECON_PIECE", "decontaminate", "decontaminate_folder", "eval_ngrams", "main",
           "split_text"]

log = logging.getLogger(__name__)


def merge_spans(starts: list[int], n: int, word_spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Matched n-gram starts -> merged character spans of the eval text."""
    merged: list[list[int]] = []
    for s in sorted(starts):
        e = s + n  # exclusive word end
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(word_spans[s][0], word_spans[e - 1][1]) for s, e in merged]


# --- scores -------------------------------------------------------------------------------------
def load_scores(path: str | Path | None, errors: dict[str, int]) -> dict[tuple[str, int], dict]:
    """evaluate's examples.jsonl keyed by (task, index); bad lines counted in `errors`."""
    if not path or not Path(path).exists():
        log.info("no scores file %s: clean/dirty scores are left out", path)
        return {}
    rows = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[(row["task"], int(row["index"]))] = row
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("scores line %d is not a valid example row (%s); skipped", lineno, exc)
            errors["bad_score_line"] = errors.get("bad_score_line", 0) + 1
    return rows


def subset_score(rows: list[dict]) -> dict[str, float | int] | None:
    """Accuracy fields averaged, or word-level perplexity for perplexity tasks (WikiText)."""
    if not rows:
        return None
    out: dict[str, float | int] = {"n": len(rows)}
    for key in ("correct", "correct_norm"):
        vals = [bool(r[key]) for r in rows if r.get(key) is not None]
        if vals:
            out["acc" if key == "correct" else "acc_norm"] = round(float(np.mean(vals)), 4)
    words = sum(r.get("n_words", 0) for r in rows)
    if "acc" not in out and words:
        out["word_perplexity"] = round(float(np.exp(-sum(r["loglik"] for r in rows) / words)), 4)
    return out


def _diff(clean: dict | None, full: dict | None) -> dict[str, float]:
    if not clean or not full:
        return {}
    return {k: round(clean[k] - full[k], 4) for k in full if k != "n" and k in clean}


# --- audit ----------------------------------------------------------------------------------------
def audit(task_map: dict[str, tasks.Task], corpus: TrainCorpus, cfg: ContaminationConfig,
          scores: dict[tuple[str, int], dict] | None = None, truth: dict | None = None,
          index_factory: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Flag dirty examples per task, trace them, compare scores and planted leaks.

    Args:
        index_factory: n -> an index with lookup/nbytes/ignored_ngrams (NgramIndex over
            corpus.words by default; run() passes a ShardedNgramIndex streamed from disk).

    Returns {"tasks": {name: summary}, "dirty": {name: [dirty example records]}, "leaks": {...},
    "index": {...}}; see report.json for the shape.
    """
    scores = scores or {}
    index_factory = index_factory or (lambda n: NgramIndex(corpus, n, cfg.max_doc_frequency))
    indexes: dict[int, NgramIndex] = {}
    out: dict[str, Any] = {"tasks": {}, "dirty": {}, "index": {}}
    for name, task in task_map.items():
        texts = [ex.contamination_text for ex in task.examples]
        lengths = [len(normalize(t)[0]) for t in texts]
        n = choose_n(lengths, cfg)
        if n not in indexes:
            indexes[n] = index_factory(n)
            out["index"][str(n)] = {"ngrams": len(indexes[n]), "bytes": indexes[n].nbytes(),
                                    "ignored_frequent_ngrams": indexes[n].ignored_ngrams}
        index = indexes[n]
        dirty_rows, dirty_keys = [], set()
        for ex, text, length in zip(task.examples, texts, lengths):
            if length < n:
                continue  # too short to hold an n-gram: counted clean, as GPT-3 did
            starts, docs, spans = index.lookup(text)
            if not starts:
                continue
            dirty_keys.add(ex.index)
            dirty_rows.append({
                "index": ex.index, "text": text, "n_words": length, "matched_ngrams": len(starts),
                "overlap_fraction": round(len(starts) / max(1, length - n + 1), 4),
                "spans": merge_spans(starts, n, spans), "docs": [corpus.lineage(d) for d in docs],
            })
        scored = [(ex.index, scores[(name, ex.index)]) for ex in task.examples if (name, ex.index) in scores]
        full = subset_score([r for _, r in scored])
        clean = subset_score([r for i, r in scored if i not in dirty_keys])
        dirty = subset_score([r for i, r in scored if i in dirty_keys])
        total = len(task.examples)
        out["tasks"][name] = {
            "n": n, "total": total, "dirty": len(dirty_keys),
            "dirty_fraction": round(len(dirty_keys) / total, 6) if total else 0.0,
            "too_short": sum(1 for length in lengths if length < n),
            "p5_words": int(np.floor(np.percentile(lengths, 5))) if lengths else 0,
            "scored": len(scored), "score_all": full, "score_clean": clean, "score_dirty": dirty,
            "clean_minus_all": _diff(clean, full),
        }
        out["dirty"][name] = dirty_rows
    out["leaks"] = compare_leaks(truth, out["dirty"], corpus, set(task_map))
    return out


def compare_leaks(truth: dict | None, dirty: dict[str, list[dict]], corpus: TrainCorpus,
                  task_names: set[str]) -> dict[str, Any] | None:
    """Planted leaks (truth.json) vs what was found: planted, reached training, found, traced, exact match."""
    if not truth or "leaks" not in truth:
        return None
    train_keys = {records.natural_key(m) for m in corpus.meta}
    found = {(t, r["index"]): {d["natural_key"] for d in r["docs"]} for t, rows in dirty.items() for r in rows}
    per_task: dict[str, dict] = {}
    for name in sorted(task_names | {leak["task"] for leak in truth["leaks"]}):
        leaks = [lk for lk in truth["leaks"] if lk["task"] == name]
        reached = {(name, lk["index"]) for lk in leaks if lk["key"] in train_keys}
        hits = {k for k in reached if k in found}
        traced = {(name, lk["index"]) for lk in leaks if lk["key"] in found.get((name, lk["index"]), ())}
        flagged = {k for k in found if k[0] == name}
        per_task[name] = {
            "planted": len({lk["index"] for lk in leaks}), "reached_training": len(reached), "found": len(hits),
            "traced_to_carrier": len(traced), "unplanted_dirty": len(flagged - reached),
            "missed": sorted(i for _, i in reached - hits), "exact_match": flagged == reached,
        }
    totals = {k: sum(v[k] for v in per_task.values())
              for k in ("planted", "reached_training", "found", "traced_to_carrier", "unplanted_dirty")}
    totals["exact_match"] = all(v["exact_match"] for v in per_task.values())
    return {"per_task": per_task, **totals}


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The DVC-metrics subset of an audit: per task dirty fraction and clean-vs-all scores, leak match."""
    out: dict[str, Any] = {"tasks": {}}
    for name, t in result["tasks"].items():
        out["tasks"][name] = {k: t[k] for k in ("n", "total", "dirty", "dirty_fraction", "score_all", "score_dirty",
                                                 "score_clean", "clean_minus_all")}
    leaks = result.get("leaks")
    if leaks:
        out["leaks"] = {k: v for k, v in leaks.items() if k != "per_task"}
    return out


def run(cfg: ContaminationConfig, train: str | Path, eval_dir: str | Path, out_dir: str | Path,
        scores_path: str | Path | None = None, truth: dict | None = None, report: Any = None) -> dict[str, Any]:
    """The contamination stage: read mix train docs and eval sets, audit, write reports and plots.

    Args:
        cfg: n-gram, index and decontamination settings.
        train: the mix output folder (documents under <train>/train/docs).
        eval_dir: folder holding the eval files (see tasks.FILES).
        out_dir: where report.{json,md,html} go.
        scores_path: evaluate's examples.jsonl, joined by (task, index).
        truth: the sample's truth.json (planted leaks), or None.
        report: a StageReport to fill (docs_in, errors, extra metrics); plots go to
            reports/plots/contamination/ when it is given.

    Returns:
        The audit result (what report.json holds).
    """
    import tempfile

    from pipeline.core import io
    from pipeline.evaluation import contamination_report

    if cfg.index not in ("memory", "sharded"):
        raise ValueError(f"contamination.index must be 'memory' or 'sharded', not {cfg.index!r}")
    sharded = cfg.index == "sharded"
    corpus = TrainCorpus.from_folder(train, keep_words=not sharded)  # sharded: only metadata stays in memory
    task_map = tasks.load_all(eval_dir)
    errors = dict(corpus.errors)
    for t in task_map.values():
        for k, v in t.errors.items():
            errors[f"{t.name}_{k}"] = errors.get(f"{t.name}_{k}", 0) + v
    scores = load_scores(scores_path, errors)
    with tempfile.TemporaryDirectory(prefix="ngram-index-") as tmp:
        factory = None
        if sharded:
            def sharded_factory(n: int) -> ShardedNgramIndex:
                texts = (doc.text for _, doc in iter_train_docs(train, progress=False))  # hashed in batches
                return ShardedNgramIndex(texts, n, cfg.max_doc_frequency, tmp, cfg.index_shard_bits)
            factory = sharded_factory
        result = audit(task_map, corpus, cfg, scores, truth, factory)
    result["train"] = {"documents": len(corpus.ids), "repeats_skipped": corpus.repeats, "words": corpus.n_words}
    if cfg.decontaminate:  # dry run: what GPT-3 appendix C would cut; decontaminate_folder writes it
        counts: dict[str, int] = {}
        for _ in decontaminate(lambda: io.iter_docs(train, "train/docs"), task_map, cfg, counts):
            pass
        result["decontamination"] = counts
    contamination_report.write_reports(result, out_dir)
    if report is not None:
        from pipeline.core.report import write_plot

        report.docs_in = len(corpus.ids)
        report.docs_out = len(corpus.ids)
        report.bytes_in = corpus.bytes
        for k, v in errors.items():
            report.error(k, v)
        report.extra.update(metrics(result))
        report.extra["train"] = result["train"]
        report.extra["index"] = result["index"]
        if "decontamination" in result:
            report.extra["decontamination"] = result["decontamination"]
        for name, rows in contamination_report.plot_rows(result).items():
            write_plot("contamination", name, rows)
    return result



if __name__ == "__main__":
    main()
