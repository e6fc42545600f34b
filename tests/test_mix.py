"""The mixture: shares match the weights, the validation split is keyed and disjoint from training."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import yaml
from datatrove.data import Document

from pipeline.core import io, params, records
from pipeline.curate import mix

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def make_input(root, sizes: dict[str, tuple[int, int]], shuffle_seed: int | None = None) -> None:
    """A dedup-like folder: per source, n documents of roughly `chars` characters each."""
    rng = random.Random(0)
    for source, (n, chars) in sizes.items():
        docs = [Document(text="x " * (chars // 2 + rng.randint(-chars // 4, chars // 4)),
                         id=f"{source}/{i:04d}", metadata={records.SOURCE: source}) for i in range(n)]
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(docs)
        with io.doc_writer(root / source) as w:
            for d in docs:
                w.write(d, 0)


SIZES = {records.CC: (200, 1000), records.WEBTEXT: (40, 1500), records.BOOKS: (12, 4000)}


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["mix"]
    assert params.build(mix.MixConfig, section) == mix.MixConfig()


def test_plan_upsamples_all_but_the_largest_relative_source():
    chars = {"a": [(f"a{i}", 100) for i in range(60)], "b": [(f"b{i}", 100) for i in range(10)]}
    copies = mix.plan(chars, {"a": 0.5, "b": 0.5}, seed=1)
    assert Counter(k for _, k in copies["a"]) == {0: 60}  # a: 6000 chars at weight 0.5, used once
    assert Counter(k for _, k in copies["b"]) == {k: 10 for k in range(6)}  # b: 6 whole epochs
    copies = mix.plan(chars, {"a": 0.8, "b": 0.2}, seed=1)  # b needs 1500 chars: 1 epoch + 5 of its docs
    assert len(copies["b"]) == 15 and Counter(k for _, k in copies["b"])[1] == 5
    assert mix.plan(chars, {"a": 1.0}, seed=1)["b"] == []


def test_stage_shares_and_split(in_tmp_cwd):
    make_input(in_tmp_cwd / "dedup", SIZES)
    rep = mix.run(mix.MixConfig(), 1337, "dedup", "mix").to_dict()
    for source, v in rep["per_source"].items():
        assert abs(v["achieved_share"] - v["target_share"]) < 0.02, (source, v)
    assert rep["per_source"]["cc"]["epochs"] == pytest.approx(1.0, abs=0.01)  # the largest relative source
    assert rep["per_source"]["books"]["epochs"] > 1.1 and rep["per_source"]["webtext"]["epochs"] > 1.1
    train = list(io.iter_docs("mix/train"))
    val = list(io.iter_docs("mix/val"))
    assert {d.id for d in train}.isdisjoint({d.id for d in val})
    assert 10 <= len(val) <= 40 and all(d.metadata[records.SPLIT] == "val" for d in val)
    assert all(d.metadata[records.SPLIT] == "train" for d in train)
    assert len({(d.id, d.metadata[mix.EPOCH]) for d in train}) == len(train)  # each copy once
    chars = Counter()
    for d in train:
        chars[records.source_of(d.id)] += len(d.text)
    assert chars["books"] / sum(chars.values()) == pytest.approx(0.18, abs=0.02)
    assert rep["val_docs"] == len(val) and rep["train_docs"] == len(train)
    assert rep["over_repeated_sources"] == {}


def test_split_and_output_stable_under_reordering(tmp_path, monkeypatch):
    outs = []
    for k, order in enumerate([None, 3]):
        root = tmp_path / f"run{k}"
        root.mkdir()
        monkeypatch.chdir(root)
        make_input(root / "dedup", SIZES, shuffle_seed=order)
        mix.run(mix.MixConfig(), 1337, "dedup", "mix")
        outs.append({p.relative_to(root): io.sha256_file(p) for p in sorted((root / "mix").rglob("*.zst"))})
    assert outs[0] == outs[1]  # shuffled inputs: byte-identical train and val shards
    assert mix.is_val(1337, "cc/0001", 0.1) == mix.is_val(1337, "cc/0001", 0.1)
    assert sum(mix.is_val(1, f"d{i}", 0.1) for i in range(5000)) == pytest.approx(500, abs=70)


def test_real_books_and_articles(shared_data, in_tmp_cwd):
    """Real text: Gutenberg books (few, long) against benchmark articles (many, short), weights 0.5/0.5."""
    import json

    books = [Document(text=p.read_text(encoding="utf-8"), id=records.book_id(p.name),
                      metadata={records.SOURCE: records.BOOKS, records.SOURCE_FILE: p.name})
             for p in sorted((shared_data / "books").glob("*.txt"))[:4]]
    truth = json.loads((shared_data / "web" / "article-extraction-benchmark" / "ground-truth.json").read_text())
    web = [Document(text=v["articleBody"], id=records.webtext_id(v["url"]),
                    metadata={records.SOURCE: records.WEBTEXT, records.URL: v["url"]})
           for _, v in sorted(truth.items()) if v.get("articleBody")]
    for source, docs in ((records.BOOKS, books), (records.WEBTEXT, web)):
        with io.doc_writer(in_tmp_cwd / "dedup" / source) as w:
            for d in docs:
                w.write(d, 0)
    cfg = mix.MixConfig(weights={records.BOOKS: 0.5, records.WEBTEXT: 0.5}, val_fraction=0.1)
    rep = mix.run(cfg, 1337, "dedup", "mix").to_dict()
    assert rep["docs_in"] == len(books) + len(web)
    assert rep["max_share_error"] < 0.05, rep["per_source"]
    assert rep["per_source"]["webtext"]["epochs"] > 2  # 181 short articles repeated to match 4 books
    assert rep["over_repeated_sources"] == {s: v["epochs"] for s, v in rep["per_source"].items() if v["epochs"] > 10}
    val_ids = {d.id for d in io.iter_docs("mix/val")}
    assert val_ids and val_ids.isdisjoint(d.id for d in io.iter_docs("mix/train"))


def test_max_epochs_caps_repeats_and_never_cuts_a_source():
    chars = {"big": [(f"b{i}", 100) for i in range(100)], "small": [(f"s{i}", 100) for i in range(2)]}
    uncapped = mix.plan(chars, {"big": 0.5, "small": 0.5}, seed=1)
    assert max(e for _, e in uncapped["small"]) + 1 == 50  # 200 chars repeated to match 10,000
    capped = mix.plan(chars, {"big": 0.5, "small": 0.5}, seed=1, max_epochs=3.0)
    assert max(e for _, e in capped["small"]) + 1 == 3
    assert len(capped["small"]) == 6
    assert len(capped["big"]) == 100  # every document of the largest source is still used once
