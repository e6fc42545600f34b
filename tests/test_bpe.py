"""pipeline/lm/bpe.py: GPT-2 byte-level BPE training, its determinism, and the tiktoken twin's ids."""
from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import yaml
from datatrove.data import Document

from pipeline.core import io, report
from pipeline.lm import bpe

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the river ran past a silent mill while Anna counted 1789 coins, naïve café owners "
         "shouted: don't stop! we'll see 東京 and Zürich — 3.14 percent of £20 (maybe) 🙂").split()


def synth_texts(n: int, seed: int = 0, words: int = 300) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(words)) + "\n\nThe end.\n" for _ in range(n)]


def write_mix(folder: Path, splits: dict[str, list[str]], repeats: int = 0) -> Path:
    """A mix-shaped fixture: <folder>/<split>/docs/00000.jsonl.zst written by the contract's writer;
    the first `repeats` train documents come again at the end with epoch=1, as mix repeats them."""
    for split, texts in splits.items():
        writer = io.doc_writer(folder / split)
        with writer:
            docs = [(i, text, 0) for i, text in enumerate(texts)]
            docs += [(i, text, 1) for i, text in enumerate(texts[:repeats])] if split == "train" else []
            for i, text, epoch in docs:
                src = ("books", "webtext", "cc")[i % 3]
                meta = {"source": src, "split": split, **({"epoch": epoch} if split == "train" else {})}
                writer.write(Document(text=text, id=f"{src}/{split}{i:05d}", metadata=meta), rank=0)
    return folder


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["tokenizer"]
    assert dataclasses.asdict(bpe.TokenizerConfig()) == section


def test_train_roundtrip_and_vocab():
    tok = bpe.train(iter(synth_texts(30)), bpe.TokenizerConfig(vocab_size=400, min_frequency=2))
    assert 300 < tok.get_vocab_size() <= 400  # the small synthetic corpus runs out of pairs before 400
    assert bpe.eot_id(tok) == tok.token_to_id("<|endoftext|>")
    # byte level: any string, even unseen scripts and control bytes, encodes without <unk> and decodes back
    for text in ["naïve café 東京 🙂", "Ωμέγα \x00\x7f tab\tend", "  leading spaces", synth_texts(1, seed=9)[0]]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    # merges actually happened: common words are single tokens
    assert len(tok.encode(" river", add_special_tokens=False).ids) == 1


def test_merges_never_cross_character_categories():
    """GPT-2's regex pre-split: no token mixes letters with digits or punctuation."""
    tok = bpe.train(iter(synth_texts(40, seed=3)), bpe.TokenizerConfig(vocab_size=600, min_frequency=2))
    dec = bpe._byte_decoder()
    for token in set(tok.get_vocab(with_added_tokens=False)) - {bpe.EOT}:
        text = bytes(dec[c] for c in token).decode("utf-8", errors="ignore").strip()
        if any(c.startswith(text) for c in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")):
            continue  # GPT-2's regex keeps contractions whole (and "'l" is a step towards "'ll")
        cats = {unicodedata.category(c)[0] for c in text}
        assert len(cats & {"L", "N", "P", "S"}) <= 1 or cats <= {"P", "S"}, (token, text, cats)


def test_training_is_deterministic_across_runs_and_threads(tmp_path):
    """Same input -> identical tokenizer.json bytes, in-process (2 rayon threads) and with 1 thread."""
    texts = synth_texts(40, seed=5)
    cfg = bpe.TokenizerConfig(vocab_size=500, min_frequency=2)
    bpe.save(bpe.train(iter(texts), cfg), tmp_path / "a")
    bpe.save(bpe.train(iter(texts), cfg), tmp_path / "b")
    a = (tmp_path / "a" / "tokenizer.json").read_bytes()
    assert a == (tmp_path / "b" / "tokenizer.json").read_bytes()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pipeline.lm import bpe; from tests.test_bpe import synth_texts; "
            "bpe.save(bpe.train(iter(synth_texts(40, seed=5)), bpe.TokenizerConfig(500, 2)), sys.argv[2])")
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "c")], check=True, env=env, cwd=ROOT)
    assert (tmp_path / "c" / "tokenizer.json").read_bytes() == a
    meta = io.read_json(tmp_path / "a" / "tokenizer_meta.json")
    assert meta["sha256"] == bpe.tokenizer_sha(tmp_path / "a") and meta["vocab_size"] == bpe.load(tmp_path / "a").get_vocab_size()


def test_tiktoken_ids_equal_tokenizers_on_real_books(shared_data):
    books = sorted((shared_data / "books").glob("*.txt"))
    read = lambda p: p.read_text(encoding="utf-8", errors="replace")  # noqa: E731
    train_texts = [read(p)[:250_000] for p in books[:4]]
    tok = bpe.train(iter(train_texts), bpe.TokenizerConfig(vocab_size=2048, min_frequency=2))
    enc = bpe.tiktoken_encoding(tok)
    # unseen books, incl. French (accents) and the Iliad's Greek names, in 20 KB slices
    held_out = [read(p)[i:i + 20_000] for p in books[4:] for i in (0, 60_000)]
    assert sum(map(len, held_out)) > 500_000
    assert enc.encode_ordinary_batch(held_out) == bpe.hf_encode_batch(tok, held_out)
    encode, name = bpe.fast_encoder(tok, held_out[:5])
    assert name == "tiktoken"
    assert encode(held_out[5:8]) == bpe.hf_encode_batch(tok, held_out[5:8])


def test_fast_encoder_falls_back_when_tiktoken_cannot_take_the_vocab():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    # a non-byte-level BPE: its "€" token has no byte-level spelling, so tiktoken cannot be built
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["prix 5€ €€ €€"] * 10, trainers.BpeTrainer(vocab_size=50, special_tokens=[bpe.EOT],
                                                                      show_progress=False))
    encode, name = bpe.fast_encoder(tok, ["prix 5€"])
    assert name == "tokenizers"
    assert encode(["prix €€"]) == bpe.hf_encode_batch(tok, ["prix €€"])


def test_run_trains_on_train_split_only(in_tmp_cwd):
    """The stage trains on train/ and only measures on val/: a word frequent only in val gets no token."""
    val = ["zqxwv zqxwv zqxwv " * 200]
    mix = write_mix(in_tmp_cwd / "mix", {"train": synth_texts(20), "val": val}, repeats=4)
    rep = report.StageReport("tokenizer")
    meta = bpe.run(mix, in_tmp_cwd / "tok", bpe.TokenizerConfig(vocab_size=400, min_frequency=2), rep)
    tok = bpe.load(in_tmp_cwd / "tok")
    assert not [t for t in tok.get_vocab() if "zq" in t or "xw" in t]
    assert meta["eot_id"] == bpe.eot_id(tok) and meta["sha256"] == bpe.tokenizer_sha(in_tmp_cwd / "tok")
    data = rep.to_dict()
    assert data["training_docs"] == 20 and data["repeats_skipped"] == 4 and data["val_docs"] == 1
    assert data["val_bytes_per_token"] < 2.0  # unseen word: close to one byte per token
    assert (in_tmp_cwd / "tok" / io.MANIFEST).exists()
