"""Benchmark: GPT-3 appendix C decontamination (pipeline/evaluation/decontaminate.py) vs a plain Python reference.

Corpus: the real books of ../shared/data/books cut into documents of 100-300 words (web-page sized, seeded), checked
against the 4 real eval sets of ../shared/data/eval (LAMBADA, WikiText-2, HellaSwag, PIQA: ~1M benchmark n-grams).
Both sides make the same two passes (document frequency of the benchmark n-grams, then which documents to cut):
- reference: each document's normalised words (ngrams.normalize_words, the same normalisation), every n-word
  tuple hashed into a Python set of the benchmarks' tuples: the way one writes it first;
- ours: `decontaminate()` end to end (documents hashed in batches with numpy, binary search in the sorted
  benchmark hashes, the per-document cut only for documents that hold a benchmark n-gram).
Both must find the same contaminated documents (checked). The benchmark n-gram tables are built once, outside the
timed passes, for both. Ratio = reference seconds / ours.

Usage: python bench/decontaminate_speed.py [--docs 20000] [--repeats 3]
Writes bench/out/decontaminate_speed.json (--out).
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import random
import statistics
import time

from pipeline.evaluation import decontaminate as dec
from pipeline.evaluation import tasks
from pipeline.evaluation.ngrams import ContaminationConfig, choose_n, normalize, normalize_words

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus(n_docs: int) -> list:
    from datatrove.data import Document

    words = " ".join(p.read_text(errors="replace") for p in sorted((DATA / "books").glob("*.txt"))).split()
    r, docs, i = random.Random(0), [], 0
    while i < len(words) and len(docs) < n_docs:
        n = r.randint(100, 300)
        docs.append(Document(text=" ".join(words[i:i + n]), id=f"books/{len(docs)}", metadata={}))
        i += n
    return docs


def reference_tables(task_map: dict, cfg: ContaminationConfig) -> dict[int, set]:
    by_n: dict[int, set] = {}
    for task in task_map.values():
        words = [normalize(ex.contamination_text)[0] for ex in task.examples]
        n = choose_n([len(w) for w in words], cfg)
        by_n.setdefault(n, set()).update(hash(tuple(w[i:i + n])) for w in words for i in range(len(w) - n + 1))
    return by_n


def reference(docs: list, bad: dict[int, set], cfg: ContaminationConfig) -> set[str]:
    """The two passes in plain Python; returns the ids of the documents it would cut."""
    df: dict[int, int] = {}
    seen = set()
    for doc in docs:  # pass 1: document frequency, repeats once
        if doc.id in seen:
            continue
        seen.add(doc.id)
        w = normalize_words(doc.text)
        found = {(n, hash(tuple(w[i:i + n]))) for n, table in bad.items() for i in range(len(w) - n + 1)}
        for key in found:
            if key[1] in bad[key[0]]:
                df[key] = df.get(key, 0) + 1
    frequent = {key for key, c in df.items() if c > cfg.max_doc_frequency}
    dirty = set()
    for doc in docs:  # pass 2: which documents hold a benchmark n-gram that is not a common phrase
        w = normalize_words(doc.text)
        if any(h in table and (n, h) not in frequent
               for n, table in bad.items() for h in (hash(tuple(w[i:i + n])) for i in range(len(w) - n + 1))):
            dirty.add(doc.id)
    return dirty


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "out" / "decontaminate_speed.json"))
    args = ap.parse_args()
    if not (DATA / "books").is_dir() or not (DATA / "eval").is_dir():
        sys.exit(f"decontaminate_speed: {DATA}/books and /eval are needed (the shared real data)")
    cfg, docs = ContaminationConfig(), corpus(args.docs)
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    task_map = tasks.load_all(DATA / "eval")
    ref_bad = reference_tables(task_map, cfg)
    ours_bad = dec.eval_ngrams(task_map, cfg)  # built once, outside the timed passes, as the reference's sets
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(args.repeats):
        for name in (("reference", "ours") if r % 2 else ("ours", "reference")):  # alternate who goes first
            t0 = time.perf_counter()
            if name == "reference":
                ref_dirty = reference(docs, ref_bad, cfg)
            else:
                out = list(dec.decontaminate(lambda: docs, task_map, cfg, {}, eval_hashes=ours_bad))
                ours_dirty = {d.id.split("#decon")[0] for d, reason in out if reason or "#decon" in d.id}
            times[name].append(time.perf_counter() - t0)
    assert ours_dirty == ref_dirty, (sorted(ours_dirty ^ ref_dirty)[:5], len(ours_dirty), len(ref_dirty))
    rows = {k: {"s": round(statistics.median(v), 3), "mb_per_s": round(mb / statistics.median(v), 2)}
            for k, v in times.items()}
    ratio = round(rows["reference"]["s"] / rows["ours"]["s"], 2)
    print(f"{len(docs)} documents, {mb:.1f} MB, {sum(len(t) for t in ours_bad.values()):,} benchmark n-grams; "
          f"{len(ours_dirty)} documents to cut (both)")
    for name, row in rows.items():
        print(f"  {name:10} {row['s']:7.2f} s  {row['mb_per_s']:6.2f} MB/s")
    print(f"ratio ours/reference: {ratio:.2f}x")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"docs": len(docs), "mb": round(mb, 2), "dirty_docs": len(ours_dirty),
                               "results": rows, "ratio": ratio, "repeats": args.repeats}, indent=2))


if __name__ == "__main__":
    main()
