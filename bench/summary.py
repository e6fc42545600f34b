"""One table of every benchmark against its reference: where the project stands, at a glance.

Reads the JSON each bench script wrote into bench/out/ (run them first: `make bench` does both) and
prints, per benchmark, our figure, the reference it is compared with (measured in the same run),
the ratio and the goal (issue 14's for the data stages; where no goal was set, the reference itself,
1.0x). A missing file is listed as "not run" rather than silently dropped. Writes bench/out/summary.json.

Usage: python bench/summary.py [--out-dir bench/out]
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows_by(data: dict, key: str, name_key: str) -> dict:
    rows = data.get(key) or []
    return {r[name_key]: r for r in rows} if isinstance(rows, list) else rows


def dedup_speed(d):
    return {"figure": f"{d['ratio']:.2f}x min, {d.get('ratio_median', d['ratio']):.2f}x median", "ratio": d["ratio"],
            "goal": d.get("goal", 4.0)}


def dedup_scale(d):
    runs = sorted(d.get("runs", []), key=lambda r: r.get("docs", 0))
    if not runs:
        return None
    big = runs[-1]  # bench/dedup_scale.py's row of its largest run
    rss = big.get("peak_tree_rss_gb", 0.0)
    exponent = (d.get("summary") or {}).get("rss_exponent")
    growth = f", RSS ~ docs^{exponent:.2f}" if exponent is not None else ""
    return {"figure": f"{big.get('docs', 0) / 1e6:g}M docs: {rss:.2f} GB peak, {big.get('stage_seconds', 0):.0f} s{growth}",
            "ratio": round(4.0 / rss, 2) if rss else None, "goal": 1.0, "unit": "4 GB / peak RSS"}


def top_ratio(goal):
    def read(d):
        return {"figure": f"{d['ratio']:.2f}x", "ratio": d["ratio"], "goal": d.get("goal", goal)}
    return read


def tokenize_speed(d):
    rows = d.get("results") or {}
    rows = rows if isinstance(rows, dict) else {r.get("name"): r for r in rows}
    ours = next((r for name, r in rows.items() if name and name.startswith("ours")), None)
    if ours is None:
        return None
    ratio = ours["ratio_vs_tiktoken_1thr"]
    return {"figure": f"{ours['mb_per_s']:.2f} MB/s", "ratio": ratio, "goal": 1.0}


def extraction_quality(d):
    rows = _rows_by(d, "rows", "setting")
    now = rows.get(d.get("params_now"))
    ref = next((r for name, r in rows.items() if not name.startswith("ours")), None)
    if now is None or ref is None:
        return None
    return {"figure": f"F1 {now['f1']:.3f}", "ratio": round(now["f1"] / ref["f1"], 3), "goal": 1.0,
            "reference_figure": f"F1 {ref['f1']:.3f}"}


def scrape_throughput(d):
    runs = d.get("runs", {})
    if "ours" not in runs or "reference" not in runs:
        return None
    ratio = round(runs["ours"]["pages_per_s"] / runs["reference"]["pages_per_s"], 2)
    return {"figure": f"{runs['ours']['pages_per_s']} pages/s", "ratio": ratio, "goal": 1.0,
            "reference_figure": f"{runs['reference']['pages_per_s']} pages/s"}


def dvc_noop(d):
    return {"figure": f"{d['ours_s']:.2f} s, {d['stages']} stages ({d['ours_s_per_stage'] * 1000:.0f} ms each)",
            "ratio": d["ratio"], "goal": 1.0,
            "reference_figure": f"{d['floor_10_trivial_stages_s']:.2f} s, 10 stages ({d['floor_s_per_stage'] * 1000:.0f} ms each)"}


# name -> (json file, reader, reference, goal's source)
BENCHES = {
    "dedup_speed": ("dedup_speed.json", dedup_speed, "datasketch MinHash (xxh32) + MinHashLSH, per core", "issue 14"),
    "dedup_scale": ("dedup_scale.json", dedup_scale, "4 GB memory ceiling at 1M documents", "issue 14"),
    "contamination_index": ("contamination_index.json", top_ratio(3.0), "plain Python set of 13-gram tuples", "issue 14"),
    "decontaminate_speed": ("decontaminate_speed.json", top_ratio(1.0), "plain Python set of n-gram tuples, 2 passes",
                            "reference"),
    "quality_speed": ("quality_speed.json", top_ratio(0.8), "bare fastText predict, 1 thread", "issue 14"),
    "tokenize_speed": ("tokenize_speed.json", tokenize_speed, "tiktoken, same merges, 1 thread", "reference"),
    "train_speed": ("train_speed.json", top_ratio(1.0), "nanoGPT-design step, same shapes", "reference"),
    "extraction_quality": ("extraction_quality.json", extraction_quality, "trafilatura default settings (F1)", "reference"),
    "scrape_throughput": ("scrape_throughput.json", scrape_throughput, "plain threaded keep-alive fetch loop, no politeness",
                          "reference"),
    "dvc_noop": ("dvc_noop.json", dvc_noop, "DVC's floor: no-op `dvc repro` of 10 trivial stages, per stage", "reference"),
}


def collect(out_dir: Path) -> list[dict]:
    rows = []
    for name, (fname, read, reference, goal_source) in BENCHES.items():
        path = out_dir / fname
        row = {"bench": name, "reference": reference, "goal_source": goal_source, "status": "not run"}
        if path.is_file():
            try:
                got = read(json.loads(path.read_text()))
            except (KeyError, TypeError, ValueError) as exc:
                got, row["status"] = None, f"unreadable ({type(exc).__name__}: {exc})"
            if got:
                ahead = got["ratio"] is not None and got["ratio"] >= got["goal"]
                # an issue's goal is met or not; a plain reference (no goal filed) is only matched or not
                status = ("met" if ahead else "below goal") if goal_source != "reference" else \
                    (">= ref" if ahead else "< ref")
                row.update(got, status=status)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    rows = collect(args.out_dir)
    print(f"{'benchmark':<20} {'ours':<44} {'ratio':>7} {'goal':>6}  {'status':<10} reference")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        goal = f"{r['goal']:.1f}x" if r.get("goal") is not None else "-"
        print(f"{r['bench']:<20} {r.get('figure', '-'):<44} {ratio:>7} {goal:>6}  {r['status']:<10} {r['reference']}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
