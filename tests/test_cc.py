"""Tests for pipeline/sources/cc.py and the cc stage: WARC/WET reading with provenance, extraction, filters."""
from __future__ import annotations

import dataclasses
import importlib.util
import io as pyio
import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.core import io, params, records
from pipeline.sources import cc, extract, language

ROOT = Path(__file__).resolve().parents[1]

EN = ("The council met on Tuesday to discuss the new bridge over the river. Residents said that they had "
      "waited for many years and that the old crossing was no longer safe for children walking to school. "
      "The engineer explained how the work would be done in two stages, and when it would be finished. ")
DE = ("Der Rat hat sich am Dienstag getroffen, um über die neue Brücke zu sprechen. Die Bewohner sagten, dass "
      "sie seit vielen Jahren gewartet haben und dass die alte Brücke nicht mehr sicher ist für die Kinder. ")


def _html(title: str, body: str) -> bytes:
    paras = "".join(f"<p>{p}</p>" for p in body.split(". ") if p)
    return (f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<article><h1>{title}</h1>{paras}</article><footer>(c) site</footer></body></html>").encode()


PAGES = [  # (url, content type, body, status)
    ("http://news.cc.test/bridge", "text/html; charset=utf-8", _html("Bridge", EN * 3), "200 OK"),
    ("http://de.cc.test/bruecke", "text/html", _html("Brücke", DE * 4), "200 OK"),
    ("http://short.cc.test/", "text/html", _html("Short", "Buy now. Click here."), "200 OK"),
    ("http://files.cc.test/report.pdf", "application/pdf", b"%PDF-1.4 not html", "200 OK"),
    ("http://news.cc.test/missing", "text/html", _html("Missing", EN * 3), "404 Not Found"),
    ("http://blog.cc.test/post", "text/html", _html("Post", EN.replace("bridge", "road") * 2), "200 OK"),
]


def write_warc(path: Path, pages=PAGES, gzip: bool = True) -> list[str]:
    """A CC-style WARC (warcinfo, then request/response pairs); returns the response record ids."""
    ids = []
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=gzip)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for url, ctype, body, status in pages:
            req = writer.create_warc_record(url, "request", payload=pyio.BytesIO(b""),
                                            http_headers=StatusAndHeaders("GET / HTTP/1.1", [], is_http_request=True))
            http = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
            rec = writer.create_warc_record(url, "response", payload=pyio.BytesIO(body), http_headers=http,
                                            warc_headers_dict={"WARC-Date": "2019-01-20T10:00:00Z"})
            writer.write_record(req)
            writer.write_record(rec)
            ids.append(rec.rec_headers.get_header("WARC-Record-ID"))
    return ids


def write_wet(path: Path, texts: dict[str, str]) -> None:
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, text in texts.items():
            writer.write_record(writer.create_warc_record(
                url, "conversion", payload=pyio.BytesIO(text.encode()),
                warc_headers_dict={"Content-Type": "text/plain", "WARC-Date": "2019-01-20T10:00:00Z"}))


def _record_at(path: Path, offset: int):
    with open(path, "rb") as fh:
        fh.seek(offset)
        record = next(iter(ArchiveIterator(fh)))
        return record.rec_headers.get_header("WARC-Record-ID"), record.rec_headers.get_header("WARC-Target-URI")


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["cc"]
    defaults = dataclasses.asdict(cc.CCConfig())
    assert set(defaults) == set(section)
    assert params.build(cc.CCConfig, section) == cc.CCConfig()


@pytest.mark.parametrize("gzip", [True, False])
def test_offsets_point_back_at_their_records(tmp_path, gzip):
    path = tmp_path / ("a.warc.gz" if gzip else "a.warc")
    ids = write_warc(path, gzip=gzip)
    stats = Counter()
    docs = list(cc.iter_warc(path, stat=lambda k, n=1: stats.update({k: n})))
    # HTML 200 responses only: the pdf and the 404 are not documents
    assert [d["metadata"][records.URL] for d in docs] == [p[0] for p in PAGES if p[0] not in (
        "http://files.cc.test/report.pdf", "http://news.cc.test/missing")]
    assert stats["records"] == 1 + 2 * len(PAGES) and stats["skipped_request"] == len(PAGES)
    for doc in docs:
        md = doc["metadata"]
        assert md[records.WARC_FILE] == path.name and md[records.WARC_RECORD_ID] in ids
        assert _record_at(path, md[records.WARC_OFFSET]) == (md[records.WARC_RECORD_ID], md[records.URL])
        assert doc["id"] == records.cc_id(md[records.WARC_RECORD_ID]) and doc["text"].startswith("<html>")


def test_truncated_warc_is_counted_and_next_file_read(tmp_path):
    write_warc(tmp_path / "a.warc.gz")
    write_warc(tmp_path / "b.warc.gz")
    data = (tmp_path / "b.warc.gz").read_bytes()
    cut = random.Random(5).randrange(len(data) // 3, len(data) - 50)  # somewhere after the first record
    (tmp_path / "b.warc.gz").write_bytes(data[:cut])
    stats = Counter()
    docs_b = list(cc.iter_warc(tmp_path / "b.warc.gz", stat=lambda k, n=1: stats.update({k: n})))
    assert stats["error_truncated_record"] + stats["error_corrupt_file"] == 1
    assert len(docs_b) < 4
    (tmp_path / "c.warc.gz").write_bytes(b"this is not a warc file at all\n" * 10)
    stats = Counter()
    assert list(cc.iter_warc(tmp_path / "c.warc.gz", stat=lambda k, n=1: stats.update({k: n}))) == []
    assert stats["error_corrupt_file"] == 1
    assert len(list(cc.iter_warc(tmp_path / "a.warc.gz"))) == 4  # the good file is untouched


def test_stopword_language():
    assert language.stopword_language(EN)[0] == "en"
    assert language.stopword_language(DE)[0] == "de"
    assert language.stopword_language("casino bonus pills viagra loans crypto xxx")[0] == "unknown"
    assert language.stopword_language("") == ("unknown", 0.0)


def _lid_model(path: Path, labels: tuple[str, str] = ("en", "de")) -> None:
    """A tiny fastText LID model in lid.176.bin's label format: EN-like text -> labels[0], DE-like -> labels[1]."""
    import fasttext

    r = random.Random(0)
    lines = [f"__label__{lang} " + " ".join(r.sample(text.split(), 12)) for _ in range(200) for lang, text in
             zip(labels, (EN, DE))]
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    fasttext.train_supervised(str(path.with_suffix(".txt")), epoch=5, thread=1, seed=1, verbose=0).save_model(str(path))


def test_a_local_fasttext_lid_model_labels_and_filters(tmp_path, capsys):
    """`cc.lang_model`: a local fastText LID file (lid.176.bin's label format) replaces the stopword heuristic;
    its labels and scores land in the metadata, other languages are dropped, a missing file fails clearly."""
    from datatrove.data import Document

    _lid_model(tmp_path / "lid.bin")
    lid = language.LanguageFilter(("en",), str(tmp_path / "lid.bin"))
    en, de = Document(EN, "a"), Document(DE, "b")
    assert lid.filter(en) is True and en.metadata[records.LANG] == "en" and 0.5 < en.metadata[records.LANG_SCORE] <= 1
    assert lid.filter(de) == (False, "wrong_language") and de.metadata[records.LANG] == "de"
    assert "load_model" not in capsys.readouterr().err  # fasttext's stale notice stays out of the logs
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        language.LanguageFilter(("en",), str(tmp_path / "missing.bin")).filter(Document(EN, "c"))


def test_a_replaced_lid_model_is_not_served_from_the_old_run(tmp_path, in_tmp_cwd):
    """The LID model's bytes key the resume folder: the same path with another model reruns the filter."""
    src = tmp_path / "warcs"
    src.mkdir()
    write_warc(src / "CC-A.warc.gz")
    model = tmp_path / "lid.bin"
    cfg = dataclasses.replace(cc.CCConfig(), lang_model=str(model))
    kept = []
    for labels in (("en", "de"), ("de", "en")):  # the second model swaps the labels: the German page passes
        _lid_model(model, labels)
        cc.run(cfg, extract.ExtractConfig(), src, "out")
        kept.append({d.metadata[records.URL] for d in io.iter_docs("out")})
    assert "http://news.cc.test/bridge" in kept[0] - kept[1]
    assert "http://de.cc.test/bruecke" in kept[1] - kept[0]


def test_only_a_lid_model_outside_models_lid_is_unversioned(in_tmp_cwd):
    """DVC versions models/lid/ by content (a cc dep in dvc.yaml); a model elsewhere only by its path,
    which the stage warns about."""
    assert not cc.unversioned_lid_model("")  # no model: the stopword heuristic, nothing to version
    assert not cc.unversioned_lid_model("models/lid/lid.176.bin")
    assert not cc.unversioned_lid_model(str(in_tmp_cwd / "models" / "lid" / "sub" / "lid.bin"))
    assert cc.unversioned_lid_model("/opt/lid.176.bin")
    assert cc.unversioned_lid_model("models/lid.176.bin")
    assert cc.unversioned_lid_model("models/lid")  # the folder itself is no model file


def test_stage_end_to_end_with_truth_wet_and_errors(tmp_path, in_tmp_cwd):
    src = tmp_path / "warcs"
    src.mkdir()
    write_warc(src / "CC-A.warc.gz")
    write_wet(src / "CC-B.warc.wet.gz", {"http://wet.cc.test/a": EN * 3, "http://wet.cc.test/b": "too short"})
    good = (src / "CC-A.warc.gz").read_bytes()
    (src / "CC-C.warc.gz").write_bytes(good[: len(good) // 2])  # truncated copy
    (src / "notes.txt").write_text("not a warc")  # ignored: not a WARC/WET name
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"expect_drop": {"cc": ["http://de.cc.test/bruecke", "http://short.cc.test/"]},
                                 "expect_keep": {"cc": ["http://news.cc.test/bridge", "http://wet.cc.test/a"]}}))
    rep = cc.run(cc.CCConfig(), extract.ExtractConfig(), src, "out", truth).to_dict()
    assert rep["errors"] == {"truncated_record": 1}
    kept = list(io.iter_docs("out"))
    urls = sorted(d.metadata[records.URL] for d in kept)
    assert "http://news.cc.test/bridge" in urls and "http://wet.cc.test/a" in urls
    assert "http://de.cc.test/bruecke" not in urls
    assert rep["dropped"]["wrong_language"] >= 1 and rep["dropped"]["too_short"] >= 2
    assert rep["docs_in"] == rep["docs_out"] + rep["dropped_total"]
    assert rep["truth"]["precision"] == 1.0 and rep["truth"]["recall"] == 1.0
    wet = next(d for d in kept if d.metadata[records.URL] == "http://wet.cc.test/a")
    assert wet.metadata[cc.WARC_TYPE] == "conversion" and wet.text.startswith("The council met")
    html = next(d for d in kept if d.metadata[records.URL] == "http://news.cc.test/bridge")
    assert "<p>" not in html.text and "Home" not in html.text and html.metadata[records.LANG] == "en"
    assert all(not Path(d.metadata[records.WARC_FILE]).is_absolute() for d in kept)
    removed = [d.metadata[records.FILTER_REASON] for d in io.iter_removed("out")]
    assert "wrong_language" in removed
    manifest = json.loads(Path("out/_manifest.json").read_text())
    assert manifest["params"]["cc"]["min_words"] == 50

    shutil.rmtree("data/resume")  # a genuine second run: byte-identical output
    cc.run(cc.CCConfig(), extract.ExtractConfig(), src, "out2", truth)
    for path in sorted(Path("out").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (Path("out2") / path.relative_to("out")).read_bytes(), path


def test_stage_script_runs(tmp_path, in_tmp_cwd):
    Path("params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "in").mkdir()
    write_warc(tmp_path / "in" / "x.warc.gz")
    subprocess.run([sys.executable, str(ROOT / "stages/cc.py"), "--in", str(tmp_path / "in"), "--out", "cc_out"],
                   check=True, capture_output=True)
    report = json.loads(Path("reports/cc.json").read_text())
    assert report["docs_out"] == 2 and report["warc_files"] == 1


def test_real_commoncrawl_files(shared_data, in_tmp_cwd):
    src = in_tmp_cwd / "real"
    src.mkdir()
    for path in sorted((shared_data / "commoncrawl").glob("*/*.warc*.gz")):
        if not path.name.endswith(".wat.gz"):
            shutil.copy(path, src / path.name)
    per_file = {}
    for path in cc.warc_files(src):
        stats = Counter()
        docs = list(cc.iter_warc(path, stat=lambda k, n=1: stats.update({k: n})))
        per_file[path.name] = (len(docs), stats["records"])
        assert not [k for k in stats if k.startswith("error_")], (path.name, stats)
        for doc in docs:  # provenance: every offset leads back to its record
            md = doc["metadata"]
            assert _record_at(path, md[records.WARC_OFFSET]) == (md[records.WARC_RECORD_ID], md[records.URL])
    assert per_file == {"example.warc.gz": (1, 6), "warcfile.warc.gz": (16, 50),
                        "whirlwind.warc.gz": (1, 4), "whirlwind.warc.wet.gz": (1, 2)}
    rep = cc.run(cc.CCConfig(), extract.ExtractConfig(), src, "out").to_dict()
    assert rep["docs_in"] == 19 and rep["errors"] == {}
    # the real crawl head is mostly Chinese/spam and the whirlwind page is Aragonese: nothing English survives
    assert rep["docs_out"] == 0 and rep["dropped"]["wrong_language"] >= 2
    assert rep["languages"]["non_latin"] >= 4  # Chinese/Russian pages, gb2312 found in a <meta> tag


NORMAL = [  # an ordinary page: distinct sentences, several paragraphs
    "The city council approved the budget for the new library on Tuesday evening after a long debate.",
    "Members said the old building had become too small for the number of children who use it every week.",
    "Construction is expected to begin in the spring, and the architects have promised to keep the garden.",
    "Some residents asked whether the reading room would stay open during the work, and the mayor said it would.",
    "A local historian reminded the meeting that the first library in the town was opened by a group of teachers.",
    "The vote was seven to two, with both members who opposed it saying that the roads needed the money more.",
]
# a spam page: one line repeated with a counter (trafilatura drops exactly repeated paragraphs itself)
REPETITIVE = " ".join(f"Best cheap watches online, buy now and save big on watch number {i}." for i in range(30))


def test_gopher_filters_drop_only_the_repetitive_page(tmp_path, in_tmp_cwd):
    src = tmp_path / "warcs"
    src.mkdir()
    pages = [("http://library.cc.test/", "text/html", _html("Library", " ".join(NORMAL)), "200 OK"),
             ("http://watches.cc.test/", "text/html", _html("Watches", REPETITIVE), "200 OK")]
    write_warc(src / "CC-G.warc.gz", pages)
    default = cc.run(cc.CCConfig(), extract.ExtractConfig(), src, "off").to_dict()
    on_cfg = cc.CCConfig(gopher_repetition=True, gopher_quality=True)
    assert [type(s).__name__ for s in cc.build_pipeline(on_cfg, extract.ExtractConfig(), src, "x")][4:6] == [
        "GopherRepetitionFilter", "GopherQualityFilter"]  # after the language filter, datatrove's own
    rep = cc.run(on_cfg, extract.ExtractConfig(), src, "on").to_dict()
    # defaults (GPT-3): both pages kept, no Gopher keys in the report
    assert sorted(d.metadata[records.URL] for d in io.iter_docs("off")) == [p[0] for p in pages]
    assert set(default["dropped"]) == {"too_short", "wrong_language"} and "gopher_rules" not in default
    # Gopher on: only the spam page goes, to removed/gopher_repetition, with the rule that fired
    assert [d.metadata[records.URL] for d in io.iter_docs("on")] == ["http://library.cc.test/"]
    assert rep["dropped"] == {"too_short": 0, "wrong_language": 0, "gopher_repetition": 1, "gopher_quality": 0}
    removed = list(io.iter_docs("on", f"{io.REMOVED}/gopher_repetition"))
    assert [d.metadata[records.URL] for d in removed] == ["http://watches.cc.test/"]
    assert sum(rep["gopher_rules"]["gopher_repetition"].values()) == 1
    assert rep["docs_in"] == rep["docs_out"] + rep["dropped_total"] == 2


def test_gopher_quality_alone_and_offline_tokenizer():
    words = language.RegexWordTokenizer().word_tokenize("Don't stop... it's #1, ok?")
    assert words == ["Don't", "stop", ".", ".", ".", "it's", "#", "1", ",", "ok", "?"]
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter

    flt = GopherQualityFilter(language=language.RegexWordTokenizer())
    assert flt.filter(Document("\n".join(NORMAL), "n")) is True
    keywords = " ".join(f"casino{i} bonus{i} slots{i}" for i in range(40))  # no stopwords at all
    assert flt.filter(Document(keywords, "k")) == (False, "gopher_enough_stop_words")


def test_sample_output_unchanged_with_defaults(tmp_path, in_tmp_cwd):
    """The embedded sample's WARC: defaults build the pre-Gopher 5-step pipeline, and their shards equal
    the dvc-built data/interim/cc when present; turning Gopher on only ever removes documents."""
    sample_warcs = ROOT / "data/raw/sample/cc"
    if not sample_warcs.is_dir():  # a fresh clone: build the embedded sample (a few seconds) instead of skipping
        from pipeline.sample import generator as sample

        sample.build(sample.SampleConfig(), 1337, tmp_path / "sample")
        sample_warcs = tmp_path / "sample" / "cc"
    steps = cc.build_pipeline(cc.CCConfig(), extract.ExtractConfig(), sample_warcs, "x")
    assert [type(s).__name__ for s in steps][2:4] == ["TooShortFilter", "LanguageFilter"] and len(steps) == 5
    base = cc.run(cc.CCConfig(), extract.ExtractConfig(), sample_warcs, "base").to_dict()
    on = cc.run(cc.CCConfig(gopher_repetition=True, gopher_quality=True), extract.ExtractConfig(),
                sample_warcs, "on").to_dict()
    base_ids = [d.id for d in io.iter_docs("base")]
    on_ids = [d.id for d in io.iter_docs("on")]
    assert set(on_ids) <= set(base_ids) and on["docs_in"] == base["docs_in"]
    assert on["dropped_total"] == base["dropped_total"] + len(base_ids) - len(on_ids)
    published = ROOT / "data/interim/cc"
    if (published / "_manifest.json").exists():  # the dvc-built stage output, if present, is the same
        for shard in io.shard_paths("base"):
            assert shard.read_bytes() == (published / shard.relative_to("base")).read_bytes()


def test_untrustworthy_warc_headers_skip_the_record_not_the_file(tmp_path):
    """A bad WARC-Date, an overlong Target-URI or a missing record id skips that record with a reason; the
    records after it are read (the body is drained in bounded chunks to reach them)."""
    good = ("http://news.cc.test/bridge", "text/html", _html("Bridge", EN * 3))
    path = tmp_path / "h.warc.gz"
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, date, extra in [(good[0], "2019-01-20T10:00:00Z", {}), (good[0] + "?d", "yesterday", {}),
                                 ("http://long.cc.test/" + "x" * 3000, "2019-01-20T10:00:00Z", {}),
                                 (good[0] + "?last", "2019-01-20", {})]:
            http = StatusAndHeaders("200 OK", [("Content-Type", good[1])], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=pyio.BytesIO(good[2]),
                                                          http_headers=http, warc_headers_dict={"WARC-Date": date, **extra}))
    stats = Counter()
    docs = list(cc.iter_warc(path, stat=lambda k, n=1: stats.update({k: n})))
    assert [d["metadata"]["url"] for d in docs] == [good[0], good[0] + "?last"]  # a date-only WARC-Date is valid
    assert stats["error_bad_warc_date"] == 1 and stats["error_url_too_long"] == 1 and stats["records"] == 4


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray==2.60.0)")
def test_stage_on_ray_gives_the_local_bytes_and_counts(tmp_path, monkeypatch):
    """executor.kind ray: the WARC reading, extraction and filters run in a Ray worker; the documents, removed
    records and the report's counts (errors come back through datatrove's stats) are the local run's."""
    import ray

    from pipeline.core import executor

    src = tmp_path / "warcs"
    src.mkdir()
    write_warc(src / "CC-A.warc.gz")
    write_wet(src / "CC-B.warc.wet.gz", {"http://wet.cc.test/a": EN * 3, "http://wet.cc.test/b": "too short"})
    good = (src / "CC-A.warc.gz").read_bytes()
    (src / "CC-C.warc.gz").write_bytes(good[: len(good) // 2])  # truncated: an error either way
    outputs, counts = {}, {}
    for kind in ("local", "ray"):
        (tmp_path / kind).mkdir()
        monkeypatch.chdir(tmp_path / kind)  # own data/resume: nothing of the other run is reused
        try:
            rep = cc.run(cc.CCConfig(), extract.ExtractConfig(), src, "out",
                         exec_cfg=executor.ExecutorConfig(kind=kind)).to_dict()
        finally:
            if kind == "ray":
                ray.shutdown()
        counts[kind] = {k: rep[k] for k in ("docs_in", "docs_out", "dropped", "errors")}
        outputs[kind] = {str(p.relative_to(Path("out"))): io.sha256_file(p) for p in sorted(Path("out").rglob("*"))
                         if p.is_file()}
    assert counts["ray"] == counts["local"] and counts["local"]["errors"] == {"truncated_record": 1}
    assert outputs["ray"] == outputs["local"] and "docs/00000.jsonl.zst" in outputs["local"]
