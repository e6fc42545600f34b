"""Soak: SIGKILL each long stage at seeded random moments, rerun it, and require byte-identical outputs.

For every stage named (default: the long ones), in a project where `dvc repro` has run:
  1. reference: delete the stage's outputs (as DVC does before a rerun) and its resume state, run its
     dvc.yaml cmd to the end, hash every output file;
  2. for each of N kill points, at a seeded fraction of the reference duration (every other point late, at
     80-105%, where a stage publishes and writes its last files: a kill while datatrove wrote its merged
     stats.json once broke the rerun there, and early points never reach it): delete the outputs and the
     resume state, start the cmd in its own process group, SIGKILL the group at that moment, check that
     no output is half-written (an output that exists is whole: equal to the reference; no temp or staging
     leftovers beside it), then rerun the cmd to the end (it resumes from the resume state the killed run left)
     and require the reference hashes.
`--dvc-repro` also kills a forced multi-stage `dvc repro` inside a stage picked at random: the next `dvc repro` must
finish and `dvc status` must be clean. Reports (wall times) are not compared.

Usage: python bench/kill_soak.py --project DIR [--points 5] [--seed 1337] [--stages scrape,train] [--dvc-repro]
DIR is a copy of the project after `dvc repro` (tests/test_e2e.py makes one with its tiny profile).
Writes DIR/kill_soak.json and prints one line per kill.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.params import interpolate  # noqa: E402

# the stages long enough at scale for a kill to matter; quality_train builds six fastText models into one folder
LONG_STAGES = ("scrape", "cc", "quality_train", "quality_filter", "dedup", "tokenize", "train", "contamination")
# short on the sample, also built whole then published: `--stages` takes them too
OTHER_STAGES = ("books", "reddit_urls", "mix", "tokenizer", "export")
LEFTOVER = re.compile(r"(\.publish$|\.replaced$|\.tmp|\.staging$|^tmp[\w-]{6,}$)")  # io.publish / atomic_path names


def stage_spec(project: Path, name: str) -> tuple[list[str], list[Path]]:
    """(argv, data/model outputs) of a dvc.yaml stage, templates resolved from params.yaml."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    stage = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][name]
    argv = interpolate(stage["cmd"], params).split()
    if argv[0] == "python":
        argv[0] = sys.executable
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
    return argv, [project / interpolate(o, params) for o in outs if not o.startswith("reports/")]


def hashes(outs: list[Path]) -> dict[str, str]:
    found = {}
    for out in outs:
        files = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else [out] if out.exists() else []
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def _whole(out: Path, reference: dict[str, str]) -> bool:
    """An output after a kill is absent, or whole: exactly the reference's files with the reference's bytes."""
    if not out.exists():
        return True
    ref = {p: d for p, d in reference.items() if p == str(out) or p.startswith(str(out) + os.sep)}
    return hashes([out]) == ref


def leftovers(outs: list[Path]) -> list[str]:
    """Temp or staging files inside or beside the outputs: what a half-finished write would leave."""
    bad = []
    for out in outs:
        places = [out.parent] + ([out] if out.is_dir() else [])
        for place in places:
            if place.is_dir():
                for p in (place.rglob("*") if place == out else place.iterdir()):
                    if LEFTOVER.search(p.name) and (place == out or p.name.lstrip(".").startswith(out.name)):
                        bad.append(str(p))
    return bad


def clear(outs: list[Path]) -> None:
    for out in outs:
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()


def _env() -> dict[str, str]:
    """PATH with this interpreter's folder first: dvc.yaml's `python` must be the project's venv."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def run(argv: list[str], project: Path, timeout: float = 1800) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=timeout, env=_env())
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def kill_at(argv: list[str], project: Path, seconds: float) -> bool:
    """Start argv in its own process group and SIGKILL the group after `seconds`; True if it was still running."""
    proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=_env())
    return _kill_group_after(proc, seconds)


def _kill_group_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL proc's process group after `seconds` unless it ends first; True if it was still running."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def soak_stage(project: Path, name: str, points: int, rng: random.Random, log=print) -> list[dict]:
    argv, outs = stage_spec(project, name)
    clear(outs)
    shutil.rmtree(project / "data" / "resume" / name, ignore_errors=True)
    duration = run(argv, project)
    reference = hashes(outs)
    results = []
    for k in range(points):
        late = k % 2 == 1
        fraction = rng.uniform(0.8, 1.05) if late else rng.uniform(0.05, 0.95)
        clear(outs)  # DVC deletes outputs before it reruns a stage
        shutil.rmtree(project / "data" / "resume" / name, ignore_errors=True)  # a fresh run, killed ...
        killed = kill_at(argv, project, fraction * duration)
        whole = all(_whole(out, reference) for out in outs)
        stray = leftovers(outs)
        run(argv, project)  # ... and the rerun resumes from what the killed run left in data/resume/<stage>
        after = hashes(outs)
        row = {"stage": name, "point": k, "late": late, "at_s": round(fraction * duration, 2), "killed": killed,
               "outputs_whole_after_kill": whole, "leftovers": stray, "identical_after_rerun": after == reference}
        if after != reference:  # which files, so that a rare failure (a CI run) says where to look
            row["differing"] = sorted(os.path.relpath(p, project) for p in set(after) | set(reference)
                                      if after.get(p) != reference.get(p))
        log(json.dumps(row))
        results.append(row)
    return results


def kill_after_line(argv: list[str], project: Path, pattern: str, count: int, delay: float) -> bool:
    """Start argv in its own process group and SIGKILL the group `delay` seconds after the `count`-th line of
    its output that matches `pattern`; True if it was still running then."""
    proc = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=_env())
    seen = 0
    for line in proc.stdout:
        seen += bool(re.search(pattern, line))
        if seen == count:
            break
    else:  # it ended first
        proc.wait()
        return False
    try:
        return _kill_group_after(proc, delay)  # the pipe is not read meanwhile: `delay` is short, dvc's output small
    finally:
        proc.stdout.close()


def runs_downstream(project: Path) -> dict[str, int]:
    """How many stages `dvc repro --downstream <stage>` runs, the stage included, from dvc.lock's resolved paths (a
    stage is downstream of another when one of its deps is, or lies inside, one of the other's outs)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]

    def feeds(outs: list[dict], deps: list[dict]) -> bool:
        return any(d["path"] == o["path"] or d["path"].startswith(o["path"].rstrip("/") + "/") for o in outs for d in deps)

    children = {a: [b for b in lock if b != a and feeds(lock[a].get("outs", []), lock[b].get("deps", []))] for a in lock}

    def reach(stage: str, seen: set[str]) -> set[str]:
        for child in children[stage]:
            if child not in seen:
                seen.add(child)
                reach(child, seen)
        return seen

    return {stage: len(reach(stage, {stage})) for stage in lock}


def soak_dvc_repro(project: Path, rng: random.Random, log=print) -> dict:
    """Kill a forced multi-stage `dvc repro` inside a stage: `--downstream` from a stage picked at random among those
    that run at least four (runs_downstream), 0-2 s after dvc says it runs the second or third stage, so one or two
    stages are done and locked when the kill lands. The next `dvc repro` must finish and leave
    `dvc status` clean. Stages, not seconds, place the kill: no reference run is needed to time it (a forced repro
    reuses data/resume, so a first run's timing would not fit). A forced run of the whole DAG would test the same
    thing after running every stage before the killed one again (88 s instead of ~25 on the tiny profile)."""
    dvc = [str(Path(sys.executable).parent / "dvc")]
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    runs = runs_downstream(project)
    start = rng.choice([stage for stage in stages if runs.get(stage, 0) >= 4])
    count, delay = rng.randint(2, 3), rng.uniform(0.0, 2.0)
    killed = kill_after_line(dvc + ["repro", "--force", "--downstream", start], project, r"^Running stage '", count,
                             delay)
    run(dvc + ["repro"], project)
    status = subprocess.run(dvc + ["status"], cwd=project, capture_output=True, text=True, env=_env()).stdout
    row = {"stage": "dvc repro", "downstream_of": start, "killed_in_stage": count, "delay_s": round(delay, 2),
           "killed": killed, "status_clean": "up to date" in status}
    log(json.dumps(row))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="a project copy where `dvc repro` has run")
    ap.add_argument("--points", type=int, default=5, help="kill points per stage")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--stages", default=",".join(LONG_STAGES),
                    help=f"comma-separated dvc.yaml stages (default: the long ones; also: {','.join(OTHER_STAGES)})")
    ap.add_argument("--dvc-repro", action="store_true", help="also kill a whole `dvc repro` mid-way")
    args = ap.parse_args()
    if args.project is None:  # `make bench` runs every script bare: this one needs a built project copy
        print("kill_soak: skipped (give --project DIR, a copy of the project after `dvc repro`; never this checkout)")
        return
    rng = random.Random(args.seed)
    rows = [r for name in args.stages.split(",") for r in soak_stage(args.project, name, args.points, rng)]
    if args.dvc_repro:
        rows.append(soak_dvc_repro(args.project, rng))
    (args.project / "kill_soak.json").write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if not (r.get("identical_after_rerun", True) and r.get("outputs_whole_after_kill", True)
                                   and not r.get("leftovers") and r.get("status_clean", True))]
    print(f"{len(rows)} kills, {len(bad)} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
