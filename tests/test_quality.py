"""Tests for pipeline/curate/quality.py and the quality_train / quality_filter stages."""
from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from datatrove.data import Document

from pipeline.core import io, params, records, rng
from pipeline.curate import quality, quality_filter, quality_metrics, retention

ROOT = Path(__file__).resolve().parents[1]

PROSE = ("the river ran past the old mill and the children watched the water as it turned the wheel "
         "she said that they would walk to the town before the evening came and that her father was waiting "
         "there was a long silence while he thought about what had happened in the winter of that year").split()
SPAM = ("cheap pills casino bonus free download viagra loans crypto win click now best price discount "
        "replica watches seo backlinks buy followers xxx hot singles payday fast cash").split()


def _text(words: list[str], n: int, r: random.Random, sentences: bool) -> str:
    out = [r.choice(words) for _ in range(n)]
    if sentences:  # prose: capitalised sentences in paragraphs
        return "\n\n".join(" ".join(out[i:i + 60]).capitalize() + "." for i in range(0, n, 60))
    return " | ".join(out)


def _planted(i: int) -> str:
    return f"plantedtoken{i:03d}x"


def _write_docs(folder: Path, docs: list[Document]) -> Path:
    with io.doc_writer(folder) as writer:
        for doc in docs:
            writer.write(doc, rank=0)
    return folder


@pytest.fixture
def corpus(tmp_path):
    """Positives (webtext articles + two long books) and negatives (half prose-like crawl, half spam)."""
    r = random.Random(7)
    web = [Document(_text(PROSE, r.randint(120, 300), r, True), records.webtext_id(f"http://w.test/{i}"),
                    metadata={records.URL: f"http://w.test/{i}", records.SOURCE: records.WEBTEXT}) for i in range(40)]
    books = [Document(_text(PROSE, 3000, r, True), records.book_id(f"b{i}.txt"),
                      metadata={records.SOURCE_FILE: f"b{i}.txt", records.SOURCE: records.BOOKS}) for i in range(2)]
    # each crawl page carries a token no other document has (_planted): which model saw it is then checkable
    crawl = [Document(_text(SPAM, r.randint(60, 200), r, False) + f" {_planted(i)}" * 3,
                      records.cc_id(f"<urn:uuid:{i:08d}>"),
                      metadata={records.URL: f"http://c{i}.cc.test/", records.SOURCE: records.CC}) for i in range(80)]
    return {"webtext": _write_docs(tmp_path / "webtext", web), "books": _write_docs(tmp_path / "books", books),
            "cc": _write_docs(tmp_path / "cc", crawl)}


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["quality"]
    defaults = dataclasses.asdict(quality.QualityConfig())
    for key, value in section.items():
        assert defaults[key] == value, key
    assert quality_filter.FilterConfig().alpha == section["alpha"]
    assert params.build(quality.QualityConfig, section) == quality.QualityConfig()


def test_retention_is_pure_function_of_seed_and_id():
    ids = [f"cc/{i}" for i in range(500)]
    scores = {i: (hash(i) % 1000) / 1000 for i in ids}
    first = {i: retention.retention(1337, i, scores[i], 9.0) for i in ids}
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    second = {i: retention.retention(1337, i, scores[i], 9.0) for i in shuffled}
    assert first == second
    other_seed = {i: retention.retention(1338, i, scores[i], 9.0) for i in ids}
    assert other_seed != first


@pytest.mark.parametrize("score", [0.2, 0.6, 0.9, 0.99])
def test_empirical_keep_rate_matches_pareto_tail(score):
    n = 20000
    kept = sum(retention.retention(42, f"cc/{i}", score, 9.0)[1] for i in range(n))
    expected = retention.keep_probability(score, 9.0)
    assert abs(kept / n - expected) < 4 * (expected * (1 - expected) / n) ** 0.5 + 1e-3
    # and the formula is numpy's own pareto tail, the draw GPT-3 used
    draws = np.random.default_rng(0).pareto(9.0, 200000)
    assert abs((draws > 1 - score).mean() - expected) < 0.005


def test_chunk_words_sizes_and_no_word_lost():
    r = random.Random(3)
    text = "\n\n".join(_text(PROSE, r.randint(5, 400), r, False) for _ in range(30))
    chunks = quality.chunk_words(text)
    sizes = [len(c.split()) for c in chunks]
    assert all(s <= quality.CHUNK_MAX_WORDS + quality.CHUNK_MIN_WORDS for s in sizes)
    assert all(s >= quality.CHUNK_MIN_WORDS for s in sizes)
    assert " ".join(chunks).split() == text.split()


def test_roc_auc_known_values():
    y = np.array([0, 0, 1, 1], bool)
    assert quality_metrics.roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert quality_metrics.roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert quality_metrics.roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert quality_metrics.roc_auc(y, np.array([0.1, 0.6, 0.5, 0.9])) == 0.75


def test_fold_assignment_is_pure_function_of_seed_and_id():
    ids = [f"cc/{i}" for i in range(2000)]
    first = {i: quality.fold_of(1337, i, 5) for i in ids}
    shuffled = ids[:]
    random.Random(2).shuffle(shuffled)
    assert first == {i: quality.fold_of(1337, i, 5) for i in shuffled}
    assert first == {i: int(rng.uniform(1337, i, "quality_fold") * 5) for i in ids}  # the documented rule
    sizes = np.bincount(list(first.values()), minlength=5)
    assert sizes.min() > 300  # every fold gets about a fifth
    assert {i: quality.fold_of(1338, i, 5) for i in ids} != first


def test_train_separates_and_filter_keeps_by_score(corpus, in_tmp_cwd):
    cfg = quality.QualityConfig(epoch=10, folds=3)
    rep = quality.run_train(cfg, 1337, [corpus["webtext"], corpus["books"]], [corpus["cc"]], "models/quality")
    data = rep.to_dict()
    assert data["heldout"]["method"] == "out_of_fold" and data["heldout"]["folds"] == 3
    assert data["heldout"]["roc_auc"] > 0.9
    assert data["heldout"]["f1"] > 0.8
    counts = data["counts"]
    assert counts["positive_sources"]["books"] > 2  # books were chunked into many examples
    # out-of-fold: every training example was predicted once, by the model of its fold
    n_oof = sum(sum(f.values()) for f in counts["folds"])
    assert data["heldout"]["examples"] == 2 * counts["balanced_per_class"] == n_oof
    meta = json.loads(Path("models/quality/model.json").read_text())
    assert meta["labels"]["positive"] == quality.POSITIVE and meta["folds"] == 3
    assert meta["model_sha256"] == io.sha256_file("models/quality/model.bin")
    assert meta["fold_sha256"] == [io.sha256_file(f"models/quality/fold_{k}.bin") for k in range(3)]
    train_ids = Path("models/quality/train_ids.txt").read_text().split()
    assert train_ids == sorted(set(train_ids)) and len(train_ids) == counts["train_documents"]
    assert json.loads(Path("reports/plots/quality_train/calibration.json").read_text())

    # fastText with thread=1 and a fixed seed: training twice gives the same bytes, fold models too
    quality.run_train(cfg, 1337, [corpus["webtext"], corpus["books"]], [corpus["cc"]], "models/again")
    for name in ["model.bin", "fold_0.bin", "fold_1.bin", "fold_2.bin", "train_ids.txt", "model.json"]:
        assert Path("models/again", name).read_bytes() == Path("models/quality", name).read_bytes(), name

    # the filter scores the training crawl plus 5 pages no model saw (a crawl larger than the training sample)
    r = random.Random(11)
    crawl = list(io.iter_docs(corpus["cc"])) + [
        Document(_text(SPAM, 100, r, False) + f" {_planted(i)}", records.cc_id(f"<urn:uuid:{i:08d}>"),
                 metadata={records.URL: f"http://c{i}.cc.test/", records.SOURCE: records.CC}) for i in range(80, 85)]
    _write_docs(Path("crawl"), crawl)
    frep = quality_filter.run(quality_filter.FilterConfig(9.0), 1337, "crawl", "models/quality/model.bin", "out").to_dict()
    assert frep["docs_in"] == 85 and frep["docs_out"] + frep["dropped"]["low_quality"] == 85
    table = pq.read_table("out/scores.parquet").to_pylist()
    assert [r["id"] for r in table] == sorted(r["id"] for r in table)
    for row in table:  # kept exactly when the keyed Pareto draw beats 1 - score
        assert row["kept"] == retention.retention(1337, row["id"], row["score"], 9.0)[1]
    # training pages by the fold model of their fold, the balance-downsampled rest by the full model
    expect = {r["id"]: f"fold_{quality.fold_of(1337, r['id'], 3)}" if r["id"] in train_ids else "full"
              for r in table}
    assert {r["id"]: r["model"] for r in table} == expect
    assert frep["scored_by"]["full"] >= 5 and sum(frep["scored_by"].values()) == 85
    kept = list(io.iter_docs("out"))
    assert len(kept) == frep["docs_out"] and all(d.metadata[records.KEPT] for d in kept)
    assert all(d.metadata[quality.QUALITY_MODEL] == expect[d.id] for d in kept)
    removed = list(io.iter_docs("out", "removed/low_quality"))
    assert all(d.metadata[records.FILTER_REASON] == "low_quality" and not d.metadata[records.KEPT] for d in removed)
    # spam scores low, so few survive; expected and observed agree in kind
    assert frep["retention"]["kept_fraction_expected"] < 0.5
    plot = json.loads(Path("reports/plots/quality_filter/retention.json").read_text())
    assert sum(r["docs"] for r in plot) == 85
    assert {"score_bucket", "docs", "kept_fraction", "expected_kept_fraction"} <= set(plot[0])

    # no page is scored by a model that trained on it: its planted token is missing from that model's
    # vocabulary, and present in every model that did train on it
    import fasttext

    vocab = {name: set(fasttext.load_model(f"models/quality/{name}.bin").get_words())
             for name in ["model", "fold_0", "fold_1", "fold_2"]}
    for i in range(85):
        doc_id = records.cc_id(f"<urn:uuid:{i:08d}>")
        scorer = "model" if expect[doc_id] == "full" else expect[doc_id]
        assert _planted(i) not in vocab[scorer], (doc_id, scorer)
        saw = {name for name, words in vocab.items() if _planted(i) in words}
        assert saw == (set(vocab) - {scorer} if doc_id in train_ids else set()), doc_id


def test_loading_models_prints_no_fasttext_notice(corpus, in_tmp_cwd, capsys):
    """fasttext 0.9.2 prints a stale "load_model does not return WordVectorModel..." line on every load; with a
    scorer per task and per worker it filled `make repro`'s log. The loaders keep it out; errors still surface."""
    quality.run_train(quality.QualityConfig(epoch=2, folds=2), 1337, [corpus["webtext"], corpus["books"]],
                      [corpus["cc"]], "models/quality")
    scores = quality.Scorer("models/quality/model.bin")(["a plain sentence about the weather"])
    assert 0.0 <= scores[0] <= 1.0
    assert "load_model" not in capsys.readouterr().err
    with pytest.raises(ValueError):
        quality.Scorer("models/quality/train_ids.txt")(["not a model"])


def test_truth_by_class_counts_kept_and_scores():
    rows = [{"metadata": {records.URL: u, records.QUALITY_SCORE: s, records.KEPT: k}}
            for u, s, k in [("g1", 0.9, True), ("g2", 0.7, False), ("j1", 0.1, False), ("x", 0.5, True)]]
    truth_doc = {"expect_keep": {"quality_filter": ["g1", "g2"]}, "expect_drop": {"quality_filter": ["j1"]}}
    out = quality_metrics.truth_by_class(truth_doc, rows, 9.0)
    assert out["good"] == {"docs": 2, "kept": 1, "kept_fraction": 0.5, "mean_score": 0.8,
                           "expected_kept_fraction": round((1.1 ** -9 + 1.3 ** -9) / 2, 4)}
    assert out["junk"]["docs"] == 1 and out["junk"]["kept"] == 0 and out["junk"]["mean_score"] == 0.1


def test_filter_output_is_byte_identical_across_runs(corpus, in_tmp_cwd):
    quality.run_train(quality.QualityConfig(epoch=5, folds=2), 1, [corpus["webtext"]], [corpus["cc"]], "m")
    quality_filter.run(quality_filter.FilterConfig(2.0), 1, corpus["cc"], "m/model.bin", "a")
    import shutil

    shutil.rmtree("data/resume")  # no resume: a genuine second run
    quality_filter.run(quality_filter.FilterConfig(2.0), 1, corpus["cc"], "m/model.bin", "b")
    files = sorted(p.relative_to("a") for p in Path("a").rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to("b") for p in Path("b").rglob("*") if p.is_file())
    for rel in files:
        assert (Path("a") / rel).read_bytes() == (Path("b") / rel).read_bytes(), rel


def test_stage_scripts_run_from_repo_layout(corpus, in_tmp_cwd):
    """The stage scripts as dvc.yaml calls them (flags, params.yaml in the cwd)."""
    Path("params.yaml").write_text((ROOT / "params.yaml").read_text())
    py = sys.executable
    subprocess.run([py, str(ROOT / "stages/quality_train.py"), "--positives", str(corpus["webtext"]),
                    str(corpus["books"]), "--negatives", str(corpus["cc"]), "--out", "models/quality"], check=True)
    subprocess.run([py, str(ROOT / "stages/quality_filter.py"), "--in", str(corpus["cc"]), "--model",
                    "models/quality/model.bin", "--out", "cc_filtered"], check=True)
    assert json.loads(Path("reports/quality_train.json").read_text())["heldout"]["roc_auc"] > 0.9
    assert len(list(Path("models/quality").glob("fold_*.bin"))) == params.load("quality")["folds"]
    report = json.loads(Path("reports/quality_filter.json").read_text())
    assert report["docs_in"] == 80 and report["retention"]["alpha"] == 9.0
    assert sum(report["scored_by"].values()) == 80 and any(k.startswith("fold_") for k in report["scored_by"])
