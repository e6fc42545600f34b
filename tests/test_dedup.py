"""MinHash LSH dedup: signature quality, keep rule, determinism, the stage end to end, real books."""
from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from datatrove.data import Document

from pipeline.core import io, params, records
from pipeline.curate import dedup, minhash

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CFG = dedup.DedupConfig()
WORDS = [f"w{i}" for i in range(3000)]


def text(rng: random.Random, n: int = 400) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edit(rng: random.Random, t: str, frac: float) -> str:
    """Replace a fraction of the words: a near-duplicate."""
    words = t.split()
    for i in rng.sample(range(len(words)), int(frac * len(words))):
        words[i] = rng.choice(WORDS)
    return " ".join(words)


def write_docs(folder, docs: list[Document]) -> None:
    with io.doc_writer(folder) as w:
        for d in docs:
            w.write(d, 0)


def doc(source: str, name: str, body: str) -> Document:
    if source == records.BOOKS:
        return Document(text=body, id=records.book_id(name), metadata={records.SOURCE: source, records.SOURCE_FILE: name})
    url = f"http://{name}/"
    make = records.webtext_id if source == records.WEBTEXT else records.cc_id
    return Document(text=body, id=make(url), metadata={records.SOURCE: source, records.URL: url})


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["dedup"]
    assert params.build(dedup.DedupConfig, section) == dedup.DedupConfig()


def test_signatures_estimate_jaccard():
    rng = random.Random(0)
    base = [text(rng) for _ in range(20)]
    pairs = [(t, edit(rng, t, f)) for t, f in zip(base, np.linspace(0.02, 0.4, 20))]
    sig = minhash.signatures([x for p in pairs for x in p], CFG, seed=1)
    errors = []
    for k, (a, b) in enumerate(pairs):
        true = minhash.jaccard(minhash.shingle_set(a, 5), minhash.shingle_set(b, 5))
        est = (sig[2 * k] == sig[2 * k + 1]).mean()
        errors.append(abs(est - true))
    # 128 permutations: standard error <= 0.045; allow 3 sigma per pair, and an unbiased mean
    assert max(errors) < 0.14 and np.mean(errors) < 0.05, errors
    unrelated = (sig[0] == sig[2]).mean()
    assert unrelated < 0.05


def test_identical_texts_identical_signatures_and_batching_is_neutral():
    rng = random.Random(1)
    t = text(rng)
    others = [text(rng, 50) for _ in range(5)]
    one = minhash.signatures([t], CFG, seed=3, chunk=64)
    many = minhash.signatures(others + [t, "  " + t.replace(" ", "\n ")], CFG, seed=3, chunk=64)
    assert (one[0] == many[5]).all() and (many[5] == many[6]).all()  # whitespace does not matter
    assert not (minhash.signatures([t], CFG, seed=4)[0] == one[0]).all()  # the seed picks the permutations
    assert not minhash.has_words(minhash.signatures(["", "?!"], CFG))[:].any()


def test_optimal_bands_match_datasketch():
    from datasketch.lsh import _optimal_param

    for threshold, num_perm in [(0.8, 128), (0.5, 128), (0.7, 128), (0.7, 64)]:
        assert minhash.optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def corpus(seed: int = 0):
    rng = random.Random(seed)
    web = [doc(records.WEBTEXT, f"news{i}.test", text(rng)) for i in range(6)]
    books = [doc(records.BOOKS, f"b{i}.txt", text(rng, 800)) for i in range(3)]
    cc = [doc(records.CC, f"page{i}.cc.test", text(rng)) for i in range(6)]
    cc.append(doc(records.CC, "copy.cc.test", edit(rng, web[0].text, 0.01)))    # crawl copy of a WebText page
    cc.append(doc(records.CC, "exact.cc.test", web[1].text + "\n"))               # exact crawl copy
    books.append(doc(records.BOOKS, "b0-copy.txt", books[0].text))                 # exact book duplicate
    web.append(doc(records.WEBTEXT, "mirror.test", edit(rng, web[2].text, 0.01)))  # within-source near-dup
    return {records.WEBTEXT: web, records.BOOKS: books, records.CC: cc}


def decide_all(docs: list[Document], cfg=CFG) -> dict:
    sig = minhash.signatures([d.text for d in docs], cfg, seed=7)
    return dedup.decide([d.id for d in docs], [minhash.text_hash(d.text) for d in docs], sig, minhash.has_words(sig), cfg)


def test_keep_rule_priority_and_shuffle_invariance():
    docs = [d for v in corpus().values() for d in v]
    decisions = decide_all(docs)
    by_name = {records.natural_key(d.metadata): d.id for d in docs}
    assert decisions[by_name["http://copy.cc.test/"]]["reason"] == dedup.NEAR
    assert decisions[by_name["http://copy.cc.test/"]]["cluster_id"] == by_name["http://news0.test/"]
    assert decisions[by_name["http://news0.test/"]]["reason"] is None
    assert decisions[by_name["http://exact.cc.test/"]]["reason"] == dedup.EXACT
    book_pair = sorted([by_name["b0.txt"], by_name["b0-copy.txt"]])  # same source: the smaller id wins
    assert decisions[book_pair[0]]["reason"] is None and decisions[book_pair[1]]["reason"] == dedup.EXACT
    mirror = sorted([by_name["http://mirror.test/"], by_name["http://news2.test/"]])
    assert decisions[mirror[1]]["reason"] == dedup.NEAR and decisions[mirror[1]]["cluster_size"] == 2
    assert sum(1 for d in decisions.values() if d["reason"]) == 4
    for seed in range(3):
        shuffled = docs[:]
        random.Random(seed).shuffle(shuffled)
        assert decide_all(shuffled) == decisions


def test_threshold_changes_results():
    rng = random.Random(5)
    base = text(rng)
    docs = [doc(records.CC, "a.test", base), doc(records.CC, "b.test", edit(rng, base, 0.05))]
    loose = decide_all(docs, dedup.DedupConfig(threshold=0.4))
    strict = decide_all(docs, dedup.DedupConfig(threshold=0.9))
    assert sum(1 for d in loose.values() if d["reason"]) == 1
    assert sum(1 for d in strict.values() if d["reason"]) == 0


def test_stage_end_to_end(in_tmp_cwd, monkeypatch):
    inputs = {}
    for source, docs in corpus().items():
        inputs[source] = in_tmp_cwd / "in" / source
        write_docs(inputs[source], docs)
    labels = {"expect_drop": {"dedup": ["http://copy.cc.test/", "http://page0.cc.test/"]},
              "expect_keep": {"dedup": ["http://news0.test/", "http://page1.cc.test/"]},
              "near_duplicates": [["http://news0.test/", "http://copy.cc.test/"], ["b0.txt", "b1.txt"]]}
    io.write_json("truth.json", labels)
    rep = dedup.run(CFG, 1337, inputs, "out", truth_path="truth.json").to_dict()
    assert rep["truth"]["true_drops"] == 1 and rep["truth"]["missed_drops"] == 1  # page0 is unique
    assert rep["truth"]["precision"] == 1.0 and rep["truth"]["recall"] == 0.5
    assert rep["truth"]["near_duplicate_pairs"]["found"] == 1 and rep["truth"]["near_duplicate_pairs"]["seen"] == 2
    assert rep["docs_in"] == 19 and rep["docs_out"] == 15
    assert rep["dropped"] == {"duplicate": 2, "exact_duplicate": 2}
    assert rep["cross_source_removals"] == {"cc_dup_of_webtext": 2}
    assert rep["per_source"]["cc"]["docs_out"] == 6
    kept_cc = list(io.iter_docs("out/cc"))
    assert len(kept_cc) == 6 and all(d.metadata[records.DEDUP_CLUSTER_SIZE] == 1 for d in kept_cc)
    removed = list(io.iter_docs("out/cc", "removed/duplicate"))
    assert len(removed) == 1 and removed[0].metadata[records.DEDUP_CLUSTER_ID].startswith("webtext/")
    clusters = pq.read_table("out/clusters.parquet").to_pylist()
    assert len(clusters) == 8 and sum(r["kept"] for r in clusters) == 4
    near = [r for r in clusters if r["reason"] == dedup.NEAR]
    assert all(abs(r["est_jaccard_to_kept"] - r["true_jaccard_to_kept"]) < 0.15 for r in near)
    # the true Jaccard (from the filter pass's shingle sets) is that of the two texts' shingle sets, exactly
    texts = {d.id: d.text for docs in corpus().values() for d in docs}
    for r in clusters:
        a, b = (minhash.shingle_set(texts[r[k]], CFG.ngram) for k in ("doc_id", "cluster_id"))
        assert r["true_jaccard_to_kept"] == round(minhash.jaccard(a, b), 4), r
    assert {r["true_jaccard_to_kept"] == 1.0 for r in clusters} == {True, False}
    assert rep["examples"][0]["reason"] == dedup.NEAR and len(rep["examples"]) == 4
    for e in rep["examples"]:
        assert (e["removed_text"], e["kept_text"]) == (texts[e["removed_id"]][:200], texts[e["kept_id"]][:200])
    first = {p: io.sha256_file(p) for p in sorted((in_tmp_cwd / "out").rglob("*")) if p.is_file()}
    # a rerun (resumed work dir) gives byte-identical outputs, also reading the sets with one file open at a time
    monkeypatch.setattr(dedup.dedup_report, "OPEN_FILES", 1)
    dedup.run(CFG, 1337, inputs, "out", truth_path="truth.json")
    assert first == {p: io.sha256_file(p) for p in sorted((in_tmp_cwd / "out").rglob("*")) if p.is_file()}


def epub_text(path) -> str:
    import html
    import re

    import ebooklib
    from ebooklib import epub

    items = epub.read_epub(str(path)).get_items_of_type(ebooklib.ITEM_DOCUMENT)
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", " ", it.get_content().decode("utf-8"))) for it in items)


def test_real_books(shared_data):
    """Real Gutenberg files. pg4657/pg4658, listed in SOURCES.md as two editions of one book, are in
    fact Volumes I and II of Burton's Pilgrimage (true 5-gram Jaccard 0.01): as whole books they must
    not cluster; chunked, only their shared Gutenberg licence tails do. The real near-duplicate pair
    is Alice as plain text (11-0.txt) and as EPUB (pg11.epub): true Jaccard 0.96, so they cluster."""
    books = shared_data / "books"
    vol1, vol2 = ((books / n).read_text(encoding="utf-8") for n in ("pg4657.txt", "pg4658.txt"))
    alice_txt, alice_epub = (books / "11-0.txt").read_text(encoding="utf-8"), epub_text(books / "epub" / "pg11.epub")
    docs = [doc(records.BOOKS, n, t) for n, t in
            [("pg4657.txt", vol1), ("pg4658.txt", vol2), ("11-0.txt", alice_txt), ("pg11.epub", alice_epub)]]
    decisions = decide_all(docs)
    assert decisions[docs[0].id]["cluster_size"] == decisions[docs[1].id]["cluster_size"] == 1
    assert decisions[docs[2].id]["cluster_id"] == decisions[docs[3].id]["cluster_id"]
    true = minhash.jaccard(minhash.shingle_set(alice_txt, 5), minhash.shingle_set(alice_epub, 5))
    removed = [decisions[d.id] for d in docs[2:] if decisions[d.id]["reason"]]
    assert true > 0.9 and len(removed) == 1 and abs(removed[0]["est_jaccard"] - true) < 0.06
    chunks = [doc(records.BOOKS, f"{n}#{k}", t[k:k + 20_000]) for n, t in (("v1", vol1), ("v2", vol2))
              for k in range(0, len(t), 20_000)]
    chunk_decisions = decide_all(chunks)
    clustered = [d for d in chunks if chunk_decisions[d.id]["cluster_size"] > 1]
    tails = {chunks[len(vol1[::20_000]) - 1].id, chunks[-1].id}
    assert {d.id for d in clustered} == tails  # the licence text, nothing of the two volumes' bodies


def test_missing_source_is_an_error_not_a_crash(in_tmp_cwd):
    write_docs(in_tmp_cwd / "in" / "books", corpus()[records.BOOKS])
    rep = dedup.run(CFG, 1, {"books": "in/books", "cc": "in/nowhere"}, "out").to_dict()
    assert rep["errors"] == {"missing_input": 1} and rep["docs_out"] == 3
    assert sorted(p.name for p in (in_tmp_cwd / "out").iterdir()) == ["_manifest.json", "books", "clusters.parquet"]


def test_shingle_sets_refuse_a_shard_that_changed_since_the_signature_pass(tmp_path):
    """The filter pass's ShingleSets maps documents to the signature pass's rows by position: a shard whose
    documents differ (changed under a running stage) fails loudly instead of misplacing sets."""
    import pyarrow as pa

    from pipeline.curate.dedup_steps import ShingleSets

    (tmp_path / "dec").mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "cluster_size": pa.array([2, 1], pa.int64())}),
                   tmp_path / "dec" / "00000.parquet")
    step = ShingleSets(tmp_path / "dec", tmp_path / "sets", CFG.ngram)
    docs = [Document(text="one two three four five six", id="a"), Document(text="x y z", id="b")]
    assert [d.id for d in step.run(iter(docs))] == ["a", "b"]
    index = pq.read_table(tmp_path / "sets" / "00000.sets.parquet").to_pylist()
    assert [(r["row"], r["start"], r["head"]) for r in index] == [(0, 0, docs[0].text)]  # only the clustered one
    sets = np.fromfile(tmp_path / "sets" / "00000.sets.bin", dtype=np.uint64)
    assert np.array_equal(sets, minhash.shingle_set(docs[0].text, CFG.ngram)) and index[0]["length"] == len(sets)
    with pytest.raises(RuntimeError, match="inputs changed"):
        list(step.run(iter(docs[::-1])))


def test_inputs_without_documents_give_an_empty_output(in_tmp_cwd):
    """No source holds a document (an empty folder, a missing one): no filter task runs, so no shingle sets
    exist; the stage still publishes an empty result and reports the missing input."""
    (in_tmp_cwd / "in" / "cc").mkdir(parents=True)
    rep = dedup.run(CFG, 1337, {records.CC: in_tmp_cwd / "in" / "cc", records.BOOKS: in_tmp_cwd / "absent"},
                    "out").to_dict()
    assert (rep["docs_in"], rep["docs_out"], rep["errors"]) == (0, 0, {"missing_input": 1})
    assert pq.read_table("out/clusters.parquet").num_rows == 0
