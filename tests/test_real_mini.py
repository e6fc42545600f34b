"""The real-mini profile end to end: real public files fetched over loopback HTTP, pinned by sha256, through
the same DAG as the sample, in a scratch git + DVC copy of the project.

../shared/data is served by pipeline.sources.mirror (a stand-in for the Gutenberg, Pushshift and Common
Crawl hosts); the profile's fetch list pins every file. Then `dvc repro` runs every stage on real text and
the assertions are on real figures: the Gutenberg .txt/.epub pairs found by dedup, the quality classifier's
out-of-fold figures on real positives against the real crawl, the contamination audit tracing real LAMBADA
and WikiText overlaps to their books, the model scored on the real eval sets beside chance. Afterwards:
`dvc push` / `dvc pull` into a fresh clone restores every input and output with `dvc status` clean, and
switching back to the sample profile reproduces the committed dvc.lock's data and model hashes.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.core import records
from pipeline.sources import mirror, profiles
from test_e2e import CLAIMS_SMALL, ROOT, lock_hashes, ran_stages, run

# Knobs real-mini runs with besides its inputs (README "Real data"): a short training run, few eval examples.
REAL_MINI = {
    "train": {"max_steps": 150, "eval_interval": 50, "eval_batches": 4},
    "eval": {"max_examples": 50},
    "quality": {"folds": 3},
    # the real crawl files hold 18 pages, most of them short or not English: keep them all as the classifier's
    # raw-crawl negatives (GPT-3's negatives were unfiltered crawl too)
    "cc": {"languages": [], "min_words": 20},
    # one epoch over the 1,500 real PIQA training items per lambda: three took 219 s of the run's 404 s
    "finetune": {"epochs": 1},
    **CLAIMS_SMALL,
}
SAMPLE_STAGES = ["sample", "books", "reddit_urls", "scrape", "cc", "quality_train", "quality_filter", "dedup", "mix",
                 "tokenizer", "tokenize", "train"]


def git(args: list[str], cwd: Path) -> str:
    return run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd)


def report(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / f"{stage}.json").read_text())


@pytest.fixture(scope="module")
def served(shared_data):
    with mirror.serve(shared_data) as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory, served) -> Path:
    """A scratch copy of the project switched to real-mini (mirror = the loopback server), after `dvc repro`."""
    dst = tmp_path_factory.mktemp("realmini") / "project"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    profiles.use("real-mini", dst / "params.yaml", dst / "profiles")
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["inputs"]["mirror"] = served.url
    for section, values in REAL_MINI.items():
        params[section].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "remote", "add", "-f", "-d", "scratch", str(dst.parent / "remote")], dst)
    git(["init", "-q"], dst)
    git(["add", "-A"], dst)
    git(["commit", "-qm", "real-mini"], dst)
    out = run(["dvc", "repro"], dst, timeout=1500)
    assert ran_stages(out) == set(yaml.safe_load((dst / "dvc.yaml").read_text())["stages"])
    shutil.copytree(dst / "reports", dst.parent / "real-mini-reports")  # kept for a reader: the last test rewrites them
    return dst


@pytest.mark.slow
def test_fetch_pins_every_real_file(project):
    listing = yaml.safe_load((project / "profiles/real-mini.yaml").read_text())["files"]
    rep = report(project, "fetch")
    assert rep["files"] == len(listing) and rep["unpinned"] == 0
    manifest = json.loads((project / "data/raw/fetched/fetch_manifest.json").read_text())
    assert {r["dest"]: r["sha256"] for r in manifest["files"]} == {e["dest"]: e["sha256"] for e in listing}


@pytest.mark.slow
def test_reddit_stage_reads_the_real_dump(project):
    rep = report(project, "reddit_urls")
    assert rep["docs_in"] >= 3000  # 3,217 real submissions
    assert 0 < rep["docs_out"] < 155  # at most the 155 posts with karma >= 3, less self posts and repeats
    assert rep["dropped"].get("low_score", 0) > 2500


@pytest.mark.slow
def test_webtext_comes_from_the_real_page_mirror(project):
    rep = report(project, "scrape")
    assert rep["mode"] == "pages" and rep["urls_in"] == 181 and rep["http_requests"] == 0
    assert rep["docs_out"] >= 120, rep  # real article pages survive trafilatura and the filters


@pytest.mark.slow
def test_dedup_pairs_each_gutenberg_txt_with_its_epub(project):
    import pyarrow.parquet as pq

    rows = pq.read_table(project / "data/interim/dedup/clusters.parquet").to_pylist()
    cluster_of = {row["doc_id"]: row["cluster_id"] for row in rows}
    for txt, epub in (("11-0.txt", "pg11.epub"), ("Pride_and_Prejudice_JaneAusten.txt", "pg1342.epub")):
        a, b = records.book_id(txt), records.book_id(epub)
        assert a in cluster_of and cluster_of.get(a) == cluster_of.get(b), (txt, epub)
    others = {records.book_id(n) for n in ("2852-0.txt", "145-0.txt", "35-0.txt")}
    assert not any(cluster_of.get(d, d) != d for d in others)  # distinct books stay apart


@pytest.mark.slow
def test_quality_classifier_separates_real_positives_from_the_real_crawl(project):
    heldout = report(project, "quality_train")["heldout"]
    assert heldout["method"] == "out_of_fold"
    assert heldout["roc_auc"] >= 0.8 and heldout["precision"] >= 0.7 and heldout["recall"] >= 0.7, heldout


@pytest.mark.slow
def test_contamination_traces_real_overlaps_to_their_books(project):
    data = json.loads((project / "reports/contamination/report.json").read_text())
    dirty = data["dirty"]
    books_of = {task: {d.get("source_file") for row in rows for d in row["docs"]} for task, rows in dirty.items()}
    assert "2852-0.txt" in books_of.get("lambada", set()), books_of  # The Hound of the Baskervilles
    assert "145-0.txt" in books_of.get("wikitext", set()), books_of  # Middlemarch


@pytest.mark.slow
def test_model_is_scored_on_every_real_eval_set_beside_chance(project):
    rep = report(project, "evaluate")
    tasks = rep["tasks"]
    assert {"lambada", "wikitext", "hellaswag", "piqa"} <= set(tasks), tasks
    assert tasks["hellaswag"]["chance_acc"] == 0.25 and tasks["piqa"]["chance_acc"] == 0.5
    assert tasks["hellaswag"]["n"] == tasks["piqa"]["n"] == REAL_MINI["eval"]["max_examples"]
    assert tasks["hellaswag"]["examples_in_file"] == 10042 and tasks["piqa"]["examples_in_file"] == 1838
    train = report(project, "train")
    assert train["final_val_loss"] < train["unigram_entropy_nats"], train  # it learned something of real text


@pytest.mark.slow
def test_finetune_reports_zero_shot_and_both_lambdas_on_real_piqa(project):
    rep = report(project, "finetune")
    assert rep["task"] == "piqa" and "held out" in rep["split"] and rep["chance_acc"] == 0.5
    assert rep["n_train"] + rep["n_test"] == 1838 and 0.15 < rep["n_test"] / 1838 < 0.25  # PIQA valid, keyed 20%
    assert set(rep["finetuned"]) == {"lambda=0.5", "lambda=0.0"}
    for run_ in rep["finetuned"].values():
        assert 0.0 <= run_["acc"] <= 1.0 and run_["steps"] == REAL_MINI["finetune"]["epochs"] * -(-rep["n_train"] // 32)
    assert 0.3 < rep["zero_shot"]["acc"] < 0.7  # a 2-layer model has no physical common sense: near chance
    preds = (project / "reports" / "finetune" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 2 * rep["n_test"]


@pytest.mark.slow
def test_push_then_pull_in_a_fresh_clone_restores_everything(project, tmp_path):
    git(["add", "-A"], project)
    git(["commit", "-qm", "real-mini run"], project)
    run(["dvc", "push"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert (clone / "data/raw/fetched/books/11-0.txt").read_bytes() == (project / "data/raw/fetched/books/11-0.txt").read_bytes()
    assert "up to date" in run(["dvc", "status"], clone)


@pytest.mark.slow
def test_switching_back_to_sample_reproduces_the_committed_hashes(project):
    """Last (it rewrites the scratch project's params): the sample profile with the committed params gives the
    committed dvc.lock's data and model hashes, on a machine that never ran the sample before."""
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    out = run(["dvc", "repro", "train"], project, timeout=1500)  # train and what it needs: the hashes compared
    assert {"books", "scrape", "cc", "dedup", "train"} <= ran_stages(out)  # the sample stage ran with real-mini already
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    expected = {f"{s}:{o['path']}": o["md5"] for s in SAMPLE_STAGES for o in committed[s].get("outs", [])
                if not o["path"].startswith("reports/")}
    got = lock_hashes(project, SAMPLE_STAGES)
    differing = sorted(key for key in expected if got.get(key) != expected[key])
    only_model = " (only the model: its bytes follow the CPU code path pipeline/core/cpu_numerics.py pins; README " \
                 "'Determinism and resume')" if differing == ["train:models/gpt"] else ""
    assert not differing, f"{differing} differ from the committed dvc.lock{only_model}"
