"""Dedup decisions are frozen: the signatures, exact keys and decisions of a fixed corpus equal those the
pre-vectorisation code (commit 98172af) computed, stored in tests/fixtures/dedup_decisions.json.

Speed and memory work on minhash/dedup must not change a decision (CONTEXT rule: same params + inputs ->
same bytes). The corpus covers what the hashing treats specially: case, ASCII and Unicode punctuation,
accents, texts shorter than a shingle, wordless texts (not empty ones: datatrove's reader skips those), a text longer than one hashing batch,
exact copies with other whitespace, near-copies at 1-30% word edits, and documents of three sources.
Regenerate only for an intended change: `python tests/test_dedup_decisions.py --write`.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core import io, records  # noqa: E402
from pipeline.curate import dedup, minhash  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "dedup_decisions.json"
SEED = 11
THRESHOLDS = (0.5, 0.7, 0.8)
VOCAB = ([f"w{i}" for i in range(1500)] + ["The", "THE", "the", "café", "naïve", "Zürich", "日本語", "don't",
                                           "“quoted”", "dash—dash", "a–b", "x,y", "(paren)", "end.", "42", "3.14"])
SEPS = [" "] * 12 + ["\n", "\t", "  ", " \n\n ", ", ", "; ", " — ", " … ", "\u00a0", "!? "]


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(VOCAB) + rng.choice(SEPS) for _ in range(n)).strip()


def _edit(rng: random.Random, t: str, frac: float) -> str:
    words = t.split()
    for pos in sorted(rng.sample(range(len(words)), max(1, int(frac * len(words)))), reverse=True):
        op = rng.random()
        if op < 1 / 3:
            words[pos] = rng.choice(VOCAB)
        elif op < 2 / 3:
            words.insert(pos, rng.choice(VOCAB))
        else:
            del words[pos]
    return " ".join(words)


def fixture_corpus() -> list[tuple[str, str]]:
    """(doc id, text) pairs, in a shuffled order."""
    rng = random.Random(SEED)
    texts = [_text(rng, rng.choice([3, 4, 5, 6, 30, 200, 800, 2000])) for _ in range(160)]
    texts += ["   ", "?!", "—", "one", "One two three four", "ONE two three four"]
    texts.append(_text(rng, 60_000))  # longer than one hashing batch (batch_bytes)
    base = [t for t in texts if len(t.split()) >= 30]
    for k in range(120):
        texts.append(_edit(rng, rng.choice(base), (0.01, 0.03, 0.05, 0.1, 0.2, 0.3)[k % 6]))
    for k in range(20):
        t = rng.choice(base)
        texts.append("  " + t.replace(" ", "\n ") if k % 2 else t)
    out = []
    for k, t in enumerate(texts):
        source = records.SOURCES[k % 3]
        out.append((f"{source}/{hashlib.sha256(str(k).encode()).hexdigest()[:16]}", t))
    rng.shuffle(out)
    return out


def compute() -> dict:
    corpus = fixture_corpus()
    ids, texts = [d for d, _ in corpus], [t for _, t in corpus]
    out = {"thresholds": {}}
    for threshold in THRESHOLDS:
        cfg = dedup.DedupConfig(threshold=threshold)
        exact: list[str] = []
        sig = minhash.signatures(texts, cfg, seed=SEED, exact=exact)
        out["signatures_sha256"] = hashlib.sha256(np.ascontiguousarray(sig).tobytes()).hexdigest()
        out["exact_keys"] = exact
        out["thresholds"][str(threshold)] = dedup.decide(ids, exact, sig, minhash.has_words(sig), cfg)
    return out


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(FIXTURE.read_text())


def test_signatures_and_exact_keys_unchanged(expected):
    corpus = fixture_corpus()
    texts = [t for _, t in corpus]
    exact: list[str] = []
    sig = minhash.signatures(texts, dedup.DedupConfig(), seed=SEED, exact=exact)
    assert exact == expected["exact_keys"]
    assert minhash.text_hashes(texts) == expected["exact_keys"]
    assert hashlib.sha256(np.ascontiguousarray(sig).tobytes()).hexdigest() == expected["signatures_sha256"]


def test_batching_is_neutral(expected):
    """Empty and wordless texts anywhere in a hashing batch (first, last, in runs) change no other text's
    key or signature: all at once, one by one and in small batches give the fixture's values."""
    corpus = fixture_corpus()
    key = dict(zip([t for _, t in corpus], expected["exact_keys"]))
    rng = random.Random(3)
    texts = [rng.choice([t for _, t in corpus][:60] + ["", " ", "\t", "?!"]) for _ in range(150)] + ["", " "]
    cfg = dedup.DedupConfig()
    whole, exact = minhash.signatures(texts, cfg, seed=SEED), []
    for batch_bytes in (1, 5_000):
        assert minhash.text_hashes(texts, batch_bytes=batch_bytes) == [minhash.text_hash(t) for t in texts]
        assert (minhash.signatures(texts, cfg, seed=SEED, batch_bytes=batch_bytes, exact=exact) == whole).all()
    one = np.concatenate([minhash.signatures([t], cfg, seed=SEED) for t in texts])
    assert (one == whole).all() and exact == 2 * minhash.text_hashes(texts)
    assert [key[t] for t in texts if t in key] == [k for t, k in zip(texts, exact) if t in key]


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_in_memory_decisions_unchanged(expected, threshold):
    corpus = fixture_corpus()
    ids, texts = [d for d, _ in corpus], [t for _, t in corpus]
    cfg = dedup.DedupConfig(threshold=threshold)
    sig = minhash.signatures(texts, cfg, seed=SEED)
    got = dedup.decide(ids, minhash.text_hashes(texts), sig, minhash.has_words(sig), cfg)
    want = expected["thresholds"][str(threshold)]
    assert sum(1 for d in want.values() if d["reason"] == dedup.NEAR) > 20  # the fixture has near-dups to find
    assert got == want


VOLATILE = ("seconds", "docs_per_s", "started", "finished", "git_rev", "versions", "datatrove", "time")


def stable(obj):
    """A stage report without its timings and provenance (they change from run to run)."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if not any(w in k for w in VOLATILE)}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def run_stage(root: Path) -> tuple[dict, dict, dict]:
    """The fixture corpus through the dedup stage (threshold 0.7, two shards per source, 2 workers, with a
    truth file): (decisions read back from the outputs, sha256 of every output file, stable report)."""
    from datatrove.data import Document

    from pipeline.core import executor

    corpus = fixture_corpus()
    inputs = {}
    for source in records.SOURCES:
        inputs[source] = root / "in" / source
        docs = [Document(text=t, id=d, metadata={records.SOURCE: source, records.URL: f"http://{d}/"})
                for d, t in corpus if records.source_of(d) == source]
        for shard in range(2):  # two shards per source: the stage merges across shards
            with io.doc_writer(inputs[source]) as w:
                for d in docs[shard::2]:
                    w.write(d, shard)
    keys = [f"http://{d}/" for d, _ in corpus]
    io.write_json(root / "truth.json", {"expect_drop": {"dedup": keys[::7]}, "expect_keep": {"dedup": keys[3::7]},
                                        "near_duplicates": [keys[k:k + 2] for k in range(0, 60, 2)]})
    rep = dedup.run(dedup.DedupConfig(threshold=0.7), SEED, inputs, root / "out", truth_path=root / "truth.json",
                    ecfg=executor.ExecutorConfig(workers=2)).to_dict()
    got = {}
    for source in records.SOURCES:
        for doc in list(io.iter_docs(root / "out" / source)) + list(io.iter_removed(root / "out" / source)):
            got[doc.id] = [doc.metadata[records.DEDUP_CLUSTER_ID], doc.metadata[records.DEDUP_CLUSTER_SIZE],
                           doc.metadata.get(records.FILTER_REASON)]
    files = {str(p.relative_to(root / "out")): io.sha256_file(p) for p in sorted((root / "out").rglob("*")) if p.is_file()}
    return got, files, stable(rep)


def test_stage_outputs_unchanged(expected, in_tmp_cwd):
    """The stage (on-disk signatures, band pass on 2 workers, driver) decides as the in-memory code did, and
    writes the same bytes and the same report as the code of commit 98172af."""
    got, files, rep = run_stage(in_tmp_cwd)
    want = expected["thresholds"]["0.7"]
    assert got == {d: [v["cluster_id"], v["cluster_size"], v["reason"]] for d, v in want.items()}
    assert files == expected["stage"]["files"]
    assert rep == expected["stage"]["report"]


if __name__ == "__main__" and "--write" in sys.argv:
    import os
    import tempfile

    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    fixture = compute()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        _, files, rep = run_stage(Path(tmp))
    fixture["stage"] = {"files": files, "report": rep}
    FIXTURE.write_text(json.dumps(fixture, indent=0, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
