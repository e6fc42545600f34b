"""Benchmark: the quality_filter stage end to end vs bare fastText predict, same 100k pages, one run.

GPT-3's quality filter (Brown et al. 2020, appendix A) is a classifier score plus a Pareto draw per
crawl page; at crawl scale the question is how close the stage gets to the model alone. The pages are
real text cut on the fly from ../shared/data (never copied into the project): the article bodies of
web/'s extraction benchmark (extracted web pages), then pieces of 100-300 words of the books with their
own line breaks and spacing, as extracted crawl text has them, pass after pass with shifted cuts until
--docs pages. Timed, interleaved per repeat so each round sees the same machine load:

- bare:   `model.predict(batch, k=1)` on texts already normalised (the model alone: the reference),
- scorer: `quality.Scorer` (model_lines + predict + P(hq)), as the stage calls it per batch,
- stage:  `quality_filter.run` end to end (fingerprint, read the zstd shard, score, draw, write docs/,
          removed/, scores.parquet, report, manifest, publish), in a scratch directory, fresh work dir
          each repeat.
Batches of 256 everywhere. ratio = bare seconds / stage seconds (the stage's speed as a fraction of the
model's), from the medians; also from the minima and per repeat. CPU seconds are counted too: the stage
runs fastText in a child process (pipeline/curate/quality_worker.py: fastText holds the GIL), its own main
thread parses, prepares the next batch's model lines, draws, tags and writes while the child scores, and
two background threads run zstd (decompression of the input, level-3 compression of the output). On a
machine whose other cores are busy the wall ratio falls towards the CPU ratio; with cores to spare it
approaches bare CPU / max(child, main, background) CPU.

Usage: python bench/quality_speed.py [--model models/quality/model.bin] [--docs 100000] [--repeats 3]
Without a trained model it trains one (quality.QualityConfig defaults) on the texts first.
Writes bench/out/quality_speed.json (top level: ratio, goal).
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datatrove.data import Document

from pipeline.core import io, records, shards
from pipeline.curate import quality, quality_filter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BATCH = 256
GOAL = 0.8
SPACE = re.compile(r"(\s+)")


def load_texts(n_docs: int) -> tuple[list[str], dict]:
    """Web page bodies, then book pieces of 100-300 words keeping their own whitespace, until n_docs."""
    gt = SHARED / "web/article-extraction-benchmark/ground-truth.json"
    texts = [v["articleBody"] for _, v in sorted(json.loads(gt.read_text()).items()) if v["articleBody"].strip()]
    texts = texts[:n_docs]
    web = len(texts)
    books = [SPACE.split(p.read_text(encoding="utf-8", errors="replace").strip())
             for p in sorted((SHARED / "books").glob("*.txt"))]  # words at even places, whitespace between
    passes = 0
    while len(texts) < n_docs:
        for parts in books:
            words, start, i = (len(parts) + 1) // 2, (passes * 61) % 100, 0  # each pass cuts elsewhere
            while start < words and len(texts) < n_docs:
                n = 100 + (i * 97 + passes * 31) % 201
                texts.append("".join(parts[2 * start: 2 * min(start + n, words) - 1]))
                start, i = start + n, i + 1
        passes += 1
    return texts, {"web_pages": web, "book_pieces": len(texts) - web, "book_passes": passes}


def train_model(texts: list[str], folder: Path) -> Path:
    """A model with the stage's hyper-parameters: alternate texts labelled positive and negative."""
    rows = [("", "", quality.POSITIVE if i % 2 else quality.NEGATIVE, quality.normalise(t))
            for i, t in enumerate(texts)]
    path = folder / "model.bin"
    quality.train_model(rows, quality.QualityConfig(), 1337, path)
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # counts children once they have been waited for
    return usage.ru_utime + usage.ru_stime


def clocked(fn) -> dict:
    """Wall, this thread's CPU, the process's and its (ended) child processes' CPU seconds of fn()."""
    wall, main, proc, child = time.perf_counter(), time.thread_time(), time.process_time(), _children_cpu()
    fn()
    return {"wall": time.perf_counter() - wall, "main_cpu": time.thread_time() - main,
            "cpu": time.process_time() - proc, "child_cpu": _children_cpu() - child}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/quality/model.bin"), help="trained quality model.bin")
    ap.add_argument("--docs", type=int, default=100_000, help="pages to score")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of bare, scorer, stage (min and median reported)")
    args = ap.parse_args()
    if not (SHARED / "books").is_dir() or not (SHARED / "web").is_dir():
        sys.exit(f"bench/quality_speed.py needs the real texts in {SHARED} (books/ and web/); it is absent")
    import fasttext

    load_before = os.getloadavg()
    texts, mix = load_texts(args.docs)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="quality_speed_"))
    model_path = Path(args.model).resolve() if Path(args.model).is_file() else train_model(texts, scratch)
    docs = [Document(t, records.cc_id(f"<urn:uuid:bench-{i:08d}>"),
                     metadata={records.SOURCE: records.CC, records.URL: f"http://bench.test/{i}"})
            for i, t in enumerate(texts)]
    in_dir = scratch / "cc"
    with ThreadPoolExecutor(1) as pool, shards.ShardWriter(in_dir, io.DOCS, 0, pool) as writer:
        for i in range(0, len(docs), BATCH):
            writer.write_batch(docs[i:i + BATCH])
    del docs

    model = fasttext.load_model(str(model_path))
    normalised = [quality.normalise(t) for t in texts]
    scorer = quality.Scorer(model_path)
    scorer([texts[0]])  # load outside the timing, as the bare model is

    def stage():
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            shutil.rmtree(scratch / "data", ignore_errors=True)  # no resume: a genuine run each time
            quality_filter.run(quality_filter.FilterConfig(), 1337, in_dir, model_path, scratch / "out").write()
        finally:
            os.chdir(cwd)

    paths = {"bare": lambda: [model.predict(normalised[i:i + BATCH], k=1) for i in range(0, len(texts), BATCH)],
             "scorer": lambda: [scorer(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)],
             "stage": stage}
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            runs[name].append(clocked(fn))
    kept = json.loads((scratch / "reports/quality_filter.json").read_text())["docs_out"]
    shutil.rmtree(scratch, ignore_errors=True)

    wall = {name: [r["wall"] for r in rs] for name, rs in runs.items()}
    med = {name: statistics.median(w) for name, w in wall.items()}
    low = {name: min(w) for name, w in wall.items()}
    n = len(texts)
    rows = [{"path": name, "median_s": round(med[name], 3), "min_s": round(low[name], 3),
             "docs_per_s": round(n / med[name], 1), "mb_per_s": round(mb / med[name], 2),
             "vs_bare_median": round(med["bare"] / med[name], 3), "vs_bare_min": round(low["bare"] / low[name], 3)}
            for name in paths]
    cpu = {name: statistics.median(r["cpu"] + r["child_cpu"] for r in rs) for name, rs in runs.items()}
    main_cpu = statistics.median(r["main_cpu"] for r in runs["stage"])
    child_cpu = statistics.median(r["child_cpu"] for r in runs["stage"])
    background = cpu["stage"] - main_cpu - child_cpu
    result = {
        "ratio": round(med["bare"] / med["stage"], 3), "goal": GOAL,
        "ratio_definition": "bare fastText predict seconds / quality_filter stage seconds, same pages (medians)",
        "ratio_min": round(low["bare"] / low["stage"], 3),
        "ratio_per_repeat": [round(b / s, 3) for b, s in zip(wall["bare"], wall["stage"])],
        "docs": n, "mb": round(mb, 2), "mix": mix, "batch": BATCH, "repeats": args.repeats,
        "model": os.path.relpath(model_path, ROOT) if model_path.is_relative_to(ROOT) else "trained in scratch",
        "kept_by_stage": kept, "rows": rows,
        "cpu_seconds_median": {"bare": round(cpu["bare"], 3), "scorer": round(cpu["scorer"], 3),
                               "stage": round(cpu["stage"], 3), "stage_fasttext_process": round(child_cpu, 3),
                               "stage_main_thread": round(main_cpu, 3),
                               "stage_background_threads": round(background, 3)},
        "cpu_ratio": round(cpu["bare"] / cpu["stage"], 3),
        "free_cores_ratio_estimate": round(cpu["bare"] / max(main_cpu, child_cpu, background), 3),
        "stage_time_outside_model": round(1 - med["bare"] / med["stage"], 4),
        "outside_model_split": {"normalisation": round((med["scorer"] - med["bare"]) / med["stage"], 4),
                                "io_draws_tables_report": round((med["stage"] - med["scorer"]) / med["stage"], 4)},
        "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2),
                              "cores": os.cpu_count()},
    }
    print(f"{n} docs ({mix['web_pages']} web pages, {mix['book_pieces']} book pieces), {mb:.1f} MB, model "
          f"{result['model']}, batch {BATCH}, {args.repeats} repeats; load average {load_before[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"{'path':<8} {'median s':>9} {'min s':>8} {'docs/s':>8} {'MB/s':>6} {'vs bare':>8} {'(min)':>6}")
    for r in rows:
        print(f"{r['path']:<8} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['docs_per_s']:>8.0f} {r['mb_per_s']:>6.2f} "
              f"{r['vs_bare_median']:>8.3f} {r['vs_bare_min']:>6.3f}")
    c = result["cpu_seconds_median"]
    print(f"ratio {result['ratio']} (goal {GOAL}; min-based {result['ratio_min']}, per repeat "
          f"{result['ratio_per_repeat']}); CPU s: bare {c['bare']}, stage {c['stage']} = fastText process "
          f"{c['stage_fasttext_process']} + main thread {c['stage_main_thread']} + background "
          f"{c['stage_background_threads']}; CPU ratio {result['cpu_ratio']}, estimate with free cores "
          f"{result['free_cores_ratio_estimate']}")
    out = ROOT / "bench/out/quality_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
