"""pipeline/lm/tokens.py: shard header checks, the tokenize stage (eot placement, doc index, meta) and its reader API."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import io, report
from pipeline.lm import bpe, tokens
from test_bpe import synth_texts, write_mix  # noqa: E402  (tests/ is on sys.path under pytest's rootdir rules)

ROOT = Path(__file__).resolve().parents[1]
CFG = tokens.TokenizeConfig()


def run_tokenize(workdir: Path, mix: Path, tok_dir: Path, out: Path, **kwargs) -> tuple[dict, dict]:
    cwd = os.getcwd()
    os.chdir(workdir)  # data/resume/ is relative to the cwd
    try:
        rep = report.StageReport("tokenize")
        meta = tokens.tokenize(mix, bpe.encoder(tok_dir, mix / "train"), out, CFG, rep, **kwargs)
        return meta, rep.to_dict()
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A mix fixture (3 sources, unicode text, one doc longer than others), a tokenizer, a tokens folder."""
    root = tmp_path_factory.mktemp("tok")
    train = synth_texts(45, seed=1) + ["a single word"]
    val = synth_texts(6, seed=2) + ["Zürich 東京 🙂 naïve — end"]
    mix = write_mix(root / "mix", {"train": train, "val": val}, repeats=2)
    bpe.save(bpe.train(iter(train), bpe.TokenizerConfig(vocab_size=512, min_frequency=2)), root / "tok")
    meta, rep = run_tokenize(root, mix, root / "tok", root / "tokens")
    docs = {s: [(d.id, d.text, d.metadata["source"], d.metadata.get("epoch", 0)) for d in io.iter_docs(mix / s)]
            for s in ("train", "val")}
    return {"root": root, "mix": mix, "tok": root / "tok", "out": root / "tokens", "meta": meta, "rep": rep, "docs": docs}


# --- shard format ------------------------------------------------------------------------------------
def test_shard_header_roundtrip(tmp_path):
    toks = np.array([5, 0, 65535, 7, 0], dtype=np.uint16)
    tokens.write_shard(tmp_path / "train_00000.bin", toks, vocab_size=65536, eot_id=0)
    assert tokens.read_header(tmp_path / "train_00000.bin") == {"n_tokens": 5, "vocab_size": 65536, "eot_id": 0}
    assert np.array_equal(tokens.read_shard(tmp_path / "train_00000.bin"), toks)
    with pytest.raises(tokens.ShardError):
        tokens.write_shard(tmp_path / "x.bin", toks, vocab_size=70000, eot_id=0)


def test_corrupt_shards_fail_loudly(tmp_path):
    path = tmp_path / "s.bin"
    tokens.write_shard(path, np.arange(100, dtype=np.uint16), vocab_size=512, eot_id=0)
    good = path.read_bytes()
    path.write_bytes(good[:-10])  # truncated
    with pytest.raises(tokens.ShardError, match="header says 100 tokens"):
        tokens.read_shard(path)
    path.write_bytes(b"\x00\x00\x00\x00" + good[4:])  # wrong magic
    with pytest.raises(tokens.ShardError, match="bad magic"):
        tokens.read_header(path)
    header = np.frombuffer(good[:8], dtype=np.int32).copy()
    header[1] = 99
    path.write_bytes(header.tobytes() + good[8:])  # unknown version
    with pytest.raises(tokens.ShardError, match="version 99"):
        tokens.read_shard(path)
    path.write_bytes(good[:100])  # shorter than a header
    with pytest.raises(tokens.ShardError):
        tokens.read_header(path)


def test_config_defaults_match_params_yaml():
    assert dataclasses.asdict(tokens.TokenizeConfig()) == yaml.safe_load((ROOT / "params.yaml").read_text())["tokenize"]


def test_unsupported_dtype_is_refused(built, tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        tokens.tokenize(built["mix"], bpe.encoder(built["tok"]), tmp_path / "o", tokens.TokenizeConfig(dtype="uint32"),
                        report.StageReport("tokenize"))


def test_no_stage_script_shadows_a_stdlib_module():
    """`python stages/x.py` puts stages/ first on sys.path: stages/tokenize.py broke `import inspect` everywhere."""
    clash = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem in sys.stdlib_module_names)
    assert not clash


# --- the tokenize stage ----------------------------------------------------------------------------
def test_eot_after_every_document_and_nowhere_else(built):
    meta, out = built["meta"], built["out"]
    eot = meta["eot_id"]
    for split in ("train", "val"):
        arr = np.asarray(tokens.load_split(out, split))
        rows = [r for r in tokens.load_doc_index(out) if r["split"] == split]
        assert len(arr) == meta["splits"][split]["tokens"] == rows[-1]["end"] + 1
        assert [r["end"] for r in rows] == sorted(np.flatnonzero(arr == eot).tolist())
        assert rows[0]["start"] == 0 and all(a["end"] + 1 == b["start"] for a, b in zip(rows, rows[1:]))


def test_doc_index_maps_every_range_back_to_its_text(built):
    tok, out = bpe.load(built["tok"]), built["out"]
    index = tokens.load_doc_index(out)
    assert set(index[0]) == set(tokens.INDEX_COLUMNS)
    for split, docs in built["docs"].items():
        arr = tokens.load_split(out, split)
        rows = [r for r in index if r["split"] == split]
        assert [(r["doc_id"], r["source"], r["epoch"]) for r in rows] == [(i, s, e) for i, _, s, e in docs]
        for row, (_, text, _, _) in zip(rows, docs):
            assert tok.decode(arr[row["start"]:row["end"]].tolist()) == text
            assert row["shard"] == f"{split}_00000.bin"
        for row in rows[::3]:
            for pos in (row["start"], (row["start"] + row["end"]) // 2, row["end"]):
                hit = tokens.doc_for_position(out, split, pos)
                assert hit["doc_id"] == row["doc_id"] and hit["offset"] == pos - row["start"]
                assert hit["is_eot"] == (pos == row["end"])
    with pytest.raises(IndexError):
        tokens.doc_for_position(out, "val", len(tokens.load_split(out, "val")))


def test_meta_counts_and_unigram_entropy(built):
    meta, rep, out = built["meta"], built["rep"], built["out"]
    assert tokens.load_meta(out) == meta
    assert meta["tokenizer_sha256"] == bpe.tokenizer_sha(built["tok"]) and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == tokens.read_header(out / "train_00000.bin")["vocab_size"]
    assert meta["encoder"] == "tiktoken"
    for split in ("train", "val"):
        assert sum(meta["tokens_per_source"][split].values()) == meta["splits"][split]["tokens"]
        assert meta["splits"][split]["docs"] == len(built["docs"][split])
    counts = Counter(tokens.load_split(out, "train").tolist())
    total = sum(counts.values())
    h = -sum(c / total * math.log(c / total) for c in counts.values())
    assert meta["unigram_entropy_nats"] == pytest.approx(h, abs=1e-5)
    assert meta["unigram_entropy_bits"] == pytest.approx(h / math.log(2), abs=1e-5)
    assert rep["docs_in"] == rep["docs_out"] == 55 and rep["tokens"]["val"] == meta["splits"]["val"]["tokens"]
    assert rep["tokens_per_s"] > 0 and rep["bytes_per_token"] > 1


def test_shards_are_capped_and_documents_never_straddle(built, tmp_path):
    meta, _ = run_tokenize(tmp_path, built["mix"], built["tok"], tmp_path / "small", max_shard_tokens=2000)
    small = tmp_path / "small"
    assert len(meta["splits"]["train"]["shards"]) > 3
    for name in meta["splits"]["train"]["shards"]:
        assert tokens.read_header(small / name)["n_tokens"] <= 2000
    assert np.array_equal(tokens.load_split(small, "train"), tokens.load_split(built["out"], "train"))
    for row in tokens.load_doc_index(small):
        shard = tokens.read_shard(small / row["shard"])
        n = row["end"] - row["start"]
        assert shard[row["shard_start"] + n] == meta["eot_id"]  # the doc and its eot sit inside its shard
    mid = meta["splits"]["train"]["tokens"] - 5
    assert tokens.doc_for_position(small, "train", mid)["doc_id"] == built["docs"]["train"][-1][0]


def test_missing_split_is_written_empty(built, tmp_path):
    mix = write_mix(tmp_path / "mix", {"train": synth_texts(3, seed=4)})
    meta, rep = run_tokenize(tmp_path, mix, built["tok"], tmp_path / "o")
    assert meta["splits"]["val"] == {"shards": ["val_00000.bin"], "tokens": 0, "docs": 0}
    assert len(tokens.load_split(tmp_path / "o", "val")) == 0 and rep["docs_out"] == 3
    with pytest.raises(IndexError):
        tokens.doc_for_position(tmp_path / "o", "val", 0)


def test_two_runs_give_identical_bytes(built, tmp_path):
    run_tokenize(tmp_path, built["mix"], built["tok"], tmp_path / "again")
    files = sorted(p.name for p in built["out"].iterdir())
    assert files == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in files:
        assert (built["out"] / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_stage_scripts_run_as_dvc_yaml_says(built, tmp_path):
    """Both stage scripts, run by path from a project-shaped cwd, exactly as their dvc.yaml cmd."""
    (tmp_path / "data" / "processed").mkdir(parents=True)
    shutil.copytree(built["mix"], tmp_path / "data" / "processed" / "mix")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run(str(ROOT / "stages/tokenizer.py"), "--in", "data/processed/mix", "--out", "models/tokenizer")
    run(str(ROOT / "stages/tokens.py"), "--in", "data/processed/mix", "--tokenizer", "models/tokenizer",
        "--out", "data/processed/tokens")
    meta = tokens.load_meta(tmp_path / "data/processed/tokens")
    assert meta["tokenizer_sha256"] == io.read_json(tmp_path / "models/tokenizer/tokenizer_meta.json")["sha256"]
    assert io.read_json(tmp_path / "reports/tokenizer.json")["training_docs"] == len(built["docs"]["train"]) - 2
    assert io.read_json(tmp_path / "reports/tokenize.json")["tokens"] == {
        s: meta["splits"][s]["tokens"] for s in ("train", "val")}
