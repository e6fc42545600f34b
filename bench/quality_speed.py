"""Benchmark: quality_filter's scoring throughput vs bare fastText predict, same texts, one run.

GPT-3's quality filter (Brown et al. 2020, appendix A) is a classifier score plus a Pareto draw per
crawl document; at crawl scale the question is how much of the stage is the model itself. On the
same real texts (book chunks of ../shared/data/books cut as quality_train cuts books, plus the
article bodies of ../shared/data/web's extraction benchmark, i.e. extracted web pages) it times:

- bare:   `model.predict(batch, k=1)` on texts already normalised (the model alone: the reference),
- scorer: `quality.Scorer` (normalise + predict + P(hq)), as the stage calls it per batch,
- filter: `quality_filter.QualityFilter.filter_batch` (+ cross-fit model routing, Pareto retention draw,
          metadata) on datatrove Documents,
- stage:  `quality_filter.run` end to end (read zstd jsonl shards, filter, write docs/removed,
          scores.parquet, report), in a scratch directory, fresh work dir per repeat.
Batches of 256 everywhere (QualityFilter's batch size); one thread (fastText predict is single
threaded). The fraction of stage time outside the model is 1 - bare / stage, split into
normalisation (scorer - bare), retention and metadata (filter - scorer) and I/O + report
(stage - filter). Median of --repeats runs.

Usage: python bench/quality_speed.py [--model models/quality/model.bin] [--docs 8000] [--repeats 5]
Without a trained model it trains one (quality.QualityConfig defaults) on the texts first.
Writes bench/out/quality_speed.json.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from datatrove.data import Document

from pipeline.core import io, records
from pipeline.curate import quality, quality_filter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BATCH = 256


def load_texts(n_docs: int) -> tuple[list[str], dict]:
    """Article bodies (extracted web pages) first, then book chunks, up to n_docs texts."""
    gt = SHARED / "web/article-extraction-benchmark/ground-truth.json"
    pages = [v["articleBody"] for _, v in sorted(json.loads(gt.read_text()).items()) if v["articleBody"].strip()]
    texts = pages[:n_docs]
    for path in sorted((SHARED / "books").glob("*.txt")):
        if len(texts) >= n_docs:
            break
        texts += quality.chunk_words(path.read_text(encoding="utf-8", errors="replace"))[: n_docs - len(texts)]
    return texts, {"web_pages": min(len(pages), n_docs), "book_chunks": len(texts) - min(len(pages), n_docs)}


def batches(items: list) -> list[list]:
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_model(texts: list[str], folder: Path) -> Path:
    """A model with the stage's hyper-parameters: book chunks vs web pages (labels only need two classes)."""
    rows = [("", "", quality.POSITIVE if i % 2 else quality.NEGATIVE, quality.normalise(t)) for i, t in enumerate(texts)]
    path = folder / "model.bin"
    quality.train_model(rows, quality.QualityConfig(), 1337, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/quality/model.bin"), help="trained quality model.bin")
    ap.add_argument("--docs", type=int, default=8000, help="documents to score")
    ap.add_argument("--repeats", type=int, default=5, help="runs per measurement (median reported)")
    args = ap.parse_args()
    import fasttext

    texts, mix = load_texts(args.docs)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="quality_speed_"))
    model_path = Path(args.model).resolve() if Path(args.model).is_file() else train_model(texts, scratch)
    ids = [records.cc_id(f"<urn:uuid:bench-{i:08d}>") for i in range(len(texts))]
    docs = [Document(t, i, metadata={records.SOURCE: records.CC, records.URL: f"http://bench.test/{i}"})
            for t, i in zip(texts, ids)]
    in_dir = scratch / "cc"
    with io.doc_writer(in_dir) as writer:
        for doc in docs:
            writer.write(doc, rank=0)

    model = fasttext.load_model(str(model_path))
    normalised = [quality.normalise(t) for t in texts]
    scorer = quality.Scorer(model_path)
    scorer([texts[0]])  # load outside the timing, as the bare model is
    flt = quality_filter.QualityFilter(model_path, 1337, 9.0)
    flt.filter_batch(docs[:1])

    def stage():
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            shutil.rmtree(scratch / "data", ignore_errors=True)  # no resume: a genuine run each time
            quality_filter.run(quality_filter.FilterConfig(), 1337, in_dir, model_path, scratch / "out").write()
        finally:
            os.chdir(cwd)

    t = {
        "bare": median_time(lambda: [model.predict(b, k=1) for b in batches(normalised)], args.repeats),
        "scorer": median_time(lambda: [scorer(b) for b in batches(texts)], args.repeats),
        "filter": median_time(lambda: [flt.filter_batch(b) for b in batches(docs)], args.repeats),
        "stage": median_time(stage, args.repeats),
    }
    kept = json.loads((scratch / "reports/quality_filter.json").read_text())["docs_out"]
    # where the last stage run spent its time, per datatrove step (the rest: executor start, re-reading
    # the outputs for the report, scores.parquet, plots)
    stats = json.loads(next((scratch / "data/resume/quality_filter").glob("*/logs/stats.json")).read_text())
    label = lambda name: " ".join("".join(c for c in name.split(" - ", 1)[-1] if c.isascii()).split())  # noqa: E731
    steps = {label(s["name"]): round(s["time_stats"]["total"], 4) for s in stats}
    n = len(texts)
    rows = [{"path": name, "seconds": round(s, 4), "docs_per_s": round(n / s, 1), "mb_per_s": round(mb / s, 2),
             "vs_bare": round(t["bare"] / s, 3)} for name, s in t.items()]
    outside = {
        "normalisation": (t["scorer"] - t["bare"]) / t["stage"],
        "routing_retention_metadata": (t["filter"] - t["scorer"]) / t["stage"],
        "io_parquet_report": (t["stage"] - t["filter"]) / t["stage"],
    }
    result = {"docs": n, "mb": round(mb, 2), "mix": mix, "batch": BATCH, "repeats": args.repeats,
              "model": os.path.relpath(model_path, ROOT) if model_path.is_relative_to(ROOT) else "trained in scratch",
              "kept_by_stage": kept, "rows": rows, "stage_steps_seconds_last_run": steps,
              "fraction_outside_model": round(1 - t["bare"] / t["stage"], 4),
              "outside_model_split": {k: round(v, 4) for k, v in outside.items()}}
    print(f"{n} docs ({mix['web_pages']} web pages, {mix['book_chunks']} book chunks), {mb:.1f} MB, "
          f"model {result['model']}, batch {BATCH}, median of {args.repeats}")
    print(f"{'path':<8} {'seconds':>8} {'docs/s':>9} {'MB/s':>7} {'vs bare':>8}")
    for r in rows:
        print(f"{r['path']:<8} {r['seconds']:>8.3f} {r['docs_per_s']:>9.0f} {r['mb_per_s']:>7.2f} {r['vs_bare']:>8.2f}")
    print(f"stage time outside the model: {result['fraction_outside_model']:.1%} "
          + ", ".join(f"{k} {v:.1%}" for k, v in outside.items()))
    print("last stage run, seconds per datatrove step: " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
          + f"; outside the steps {t['stage'] - sum(steps.values()):.3f} (median stage)")
    out = ROOT / "bench/out/quality_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
