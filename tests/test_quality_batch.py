"""The batched quality filter gives today's answers: the same tokens, scores, draws, decisions and bytes.

quality_filter runs as one datatrove step over whole batches (pipeline.core.shards for the files,
quality.model_inputs for the classifier's view, retention.retention_batch for the draws). Each shortcut
is checked here against the straightforward per-document computation it replaces, and the whole stage
against a per-document reference stage (datatrove reader -> per-document filter -> writer, and the
scores table and report built from the written shards, as the stage was first written).
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from datatrove.data import Document, Media
from datatrove.pipeline.filters.base_filter import BaseFilter

from pipeline.core import executor, io, records, report, shards, truth
from pipeline.curate import quality, quality_filter, quality_metrics, retention

FASTTEXT_SPACE = set(" \t\n\v\f\r\0")  # FastText.predict's docstring: what fastText splits words on
PROSE = ("the river ran past the old mill and the children watched the water as it turned the wheel she said "
         "that they would walk to the town before the evening came").split()
SPAM = "cheap pills casino bonus free download loans crypto win click now best price discount".split()
ODD = [" ", "  ", "\t", "\n", "\r\n", "\v", "\f", "\0", "\n\n", " \u00a0 ", "\u2003", "\x1c", "\x85", "\u3000",
       "\u2028", "\u202f", "\u205f", "\u1680"] + list(quality.SPLIT_ONLY_SPACE)
WORDS = PROSE + SPAM + ["ΟΔΟΣ", "Σ", "İstanbul", "ΣΑΣ.", "</s>", "__label__hq", "Café", "ß", "ǅ", "ﬁ",
                        "\u0130"]


def _messy(r: random.Random, n: int) -> str:
    """Words joined by every kind of whitespace, in mixed case: where normalise and model_inputs could part."""
    out = []
    for _ in range(n):
        word = r.choice(WORDS)
        out.append(word.upper() if r.random() < 0.2 else word.capitalize() if r.random() < 0.3 else word)
        out.append(r.choice(ODD) if r.random() < 0.3 else " ")
    return ("" if r.random() < 0.5 else r.choice(ODD)) + "".join(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A full model and 3 cross-fitting fold models, trained on prose (positive) vs spam crawl (negative)."""
    root = tmp_path_factory.mktemp("quality_batch")
    r = random.Random(5)
    pos = [Document(" ".join(r.choice(PROSE) for _ in range(80)), records.webtext_id(f"http://w.test/{i}"),
                    metadata={records.URL: f"http://w.test/{i}"}) for i in range(30)]
    neg = [Document(" ".join(r.choice(SPAM + PROSE[:5]) for _ in range(60)), records.cc_id(f"<urn:uuid:{i:08d}>"),
                    metadata={records.URL: f"http://c{i}.test/"}) for i in range(30)]
    for name, docs in (("pos", pos), ("neg", neg)):
        with io.doc_writer(root / name) as writer:
            for doc in docs:
                writer.write(doc, rank=0)
    cwd = os.getcwd()
    os.chdir(root)  # run_train writes reports/ relative to the cwd
    try:
        quality.run_train(quality.QualityConfig(epoch=5, folds=3), 1337, [root / "pos"], [root / "neg"], root / "m")
    finally:
        os.chdir(cwd)
    return root / "m" / "model.bin"


def _tokens(model, text: str) -> list[str]:
    return model.get_line(text)[0]


def test_split_only_space_is_what_str_split_adds_to_fasttext():
    every = [chr(c) for c in range(sys.maxunicode + 1)]
    assert quality.SPLIT_ONLY_SPACE == "".join(c for c in every if c.isspace() and c not in FASTTEXT_SPACE)
    # lowering neither makes nor removes a separator of either kind, so it commutes with the replacements
    space = FASTTEXT_SPACE | set(quality.SPLIT_ONLY_SPACE)
    assert [c for c in every if (c in space) != any(x in space for x in c.lower())] == []


def test_model_inputs_score_like_normalise(models):
    """fastText sees the same tokens, so every score is the same float, whichever model scores."""
    import fasttext

    r = random.Random(11)
    texts = [_messy(r, r.randint(0, 60)) for _ in range(600)] + ["", " ", "\n", "ΟΔΟΣ", "A\u00a0B", "x\x1fy\x00z",
                                                                 "\u00ff \u0178\r\n", "a\r", "\r", "\u201cQuoted\u201d"]
    texts += [" ".join(r.choice(PROSE) for _ in range(50)) for _ in range(300)]  # an all-ASCII batch below
    model = fasttext.load_model(str(models))
    for start in range(0, len(texts), 97):  # batches with and without the odd spaces
        batch = texts[start:start + 97]
        inputs = quality.model_inputs(batch)
        want = [_tokens(model, quality.normalise(t)) for t in batch]
        assert [_tokens(model, t) for t in inputs] == want
        lines = quality.model_lines(batch)  # what Scorer hands fastText: one line each, UTF-8
        assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines) and len(lines) == len(batch)
        assert [_tokens(model, line[:-1].decode()) for line in lines] == want
    for path in [models] + sorted(models.parent.glob("fold_*.bin")):
        reference = []
        ft = fasttext.load_model(str(path))
        for text in texts:  # the scorer as first written: one normalised text at a time
            (label,), (p,) = ft.predict([quality.normalise(text)], k=1)
            reference.append(min(max(float(p[0]) if label[0] == quality.POSITIVE else 1.0 - float(p[0]), 0.0), 1.0))
        scores = np.concatenate([quality.Scorer(path)(texts[i:i + 256]) for i in range(0, len(texts), 256)])
        assert scores.tolist() == reference, path.name


def test_retention_batch_equals_per_document_draws():
    r = random.Random(3)
    ids = [f"cc/{r.getrandbits(64):016x}" for _ in range(20000)] + ["", "ü/ñ", "x" * 300]
    scores = np.array([r.random() for _ in ids[:-6]] + [0.0, 1.0, 0.5, 0.999999, 1e-9, 0.25])
    for seed, alpha in [(1337, 9.0), (1, 2.0), (7, 0.5), (1337, 9)]:
        draws, kept = retention.retention_batch(seed, ids, scores, alpha)
        ref = [retention.retention(seed, i, float(s), alpha) for i, s in zip(ids, scores)]
        assert draws.tolist() == [d for d, _ in ref]  # bit for bit
        assert kept.tolist() == [k for _, k in ref]
        assert 0 < kept.sum() < len(ids)
    assert retention.keep_probabilities(scores, 9.0).tolist() == [retention.keep_probability(s, 9.0) for s in scores]
    assert retention.retention_batch(1, [], np.zeros(0), 9.0)[0].shape == (0,)


def _write_raw(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh, zstandard.ZstdCompressor(level=10).stream_writer(fh) as out:
        out.write(b"".join(lines))


def _doc(i: int, text: str, **meta) -> bytes:
    return orjson.dumps({"text": text, "id": records.cc_id(f"<urn:uuid:{i:08d}>"),
                         "metadata": {records.SOURCE: records.CC, records.URL: f"http://c{i}.test/", **meta}})


def _odd_lines() -> list[bytes]:
    """Lines a reader meets besides plain ones, ending with \\n, \\r\\n, \\r or nothing."""
    media = {"id": "m", "type": 0, "url": "http://m.test/", "media_bytes": base64.b64encode(b"\x00\x01").decode()}
    return [_doc(1, "plain page one") + b"\n",
            orjson.dumps({"text": "extra key", "id": "cc/x1", "metadata": {"a": 1}, "lang": "en"}) + b"\r\n",
            orjson.dumps({"text": "", "id": "cc/empty", "metadata": {}}) + b"\n",
            orjson.dumps({"text": "no id, no metadata"}) + b"\n",
            b"not json\n", b"\n", b"   \r",
            orjson.dumps({"text": "meta as string", "id": "cc/s", "metadata": '{"k": 2}'}) + b"\r",
            orjson.dumps({"id": "cc/first", "text": "id before text", "metadata": {"u": "\u00e9\u2028"}}) + b"\n",
            orjson.dumps({"text": "with media", "id": "cc/m", "media": [media], "metadata": {}}) + b"\n",
            _doc(2, "last page, no newline")]


def test_read_shard_yields_what_jsonl_reader_yields(tmp_path):
    _write_raw(tmp_path / "odd/docs/00000.jsonl.zst", _odd_lines())
    with io.doc_writer(tmp_path / "plain") as writer:
        for i in range(3000):
            writer.write(Document(f"page {i} " * (i % 50 + 1), f"cc/{i}", metadata={"n": i, "url": f"u{i}"}), rank=0)
    for folder in ("odd", "plain"):
        reader = io.doc_reader(tmp_path / folder)
        path = reader.data_folder.get_shard(0, 1, glob_pattern=reader.glob_pattern)[0]
        got, want = list(shards.read_shard(reader, path)), list(io.doc_reader(tmp_path / folder).read_file(path))
        assert [(d.text, d.id, d.metadata, d.media) for d in got] == [(d.text, d.id, d.metadata, d.media) for d in want]
        assert len(got) == (7 if folder == "odd" else 3000)


def test_read_shard_stops_at_bytes_that_are_not_utf8(tmp_path):
    lines = [_doc(1, "fine") + b"\n", b'{"text": "\xff"}\n', _doc(2, "after")]
    _write_raw(tmp_path / "bad/docs/00000.jsonl.zst", lines)
    reader = io.doc_reader(tmp_path / "bad")
    assert [d.text for d in shards.read_shard(reader, "00000.jsonl.zst")] == ["fine"]  # datatrove: [] (8 KiB chunk)


def test_shard_writer_writes_the_bytes_doc_writer_writes(tmp_path, monkeypatch):
    r = random.Random(9)
    docs = [Document(_messy(r, r.randint(1, 80)), f"cc/{i}",
                     metadata={"url": f"u{i}", "score": r.random(), "kept": i % 3 == 0}) for i in range(3000)]
    docs[5] = Document("with media", "cc/media", media=[Media(id="m", type=0, url="http://m/", media_bytes=b"\x00")],
                       metadata={"a": 1})
    docs[6] = Document("no metadata", "cc/nometa")
    with io.doc_writer(tmp_path / "ref") as writer:
        for doc in docs:
            writer.write(doc, rank=3)
    ref = (tmp_path / "ref/docs/00003.jsonl.zst").read_bytes()
    monkeypatch.setattr(shards, "WRITE_BYTES", 50_000)  # many compressed writes, of uneven sizes
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        for name, p in (("pooled", pool), ("inline", None)):
            with shards.ShardWriter(tmp_path / name, io.DOCS, 3, p) as out:
                for i in range(0, len(docs), 97):
                    out.write_batch(docs[i:i + 97])
                out.write_batch([])
            assert (tmp_path / name / "docs/00003.jsonl.zst").read_bytes() == ref, name
        with shards.ShardWriter(tmp_path / "none", io.DOCS, 0, pool) as out:
            out.write_batch([])
    assert not (tmp_path / "none").exists()  # like datatrove's writer: no document, no file


# --- the whole stage against the per-document reference ----------------------------------------------
class ReferenceFilter(BaseFilter):
    """The filter as first written: per document, normalise, predict with its model, draw, tag."""

    name = "reference"

    def __init__(self, model_path, seed, alpha, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.model_path, self.seed, self.alpha = model_path, seed, alpha

    def filter(self, doc):
        import fasttext

        if not hasattr(self, "router"):
            self.router = quality.CrossFitScorer(self.model_path)
            self.fts = {}
        name = self.router.model_for(doc.id)
        if name not in self.fts:
            self.fts[name] = fasttext.load_model(self.router.scorers[name].model_path)
        (label,), (p,) = self.fts[name].predict([quality.normalise(doc.text)], k=1)
        score = min(max(float(p[0]) if label[0] == quality.POSITIVE else 1.0 - float(p[0]), 0.0), 1.0)
        draw, kept = retention.retention(self.seed, doc.id, score, self.alpha)
        doc.metadata[records.QUALITY_SCORE] = round(score, 6)
        doc.metadata[quality.QUALITY_MODEL] = name
        doc.metadata[records.RETENTION_DRAW] = round(draw, 6)
        doc.metadata[records.KEPT] = bool(kept)
        return True if kept else (False, "low_quality")


def reference_stage(alpha, seed, in_dir, model_path, out, truth_path):
    """Reader -> ReferenceFilter -> writer, then the table and report read back from the written shards."""
    rep = report.StageReport("quality_filter")
    flt = ReferenceFilter(model_path, seed, alpha, io.removed_writer(out, "low_quality"))
    executor.run([io.doc_reader(in_dir), flt, io.doc_writer(out)], 1, Path("ref_logs"))
    kept, dropped = io.read_records(out, io.DOCS), io.read_records(out, "removed/low_quality")
    rows = sorted(kept + dropped, key=lambda r: r["id"])
    md = lambda r, k: r["metadata"][k]  # noqa: E731
    table = pa.table({"id": [r["id"] for r in rows], "url": [r["metadata"].get(records.URL, "") for r in rows],
                      "score": [md(r, records.QUALITY_SCORE) for r in rows],
                      "draw": [md(r, records.RETENTION_DRAW) for r in rows],
                      "kept": [md(r, records.KEPT) for r in rows],
                      "model": [md(r, quality.QUALITY_MODEL) for r in rows]},
                     schema=pa.schema([("id", pa.string()), ("url", pa.string()), ("score", pa.float64()),
                                       ("draw", pa.float64()), ("kept", pa.bool_()), ("model", pa.string())]))
    pq.write_table(table, out / "scores.parquet")
    scores = np.array([md(r, records.QUALITY_SCORE) for r in rows], float)
    mask = np.array([md(r, records.KEPT) for r in rows], bool)
    rep.docs_in, rep.docs_out = len(rows), len(kept)
    rep.drop("low_quality", len(dropped))
    rep.bytes_out = sum(len(r.get("text", "").encode()) for r in kept)
    rep.bytes_in = rep.bytes_out + sum(len(r.get("text", "").encode()) for r in dropped)
    expected = [retention.keep_probability(s, alpha) for s in scores]
    rep.extra["retention"] = {"alpha": alpha, "kept_fraction_observed": quality_metrics._mean(mask),
                              "kept_fraction_expected": quality_metrics._mean(expected),
                              "mean_score": quality_metrics._mean(scores)}
    by_model = [md(r, quality.QUALITY_MODEL) for r in rows]
    rep.extra["scored_by"] = {name: by_model.count(name) for name in sorted(set(by_model))}
    keys = lambda rs: [records.natural_key(r["metadata"]) for r in rs]  # noqa: E731
    rep.extra["truth"] = truth.score_drops(truth.load(truth_path), "quality_filter", keys(dropped), keys(kept))
    rep.extra["truth_by_class"] = quality_metrics.truth_by_class(truth.load(truth_path), rows, alpha)
    plot = [{"score_bucket": name, "docs": int(m.sum()), "kept_fraction": quality_metrics._mean(mask[m]),
             "expected_kept_fraction": quality_metrics._mean([retention.keep_probability(s, alpha) for s in scores[m]])}
            for name, m in quality_metrics._buckets(scores)]
    return rep, [r for r in plot if r["docs"]]


def test_stage_matches_per_document_reference(models, in_tmp_cwd):
    """Same docs/ and removed/ bytes, scores.parquet bytes, report (but its clock) and plot, on a crawl of
    messy pages in two shards (one with odd lines), training pages among them (fold models score those),
    duplicate ids, and a truth file."""
    r = random.Random(21)
    train_ids = (models.parent / quality.TRAIN_IDS).read_text().split()
    pages = []
    for i in range(700):
        text = _messy(r, r.randint(5, 120)) if i % 3 else " ".join(r.choice(PROSE) for _ in range(r.randint(20, 90)))
        doc_id = train_ids[i % len(train_ids)] if i % 10 == 0 else records.cc_id(f"<urn:uuid:{i % 650:08d}>")
        pages.append(Document(text, doc_id, metadata={records.SOURCE: records.CC, records.URL: f"http://p{i}.test/"}))
    # ids shared by a prose page and a spam page whose one draw keeps the first and drops the second
    ties = [i for i in (records.cc_id(f"<urn:uuid:tie-{k}>") for k in range(200))
            if 0.2 < retention.retention(1337, i, 0.0, 9.0)[0] < 0.6][:10]
    for k, doc_id in enumerate(ties):
        for words in (PROSE, SPAM):
            pages.insert(37 * k, Document(" ".join(r.choice(words) for _ in range(60)), doc_id, metadata={}))
    with io.doc_writer("crawl") as writer:
        for doc in pages:
            writer.write(doc, rank=0)
    _write_raw(Path("crawl/docs/00001.jsonl.zst"), _odd_lines())
    truth_doc = {"expect_keep": {"quality_filter": [f"http://p{i}.test/" for i in range(0, 700, 3)]},
                 "expect_drop": {"quality_filter": [f"http://p{i}.test/" for i in range(1, 700, 3)]}}
    Path("truth.json").write_text(json.dumps(truth_doc))

    rep = quality_filter.run(quality_filter.FilterConfig(9.0), 1337, "crawl", models, "out",
                             truth_path="truth.json").to_dict()
    plot = json.loads(Path("reports/plots/quality_filter/retention.json").read_text())
    want, want_plot = reference_stage(9.0, 1337, "crawl", models, Path("ref"), "truth.json")
    want = want.to_dict()
    for clock in ("seconds", "docs_per_s"):
        rep.pop(clock), want.pop(clock)
    assert rep == want
    assert plot == want_plot
    assert Path("out/scores.parquet").read_bytes() == Path("ref/scores.parquet").read_bytes()
    for name in ("docs/00000.jsonl.zst", "removed/low_quality/00000.jsonl.zst"):  # same lines, another zstd level
        out, ref = (zstandard.ZstdDecompressor().decompressobj().decompress(Path(d, name).read_bytes())
                    for d in ("out", "ref"))
        assert out == ref and len(out) > 1000, name
    # the comparison has teeth: both models and both decisions occur, and duplicate ids
    assert rep["docs_in"] == 700 + 20 + 7 and 0 < rep["docs_out"] < rep["docs_in"]
    assert set(rep["scored_by"]) == {"full", "fold_0", "fold_1", "fold_2"}
    table = pq.read_table("out/scores.parquet").to_pylist()
    assert any({row["kept"] for row in table if row["id"] == i} == {True, False} for i in ties)  # ties: kept first
    assert len({row["id"] for row in table}) < len(table) and rep["truth"]["labelled"] > 0


def test_scoring_process_gives_the_in_process_scores(models):
    """fastText runs in a child process (it holds the GIL); the child's scores are the in-process Scorer's floats."""
    from pipeline.curate.quality_worker import ScoringProcess

    r = random.Random(11)
    texts = [_messy(r, r.randint(1, 40)) for _ in range(300)]
    lines = quality.model_lines(texts)
    with ScoringProcess({"full": str(models)}) as remote:
        remote.submit([("full", lines[:100])])
        remote.submit([("full", lines[100:]), ("full", [])])  # queued before the first answer is read
        first, (second, empty) = remote.result(), remote.result()
        child = remote._proc
    assert child.returncode == 0  # close() ended it
    local = quality.Scorer(models)(texts)
    assert np.array_equal(np.concatenate([first[0], second]), local) and len(empty) == 0


def test_scoring_process_failures_reach_the_caller(models, tmp_path):
    from pipeline.curate.quality_worker import ScoringProcess

    with ScoringProcess({"full": str(tmp_path / "missing.bin")}) as remote:
        remote.submit([("full", [b"some words\n"])])
        with pytest.raises(RuntimeError, match="scoring process failed(.|\n)*missing.bin"):
            remote.result()
    remote = ScoringProcess({"full": str(models)})
    remote._proc.kill()
    with pytest.raises(RuntimeError, match="scoring process ended"):
        remote.submit([("full", [b"some words\n"])])
        remote.result()
    remote.close()


def test_scoring_process_ends_when_the_stage_is_killed(models):
    """kill -9 of the stage must not leave fastText running: the child reads EOF on its pipe and exits."""
    import signal
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]
    script = (f"import sys, time; sys.path.insert(0, {str(root)!r})\n"
              "from pipeline.curate.quality_worker import ScoringProcess\n"
              f"remote = ScoringProcess({{'full': {str(models)!r}}})\n"
              "remote.submit([('full', [b'the river ran past the mill\\n'] * 1000)])\n"
              "print(remote._proc.pid, flush=True)\n"
              "time.sleep(120)\n")
    stage = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(stage.stdout.readline())
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()

    def alive(pid: int) -> bool:  # a zombie (exited, not yet reaped by whoever adopted it) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the fastText process outlived the killed stage"


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray==2.60.0)")
def test_stage_on_ray_gives_the_local_bytes(models, tmp_path, monkeypatch):
    """executor.kind ray: the stage's task runs in a Ray worker and starts its fastText process there; the
    documents, removed pages and scores.parquet are the local run's bytes."""
    import ray

    r = random.Random(3)
    with io.doc_writer(tmp_path / "crawl") as writer:
        for i in range(600):
            text = _messy(r, r.randint(5, 60)) if i % 2 else " ".join(r.choice(PROSE) for _ in range(40))
            writer.write(Document(text, records.cc_id(f"<urn:uuid:{i:08d}>"),
                                  metadata={records.SOURCE: records.CC, records.URL: f"http://p{i}.test/"}), rank=0)
    outputs = {}
    for kind in ("local", "ray"):
        (tmp_path / kind).mkdir()
        monkeypatch.chdir(tmp_path / kind)  # own data/resume: nothing of the other run is reused
        try:
            quality_filter.run(quality_filter.FilterConfig(9.0), 1337, tmp_path / "crawl", models, "out",
                               exec_cfg=executor.ExecutorConfig(kind=kind))
        finally:
            if kind == "ray":
                ray.shutdown()
        outputs[kind] = {str(p.relative_to(Path("out"))): io.sha256_file(p) for p in sorted(Path("out").rglob("*"))
                         if p.is_file()}
    assert outputs["ray"] == outputs["local"]
    assert {"scores.parquet", "docs/00000.jsonl.zst", "removed/low_quality/00000.jsonl.zst"} <= set(outputs["local"])
