"""Train/test overlap audit after GPT-3 (Brown et al. 2020, appendix C).

An eval example is dirty when one of its n-grams (GPT-3 normalisation: lower-case, punctuation
stripped, whitespace-split words) also occurs in a training document. n is 13 (GPT-2 used
8-grams in Bloom filters), shortened per benchmark to its 5th-percentile example length but not
below `min_ngram`: n = min(ngram, max(min_ngram, p5)). N-grams found in more than
`max_doc_frequency` training documents are ignored (common phrases, licence boilerplate), as
GPT-3 did. Scores are then compared on the full, clean and dirty subsets, and every dirty
example is traced to the training documents carrying it and to the stages they came through.

Index: each n-gram is a uint64 (a polynomial rolling hash over 64-bit xxh64 word hashes, so no
per-n-gram Python), stored as sorted (hash, doc ordinal) numpy arrays: 16 bytes per n-gram
occurrence against ~80 bytes for a Python set (../shared/ANCHORS.md). Lookups are
np.searchsorted. For corpora beyond one machine's memory, shard by hash prefix (hash >> 56):
each shard is built and queried independently and the hits are concatenated.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import xxhash
from tqdm import tqdm

from pipeline import records, tasks

log = logging.getLogger(__name__)

WORD = re.compile(r"[^\W_]+")  # letters and digits; every other character separates words
PRIME = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: odd, so multiplication is a bijection mod 2**64
STAGE_PATHS = {
    records.BOOKS: "books -> dedup -> mix",
    records.WEBTEXT: "reddit_urls -> scrape -> dedup -> mix",
    records.CC: "cc -> quality_filter -> dedup -> mix",
}
LINEAGE_KEYS = (records.SOURCE, records.BOOK_TITLE, records.URL, records.REDDIT_POST_ID, records.WARC_FILE,
                records.WARC_RECORD_ID, records.SOURCE_FILE, records.DEDUP_CLUSTER_ID)


@dataclass(frozen=True)
class ContaminationConfig:
    """params.yaml `contamination`."""

    ngram: int = 13  # GPT-3 appendix C
    min_ngram: int = 8  # floor for short-example benchmarks
    max_doc_frequency: int = 10  # GPT-3: n-grams in more than 10 training documents are ignored


# --- normalisation and hashing --------------------------------------------------------------------
def normalize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """GPT-3 normalisation: lower-cased words with punctuation stripped, and each word's char span."""
    words, spans = [], []
    for m in WORD.finditer(text):
        words.append(m.group().lower())
        spans.append(m.span())
    return words, spans


_WORD_CACHE: dict[str, int] = {}


def word_hashes(words: Iterable[str]) -> np.ndarray:
    """uint64 per word (xxh64, cached: natural text reuses a small vocabulary)."""
    cache = _WORD_CACHE
    out = []
    for w in words:
        h = cache.get(w)
        if h is None:
            h = cache[w] = xxhash.xxh64_intdigest(w)
        out.append(h)
    return np.array(out, dtype=np.uint64)


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-gram (position i covers words i..i+n-1): sum_j wh[i+j] * P**(n-1-j) mod 2**64."""
    m = len(wh) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):  # n vector ops; uint64 arithmetic wraps mod 2**64
        h = h * PRIME + wh[j: j + m]
    return h


def choose_n(lengths: Iterable[int], cfg: ContaminationConfig) -> int:
    """GPT-3's rule: min(ngram, max(min_ngram, 5th-percentile example length in words))."""
    lengths = np.asarray(list(lengths))
    if not len(lengths):
        return cfg.ngram
    p5 = int(np.floor(np.percentile(lengths, 5)))
    return int(min(cfg.ngram, max(cfg.min_ngram, p5)))


# --- training corpus and index ----------------------------------------------------------------
class TrainCorpus:
    """Training documents, each counted once (mix may repeat a document), as word-hash arrays."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self.words: list[np.ndarray] = []
        self.errors: dict[str, int] = {}
        self.repeats = 0
        self.bytes = 0
        self._seen: set[str] = set()

    def add(self, doc_id: str, text: Any, metadata: dict | None) -> None:
        if doc_id in self._seen:
            self.repeats += 1
            return
        if not isinstance(text, str):
            log.warning("training document %s has no text; skipped", doc_id)
            self.errors["no_text"] = self.errors.get("no_text", 0) + 1
            return
        self._seen.add(doc_id)
        self.bytes += len(text.encode("utf-8"))
        self.ids.append(doc_id)
        self.meta.append(dict(metadata or {}))
        self.words.append(word_hashes(normalize(text)[0]))

    @classmethod
    def from_folder(cls, folder: str | Path, subdir: str = "train/docs") -> "TrainCorpus":
        """Read a document folder (the mix's train split by default) with pipeline.io.iter_docs."""
        from pipeline import io

        corpus = cls()
        for doc in tqdm(io.iter_docs(folder, subdir), desc="index train docs", unit="doc", leave=False):
            corpus.add(doc.id, doc.text, doc.metadata)
        return corpus

    def lineage(self, ordinal: int) -> dict[str, Any]:
        """Where a training document came from: ids, natural key, provenance keys, stage path."""
        meta, doc_id = self.meta[ordinal], self.ids[ordinal]
        source = meta.get(records.SOURCE) or records.source_of(doc_id)
        out = {"doc_id": doc_id, "natural_key": records.natural_key(meta), "source": source,
               "stage_path": STAGE_PATHS.get(source, f"{source} -> mix")}
        out.update({k: meta[k] for k in LINEAGE_KEYS if meta.get(k) not in (None, "")})
        return out


class NgramIndex:
    """Sorted (n-gram hash, doc ordinal) pairs; n-grams in too many documents dropped."""

    def __init__(self, corpus: TrainCorpus, n: int, max_doc_frequency: int):
        self.n = n
        parts_h, parts_d = [], []
        for ordinal, wh in enumerate(corpus.words):
            h = np.unique(ngram_hashes(wh, n))  # unique per doc: counts below are document frequencies
            parts_h.append(h)
            parts_d.append(np.full(len(h), ordinal, dtype=np.int64))
        hashes = np.concatenate(parts_h) if parts_h else np.zeros(0, np.uint64)
        docs = np.concatenate(parts_d) if parts_d else np.zeros(0, np.int64)
        order = np.lexsort((docs, hashes))
        hashes, docs = hashes[order], docs[order]
        _, counts = np.unique(hashes, return_counts=True)  # hashes sorted: counts follow its runs
        frequent = counts > max_doc_frequency
        keep = ~np.repeat(frequent, counts)
        self.ignored_ngrams = int(frequent.sum())
        self.hashes, self.docs = hashes[keep], docs[keep]

    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.docs.nbytes)

    def lookup(self, text: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Match an eval text: (matched n-gram start positions, doc ordinals, word spans)."""
        words, spans = normalize(text)
        q = ngram_hashes(word_hashes(words), self.n)
        lo = np.searchsorted(self.hashes, q, "left")
        hi = np.searchsorted(self.hashes, q, "right")
        hit = np.nonzero(hi > lo)[0]
        docs = sorted({int(d) for i in hit for d in self.docs[lo[i]:hi[i]]})
        return hit.tolist(), docs, spans


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
          scores: dict[tuple[str, int], dict] | None = None, truth: dict | None = None) -> dict[str, Any]:
    """Flag dirty examples per task, trace them, compare scores and planted leaks.

    Returns {"tasks": {name: summary}, "dirty": {name: [dirty example records]}, "leaks": {...},
    "index": {...}}; see report.json for the shape.
    """
    scores = scores or {}
    indexes: dict[int, NgramIndex] = {}
    out: dict[str, Any] = {"tasks": {}, "dirty": {}, "index": {}}
    for name, task in task_map.items():
        texts = [ex.contamination_text for ex in task.examples]
        lengths = [len(normalize(t)[0]) for t in texts]
        n = choose_n(lengths, cfg)
        if n not in indexes:
            indexes[n] = NgramIndex(corpus, n, cfg.max_doc_frequency)
            out["index"][str(n)] = {"ngrams": int(len(indexes[n].hashes)), "bytes": indexes[n].nbytes(),
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


# --- reports ------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}mark{background:#ffd54f;padding:0 .1em}.text{max-width:45em;font-size:.9em}
.ok{color:#2e7d32}.bad{color:#c62828}code{font-size:.85em}"""


def highlight(text: str, spans: list[tuple[int, int]]) -> str:
    """HTML of `text` with each span wrapped in <mark>."""
    from html import escape

    parts, pos = [], 0
    for s, e in spans:
        parts += [escape(text[pos:s]), "<mark>", escape(text[s:e]), "</mark>"]
        pos = e
    parts.append(escape(text[pos:]))
    return "".join(parts)


def _fmt(score: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in score.items() if k != "n") + f" (n={score['n']})" if score else "-"


def render_html(result: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS): summary, leak check, dirty examples with <mark>ed spans."""
    from html import escape

    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Contamination report</title>",
         f"<style>{CSS}</style></head><body><h1>Train/test contamination (GPT-3 appendix C)</h1>",
         "<table><tr><th>task</th><th>n</th><th>examples</th><th>dirty</th><th>dirty fraction</th>"
         "<th>score all</th><th>score clean</th><th>score dirty</th></tr>"]
    for name, t in result["tasks"].items():
        h.append(f"<tr><td>{escape(name)}</td><td>{t['n']}</td><td>{t['total']}</td><td>{t['dirty']}</td>"
                 f"<td>{t['dirty_fraction']:.4f}</td><td>{escape(_fmt(t['score_all']))}</td>"
                 f"<td>{escape(_fmt(t['score_clean']))}</td><td>{escape(_fmt(t['score_dirty']))}</td></tr>")
    h.append("</table>")
    leaks = result.get("leaks")
    if leaks:
        h.append("<h2>Planted leaks (truth.json)</h2><table><tr><th>task</th><th>planted</th>"
                 "<th>reached training</th><th>found</th><th>traced</th><th>unplanted dirty</th><th>exact</th></tr>")
        for name, v in leaks["per_task"].items():
            cls = "ok" if v["exact_match"] else "bad"
            h.append(f"<tr><td>{escape(name)}</td><td>{v['planted']}</td><td>{v['reached_training']}</td>"
                     f"<td>{v['found']}</td><td>{v['traced_to_carrier']}</td><td>{v['unplanted_dirty']}</td>"
                     f"<td class='{cls}'>{v['exact_match']}</td></tr>")
        h.append("</table>")
    for name, rows in result["dirty"].items():
        h.append(f"<h2>{escape(name)}: {len(rows)} dirty</h2>")
        if not rows:
            continue
        h.append("<table><tr><th>index</th><th>example (overlaps marked)</th><th>training documents</th></tr>")
        for r in rows:
            docs = []
            for d in r["docs"]:
                label = escape(d.get(records.BOOK_TITLE) or d["natural_key"] or d["doc_id"])
                url = d.get(records.URL, "")
                link = f"<a href='{escape(url, quote=True)}'>{label}</a>" if url.startswith("http") else label
                docs.append(f"{link}<br><code>{escape(d['doc_id'])}</code><br>{escape(d['stage_path'])}")
            h.append(f"<tr><td>{r['index']}</td><td class='text'>{highlight(r['text'], r['spans'])}</td>"
                     f"<td>{'<hr>'.join(docs)}</td></tr>")
        h.append("</table>")
    h.append("</body></html>\n")
    return "\n".join(h)


def render_markdown(result: dict[str, Any]) -> str:
    """The summary tables in Markdown, with each dirty example's carriers."""
    lines = ["# Train/test contamination (GPT-3 appendix C)", "",
             "| task | n | examples | dirty | dirty fraction | score all | score clean | score dirty |",
             "|---|---|---|---|---|---|---|---|"]
    for name, t in result["tasks"].items():
        lines.append(f"| {name} | {t['n']} | {t['total']} | {t['dirty']} | {t['dirty_fraction']:.4f} | "
                     f"{_fmt(t['score_all'])} | {_fmt(t['score_clean'])} | {_fmt(t['score_dirty'])} |")
    leaks = result.get("leaks")
    if leaks:
        lines += ["", "## Planted leaks", "", "| task | planted | reached training | found | traced | exact |",
                  "|---|---|---|---|---|---|"]
        for name, v in leaks["per_task"].items():
            lines.append(f"| {name} | {v['planted']} | {v['reached_training']} | {v['found']} | "
                         f"{v['traced_to_carrier']} | {v['exact_match']} |")
    for name, rows in result["dirty"].items():
        if rows:
            lines += ["", f"## {name}: dirty examples", ""]
            for r in rows:
                carriers = "; ".join(f"{d['natural_key'] or d['doc_id']} ({d['stage_path']})" for d in r["docs"])
                lines.append(f"- #{r['index']}: {r['matched_ngrams']} matched {len(r['spans'])} span(s) <- {carriers}")
    return "\n".join(lines) + "\n"


def write_reports(result: dict[str, Any], out_dir: str | Path) -> None:
    """report.json, report.md, report.html under `out_dir` (atomic writes)."""
    from pipeline import io

    out_dir = Path(out_dir)
    io.write_json(out_dir / "report.json", result)
    for name, text in (("report.md", render_markdown(result)), ("report.html", render_html(result))):
        with io.atomic_path(out_dir / name) as tmp:
            tmp.write_text(text, encoding="utf-8")


def run(cfg: ContaminationConfig, train: str | Path, eval_dir: str | Path, out_dir: str | Path,
        scores_path: str | Path | None = None, truth: dict | None = None, report: Any = None) -> dict[str, Any]:
    """The contamination stage: read mix train docs and eval sets, audit, write reports.

    Args:
        cfg: n-gram settings.
        train: the mix output folder (documents under <train>/train/docs).
        eval_dir: folder holding the eval files (see tasks.FILES).
        out_dir: where report.{json,md,html} go.
        scores_path: evaluate's examples.jsonl, joined by (task, index).
        truth: the sample's truth.json (planted leaks), or None.
        report: a StageReport to fill (docs_in, errors, extra metrics).

    Returns:
        The audit result (what report.json holds).
    """
    corpus = TrainCorpus.from_folder(train)
    task_map = tasks.load_all(eval_dir)
    errors = dict(corpus.errors)
    for t in task_map.values():
        for k, v in t.errors.items():
            errors[f"{t.name}_{k}"] = errors.get(f"{t.name}_{k}", 0) + v
    scores = load_scores(scores_path, errors)
    result = audit(task_map, corpus, cfg, scores, truth)
    result["train"] = {"documents": len(corpus.ids), "repeats_skipped": corpus.repeats,
                       "words": int(sum(len(w) for w in corpus.words))}
    write_reports(result, out_dir)
    if report is not None:
        report.docs_in = len(corpus.ids)
        report.docs_out = len(corpus.ids)
        report.bytes_in = corpus.bytes
        for k, v in errors.items():
            report.error(k, v)
        report.extra.update(metrics(result))
        report.extra["train"] = result["train"]
        report.extra["index"] = result["index"]
    return result
