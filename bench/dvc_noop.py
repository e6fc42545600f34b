"""Benchmark: a `dvc repro` with nothing to do, ours against DVC's own floor, in one run.

ANCHORS.md: "a no-op `dvc repro` of our pipeline should stay near DVC's own floor: about a second plus our hashing"
(10 trivial stages: 1.24 s; `dvc version` alone: 0.91 s). Timed here, each the median of --repeats runs:
- `dvc version` (starting DVC at all),
- the floor: a scratch git + DVC project of 10 trivial stages, after its first `dvc repro`,
- ours: `dvc repro` in --project (this checkout by default), which must be up to date (`dvc status` clean),
- ours again with ruamel.yaml's C parser hidden, as without ruamel.yaml.clib (optional since ruamel.yaml 0.19):
  DVC reads params.yaml once per stage and dvc.lock twice per run through ruamel, so the pure-Python parser shows.
The ratio is the floor's cost per stage over ours, each after `dvc version` is taken off (1.0x: our stages cost
DVC no more than trivial ones; below 1: the params, deps and outputs ours check). Writes bench/out/dvc_noop.json.

Usage: python bench/dvc_noop.py [--project DIR] [--repeats 5]
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
ENV = dict(os.environ, DVC_NO_ANALYTICS="1")
# `python -m dvc` with ruamel's C extension made unimportable: ruamel then falls back to its pure-Python parser
PURE_YAML_DVC = [sys.executable, "-c", "import sys; sys.modules['_ruamel_yaml'] = None; "
                 "from dvc.cli import main; sys.exit(main(sys.argv[1:]))"]


def timed(argv: list[str], cwd: Path, repeats: int) -> float:
    """Median wall seconds of `repeats` runs of argv (each must succeed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, env=ENV)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_project(folder: Path, stages: int = 10) -> Path:
    """ANCHORS.md's reference: a git + DVC project of `stages` trivial stages, reproduced once."""
    lines = ["stages:"] + [f"  s{i}:\n    cmd: echo {i} > out{i}.txt\n    outs:\n    - out{i}.txt" for i in range(stages)]
    (folder / "dvc.yaml").write_text("\n".join(lines) + "\n")
    for argv in (["git", "init", "-q"], DVC + ["init", "-q"], DVC + ["repro", "-q"]):
        subprocess.run(argv, cwd=folder, check=True, capture_output=True, env=ENV)
    return folder


def stage_count(project: Path) -> int:
    import yaml

    return len(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def c_parser_installed() -> bool:
    """Whether ruamel.yaml found its C extension (ruamel.yaml.clib): it sets CParser to None without it."""
    from ruamel.yaml import main as ruamel_main

    return ruamel_main.CParser is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT, help="an up-to-date DVC project (default: this checkout)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each command; the median counts")
    args = ap.parse_args()
    status = subprocess.run(DVC + ["status", "--json"], cwd=args.project, capture_output=True, text=True, env=ENV)
    if status.returncode or json.loads(status.stdout or "{}"):
        print(f"dvc_noop: skipped: {args.project} is not up to date (run `dvc repro` there first), "
              "or not a DVC project")
        return
    with tempfile.TemporaryDirectory() as tmp:
        floor_dir = floor_project(Path(tmp))
        version_s = timed(DVC + ["version"], floor_dir, args.repeats)
        floor_s = timed(DVC + ["repro", "-q"], floor_dir, args.repeats)
    ours_s = timed(DVC + ["repro", "-q"], args.project, args.repeats)
    pure_s = timed(PURE_YAML_DVC + ["repro", "-q"], args.project, args.repeats)
    n_ours, n_floor = stage_count(args.project), 10
    per_stage_floor, per_stage_ours = (floor_s - version_s) / n_floor, (ours_s - version_s) / n_ours
    result = {
        "stages": n_ours, "repeats": args.repeats, "yaml_c_parser_installed": c_parser_installed(),
        "dvc_version_s": round(version_s, 3), "floor_10_trivial_stages_s": round(floor_s, 3),
        "ours_s": round(ours_s, 3), "ours_pure_python_yaml_s": round(pure_s, 3),
        "floor_s_per_stage": round(per_stage_floor, 4), "ours_s_per_stage": round(per_stage_ours, 4),
        "ratio": round(per_stage_floor / per_stage_ours, 2) if per_stage_ours > 0 else None,
    }
    out = ROOT / "bench" / "out" / "dvc_noop.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"no-op dvc repro: ours {ours_s:.2f} s for {n_ours} stages ({pure_s:.2f} s with pure-Python YAML); "
          f"DVC's floor {floor_s:.2f} s for 10 trivial stages; `dvc version` {version_s:.2f} s")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
