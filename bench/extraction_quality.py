"""Extraction quality of trafilatura settings on real article pages, as the benchmark itself scores it.

Data: ../shared/data/web/article-extraction-benchmark (scrapinghub/article-extraction-benchmark: 181 real
news/blog pages with their hand-made articleBody). Metric: that benchmark's own, re-implemented here from
its evaluate.py: text -> `\\w+` tokens -> 4-token shingles (a multiset); per page tp/fp/fn over shingles,
normalised by their sum so long pages do not weigh more; precision = mean over pages with tp+fp > 0,
recall = mean over pages with tp+fn > 0, F1 = harmonic mean of those two means; ± = 1.96 x bootstrap sd.

Reference, in the same run: the benchmark's own trafilatura runner, `trafilatura.extract(html,
include_comments=False)`. Ours: pipeline.sources.extract.extract_text with each setting of extract.favor_precision /
favor_recall x include_tables. The best F1 is the candidate for `extract.*` (the paired-bootstrap difference to
the current setting says whether it is more than noise; extract.py gives the choice made). For every setting we also
count how many of these real articles the WebText document filters would drop (min_words, language,
candidate boilerplate thresholds): every page here is a real article, so each drop is a false drop.

Usage: .venv/bin/python bench/extraction_quality.py [--limit N] [--data DIR] [--bootstrap 1000]
Writes bench/out/extraction_quality.json and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402

from pipeline.sources import extract, language  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "web" / "article-extraction-benchmark"
TOKEN = re.compile(r"\w+", re.UNICODE)
NGRAM = 4
# candidate boilerplate thresholds (Gopher's duplicate-line 0.3; a lenient short-line and C4-like punctuation bar)
CANDIDATES = {"max_duplicate_line_ratio": 0.3, "max_short_line_ratio": 0.5, "min_punct_line_ratio": 0.3}
SETTINGS = {  # name -> ExtractConfig changes (the rest: params.yaml defaults)
    "balanced": dict(favor_precision=False, favor_recall=False, include_tables=False),
    "balanced+tables": dict(favor_precision=False, favor_recall=False, include_tables=True),
    "favor_precision": dict(favor_precision=True, favor_recall=False, include_tables=False),
    "favor_precision+tables": dict(favor_precision=True, favor_recall=False, include_tables=True),
    "favor_recall": dict(favor_precision=False, favor_recall=True, include_tables=False),
    "favor_recall+tables": dict(favor_precision=False, favor_recall=True, include_tables=True),
}


def shingles(text: str | None) -> Counter:
    tokens = TOKEN.findall(text or "")
    return Counter(tuple(tokens[i:i + NGRAM]) for i in range(max(1, len(tokens) - NGRAM + 1)) if tokens[i:i + NGRAM])


def page_counts(true: str, pred: str | None) -> tuple[float, float, float]:
    """(tp, fp, fn) over 4-token shingles, normalised to sum 1 (the benchmark's per-page weighting)."""
    t, p = shingles(true), shingles(pred)
    tp = sum((t & p).values())
    fp, fn = sum((p - t).values()), sum((t - p).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp, fp, fn):
    return 1.0 if fp == fn == 0 else 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp, fp, fn):
    return 1.0 if fp == fn == 0 else 0.0 if tp == fn == 0 else tp / (tp + fn)


def scores(counts: list[tuple[float, float, float]]) -> dict[str, float]:
    p = statistics.mean(_precision(*c) for c in counts if c[0] + c[1] > 0)
    r = statistics.mean(_recall(*c) for c in counts if c[0] + c[2] > 0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def with_ci(counts: list, n_boot: int, seed: int = 0) -> dict[str, float]:
    out = scores(counts)
    rng, boot = random.Random(seed), {k: [] for k in out}
    for _ in range(n_boot):
        sample = [counts[rng.randrange(len(counts))] for _ in counts]
        for k, v in scores(sample).items():
            boot[k].append(v)
    out.update({f"{k}_ci": 1.96 * statistics.stdev(v) for k, v in boot.items() if len(v) > 1})
    return out


def lang_kept(text: str, base: extract.ExtractConfig) -> bool:
    return language.stopword_language(text)[0] in base.languages + (language.UNKNOWN,)


def false_drops(texts: dict[str, str | None], truth: dict[str, str], base: extract.ExtractConfig) -> dict[str, int]:
    """How many of these real articles each WebText document filter would drop although it should not:
    too_short only where the true article has min_words; the language filter where it disagrees with its verdict
    on the true article (wrong_language = true text kept but extraction dropped; lang_missed = the reverse);
    the candidate boilerplate thresholds on every page (each is a real article)."""
    drops: Counter = Counter()
    for page_id, text in texts.items():
        if not text or not text.strip():
            drops["no_text"] += 1
            continue
        drops["too_short"] += extract.too_short(text, base) and not extract.too_short(truth[page_id], base)
        kept, should = lang_kept(text, base), lang_kept(truth[page_id], base)
        drops["wrong_language"] += should and not kept
        drops["lang_missed"] += kept and not should
        for key, value in CANDIDATES.items():
            cfg = dataclasses.replace(extract.ExtractConfig(max_duplicate_line_ratio=1.0, max_short_line_ratio=1.0,
                                                            min_punct_line_ratio=0.0), **{key: value})
            drops[f"{key}={value}"] += extract.boilerplate_reason(text, cfg) is not None
    return dict(sorted(drops.items()))


def run_all(pages: dict[str, bytes], runs: dict) -> tuple[dict[str, dict], dict[str, float]]:
    """Every setting on every page, settings interleaved page by page, so a busy moment of a shared
    machine slows all settings alike and the speed ratios stay fair."""
    texts: dict[str, dict] = {name: {} for name in runs}
    seconds = dict.fromkeys(runs, 0.0)
    for page_id, html in pages.items():
        for name, fn in runs.items():
            start = time.perf_counter()
            texts[name][page_id] = fn(html)
            seconds[name] += time.perf_counter() - start
    return texts, seconds


def paired_diff(a: list, b: list, n_boot: int, seed: int = 1) -> tuple[float, float]:
    """F1(a) - F1(b) on the same pages and its 95% paired-bootstrap half-width."""
    rng, diffs = random.Random(seed), []
    for _ in range(n_boot):
        idx = [rng.randrange(len(a)) for _ in a]
        diffs.append(scores([a[i] for i in idx])["f1"] - scores([b[i] for i in idx])["f1"])
    return scores(a)["f1"] - scores(b)["f1"], 1.96 * statistics.stdev(diffs) if len(diffs) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="article-extraction-benchmark folder")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N pages (sorted by id)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the ± column")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "extraction_quality.json")
    args = ap.parse_args()

    truth = json.loads((args.data / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(truth)[: args.limit]
    raw = {i: gzip.decompress((args.data / "html" / f"{i}.html.gz").read_bytes()) for i in ids}
    mb = sum(map(len, raw.values())) / 1e6
    base = extract.ExtractConfig()
    runs = {"reference: trafilatura.extract(include_comments=False)":
            lambda html: trafilatura.extract(html.decode("utf-8", errors="replace"), include_comments=False)}
    for name, change in SETTINGS.items():
        cfg = dataclasses.replace(base, **change)
        runs[f"ours: {name}"] = lambda html, cfg=cfg: extract.extract_text(html, cfg)

    gold = {i: truth[i].get("articleBody", "") for i in ids}
    truth_drops = false_drops(gold, gold, base)
    rows, all_counts = [], {}
    texts, seconds = run_all(raw, runs)
    for name in runs:
        counts = all_counts[name] = [page_counts(gold[i], texts[name][i]) for i in ids]
        rows.append({"setting": name, **{k: round(v, 4) for k, v in with_ci(counts, args.bootstrap).items()},
                     "pages_per_s": round(len(ids) / seconds[name], 1), "mb_per_s": round(mb / seconds[name], 2),
                     "false_drops": false_drops(texts[name], gold, base)})
    ref = rows[0]
    for row in rows:
        row["f1_vs_reference"] = round(row["f1"] / ref["f1"], 4)
        row["speed_vs_reference"] = round(row["pages_per_s"] / ref["pages_per_s"], 3)
    ours = [r for r in rows if r["setting"].startswith("ours: ")]
    best = max(ours, key=lambda r: (r["f1"], r["precision"]))
    current = next(r for r in ours if SETTINGS[r["setting"][6:]] == {
        k: getattr(base, k) for k in ("favor_precision", "favor_recall", "include_tables")})

    print(f"{len(ids)} pages, {mb:.1f} MB HTML, trafilatura {trafilatura.__version__}; 4-token shingle P/R/F1 "
          f"as the benchmark defines it (± 95% bootstrap)")
    print(f"{'setting':56} {'P':>13} {'R':>13} {'F1':>13} {'F1/ref':>7} {'pages/s':>8} {'x ref':>6}")
    for r in rows:
        print(f"{r['setting']:56} {r['precision']:.3f}±{r['precision_ci']:.3f} {r['recall']:.3f}±{r['recall_ci']:.3f} "
              f"{r['f1']:.3f}±{r['f1_ci']:.3f} {r['f1_vs_reference']:7.3f} {r['pages_per_s']:8.1f} "
              f"{r['speed_vs_reference']:6.2f}")
    print("\nfalse drops of real articles by the WebText filters (params.yaml defaults; candidate thresholds):")
    print(f"  {'(the ground-truth text itself)':56} {truth_drops}")
    for r in rows:
        print(f"  {r['setting']:56} {r['false_drops']}")
    diffs = {other["setting"]: paired_diff(all_counts[best["setting"]], all_counts[other["setting"]], args.bootstrap)
             for other in (ref, current) if other is not best}
    print(f"\nbest F1: {best['setting']} ({best['f1']:.3f}); params.yaml now: {current['setting']} ({current['f1']:.3f})")
    for other, (d, ci) in diffs.items():
        print(f"  F1 difference best - {other}: {d:+.4f} ± {ci:.4f} (paired bootstrap)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pages": len(ids), "html_mb": round(mb, 2), "trafilatura": trafilatura.__version__,
                                    "rows": rows, "best": best["setting"], "params_now": current["setting"],
                                    "candidates": CANDIDATES,
                                    "truth_drops": truth_drops,
                                    "best_minus": {k: {"f1": round(d, 4), "ci": round(ci, 4)} for k, (d, ci) in diffs.items()}}, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
