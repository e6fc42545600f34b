"""bench/kill_soak.py's choice of where to start the killed `dvc repro`: its count of the stages a `--downstream`
run takes must be DVC's own (a start with too few would end before the kill and fail test_e2e's soak)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kill_soak", ROOT / "bench" / "kill_soak.py")
kill_soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kill_soak)


def dvc_runs(project: Path, stage: str) -> int:
    """Stages a forced `dvc repro --downstream stage` runs, as DVC's dry run lists them."""
    out = subprocess.run(["dvc", "repro", "--dry", "--force", "--downstream", stage], cwd=project,
                         env=kill_soak._env(), capture_output=True, text=True, timeout=120, check=True).stdout
    return len(re.findall(r"^Running stage '", out, flags=re.M))


def test_runs_downstream_counts_what_dvc_runs(tmp_path):
    # the checkout's pipeline files in a scratch DVC project: a dry run still takes the repo's lock, which a user's
    # own `dvc repro` in the checkout may hold
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=kill_soak._env(), check=True)
    runs = kill_soak.runs_downstream(tmp_path)
    assert set(runs) == set(kill_soak.yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    for stage in ("fetch", "dedup", "train", "summary"):  # a side branch, the middle, the model, the last
        assert runs[stage] == dvc_runs(tmp_path, stage), stage
    assert runs["fetch"] < 4 <= runs["dedup"]  # fetch feeds only summary here: soak_dvc_repro never starts there
