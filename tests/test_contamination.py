"""Contamination audit (GPT-3 appendix C): n-gram index, frequency cut, n rule, tracing, reports."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from datatrove.data import Document

from pipeline import contamination as con
from pipeline import io, params, tasks

LEAK = ("the lighthouse keeper counted seventeen gulls on the rail before the storm finally broke over "
        "the harbour wall")  # 18 words
FILLER = "a quiet morning in the valley where nobody hurried and the river ran slow and brown "


def _lambada(tmp_path: Path, texts: list[str]) -> tasks.Task:
    (tmp_path / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return tasks.load_task("lambada", tmp_path)


def _evals() -> list[str]:
    return [f"example {i} " + " ".join(f"w{i}x{j}" for j in range(20)) for i in range(5)] + [LEAK]


def _book(i: int, text: str) -> tuple[str, str, dict]:
    return f"books/{i:03d}", text, {"source": "books", "source_file": f"b{i:02d}.txt", "book_title": f"Book {i}"}


def test_config_matches_params_yaml():
    assert con.ContaminationConfig() == params.config(con.ContaminationConfig, "contamination",
                                                      Path(__file__).resolve().parents[1] / "params.yaml")


def test_short_example_rule():
    cfg = con.ContaminationConfig(ngram=13, min_ngram=8)
    assert con.choose_n([5] * 100, cfg) == 8  # p5 below the floor -> floor
    assert con.choose_n([10] * 100, cfg) == 10  # p5 between -> p5
    assert con.choose_n([4] * 5 + [40] * 95, cfg) == 13  # p5 of mostly long examples -> 13
    assert con.choose_n(list(range(1, 101)), cfg) == 8  # p5 = 5.95 -> floor 8


def test_normalisation_and_hash_are_punctuation_blind():
    a, _ = con.normalize("The Keeper's LAMP -- lit, at 9!")
    b, _ = con.normalize("the keeper s lamp lit at 9")
    assert a == b == ["the", "keeper", "s", "lamp", "lit", "at", "9"]
    ha = con.ngram_hashes(con.word_hashes(a), 3)
    assert len(ha) == 5 and len(set(ha.tolist())) == 5
    assert (ha == con.ngram_hashes(con.word_hashes(b), 3)).all()


def test_planted_leak_found_and_traced(tmp_path):
    task = _lambada(tmp_path, _evals())
    corpus = con.TrainCorpus()
    for i in range(3):
        corpus.add(*_book(i, FILLER * 5))
    carrier = _book(7, FILLER + "He wrote: " + LEAK.upper() + ", and slept. " + FILLER)
    corpus.add(*carrier)
    corpus.add(*carrier)  # the mix repeats a document: counted once
    truth = {"leaks": [{"task": "lambada", "index": 5, "source": "books", "key": "b07.txt"},
                       {"task": "lambada", "index": 1, "source": "books", "key": "dropped-by-dedup.txt"}]}
    scores = {("lambada", i): {"task": "lambada", "index": i, "correct": i == 5, "loglik": -1.0} for i in range(6)}
    res = con.audit({"lambada": task}, corpus, con.ContaminationConfig(), scores, truth)
    t = res["tasks"]["lambada"]
    assert (t["n"], t["total"], t["dirty"]) == (13, 6, 1)
    assert t["score_all"]["acc"] == pytest.approx(1 / 6, abs=1e-4) and t["score_clean"]["acc"] == 0.0
    assert t["score_dirty"]["acc"] == 1.0 and t["clean_minus_all"]["acc"] == pytest.approx(-0.1667)
    (row,) = res["dirty"]["lambada"]
    assert row["index"] == 5 and row["matched_ngrams"] == 18 - 13 + 1
    assert row["spans"] == [(0, len(LEAK))]  # all overlapping 13-grams merge into one span
    (doc,) = row["docs"]
    assert doc["doc_id"] == "books/007" and doc["natural_key"] == "b07.txt" and doc["book_title"] == "Book 7"
    assert doc["stage_path"] == "books -> dedup -> mix"
    assert corpus.repeats == 1
    leaks = res["leaks"]["per_task"]["lambada"]
    assert leaks == {"planted": 2, "reached_training": 1, "found": 1, "traced_to_carrier": 1,
                     "unplanted_dirty": 0, "missed": [], "exact_match": True}


def test_ngram_in_more_than_max_docs_is_ignored(tmp_path):
    task = _lambada(tmp_path, _evals())
    for copies, dirty in ((11, 0), (10, 1)):
        corpus = con.TrainCorpus()
        for i in range(copies):
            corpus.add(*_book(i, FILLER + LEAK + " " + FILLER))
        res = con.audit({"lambada": task}, corpus, con.ContaminationConfig(max_doc_frequency=10))
        assert res["tasks"]["lambada"]["dirty"] == dirty, copies
        if dirty:
            assert len(res["dirty"]["lambada"][0]["docs"]) == 10
        else:
            # every 13-gram of the (identical) documents is in 11 > 10 of them, the leak's 6 among them
            wh = con.word_hashes(con.normalize(FILLER + LEAK + " " + FILLER)[0])
            assert res["index"]["13"]["ignored_frequent_ngrams"] == len(set(con.ngram_hashes(wh, 13).tolist()))


def test_partial_overlap_spans_and_html(tmp_path):
    task = _lambada(tmp_path, _evals())
    corpus = con.TrainCorpus()
    corpus.add(*_book(1, FILLER + " ".join(LEAK.split()[:14]) + " zebra"))  # 14 words: two 13-grams
    res = con.audit({"lambada": task}, corpus, con.ContaminationConfig())
    (row,) = res["dirty"]["lambada"]
    (span,) = row["spans"]
    assert LEAK[span[0]:span[1]] == " ".join(LEAK.split()[:14])
    page = con.render_html(res)

    class Marks(HTMLParser):
        def __init__(self):
            super().__init__()
            self.marks, self.inside = [], False

        def handle_starttag(self, tag, attrs):
            self.inside = self.inside or tag == "mark"
            if tag == "mark":
                self.marks.append("")

        def handle_endtag(self, tag):
            if tag == "mark":
                self.inside = False

        def handle_data(self, data):
            if self.inside:
                self.marks[-1] += data

    parser = Marks()
    parser.feed(page)
    parser.close()
    assert parser.marks == [" ".join(LEAK.split()[:14])]
    assert "<style>" in page and "http" not in page.split("<body>")[0]  # self-contained: no external assets
    assert "| lambada | 13 | 6 | 1 |" in con.render_markdown(res)


def test_run_on_document_folder(in_tmp_cwd):
    evals = in_tmp_cwd / "eval"
    evals.mkdir()
    _lambada(evals, _evals())
    docs = [Document(text=FILLER + LEAK, id="webtext/abc",
                     metadata={"source": "webtext", "url": "http://news.sample.test/a", "reddit_post_id": "t3_x"}),
            Document(text=FILLER * 3, id="cc/123", metadata={"source": "cc", "url": "http://x.cc.test/",
                                                             "warc_record_id": "<urn:uuid:123>"})]
    list(io.doc_writer(in_tmp_cwd / "mix", "train/docs").run(iter(docs), rank=0, world_size=1))
    (in_tmp_cwd / "examples.jsonl").write_text(json.dumps({"task": "lambada", "index": 5, "correct": True,
                                                           "loglik": -2.0}) + "\nnot json\n")
    from pipeline import report

    rep = report.StageReport("contamination")
    res = con.run(con.ContaminationConfig(), in_tmp_cwd / "mix", evals, in_tmp_cwd / "out",
                  in_tmp_cwd / "examples.jsonl", None, rep)
    assert res["train"]["documents"] == 2 and res["tasks"]["lambada"]["dirty"] == 1
    doc = res["dirty"]["lambada"][0]["docs"][0]
    assert doc["stage_path"] == "reddit_urls -> scrape -> dedup -> mix" and doc["reddit_post_id"] == "t3_x"
    out = rep.write()
    assert out["errors"] == {"bad_score_line": 1}
    assert out["tasks"]["lambada"]["score_dirty"] == {"n": 1, "acc": 1.0} and out["tasks"]["lambada"]["score_clean"] is None
    html = (in_tmp_cwd / "out" / "report.html").read_text()
    assert "<a href='http://news.sample.test/a'>" in html and "<mark>" in html
    assert json.loads((in_tmp_cwd / "out" / "report.json").read_text())["tasks"]["lambada"]["scored"] == 1
    assert (in_tmp_cwd / "reports" / "contamination.json").exists()


def test_real_lambada_wikitext_against_real_books(shared_data):
    found = tasks.load_all(shared_data / "eval", ("lambada", "wikitext"))
    corpus = con.TrainCorpus()
    for name in ("11-0.txt", "120-0.txt", "pg345.txt", "98-0.txt"):
        corpus.add(f"books/{name}", (shared_data / "books" / name).read_text(encoding="utf-8"),
                   {"source": "books", "source_file": name})
    res = con.audit(found, corpus, con.ContaminationConfig())
    lam, wiki = res["tasks"]["lambada"], res["tasks"]["wikitext"]
    assert lam["total"] == 5153 and lam["n"] == 13  # LAMBADA passages are long: full 13-grams
    assert wiki["n"] == 8 and wiki["too_short"] > 0  # WikiText has short lines: the floor applies
    assert lam["dirty_fraction"] < 0.01 and wiki["dirty_fraction"] < 0.01  # fiction vs Wikipedia: near zero
    # Sanity of the real path: a LAMBADA passage copied into a book is found again.
    corpus.add("books/planted", "Chapter 1. " + found["lambada"].examples[42].contamination_text, {})
    res = con.audit({"lambada": found["lambada"]}, corpus, con.ContaminationConfig())
    assert 42 in [r["index"] for r in res["dirty"]["lambada"]]


def test_stage_script_runs_with_the_dvc_yaml_flags(in_tmp_cwd):
    """The thin script, run as dvc.yaml's cmd says (paths swapped for a temp tree)."""
    import shlex
    import shutil
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    cmd = shlex.split(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["contamination"]["cmd"])
    flags = [a for a in cmd if a.startswith("--")]
    assert flags == ["--train", "--eval", "--scores", "--truth", "--out"]
    shutil.copy(root / "params.yaml", in_tmp_cwd / "params.yaml")
    evals = in_tmp_cwd / "eval"
    evals.mkdir()
    _lambada(evals, _evals())
    doc = Document(text=FILLER + LEAK, id="books/x", metadata={"source": "books", "source_file": "b01.txt"})
    list(io.doc_writer(in_tmp_cwd / "mix", "train/docs").run(iter([doc]), rank=0, world_size=1))
    (in_tmp_cwd / "truth.json").write_text(json.dumps(
        {"leaks": [{"task": "lambada", "index": 5, "source": "books", "key": "b01.txt"}]}))
    paths = {"--train": "mix", "--eval": "eval", "--scores": "missing.jsonl", "--truth": "truth.json", "--out": "out"}
    args = [a for f in flags for a in (f, paths[f])]
    proc = subprocess.run([sys.executable, str(root / "stages" / "contamination.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((in_tmp_cwd / "reports" / "contamination.json").read_text())
    assert metrics["leaks"]["exact_match"] is True and metrics["tasks"]["lambada"]["dirty"] == 1
    assert {p.name for p in (in_tmp_cwd / "out").iterdir()} == {"report.html", "report.json", "report.md"}
