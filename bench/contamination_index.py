"""Contamination index throughput and memory: our hashed n-gram indexes vs a plain-Python set, same run.

Corpus: real books from ../shared/data/books (Gutenberg header/footer cut off), cut on paragraph
bounds into 1-20 KB documents, up to --mb megabytes. Every method indexes every 13-gram of every
document after GPT-3 normalisation (lowercase, punctuation stripped, whitespace words):

  reference   plain Python, as ../shared/ANCHORS.md measured it (4.4 MB/s, ~80 bytes per distinct
              13-gram): re.findall words, hash(tuple(13 words)) into one set
  memory      pipeline.evaluation.contamination.TrainCorpus (word hashes, numpy over batches of documents)
              + pipeline.evaluation.ngram_index.NgramIndex (sorted uint64 hash + int64 doc ordinal pairs,
              frequency cut)
  sharded     ShardedNgramIndex streaming the texts once (hashed a batch at a time), 16 sorted .npy
              shards in a temp folder (out of core: peak memory is one spill buffer plus the largest
              shard); the stage's default, so its ratio is the headline

Every run starts cold (ngrams' lower-case table and power caches cleared, as in a fresh process).
Speed: median of --repeats timed runs (no tracing), interleaved, as MB/s of text and n-gram positions
per second; the ratio to the reference is also taken per round (same moment on a shared machine)
and reported as min and median. Memory: one more run under tracemalloc (numpy reports its buffers
to it): the peak while building, and the size of what stays (set + its int objects / index arrays),
both per distinct n-gram. The figure that counts is the ratio to the reference measured in the same run.

Usage: python bench/contamination_index.py [--mb 16] [--repeats 3] [--n 13]
Writes bench/out/contamination_index.json: per-method rows, and top level "ratio" (sharded vs
reference, median of the per-round ratios), "ratio_min" and "goal" (3.0) for the summary table.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import random
import re
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from corpus import book_documents  # bench/corpus.py (this script's folder is on sys.path)
from pipeline.evaluation import contamination as con
from pipeline.evaluation import ngram_index as ngx
from pipeline.evaluation import ngrams

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT.parent / "shared" / "data" / "books"
WORD = re.compile(r"[^\W_]+")
GOAL = 3.0  # issue 14: the sharded index at >= 3x the plain-Python set's MB/s


def build_corpus(books: Path, mb: float, seed: int = 0) -> list[str]:
    """1-20 KB documents cut from the books on paragraph bounds, round robin over books, up to `mb` MB."""
    return book_documents(books, mb, random.Random(seed))


# --- the three methods: each returns the structure kept ---------------------------------------------------
def reference(texts: list[str], n: int):
    seen: set[int] = set()
    for text in texts:
        words = WORD.findall(text.lower())
        for i in range(len(words) - n + 1):
            seen.add(hash(tuple(words[i:i + n])))
    return seen


def cold() -> None:
    """Drop ngrams' cached tables, so every timed run pays for them as a fresh process does."""
    ngrams._lower_table.cache_clear()
    ngrams._POWERS.clear()


def memory_index(texts: list[str], n: int):
    cold()
    corpus = con.TrainCorpus()
    for i, text in enumerate(texts):
        corpus.add(f"books/{i}", text, {})
    return ngx.NgramIndex(corpus, n, 10)


def sharded_index(texts: list[str], n: int, count: bool = False):
    cold()
    with tempfile.TemporaryDirectory(prefix="bench-ngram-") as tmp:
        index = ngx.ShardedNgramIndex(iter(texts), n, 10, tmp, shard_bits=4)
        if count:  # distinct n-grams, read before the temp folder goes (untimed runs only)
            index.distinct = sum(len(np.unique(np.asarray(index.shard(k)[0]))) for k in range(index.shards))
        index._open.clear()
    return index


def distinct_of(name: str, obj) -> int:
    if name == "reference":
        return len(obj)
    return getattr(obj, "distinct", None) or len(np.unique(obj.hashes))


def kept_bytes(name: str, obj) -> int:
    if name == "reference":
        return sys.getsizeof(obj) + sum(sys.getsizeof(x) for x in obj)
    return obj.nbytes()


METHODS = {"reference": reference, "memory": memory_index, "sharded": sharded_index}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=16.0, help="corpus size in MB of book text")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--n", type=int, default=13, help="n-gram length (GPT-3: 13)")
    parser.add_argument("--books", default=str(BOOKS), help="folder of Gutenberg .txt books")
    args = parser.parse_args()
    if not any(Path(args.books).glob("*.txt")):
        sys.exit(f"no books in {args.books}: this benchmark needs ../shared/data/books (or --books FOLDER)")
    texts = build_corpus(Path(args.books), args.mb)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(texts)} documents, {mb:.1f} MB from {args.books}")
    positions = int(sum(max(0, c - args.n + 1) for c in ngrams.text_word_counts(texts)))
    rows = {}
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for _ in range(args.repeats):  # interleaved, so a busy spell on a shared machine hits every method
        for name, fn in METHODS.items():
            t0 = time.perf_counter()
            obj = fn(texts, args.n)
            times[name].append(time.perf_counter() - t0)
            del obj
    for name, fn in METHODS.items():
        tracemalloc.start()
        obj = fn(texts, args.n)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        distinct = sharded_index(texts, args.n, count=True).distinct if name == "sharded" else distinct_of(name, obj)
        kept = kept_bytes(name, obj)
        sec = statistics.median(times[name])
        rounds = [r / t for r, t in zip(times["reference"], times[name])]  # same-round ratios
        rows[name] = {"seconds": round(sec, 3), "mb_per_s": round(mb / sec, 2), "ngrams_per_s": round(positions / sec),
                      "ngram_positions": positions, "distinct_ngrams": distinct,
                      "speed_ratio_min": round(min(rounds), 2), "speed_ratio_median": round(statistics.median(rounds), 2),
                      "kept_bytes_per_m_ngrams": round(kept / distinct * 1e6), "peak_bytes_per_m_ngrams": round(peak / distinct * 1e6),
                      "kept_mb": round(kept / 1e6, 1), "peak_mb": round(peak / 1e6, 1)}
        del obj
        print(f"{name}: {rows[name]}", flush=True)
    ref = rows["reference"]
    for r in rows.values():
        r["speed_ratio"] = round(r["mb_per_s"] / ref["mb_per_s"], 2)
        r["kept_memory_ratio"] = round(r["kept_bytes_per_m_ngrams"] / ref["kept_bytes_per_m_ngrams"], 3)
        r["peak_memory_ratio"] = round(r["peak_bytes_per_m_ngrams"] / ref["peak_bytes_per_m_ngrams"], 3)
    print(f"\n{args.n}-gram index, {mb:.1f} MB, {len(texts)} docs, median of {args.repeats} "
          f"(x ref: median time ratio; per-round ratios min / median)")
    print("| method | MB/s | n-grams/s | x ref | per round min / median | kept B/n-gram | x ref | peak B/n-gram | x ref |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['mb_per_s']} | {r['ngrams_per_s'] / 1e6:.2f}M | {r['speed_ratio']} | "
              f"{r['speed_ratio_min']} / {r['speed_ratio_median']} | "
              f"{r['kept_bytes_per_m_ngrams'] / 1e6:.1f} | {r['kept_memory_ratio']} | "
              f"{r['peak_bytes_per_m_ngrams'] / 1e6:.1f} | {r['peak_memory_ratio']} |")
    head = rows["sharded"]
    print(f"sharded vs reference: {head['speed_ratio_median']}x median, {head['speed_ratio_min']}x min "
          f"(goal {GOAL}x), {head['kept_bytes_per_m_ngrams'] / 1e6:.1f} B kept per 13-gram")
    out = ROOT / "bench" / "out" / "contamination_index.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ratio": head["speed_ratio_median"], "ratio_min": head["speed_ratio_min"], "goal": GOAL,
                               "kept_bytes_per_ngram": round(head["kept_bytes_per_m_ngrams"] / 1e6, 1),
                               "peak_bytes_per_ngram": round(head["peak_bytes_per_m_ngrams"] / 1e6, 1),
                               "corpus_mb": round(mb, 2), "documents": len(texts), "n": args.n,
                               "repeats": args.repeats, "methods": rows}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
