"""Dedup at scale: 100k, 300k and 1M documents through the dedup stage on 2 local workers.

Documents are real book text (../shared/data/books, Gutenberg header/footer cut off): each is 4-12 random
sentences of the books, so unrelated documents share almost no 5-word shingle, and 20% are planted
near-copies of another document with 1/3/5/10/15% word edits (substitute, insert or delete a word), as in
bench/dedup_speed.py. They are generated on the fly into a temp dir as the stage's input shards (20k
documents per zstd JSONL shard) by a first subprocess; a second subprocess runs `pipeline.curate.dedup.run`
(executor local, 2 workers, params.yaml dedup defaults) while this process samples the memory of its whole
process tree (driver, forkserver, pool workers) every 0.2 s with psutil: peak RSS is the largest sum seen.
CPU seconds (the basis for core-hours) add each process's last sampled CPU time (the driver's from getrusage).
Precision and recall are scored on the planted pairs from the stage's clusters.parquet, recall per band of
true 5-shingle Jaccard. The stage's own report gives per-pass timings.

Goal (issue 14): the 1M run stays under 4 GB peak and grows sub-linearly from 100k to 1M.

Usage: python bench/dedup_scale.py [--sizes 100000,300000,1000000] [--workers 2] [--keep DIR]
Writes bench/out/dedup_scale.json and the figures docs/dedup_scale.svg + docs/dedup_scale_timeline.svg (--plot;
--replot redraws them from the JSON).
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import math
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT.parent / "shared" / "data" / "books"
PLOT = ROOT / "docs" / "dedup_scale.svg"  # the figure the README shows
EDITS = (0.01, 0.03, 0.05, 0.10, 0.15)
SHARD_DOCS = 20_000
BANDS = (("j>=0.8", 0.8, 2.0), ("0.5<=j<0.8", 0.5, 0.8), ("j<0.5", -1.0, 0.5))


# --- corpus (subprocess 1) -------------------------------------------------------------------------
def sentences(books: Path) -> list[str]:
    from pipeline.sources.books import strip_gutenberg

    out = []
    for path in sorted(books.glob("*.txt")):
        text = " ".join(strip_gutenberg(path.read_text(encoding="utf-8")).split())
        out += [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 <= len(s) <= 400]
    return out


def generate(books: Path, n: int, folder: Path, seed: int = 0) -> None:
    """Input shards <folder>/cc/docs/*.jsonl.zst and <folder>/planted.json ([base id, copy id, true J])."""
    import orjson
    import zstandard

    from pipeline.curate.minhash import jaccard, shingle_set

    rng = np.random.default_rng(seed)
    pool = sentences(books)
    vocab = sorted({w for s in pool[:5000] for w in s.split()})
    n_copy = n // 5
    n_base = n - n_copy
    counts = rng.integers(4, 13, n_base)
    picks = rng.integers(0, len(pool), int(counts.sum())).tolist()
    ends = np.cumsum(counts).tolist()
    texts = [" ".join(pool[i] for i in picks[a:b]) for a, b in zip([0] + ends[:-1], ends)]
    planted = []
    for k, src in enumerate(rng.choice(n_base, n_copy, replace=False).tolist()):
        words = texts[src].split()
        for pos in sorted(rng.choice(len(words), max(1, int(EDITS[k % 5] * len(words))), replace=False).tolist(),
                          reverse=True):
            op = rng.random()
            if op < 1 / 3:
                words[pos] = vocab[rng.integers(len(vocab))]
            elif op < 2 / 3:
                words.insert(pos, vocab[rng.integers(len(vocab))])
            else:
                del words[pos]
        texts.append(" ".join(words))
        planted.append([src, len(texts) - 1])
    ids = [f"cc/{uuid.UUID(int=int(x))}" for x in rng.integers(0, 1 << 63, n, dtype=np.int64)]
    ids = [f"cc/{k:08d}-{i[3:]}" for k, i in enumerate(ids)]  # unique, whatever the draw
    order = rng.permutation(n)
    docs = folder / "cc" / "docs"
    docs.mkdir(parents=True)
    for s, lo in enumerate(range(0, n, SHARD_DOCS)):
        lines = [orjson.dumps({"text": texts[i], "id": ids[i], "media": [],
                               "metadata": {"source": "cc", "url": f"http://{ids[i][3:]}.test/"}})
                 for i in order[lo:lo + SHARD_DOCS].tolist()]
        (docs / f"{s:05d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(b"\n".join(lines) + b"\n"))
    pairs = [[ids[a], ids[b], round(jaccard(shingle_set(texts[a], 5), shingle_set(texts[b], 5)), 4)] for a, b in planted]
    (folder / "planted.json").write_text(json.dumps({"pairs": pairs, "bytes": sum(len(t.encode()) for t in texts)}))


# --- the stage (subprocess 2) ----------------------------------------------------------------------
def stage(folder: Path, workers: int) -> None:
    from pipeline.core import executor
    from pipeline.curate import dedup

    os.chdir(folder)  # the stage's work dir (data/resume) and plots (reports/) land in the temp dir
    t0 = time.perf_counter()
    rep = dedup.run(dedup.DedupConfig(), 1337, {"cc": folder / "cc"}, folder / "out",
                    ecfg=executor.ExecutorConfig(workers=workers)).to_dict()
    rep["wall_seconds"] = time.perf_counter() - t0
    (folder / "report.json").write_text(json.dumps(rep, default=str))


# --- measuring and scoring (this process) ------------------------------------------------------------
def run_measured(cmd: list[str]) -> dict:
    """Run `cmd`, sampling the summed RSS of its process tree; returns peak (bytes), wall time, rusage."""
    import psutil

    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"tree": 0, "driver": 0, "procs": 0}
    cpu: dict[int, float] = {}
    timeline = []

    def sample():
        try:
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                procs = [root] + root.children(recursive=True)
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system  # the last value seen per process: its CPU time
                    except psutil.Error:
                        pass
                total = sum(rss)
                timeline.append((round(time.perf_counter() - t0, 2), total))
                peak["tree"] = max(peak["tree"], total)
                peak["driver"] = max(peak["driver"], rss[0] if rss else 0)
                peak["procs"] = max(peak["procs"], len(rss))
                time.sleep(0.2)
        except psutil.Error:
            pass

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    th.join()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the driver's own (its workers are not its waited children)
    cpu[proc.pid] = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    return {"wall_s": time.perf_counter() - t0, "cpu_s": sum(cpu.values()), "peak_tree_rss": peak["tree"], "peak_driver_rss": peak["driver"],
            "max_procs": peak["procs"], "timeline": timeline}


def score(folder: Path) -> dict:
    import pyarrow.parquet as pq

    planted = json.loads((folder / "planted.json").read_text())["pairs"]
    t = pq.read_table(folder / "out" / "clusters.parquet", columns=["cluster_id", "doc_id"]).to_pydict()
    members: dict[str, list[str]] = {}
    for c, d in zip(t["cluster_id"], t["doc_id"]):
        members.setdefault(c, []).append(d)
    predicted = {tuple(sorted((a, b))) for g in members.values() for k, a in enumerate(g) for b in g[k + 1:]}
    cluster = {d: c for c, g in members.items() for d in g}
    out = {"clustered_pairs": len(predicted), "planted_pairs": len(planted),
           "precision": round(len({tuple(sorted(p[:2])) for p in planted} & predicted) / len(predicted), 4)
           if predicted else 1.0}
    for name, lo, hi in BANDS:
        band = [p for p in planted if lo <= p[2] < hi]
        found = sum(1 for a, b, _ in band if a in cluster and cluster.get(a) == cluster.get(b))
        out[f"recall_{name}"] = round(found / len(band), 4) if band else None
        out[f"found_{name}"] = f"{found}/{len(band)}"
    return out


def plot(rows: list[dict], path: Path) -> str:
    """Peak memory against documents (log x, the 4 GB goal dashed) at `path`, and the largest run's memory over time
    beside it (`<stem>_timeline.svg`): the summary page's SVG line chart, no plotting library."""
    from pipeline.evaluation.summary_html import line_chart

    largest = rows[-1]
    memory = line_chart({"process tree": [(r["docs"], r["peak_tree_rss_gb"]) for r in rows],
                         "driver": [(r["docs"], r["peak_driver_rss_gb"]) for r in rows]},
                        baseline=4.0, baseline_label="4 GB goal", x_label="documents (log scale)",
                        y_label="peak RSS (GB)", log_x=True, width=600, height=300)
    timeline = line_chart({f"{largest['docs'] / 1e6:g}M docs": [(t, b / 1e9) for t, b in largest["rss_timeline"]]},
                          x_label="seconds into the run", y_label="process tree RSS (GB)", width=600, height=300)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(memory + "\n")
    path.with_name(path.stem + "_timeline.svg").write_text(timeline + "\n")
    return str(path.relative_to(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="document counts to run")
    parser.add_argument("--workers", type=int, default=2, help="local executor workers")
    parser.add_argument("--books", default=str(BOOKS), help="folder of Gutenberg .txt books")
    parser.add_argument("--keep", default="", help="keep the generated corpora and outputs under this folder")
    parser.add_argument("--generate", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--stage", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--plot", default=str(PLOT), help="where the SVG figure goes (the README shows this one)")
    parser.add_argument("--replot", action="store_true", help="only redraw the figure from bench/out/dedup_scale.json")
    args = parser.parse_args()
    if args.replot:
        return print(plot(json.loads((ROOT / "bench/out/dedup_scale.json").read_text())["runs"], Path(args.plot)))
    if args.generate:
        return generate(Path(args.books), int(args.generate[0]), Path(args.generate[1]))
    if args.stage:
        return stage(Path(args.stage), args.workers)
    if not Path(args.books).is_dir():
        sys.exit(f"{args.books} is absent: this benchmark needs the real books of ../shared/data")
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dedup_scale_"))
    me = [sys.executable, str(Path(__file__).resolve())]
    rows = []
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            folder = base / f"n{n}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            t0 = time.perf_counter()
            subprocess.run(me + ["--books", args.books, "--generate", str(n), str(folder)], check=True)
            gen_s = time.perf_counter() - t0
            m = run_measured(me + ["--workers", str(args.workers), "--stage", str(folder)])
            rep = json.loads((folder / "report.json").read_text())
            mb = json.loads((folder / "planted.json").read_text())["bytes"] / 1e6
            row = {"docs": n, "mb": round(mb, 1), "workers": args.workers, "generate_seconds": round(gen_s, 1),
                   "stage_seconds": round(m["wall_s"], 1), "docs_per_s": round(n / m["wall_s"], 1),
                   "stage_cpu_seconds": round(m["cpu_s"], 1), "cpu_us_per_doc": round(m["cpu_s"] / n * 1e6, 1),
                   "peak_tree_rss_gb": round(m["peak_tree_rss"] / 1e9, 3),
                   "peak_driver_rss_gb": round(m["peak_driver_rss"] / 1e9, 3), "max_processes": m["max_procs"],
                   "pass_seconds": rep.get("pass_seconds"), "docs_out": rep["docs_out"], "dropped": rep["dropped"],
                   "clusters": rep["clusters"]["n"], **score(folder),
                   "work_dir_mb": round(sum(p.stat().st_size for p in (folder / "data").rglob("*") if p.is_file()) / 1e6, 1),
                   "signature_files_mb": round(sum(p.stat().st_size for p in (folder / "data").rglob("*.npy")
                                                   if "sigs" in p.parts) / 1e6, 1),
                   "rss_timeline": m["timeline"][::5]}
            rows.append(row)
            print(f"{n:>9,} docs {mb:7.1f} MB  stage {row['stage_seconds']:7.1f} s ({row['stage_cpu_seconds']:.0f} CPU s)  peak RSS tree "
                  f"{row['peak_tree_rss_gb']:.2f} GB (driver {row['peak_driver_rss_gb']:.2f})  P {row['precision']}  "
                  f"R {row['found_j>=0.8']} / {row['found_0.5<=j<0.8']} / {row['found_j<0.5']}", flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    first, last = rows[0], rows[-1]
    growth = last["peak_tree_rss_gb"] / first["peak_tree_rss_gb"]
    exponent = math.log(growth) / math.log(last["docs"] / first["docs"]) if last["docs"] != first["docs"] else None
    summary = {"goal": "1M docs under 4 GB peak RSS, sub-linear growth from the smallest size",
               "peak_tree_rss_gb_largest": last["peak_tree_rss_gb"], "under_4gb": last["peak_tree_rss_gb"] < 4.0,
               "rss_growth": round(growth, 2), "docs_growth": last["docs"] / first["docs"],
               "rss_exponent": round(exponent, 3) if exponent is not None else None,
               "sub_linear": exponent is not None and exponent < 1.0}
    summary["plot"] = plot(rows, Path(args.plot))
    out = ROOT / "bench" / "out" / "dedup_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
