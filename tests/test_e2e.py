"""The whole DAG under `dvc repro`, on a tiny profile, in a scratch copy of the project.

Checks what a new user would: every stage runs and writes its metrics; a second `dvc repro`
does nothing; changing `dedup.threshold` reruns dedup and only what is downstream; data
outputs are byte-identical when rebuilt from scratch; the model beats the unigram baseline;
the contamination report finds the planted leaks.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ["sample", "fetch", "books", "reddit_urls", "scrape", "cc", "quality_train", "quality_filter", "dedup", "mix",
               "tokenizer", "tokenize"]
DOWNSTREAM_OF_DEDUP = {"dedup", "mix", "tokenizer", "tokenize", "train", "evaluate", "contamination", "export", "summary",
                       "finetune", "fewshot", "ln_stability", "sparse_vs_dense", "scaling"}

TINY = {  # smaller than the default sample profile; keeps the whole DAG at about a minute
    "sample": {"n_books": 8, "n_articles": 24, "n_cc_good": 40, "n_cc_junk": 40, "n_eval": 20,
               "n_finetune_train": 160, "n_finetune_valid": 60},
    "train": {"max_steps": 150, "eval_interval": 50, "eval_batches": 4},
    "eval": {"max_examples": 20},
}
# The claim stages at a few dozen steps: they run, report and plot; their figures are the default profile's job.
CLAIMS_SMALL = {
    "fewshot": {"max_examples": 10, "ks": [0, 1, 2]},
    "ln_stability": {"steps": 40, "n_layer": 2},
    "sparse_vs_dense": {"steps": 20, "n_layer": 2},
    "scaling": {"steps": 30, "warmup_steps": 10, "widths": [16, 32, 48, 64, 80], "bootstrap_draws": 100},  # 19 s, not 29
}
TINY.update(CLAIMS_SMALL)


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def lock_hashes(project: Path, stages: list[str]) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    # reports/ hold wall times by design; every data and model output must match
    return {f"{s}:{o['path']}": o["md5"] for s in stages for o in lock[s].get("outs", [])
            if not o["path"].startswith("reports/")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC copy of the project's tracked files with the tiny profile, after one `dvc repro`."""
    dst = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel == "dvc.lock" or rel.startswith(("reports/", "tests/", "bench/")) or not (ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dst)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dst)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny profile"], dst)
    out = run(["dvc", "repro"], dst)
    assert ran_stages(out) == set(yaml.safe_load((dst / "dvc.yaml").read_text())["stages"])
    return dst


@pytest.mark.slow
def test_every_stage_reports_metrics(project):
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]:
        if stage != "sample":
            data = json.loads((project / "reports" / f"{stage}.json").read_text())
            assert data, stage
    metrics = run(["dvc", "metrics", "show", "--json"], project)
    assert "quality_filter" in metrics and "contamination" in metrics


@pytest.mark.slow
def test_filters_report_truth_scores(project):
    for stage in ["books", "reddit_urls", "scrape", "cc", "quality_filter", "dedup"]:
        data = json.loads((project / "reports" / f"{stage}.json").read_text())
        assert "precision" in data["truth"] and "recall" in data["truth"], stage
    for stage in ["books", "reddit_urls", "scrape", "cc", "dedup"]:
        data = json.loads((project / "reports" / f"{stage}.json").read_text())["truth"]
        assert data["recall"] >= 0.8 and data["precision"] >= 0.8, (stage, data)


@pytest.mark.slow
def test_model_beats_unigram_baseline(project):
    data = json.loads((project / "reports" / "train.json").read_text())
    assert data["final_val_loss"] < data["unigram_entropy_nats"] - 0.5, data


@pytest.mark.slow
def test_contamination_finds_exactly_the_planted_leaks(project):
    data = json.loads((project / "reports" / "contamination.json").read_text())
    leaks = data["leaks"]
    assert leaks["reached_training"] > 0
    assert leaks["found"] == leaks["reached_training"] and leaks["unplanted_dirty"] == 0, leaks
    assert leaks["exact_match"] is True, leaks
    assert (project / "reports" / "contamination" / "report.html").exists()


@pytest.mark.slow
def test_finetuning_learns_the_planted_rule_that_zero_shot_misses(project):
    rep = json.loads((project / "reports" / "finetune.json").read_text())
    assert rep["n_train"] == 160 and rep["n_test"] == 60 and rep["split"].startswith("train.jsonl")
    headline = rep["finetuned"]["lambda=0.5"]
    assert headline["acc"] >= 0.8 and headline["acc"] > rep["zero_shot"]["acc"] + 0.2, rep
    assert (project / "reports" / "plots" / "finetune" / "accuracy.json").exists()


@pytest.mark.slow
def test_second_repro_does_nothing_and_param_change_reruns_only_downstream(project):
    assert ran_stages(run(["dvc", "repro"], project)) == set()
    out = run(["dvc", "exp", "run", "-S", "dedup.threshold=0.9"], project)
    assert ran_stages(out) == DOWNSTREAM_OF_DEDUP


@pytest.mark.slow
def test_data_and_model_outputs_rebuild_byte_identical(project):
    # the model too: on CPU training is deterministic and every RNG in the checkpoint is seeded
    before = lock_hashes(project, DATA_STAGES + ["train"])
    shutil.rmtree(project / "data" / "resume", ignore_errors=True)
    run(["dvc", "repro", "--force", "train"], project)
    assert lock_hashes(project, DATA_STAGES + ["train"]) == before


def stale_stages(project: Path) -> set[str]:
    """The stages `dvc status` reports as changed."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    return set(json.loads(proc.stdout or "{}"))


def changed_stages(project: Path, key: str, value) -> set[str]:
    """Stages `dvc status` reports after setting params.yaml `key` (dotted) to `value`; params restored after."""
    path = project / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    section, name = key.split(".")
    params[section][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return stale_stages(project)
    finally:
        path.write_text(original)


@pytest.mark.slow
def test_alpha_touches_only_quality_filter_and_executor_touches_nothing(project):
    # dvc status lists the stages whose own deps changed; downstream ones follow when those rerun. Stages
    # already out of date (summary reads reports, whose wall times a forced rerun rewrote) are the baseline.
    before = changed_stages(project, "quality.alpha", yaml.safe_load((project / "params.yaml").read_text())["quality"]["alpha"])
    assert before <= {"summary"}, before
    assert changed_stages(project, "quality.alpha", 5.0) - before == {"quality_filter"}
    assert changed_stages(project, "executor.workers", 2) - before == set()


@pytest.mark.slow
def test_a_lid_model_replaced_in_models_lid_makes_cc_stale(project):
    """models/lid/ is a cc dep: DVC sees a LID model's bytes there, not only cc.lang_model's path."""
    model = project / "models" / "lid" / "lid.bin"
    before = stale_stages(project)
    try:
        model.write_bytes(b"model one")
        assert stale_stages(project) - before == {"cc"}
    finally:
        model.unlink()
    assert stale_stages(project) == before


@pytest.mark.slow
def test_kill_9_anywhere_then_rerun_gives_the_same_bytes(project):
    """bench/kill_soak.py at two seeded points per long stage, one of them late (80-105% of the run, where a stage
    publishes; the script itself runs many): SIGKILL, nothing half-written, the rerun resumes and matches an
    uninterrupted run byte for byte; then a forced multi-stage `dvc repro` killed inside a seeded stage, one or two
    stages after it began, after which `dvc repro` finishes and `dvc status` is clean."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("kill_soak", ROOT / "bench" / "kill_soak.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    rng = random.Random(1337)
    rows = [row for name in soak.LONG_STAGES for row in soak.soak_stage(project, name, 2, rng, log=lambda _: None)]
    early = [r for r in rows if not r["late"]]  # a late point (80-105% of the run) may find the stage done
    assert len(early) == len(soak.LONG_STAGES) and sum(r["killed"] for r in early) >= len(early) - 2, rows
    assert any(r["killed"] for r in rows if r["late"]), rows
    for row in rows:
        assert row["outputs_whole_after_kill"] and not row["leftovers"] and row["identical_after_rerun"], row
    repro = soak.soak_dvc_repro(project, rng, log=lambda _: None)
    assert repro["killed"] and repro["status_clean"], repro
