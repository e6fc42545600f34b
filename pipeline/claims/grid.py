"""A claim's grid as queued DVC experiments, then one table: `python -m pipeline.claims.grid ln_stability`.

Each cell is `dvc exp run --queue --single-item <stage> -n <name> -S <stage>.<knob>=<value> ...`: only that
stage runs in the experiment (`--single-item` skips the upstream check, so a workspace whose earlier stages
are stale still reruns nothing but the cell), in a temporary copy of the workspace, one after another by
default (`dvc queue start -j 1`: the cells are timed and the machine has 2 cores). When the queue is empty the
script reads `dvc exp show --json`, prints the table and writes it (JSON and markdown).

Usage:
    python -m pipeline.claims.grid ln_stability                 # queue 16 cells, run them, tabulate
    python -m pipeline.claims.grid ln_stability -S steps=100    # the same with a knob set in every cell
    python -m pipeline.claims.grid ln_stability --show          # only tabulate cells that have run
    dvc plots diff $(python -m pipeline.claims.grid ln_stability --names)   # overlay the loss curves
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from pipeline.core import io

# stage -> knob -> (label, value) pairs; labels make the experiment names (git refs: no dots)
GRIDS: dict[str, dict[str, list[tuple[str, Any]]]] = {
    "ln_stability": {
        "ln": [("post", "post"), ("pre", "pre")],
        "n_layer": [("L6", 6), ("L24", 24)],
        "lr": [("lrlo", 0.001), ("lrhi", 0.01)],
        "warmup_steps": [("wu0", 0), ("wu100", 100)],
    },
}
COLUMNS = {  # stage -> (title, metrics key) shown after the knobs
    "ln_stability": [("verdict", "verdict"), ("curve", "reason"), ("at step", "diverged_at_step"),
                     ("loss first", "initial_loss"), ("min", "min_loss"), ("end", "final_loss"),
                     ("val", "final_val_loss"), ("max grad norm", "max_grad_norm"), ("s", "seconds")],
}


def cells(stage: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(experiment name, {knob: value}) for every cell of the stage's grid."""
    grid = GRIDS[stage]
    for combo in itertools.product(*grid.values()):
        name = "-".join([stage.split("_")[0]] + [label for label, _ in combo])
        yield name, {knob: value for knob, (_, value) in zip(grid, combo)}


def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], check=check, text=True, capture_output=True)


def queue(stage: str, extra: list[str]) -> list[str]:
    """Queue every cell (replacing experiments of the same name); return the names."""
    names = [name for name, _ in cells(stage)]
    dvc("exp", "remove", *names, check=False)  # a rerun replaces the previous cells of this grid
    for name, knobs in cells(stage):
        sets = [f"{stage}.{k}={v}" for k, v in knobs.items()] + [f"{stage}.{kv}" for kv in extra]
        dvc("exp", "run", "--queue", "--single-item", stage, "-n", name, *itertools.chain(*(("-S", s) for s in sets)))
        print(f"queued {name}: {' '.join(sets)}", flush=True)
    return names


def wait(names: list[str], poll: float = 15.0) -> None:
    """Block until none of `names` is queued or running in `dvc queue status`."""
    while True:
        status = dvc("queue", "status").stdout
        busy = [line.split()[1] for line in status.splitlines()[1:]
                if len(line.split()) > 2 and line.split()[1] in names and ("Queued" in line or "Running" in line)]
        if not busy:
            return
        print(f"{time.strftime('%H:%M:%S')} {len(busy)} cell(s) queued or running", flush=True)
        time.sleep(poll)


def find(node: Any, names: set[str]) -> Iterator[dict]:
    """Experiment records named in `names` anywhere in `dvc exp show --json` (its nesting varies by version)."""
    if isinstance(node, dict):
        if node.get("name") in names and isinstance(node.get("data"), dict):
            yield node
        for value in node.values():
            yield from find(value, names)
    elif isinstance(node, list):
        for value in node:
            yield from find(value, names)


def results(stage: str) -> list[dict]:
    """One row per cell that has run: the knobs, then the stage's metrics (last run of each name)."""
    names = [name for name, _ in cells(stage)]
    shown = json.loads(dvc("exp", "show", "--json", "--all-commits").stdout or "[]")
    found: dict[str, dict] = {}
    for rec in find(shown, set(names)):
        metrics = rec["data"].get("metrics", {}).get(f"reports/{stage}.json", {}).get("data")
        if metrics:
            stamp = rec["data"].get("timestamp") or ""
            if rec["name"] not in found or stamp > found[rec["name"]]["_stamp"]:
                found[rec["name"]] = {"_stamp": stamp, **metrics}
    rows = []
    for name, knobs in cells(stage):
        if name in found:
            m = found[name]
            rows.append({"name": name, **knobs, **{k: m.get(k) for _, k in COLUMNS[stage]},
                         "steps": m.get("steps_run")})
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(stage: str, rows: list[dict]) -> str:
    knobs = list(GRIDS[stage])
    cols = knobs + [title for title, _ in COLUMNS[stage]]
    keys = knobs + [key for _, key in COLUMNS[stage]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells_ = [str(row[k]) for k in knobs] + [fmt(row.get(k)) for k in keys[len(knobs):]]
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=sorted(GRIDS))
    parser.add_argument("-S", dest="extra", action="append", default=[], metavar="KNOB=VALUE",
                        help="set a knob of the stage in every cell (e.g. steps=100)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (cells at a time)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per cell (env GPT_REPRO_THREADS for the workers; default: cores / jobs; "
                             "on a machine other jobs load, 1)")
    parser.add_argument("--show", action="store_true", help="do not queue or run; tabulate what has run")
    parser.add_argument("--names", action="store_true", help="print the experiment names and exit")
    parser.add_argument("--out", default=None, help="JSON table (default bench/out/<stage-prefix>_grid.json)")
    args = parser.parse_args(argv)
    if args.names:
        print(" ".join(name for name, _ in cells(args.stage)))
        return 0
    t0 = time.time()
    if not args.show:
        names = queue(args.stage, args.extra)
        threads = args.threads or int(os.environ.get("GPT_REPRO_THREADS") or max(1, (os.cpu_count() or 1) // args.jobs))
        os.environ["GPT_REPRO_THREADS"] = str(threads)  # the queue workers inherit it
        # not captured: the workers it starts inherit its pipes, and reading them would wait for the whole queue
        subprocess.run(["dvc", "queue", "start", "-j", str(args.jobs)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wait(names)
    rows = results(args.stage)
    out = Path(args.out or f"bench/out/{args.stage.split('_')[0]}_grid.json")
    table = markdown(args.stage, rows)
    io.write_json(out, {"stage": args.stage, "grid": {k: [v for _, v in vs] for k, vs in GRIDS[args.stage].items()},
                        "extra": args.extra, "wall_s": round(time.time() - t0, 1), "rows": rows})
    with io.atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(table, encoding="utf-8")
    print(table)
    print(f"{len(rows)} of {len(list(cells(args.stage)))} cells have results; wrote {out} and {out.with_suffix('.md')}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
