"""Contamination decisions survive the vectorised index (issue 14): same dirty examples, same matched
n-gram positions, same training documents (lineage), same index counts as the code before it.

The code before (commit 98172af: xxh64 per word with a dict cache, a polynomial over each document's
words, per-document (hash, doc) pairs, argsort) is kept below, verbatim in what it computes, as
_OldIndex; the audit run with it must equal the audit run with today's NgramIndex and
ShardedNgramIndex. Hash values differ between the two (new word hashes); decisions must not. The
corpora cover what the new hashing treats specially: documents shorter than n words, empty and
punctuation-only documents, case and punctuation variants, final sigma and dotted capital I (the
exact per-word path), other scripts, letters outside the Basic Multilingual Plane, combining marks,
NUL and underscores, n-grams above the frequency cut, and batch and spill boundaries.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import xxhash

from pipeline.evaluation import contamination as con
from pipeline.evaluation import ngram_index as ngx
from pipeline.evaluation import ngrams, tasks, train_corpus


# --- the code path before issue 14 ------------------------------------------------------------------
def _old_word_hashes(words: list[str], cache: dict = {}) -> np.ndarray:  # noqa: B006 (the old module-level cache)
    out = list(map(cache.get, words))
    for i, h in enumerate(out):
        if h is None:
            out[i] = cache[words[i]] = xxhash.xxh64_intdigest(words[i])
    return np.array(out, dtype=np.uint64)


def _old_ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    m = len(wh) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):
        h = h * ngrams.PRIME + wh[j: j + m]
    return h


def _old_sort_and_cut(hashes, docs, max_doc_frequency):
    order = np.lexsort((docs, hashes))
    hashes, docs = hashes[order], docs[order]
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = (hashes[1:] != hashes[:-1]) | (docs[1:] != docs[:-1])
    hashes, docs = hashes[first], docs[first]
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]]) if len(hashes) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(hashes)])
    frequent = counts > max_doc_frequency
    keep = ~np.repeat(frequent, counts)
    return hashes[keep], docs[keep], int(frequent.sum())


class _OldIndex:
    """NgramIndex as of commit 98172af, on the documents' texts."""

    def __init__(self, texts: list[str], n: int, max_doc_frequency: int):
        self.n = n
        parts = [_old_ngram_hashes(_old_word_hashes(ngrams.normalize_words(t)), n) for t in texts]
        hashes = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        docs = np.repeat(np.arange(len(parts)), [len(p) for p in parts]).astype(np.int64)
        self.hashes, self.docs, self.ignored_ngrams = _old_sort_and_cut(hashes, docs, max_doc_frequency)

    def __len__(self) -> int:
        return len(self.hashes)

    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.docs.nbytes)

    def lookup(self, text: str):
        words, spans = ngrams.normalize(text)
        q = _old_ngram_hashes(_old_word_hashes(words), self.n)
        lo, hi = np.searchsorted(self.hashes, q, "left"), np.searchsorted(self.hashes, q, "right")
        hit = np.nonzero(hi > lo)[0]
        return hit.tolist(), sorted({int(d) for i in hit for d in self.docs[lo[i]:hi[i]]}), spans


# --- corpora ---------------------------------------------------------------------------------------
ODD_WORDS = ["ΟΔΟΣ", "σοφός", "ΑΣ1", "İstanbul", "straße", "ẞig", "ǅemal", "𝐀𝐁𝐂", "𝔡𝔢", "😀", "漢字", "かな",
             "a\u0301b", "नमस्ते", "مرحبا", "x_y", "a\x00b", "2²", "Ⅻ", "ǈ", "Ａｂｃ", "ﬁne", "Ⓐ"]
VOCAB = [f"w{i}" for i in range(80)] + ["The", "THE", "the", "don't", "end.", "“quoted”", "dash—dash"] + ODD_WORDS
SEPS = [" "] * 10 + ["\n", "  ", ", ", "; ", " — ", " … ", "\u00a0", "!? ", " -- ", "\t"]


def _text(rng: random.Random, n_words: int) -> str:
    return "".join(rng.choice(VOCAB) + rng.choice(SEPS) for _ in range(n_words)).strip()


def _noisy(rng: random.Random, text: str) -> str:
    """The same words as GPT-3's normalisation sees them: other case, other punctuation between."""
    words = ngrams.WORD.findall(text)
    return "".join((w.upper() if rng.random() < 0.3 else w) + rng.choice(SEPS) for w in words)


def _synthetic(seed: int = 3) -> tuple[list[str], dict[str, tasks.Task]]:
    rng = random.Random(seed)
    docs = ["", "...!?", "— “” ‘’ … ---", "too short to hold one", "ΣΣΣ İİ ς", "\x00\x00", "_ __ ___"]
    docs += [_text(rng, rng.choice([0, 3, 12, 13, 14, 60, 400, 3000])) for _ in range(150)]
    common = _text(rng, 30)
    for i in rng.sample(range(len(docs)), 14):  # 14 documents: above the frequency cut of 10
        docs[i] += " " + common
    examples: dict[str, list[str]] = {"long": [], "short": []}
    for _ in range(120):
        src = rng.choice(docs)
        words = ngrams.WORD.findall(src)
        if len(words) > 20 and rng.random() < 0.6:  # a leak: a noisy copy of a training passage
            a = rng.randrange(len(words) - 15)
            piece = _noisy(rng, " ".join(words[a:a + rng.randint(13, 40)]))
            examples["long"].append(_text(rng, 5) + " " + piece + " " + _text(rng, 5))
        else:
            examples["long"].append(_text(rng, rng.randint(14, 60)))
        if len(words) > 10 and rng.random() < 0.5:
            a = rng.randrange(len(words) - 9)
            examples["short"].append(_noisy(rng, " ".join(words[a:a + 9])))
        else:
            examples["short"].append(_text(rng, rng.randint(2, 12)))
    examples["long"] += ["", "!!!", common, "ΟΔΟΣ " * 20, "İstanbul " * 15]
    return docs, {name: _task(name, ex) for name, ex in examples.items()}


def _task(name: str, texts: list[str]) -> tasks.Task:
    return tasks.Task(name, "loglik", [tasks.Example(name, i, t, [], 0, t) for i, t in enumerate(texts)], name)


def _audits(docs: list[str], task_map: dict[str, tasks.Task], tmp_path, batch_chars: int) -> tuple[dict, dict, dict]:
    corpus = con.TrainCorpus()
    for i, text in enumerate(docs):
        corpus.add(f"books/{i:04d}", text, {"source": "books", "source_file": f"b{i}.txt"})
    cfg = con.ContaminationConfig()
    old = con.audit(task_map, corpus, cfg, index_factory=lambda n: _OldIndex(docs, n, cfg.max_doc_frequency))
    memory = con.audit(task_map, corpus, cfg)
    sharded = con.audit(task_map, corpus, cfg, index_factory=lambda n: ngx.ShardedNgramIndex(
        iter(docs), n, cfg.max_doc_frequency, tmp_path / str(n), shard_bits=3, spill_pairs=5000, batch_chars=batch_chars))
    return old, memory, sharded


# --- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_chars", [1, 5000, 1 << 16])
def test_synthetic_decisions_equal_the_old_code(tmp_path, monkeypatch, batch_chars):
    monkeypatch.setattr(train_corpus, "BATCH_CHARS", batch_chars)  # TrainCorpus batches too
    docs, task_map = _synthetic()
    old, memory, sharded = _audits(docs, task_map, tmp_path, batch_chars)
    assert old["tasks"]["long"]["n"] == 13 and old["tasks"]["short"]["n"] == 8
    assert 20 < old["tasks"]["long"]["dirty"] < 120 and 10 < old["tasks"]["short"]["dirty"] < 120  # decisions to compare
    assert old["index"]["13"]["ignored_frequent_ngrams"] > 0  # the frequency cut is exercised
    assert memory == old
    assert sharded == old


def test_real_decisions_equal_the_old_code(shared_data, tmp_path):
    """Real books against real LAMBADA and WikiText, with passages of both planted in noisy copies."""
    rng = random.Random(5)
    found = tasks.load_all(shared_data / "eval", ("lambada", "wikitext"))
    books = [(shared_data / "books" / name).read_text(encoding="utf-8") for name in ("11-0.txt", "120-0.txt", "pg345.txt", "98-0.txt")]
    docs = [p for b in books for p in b.split("\n\n\n")]  # chapters and front matter: short and long documents
    for name, task in found.items():
        for ex in rng.sample(task.examples, 8):
            docs.insert(rng.randrange(len(docs)), rng.choice(ODD_WORDS) + " " + _noisy(rng, ex.contamination_text))
    wh, counts = ngrams.text_word_hashes(docs)
    assert (wh == np.concatenate([ngrams.word_hashes(ngrams.normalize_words(d)) for d in docs])).all()
    old, memory, sharded = _audits(docs, found, tmp_path, 1 << 16)
    assert old["tasks"]["lambada"]["dirty"] >= 8 and old["tasks"]["wikitext"]["dirty"] >= 4
    assert memory == old
    assert sharded == old


def test_batch_word_hashes_equal_per_word_hashes():
    rng = random.Random(1)
    odd = ["", "...!?", "ΟΔΟΣ ΣΟΦΟΣ ΑΣ1 İstanbul straße ǅemal", "𝐀𝐁c 😀 Ünïcödé 漢字かな", "a\x00b", "\ud800abc x",
           "x_y a\u0307b", "ς Σ σ", "\U0001D7CE\U0001D7CF"]  # the last: mathematical digits, outside the BMP
    texts = odd + [_text(rng, rng.randint(0, 200)) for _ in range(200)]
    texts.append(_text(rng, 60_000) + " " + "Zz" * 150_000 + " " + _text(rng, 90_000))  # hashed in pieces, one word of 300k
    rng.shuffle(texts)
    wh, counts = ngrams.text_word_hashes(texts)
    per_word = [ngrams.word_hashes(ngrams.normalize_words(t)) for t in texts]
    assert counts.tolist() == [len(w) for w in per_word] == ngrams.text_word_counts(texts).tolist()
    assert (wh == np.concatenate(per_word)).all()
    assert len(set(wh.tolist())) == len({w for t in texts for w in ngrams.normalize_words(t)})  # no word collides
    assert ngrams.text_word_hashes(["ABC def"])[0].tolist() == ngrams.word_hashes(["abc", "def"]).tolist()


def test_lower_case_table_covers_every_word_character():
    """The table lower-cases one character alone; only _CONTEXT_LOWER's characters need their word."""
    table = ngrams._lower_table()
    needs_word = []
    for c in range(0x110000):
        ch = chr(c)
        if not ch.isalnum():
            assert c > 0xFFFF or table[c] == 0
            continue
        low = ch.lower()
        if len(low) != 1 or c == 0x3A3:
            needs_word.append(ch)
        elif c <= 0xFFFF:
            assert table[c] == ord(low), hex(c)
    assert sorted(needs_word) == sorted(ngrams._CONTEXT_LOWER)


def test_ngram_hashes_by_doubling_equal_the_polynomial():
    w = np.random.default_rng(0).integers(0, 2**64, 300, dtype=np.uint64, endpoint=False)
    for n in range(1, 40):
        for length in (0, 1, n - 1, n, n + 1, 77, 300):
            assert (ngrams.ngram_hashes(w[:length], n) == _old_ngram_hashes(w[:length], n)).all(), (n, length)


@pytest.mark.parametrize("size,spread", [(100, 1 << 8), (50_000, 1 << 12), (50_000, 1 << 40), (200_000, 1 << 64)])
def test_radix_sort_and_cut_equal_argsort(size, spread):
    """Hashes that share top bits, repeat, or not at all; docs nondecreasing as callers give them."""
    rng = np.random.default_rng(size)
    base = rng.integers(0, 2**64, spread if spread < size else size, dtype=np.uint64, endpoint=False)
    hashes = base[rng.integers(0, len(base), size)] if spread < size else base
    hashes = hashes ^ (rng.integers(0, 4, size, dtype=np.uint64) << np.uint64(rng.integers(0, 32)))  # near misses
    docs = np.sort(rng.integers(0, size // 20 + 1, size)).astype(np.int64)
    order, out = ngx._stable_sort(hashes)
    assert (order == np.argsort(hashes, kind="stable")).all() and (out == hashes[order]).all()
    for cut in (0, 1, 2, 10):
        new, old = ngx._sort_and_cut(hashes, docs, cut), _old_sort_and_cut(hashes, docs, cut)
        assert (new[0] == old[0]).all() and (new[1] == old[1]).all() and new[2] == old[2], cut
