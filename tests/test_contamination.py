"""Contamination audit and decontamination (GPT-3 appendix C): pipeline.evaluation.contamination,
pipeline.evaluation.ngram_index (n-gram index, frequency cut, n rule) and pipeline.evaluation.decontaminate; tracing, reports."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document

from pipeline.core import io, params
from pipeline.evaluation import contamination as con
from pipeline.evaluation import contamination_report as rep_mod
from pipeline.evaluation import decontaminate as dec
from pipeline.evaluation import ngram_index as ngx
from pipeline.evaluation import ngrams, tasks

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
    assert ngrams.choose_n([5] * 100, cfg) == 8  # p5 below the floor -> floor
    assert ngrams.choose_n([10] * 100, cfg) == 10  # p5 between -> p5
    assert ngrams.choose_n([4] * 5 + [40] * 95, cfg) == 13  # p5 of mostly long examples -> 13
    assert ngrams.choose_n(list(range(1, 101)), cfg) == 8  # p5 = 5.95 -> floor 8


def test_normalisation_and_hash_are_punctuation_blind():
    a, _ = ngrams.normalize("The Keeper's LAMP -- lit, at 9!")
    b, _ = ngrams.normalize("the keeper s lamp lit at 9")
    assert a == b == ["the", "keeper", "s", "lamp", "lit", "at", "9"]
    ha = ngrams.ngram_hashes(ngrams.word_hashes(a), 3)
    assert len(ha) == 5 and len(set(ha.tolist())) == 5
    assert (ha == ngrams.ngram_hashes(ngrams.word_hashes(b), 3)).all()


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
            wh = ngrams.word_hashes(ngrams.normalize(FILLER + LEAK + " " + FILLER)[0])
            assert res["index"]["13"]["ignored_frequent_ngrams"] == len(set(ngrams.ngram_hashes(wh, 13).tolist()))


def test_partial_overlap_spans_and_html(tmp_path):
    task = _lambada(tmp_path, _evals())
    corpus = con.TrainCorpus()
    corpus.add(*_book(1, FILLER + " ".join(LEAK.split()[:14]) + " zebra"))  # 14 words: two 13-grams
    res = con.audit({"lambada": task}, corpus, con.ContaminationConfig())
    (row,) = res["dirty"]["lambada"]
    (span,) = row["spans"]
    assert LEAK[span[0]:span[1]] == " ".join(LEAK.split()[:14])
    page = rep_mod.render_html(res)

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
    assert "| lambada | 13 | 6 | 1 |" in rep_mod.render_markdown(res)


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
    from pipeline.core import report

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
    plot = json.loads((in_tmp_cwd / "reports" / "plots" / "contamination" / "dirty_fraction.json").read_text())
    assert plot == [{"task": "lambada", "dirty_fraction": round(1 / 6, 6), "dirty": 1, "total": 6}]
    scores = json.loads((in_tmp_cwd / "reports" / "plots" / "contamination" / "scores.json").read_text())
    assert [(r["subset"], r["value"]) for r in scores] == [("all", 1.0), ("dirty", 1.0)]


def test_real_lambada_wikitext_against_real_books(shared_data, tmp_path):
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
    sharded = con.audit(found, corpus, con.ContaminationConfig(), index_factory=lambda n: ngx.ShardedNgramIndex(
        iter(corpus.words), n, 10, tmp_path / str(n), shard_bits=3, spill_pairs=200_000))
    assert sharded == res  # the out-of-core index gives the same audit on real text
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


# --- out-of-core index ------------------------------------------------------------------------------
def _random_corpus(n_docs: int = 40, seed: int = 0) -> con.TrainCorpus:
    import random

    rnd = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)]  # small vocabulary: many n-grams repeat across documents
    corpus = con.TrainCorpus()
    for i in range(n_docs):
        words = [rnd.choice(vocab) for _ in range(rnd.randint(0, 300))]
        if i % 3 == 0:
            words[10:10] = LEAK.split()  # in 14 documents: above the frequency cut
        corpus.add(f"books/{i:03d}", " ".join(words), {"source": "books", "source_file": f"b{i}.txt"})
    return corpus


@pytest.mark.parametrize("n,shard_bits,spill", [(13, 4, 97), (8, 1, 1 << 20), (3, 6, 500)])
def test_sharded_index_equals_memory_index(tmp_path, n, shard_bits, spill):
    corpus = _random_corpus()
    mem = ngx.NgramIndex(corpus, n, 10)
    disk = ngx.ShardedNgramIndex(iter(corpus.words), n, 10, tmp_path / "idx", shard_bits, spill_pairs=spill)
    cat_h = np.concatenate([np.asarray(disk.shard(k)[0]) for k in range(disk.shards)])
    cat_d = np.concatenate([np.asarray(disk.shard(k)[1]) for k in range(disk.shards)])
    assert (cat_h == mem.hashes).all() and (cat_d == mem.docs).all()  # shards in order = the sorted array
    assert (len(disk), disk.nbytes(), disk.ignored_ngrams) == (len(mem), mem.nbytes(), mem.ignored_ngrams)
    assert not list((tmp_path / "idx").glob("run-*"))  # spill runs cleaned up
    queries = [" ".join(f"w{(i * 7 + j) % 60}" for j in range(40)) for i in range(20)] + [LEAK, FILLER]
    queries += [" ".join(ngrams.normalize(" ".join(f"w{x}" for x in range(60)))[0])]
    for q in queries:
        assert disk.lookup(q) == mem.lookup(q)


def test_stage_index_choice_gives_identical_reports(in_tmp_cwd):
    evals = in_tmp_cwd / "eval"
    evals.mkdir()
    _lambada(evals, _evals())
    docs = [Document(text=FILLER + (LEAK if i == 3 else "") + FILLER * (i % 4), id=f"books/{i}",
                     metadata={"source": "books", "source_file": f"b{i}.txt"}) for i in range(12)]
    docs.append(docs[3])  # a repeat, as the mix writes them
    list(io.doc_writer(in_tmp_cwd / "mix", "train/docs").run(iter(docs), rank=0, world_size=1))
    pages = {}
    for kind in ("memory", "sharded"):
        res = con.run(con.ContaminationConfig(index=kind), in_tmp_cwd / "mix", evals, in_tmp_cwd / kind)
        assert res["tasks"]["lambada"]["dirty"] == 1 and res["train"]["repeats_skipped"] == 1
        pages[kind] = [(in_tmp_cwd / kind / f).read_bytes() for f in ("report.json", "report.md", "report.html")]
    assert pages["memory"] == pages["sharded"]


# --- decontamination (GPT-3 appendix C) --------------------------------------------------------------
def test_split_text_rules():
    cfg = con.ContaminationConfig()
    text = "a" * 1000
    kept, made = dec.split_text(text, [(500, 510)], cfg)  # cut 300..710
    assert made == 2 and kept == ["a" * 300, "a" * 290]
    kept, made = dec.split_text(text, [(150, 160), (800, 810)], cfg)  # 0..360 and 600..1000 removed
    assert made == 1 and kept == ["a" * 240]
    kept, made = dec.split_text(text, [(900, 910)], cfg)  # right piece empty, left piece 700
    assert (kept, made) == (["a" * 700], 1)
    kept, made = dec.split_text("b" * 500, [(250, 260)], cfg)  # pieces of 50 and 40 chars: both dropped
    assert (kept, made) == ([], 2)


def test_decontamination_removes_planted_leak(tmp_path):
    task = _lambada(tmp_path, _evals())
    filler = FILLER * 8  # ~680 characters
    carrier = Document(text=filler + "He wrote: " + LEAK.upper() + ", and slept. " + filler, id="books/007",
                       metadata={"source": "books"})
    riddled = Document(text=" ".join([filler, LEAK] * 12 + [filler]), id="books/008", metadata={"source": "books"})
    clean = Document(text=filler * 2, id="books/009", metadata={"source": "books"})
    docs = [carrier, riddled, clean] + [carrier] * 11  # the mix repeats documents: still one document
    counts: dict[str, int] = {}
    out = list(dec.decontaminate(lambda: docs, {"lambada": task}, con.ContaminationConfig(), counts))
    kept = [d for d, reason in out if reason is None]
    dropped = {d.id: reason for d, reason in out if reason}
    assert dropped == {"books/008": "too_many_pieces"}  # 12 leaks -> 13 pieces > 10
    assert [d.id for d in kept[:3]] == ["books/007#decon0", "books/007#decon1", "books/009"]
    assert len(kept) == 3 + 2 * 11 and {d.id for d in kept[3:]} == {"books/007#decon0", "books/007#decon1"}
    kept = kept[:3]
    assert kept[2].text == clean.text and kept[0].metadata[dec.DECON_PIECE] == 0
    for d in kept:
        assert "lighthouse" not in d.text.lower() and len(d.text) >= 200
    leak_at = carrier.text.index(LEAK.upper())
    assert kept[0].text == carrier.text[:leak_at - 200]  # 200 characters either side of the 13-grams
    assert kept[1].text == carrier.text[leak_at + len(LEAK) + 200:]
    assert counts["docs_in"] == 14 and counts["docs_clean"] == 1 and counts["docs_split"] == 12
    assert counts["docs_dropped_too_many_pieces"] == 1 and counts["collisions"] == 12 * 6 + 12 * 6
    assert counts["ignored_frequent_ngrams"] == 0
    # the audit of the cleaned set finds nothing
    corpus = con.TrainCorpus()
    for d in kept:
        corpus.add(d.id, d.text, d.metadata)
    assert con.audit({"lambada": task}, corpus, con.ContaminationConfig())["tasks"]["lambada"]["dirty"] == 0


def test_decontamination_in_batches_equals_one_document_at_a_time(tmp_path, monkeypatch):
    """Documents are hashed together in batches (BATCH_CHARS); a 13-gram straddling two neighbours belongs to
    neither, and every output and count equals the one-document-at-a-time run (batch size 1)."""
    task = _lambada(tmp_path, _evals())
    filler = FILLER * 8
    words = LEAK.split()
    docs = [Document(text=filler + " " + " ".join(words[:9]), id="a", metadata={}),  # the leak cut across a and b
            Document(text=" ".join(words[9:]) + " " + filler, id="b", metadata={}),
            Document(text=filler + "ΣΟΦΙΑ " + LEAK + " " + filler, id="c", metadata={}),  # context-lowered letters
            Document(text="", id="d", metadata={}), Document(text=None, id="e", metadata={}),
            Document(text=filler + LEAK.upper() + " " + filler, id="f", metadata={})] * 3
    runs = {}
    for size in (1, 64, 1 << 16):
        monkeypatch.setattr(dec, "BATCH_CHARS", size)
        counts: dict[str, int] = {}
        out = [(d.id, d.text, reason) for d, reason in dec.decontaminate(lambda: docs, {"lambada": task},
                                                                          con.ContaminationConfig(), counts)]
        runs[size] = (out, counts)
    assert runs[1] == runs[64] == runs[1 << 16]
    hashes = dec.eval_ngrams({"lambada": task}, con.ContaminationConfig())
    counts = {}
    prebuilt = [(d.id, d.text, reason) for d, reason in dec.decontaminate(
        lambda: docs, {"lambada": task}, con.ContaminationConfig(), counts, eval_hashes=hashes)]
    assert (prebuilt, counts) == runs[1 << 16]  # benchmark n-grams built by the caller: the same cut
    bad = {n: dec.SortedHashes(b) for n, b in hashes.items()}
    assert all(not len(text) for text, _ in dec._batch_hits([docs[0].text, docs[1].text], bad).values())
    assert {int(t) for text, _ in dec._batch_hits([docs[0].text, docs[5].text], bad).values() for t in text} == {1}
    out, counts = runs[1 << 16]
    assert {i for i, _, _ in out} == {"a", "b", "c#decon0", "c#decon1", "d", "f#decon0", "f#decon1"}
    assert counts["docs_in"] == 15 and counts["docs_split"] == 6 and counts["docs_clean"] == 9


def test_sorted_hashes_membership_equals_isin():
    import numpy as np

    from pipeline.core.powers import mix64

    rng = np.random.default_rng(0)
    b = np.unique(mix64(rng.integers(0, 1 << 40, 20000, dtype=np.uint64)))
    near = b[:50] + np.uint64(1)  # same bucket, not present: the binary search must say no
    h = np.concatenate([mix64(rng.integers(0, 1 << 40, 3000, dtype=np.uint64)), b[:50], b[-1:], near, b[5:7]])
    assert np.array_equal(dec.SortedHashes(b).contains(h), np.isin(h, b))
    assert dec.SortedHashes(b).contains(h).sum() == 53
    assert not dec.SortedHashes(b[:0]).contains(h).any() and len(dec.SortedHashes(b).contains(h[:0])) == 0


def test_decontaminate_cli_writes_a_clean_mix(in_tmp_cwd):
    import shutil

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "params.yaml", in_tmp_cwd / "params.yaml")
    evals = in_tmp_cwd / "eval"
    evals.mkdir()
    _lambada(evals, _evals())
    filler = FILLER * 8
    docs = [Document(text=filler + LEAK + " " + filler, id="webtext/a", metadata={"source": "webtext"}),
            Document(text=filler, id="cc/b", metadata={"source": "cc"})]
    list(io.doc_writer(in_tmp_cwd / "mix", "train/docs").run(iter(docs), rank=0, world_size=1))
    list(io.doc_writer(in_tmp_cwd / "mix", "val/docs").run(iter(docs[1:]), rank=0, world_size=1))
    dec.main(["decontaminate", "--train", "mix", "--eval", "eval", "--out", "clean"])
    out = [d.id for d in io.iter_docs(in_tmp_cwd / "clean", "train/docs")]
    assert out == ["webtext/a#decon0", "webtext/a#decon1", "cc/b"]
    assert [d.id for d in io.iter_docs(in_tmp_cwd / "clean", "val/docs")] == ["cc/b"]
    manifest = io.read_json(in_tmp_cwd / "clean" / "_manifest.json")
    assert manifest["params"]["counts"]["docs_split"] == 1
    first = (in_tmp_cwd / "clean" / "train" / "docs").glob("*.zst")
    blob = [p.read_bytes() for p in sorted(first)]
    dec.main(["decontaminate", "--train", "mix", "--eval", "eval", "--out", "clean"])  # byte-identical rerun
    assert blob == [p.read_bytes() for p in sorted((in_tmp_cwd / "clean" / "train" / "docs").glob("*.zst"))]
    # the stage's dry run reports the same counts, off by default
    res = con.run(con.ContaminationConfig(decontaminate=True), in_tmp_cwd / "mix", evals, in_tmp_cwd / "r")
    assert res["decontamination"] == manifest["params"]["counts"]
    assert "decontamination" not in con.run(con.ContaminationConfig(), in_tmp_cwd / "mix", evals, in_tmp_cwd / "r")


# --- the HTML page ---------------------------------------------------------------------------------------
class _Page(HTMLParser):
    """Rows of the dirty-example tables: marks and links per row, and every anchor target."""

    def __init__(self):
        super().__init__()
        self.rows, self.ids, self.hrefs, self._row = [], set(), [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "tr":
            self._row = {"marks": 0, "links": []}
            self.rows.append(self._row)
        elif tag == "mark" and self._row is not None:
            self._row["marks"] += 1
        elif tag == "a":
            self.hrefs.append(attrs["href"])
            if self._row is not None:
                self._row["links"].append(attrs["href"])


def _sample_result(tmp_path):
    task = _lambada(tmp_path, _evals())
    corpus = con.TrainCorpus()
    corpus.add("webtext/x", FILLER + LEAK, {"source": "webtext", "url": "https://news.sample.test/a?b=1&c=2",
                                            "reddit_post_id": "t3_abc"})
    corpus.add("cc/y", FILLER + LEAK, {"source": "cc", "url": "http://crawl.test/p", "warc_file": "x.warc.gz",
                                       "warc_record_id": "<urn:uuid:1>"})
    corpus.add("books/z", LEAK + " " + FILLER, {"source": "books", "source_file": "z.txt", "book_title": "Z"})
    corpus.add("books/q", " ".join(_evals()[2].split()[:15]), {"source": "books", "source_file": "q.txt"})
    return con.audit({"lambada": task}, corpus, con.ContaminationConfig())


def test_html_every_dirty_example_marked_and_linked(tmp_path):
    res = _sample_result(tmp_path)
    page = rep_mod.render_html(res)
    parser = _Page()
    parser.feed(page)
    parser.close()
    dirty_rows = [r for r in parser.rows if r["marks"]]
    assert len(dirty_rows) == len(res["dirty"]["lambada"]) == 2
    by_index = {r["index"]: r for r in res["dirty"]["lambada"]}
    assert len(by_index[5]["docs"]) == 3
    leak_row = max(dirty_rows, key=lambda r: len(r["links"]))
    assert leak_row["links"] == ["https://news.sample.test/a?b=1&c=2", "https://www.reddit.com/comments/abc",
                                 "http://crawl.test/p"]
    internal = [h[1:] for h in parser.hrefs if h.startswith("#")]
    assert internal == ["dirty-lambada"] and set(internal) <= parser.ids  # summary links resolve
    assert "x.warc.gz" in page and "&lt;urn:uuid:1&gt;" in page


def test_html_renders_in_headless_chromium(tmp_path, chromium):
    import subprocess

    res = _sample_result(tmp_path)
    rep_mod.write_reports(res, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").resolve()
    shot = tmp_path / "shot.png"
    proc = subprocess.run([str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
                           f"--screenshot={shot}", html.as_uri()], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dom = subprocess.run([str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=90)
    assert dom.stdout.count("<mark>") == 2 and "lambada: 2 dirty" in dom.stdout


def test_fast_word_path_equals_normalize():
    texts = ["The Keeper's LAMP -- lit, at 9!", "ΟΔΟΣ ΣΟΦΟΣ ΑΣ1 İstanbul straße ǅemal", "", "...!", "x_y a\u0307b"]
    for text in texts:
        assert ngrams.normalize_words(text) == ngrams.normalize(text)[0], text
    assert ngrams.word_hashes(["a", "b", "a"]).tolist() == [ngrams.word_hashes(["a"])[0]] * 1 + [ngrams.word_hashes(["b"])[0]] + [ngrams.word_hashes(["a"])[0]]


def test_decontamination_leaves_ngrams_in_more_than_max_docs(tmp_path):
    task = _lambada(tmp_path, _evals())
    filler = FILLER * 8
    for copies, cut in ((11, 0), (10, 10)):  # the audit's rule: in more than 10 documents = common phrase
        docs = [Document(text=filler + LEAK + " " + filler, id=f"books/{i}", metadata={}) for i in range(copies)]
        counts: dict[str, int] = {}
        out = list(dec.decontaminate(lambda: docs, {"lambada": task}, con.ContaminationConfig(), counts))
        assert counts["docs_split"] == cut and len(out) == (copies if not cut else 2 * copies), copies
        assert counts["ignored_frequent_ngrams"] == (6 if not cut else 0)


def test_split_modules_keep_old_names_and_cli(tmp_path):
    """The n-gram and decontamination names moved out of pipeline.evaluation.contamination stay importable there,
    and `python -m pipeline.evaluation.contamination decontaminate` still reaches the decontamination CLI."""
    import subprocess
    import sys

    for name in ("NgramIndex", "ShardedNgramIndex"):
        assert getattr(con, name) is getattr(ngx, name)
    for name in ("ContaminationConfig", "normalize", "normalize_words", "word_hashes", "ngram_hashes", "choose_n"):
        assert getattr(con, name) is getattr(ngrams, name)
    for name in ("DECON_PIECE", "decontaminate", "decontaminate_folder", "split_text", "eval_ngrams", "main"):
        assert getattr(con, name) is getattr(dec, name)
    root = Path(__file__).resolve().parents[1]
    for module in ("pipeline.evaluation.contamination", "pipeline.evaluation.decontaminate"):
        proc = subprocess.run([sys.executable, "-m", module, "decontaminate", "--help"], cwd=root,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "--train" in proc.stdout and "appendix C" in proc.stdout
