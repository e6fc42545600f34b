"""GPT-2 byte-level BPE: training with HF `tokenizers`, loading, and a tiktoken twin for fast encoding.

Recipe (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", sec. 2.2):
BPE over UTF-8 bytes, so every string is encodable without an <unk>; text is first split by
GPT-2's regex (contractions, letter runs, digit runs, punctuation runs, whitespace) so that
merges never cross character categories ("dog." / "dog!" / "dog?" do not become tokens).
GPT-2 used 50,257 tokens; the sample profile uses a small vocabulary so the LM head stays cheap.
The one special token is "<|endoftext|>", appended after every document by the tokenize stage.

Encoding speed: tiktoken's Rust BPE built from our own vocabulary gives the same ids about 4x
faster than tokenizers' encode loop (../shared/ANCHORS.md). `tiktoken_encoding` builds it and
`fast_encoder` verifies ids are identical on sample texts before trusting it, falling back to
tokenizers' `encode_batch` otherwise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

# The trainer counts words on rayon threads (RAYON_NUM_THREADS). Counting is order-independent and
# merges are chosen by (count, pair), so tokenizer.json does not depend on the thread count:
# tests/test_bpe.py checks 1 thread against the default, so no thread pinning is needed.
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline.core import io

EOT = "<|endoftext|>"
EPOCH_KEY = "epoch"  # metadata the mix stage sets on repeated copies of a training document (k-th repeat)
TOKENIZER_JSON = "tokenizer.json"
META_JSON = "tokenizer_meta.json"
# GPT-2's pre-tokenisation regex, the one tokenizers' ByteLevel(use_regex=True) applies.
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """params.yaml `tokenizer`."""

    vocab_size: int = 2048  # GPT-2: 50257; small here so the tiny model's LM head stays cheap
    min_frequency: int = 2  # a pair must occur this often to be merged


def new_tokenizer() -> Tokenizer:
    """An untrained GPT-2 style byte-level BPE pipeline (no prefix space, as GPT-2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train(texts_iter: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train a byte-level BPE on an iterable of document texts.

    Args:
        texts_iter: document texts (train split only: training on val would leak it).
        cfg: vocabulary size and minimum pair frequency.

    Returns:
        The trained tokenizer; "<|endoftext|>" is id 0, the 256 byte symbols follow, then merges
        in merge order (so token id == merge rank, which tiktoken relies on).
    """
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever <unk>
        show_progress=False,
    )
    tok.train_from_iterator(texts_iter, trainer=trainer)
    return tok


def save(tok: Tokenizer, tokenizer_dir: str | Path) -> dict:
    """Write tokenizer.json and tokenizer_meta.json (vocab_size, eot_id, sha256) atomically."""
    tokenizer_dir = Path(tokenizer_dir)
    path = tokenizer_dir / TOKENIZER_JSON
    with io.atomic_path(path) as tmp:
        tok.save(str(tmp), pretty=True)
    meta = {"vocab_size": tok.get_vocab_size(), "eot_id": eot_id(tok), "sha256": io.sha256_file(path)}
    io.write_json(tokenizer_dir / META_JSON, meta)
    return meta


def load(tokenizer_dir: str | Path) -> Tokenizer:
    """Load `<tokenizer_dir>/tokenizer.json` (a directory or the json file itself)."""
    path = Path(tokenizer_dir)
    if path.is_dir():
        path = path / TOKENIZER_JSON
    return Tokenizer.from_file(str(path))


def eot_id(tok: Tokenizer) -> int:
    """Id of "<|endoftext|>"; raises if the tokenizer lacks it."""
    tid = tok.token_to_id(EOT)
    if tid is None:
        raise ValueError(f"tokenizer has no {EOT} token")
    return tid


def tokenizer_sha(tokenizer_dir: str | Path) -> str:
    """sha256 of tokenizer.json: recorded in token meta and checkpoints so mismatches are caught."""
    h = hashlib.sha256(Path(tokenizer_dir, TOKENIZER_JSON).read_bytes())
    return h.hexdigest()


def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode table, inverted: printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def tiktoken_encoding(tok: Tokenizer, name: str = "gpt-repro"):
    """A tiktoken Encoding with the same vocabulary, merges and special token as `tok`.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank; with rank == token
    id == merge order (as `train` produces) this reproduces tokenizers' BPE. `fast_encoder` still
    checks ids on real text before trusting it.
    """
    import tiktoken

    dec = _byte_decoder()
    specials = {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
    ranks = {}
    for token, tid in tok.get_vocab(with_added_tokens=False).items():
        if token in specials:
            continue
        ranks[bytes(dec[ch] for ch in token)] = tid
    return tiktoken.Encoding(name, pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens=specials)


def hf_encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """tokenizers' batch encoder (the reference ids)."""
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def fast_encoder(tok: Tokenizer, check_texts: Sequence[str], num_threads: int = 2) -> tuple[Callable, str]:
    """Pick the fastest encoder whose ids equal tokenizers' on `check_texts`.

    Args:
        tok: the trained tokenizer.
        check_texts: sample texts to compare ids on (a few hundred KB is plenty).
        num_threads: tiktoken batch threads.

    Returns:
        (encode_batch(texts) -> list[list[int]], name) with name "tiktoken" or "tokenizers".
        A literal "<|endoftext|>" inside a document is encoded as ordinary text by tiktoken but as
        the special id by tokenizers; such texts are left out of the check (they are data, not eot).
    """
    try:
        enc = tiktoken_encoding(tok)
    except Exception as exc:  # a vocabulary tiktoken cannot take: keep the reference encoder
        print(f"tiktoken could not load this vocabulary ({exc}); encoding with tokenizers")
        return (lambda texts: hf_encode_batch(tok, texts)), "tokenizers"
    sample = [t for t in check_texts if EOT not in t]
    if enc.encode_ordinary_batch(sample, num_threads=num_threads) != hf_encode_batch(tok, sample):
        print("tiktoken ids differ from tokenizers' on the check sample; encoding with tokenizers")
        return (lambda texts: hf_encode_batch(tok, texts)), "tokenizers"
    return (lambda texts: enc.encode_ordinary_batch(list(texts), num_threads=num_threads)), "tiktoken"


@dataclasses.dataclass(frozen=True)
class Encoder:
    """What the tokenize stage needs from a tokenizer (pipeline/lm/tokens.py never imports tokenizers,
    so the train stage, which imports tokens.py, does not depend on this module)."""

    encode_batch: Callable[[Sequence[str]], list[list[int]]]
    name: str  # "tiktoken" or "tokenizers"
    vocab_size: int
    eot_id: int
    sha256: str  # of tokenizer.json


def encoder(tokenizer_dir: str | Path, check_docs: str | Path | None = None, check_chars: int = 1_000_000) -> Encoder:
    """Load a trained tokenizer as the fastest encoder with identical ids.

    Args:
        tokenizer_dir: the tokenizer stage's folder.
        check_docs: a document folder whose first `check_chars` characters verify tiktoken's ids.
        check_chars: size of that check sample.
    """
    tok = load(tokenizer_dir)
    texts, size = [], 0
    for doc in io.iter_docs(check_docs) if check_docs else ():
        texts.append(doc.text)
        size += len(doc.text)
        if size >= check_chars:
            break
    encode_batch, name = fast_encoder(tok, texts)
    return Encoder(encode_batch, name, tok.get_vocab_size(), eot_id(tok), tokenizer_sha(tokenizer_dir))

def run(in_dir: str | Path, out: str | Path, cfg: TokenizerConfig, report) -> dict:
    """The tokenizer stage: train on `<in_dir>/train/docs` (first copies only), save to `out`, measure on val.

    Args:
        in_dir: the mix folder (train/ and val/ document folders).
        out: the tokenizer folder (tokenizer.json, tokenizer_meta.json).
        cfg: params.yaml `tokenizer`.
        report: a report.StageReport; docs, chars and bytes per token on val are added to it.

    Returns:
        tokenizer_meta.json's contents.
    """
    from tqdm import tqdm

    stats = {"chars": 0, "repeats": 0}

    def texts() -> Iterable[str]:
        for doc in tqdm(io.iter_docs(Path(in_dir) / "train"), desc="tokenizer: train docs", unit="doc"):
            if not isinstance(doc.text, str) or not doc.text:
                report.error("empty_text")
                continue
            if int(doc.metadata.get(EPOCH_KEY, 0) or 0) > 0:
                # mix repeats up-weighted documents (epoch k > 0); merges should reflect distinct text,
                # and the copies would only cost time
                stats["repeats"] += 1
                continue
            report.docs_in += 1
            stats["chars"] += len(doc.text)
            report.bytes_in += len(doc.text.encode("utf-8", "surrogatepass"))
            yield doc.text

    t0 = time.perf_counter()
    tok = train(texts(), cfg)
    train_s = time.perf_counter() - t0
    report.docs_out = report.docs_in
    if report.docs_in == 0:
        raise ValueError(f"no training documents under {Path(in_dir) / 'train'}: cannot train a tokenizer")
    build = io.staging_dir("tokenizer")  # published whole at the end
    meta = save(tok, build)
    io.write_manifest(build, "tokenizer", dataclasses.asdict(cfg), {"mix": in_dir})
    report.bytes_out = Path(build, TOKENIZER_JSON).stat().st_size

    # Compression on held-out text: GPT-2's 50k vocabulary gives ~4 bytes/token on English web text.
    val = [d.text for d in io.iter_docs(Path(in_dir) / "val") if d.text]
    val_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in val)
    val_tokens = sum(len(ids) for ids in hf_encode_batch(tok, val)) if val else 0
    report.extra.update({
        "vocab_size": meta["vocab_size"],
        "eot_id": meta["eot_id"],
        "tokenizer_sha256": meta["sha256"],
        "training_chars": stats["chars"],
        "training_docs": report.docs_in,
        "repeats_skipped": stats["repeats"],
        "training_seconds": round(train_s, 3),
        "val_docs": len(val),
        "val_bytes_per_token": round(val_bytes / val_tokens, 4) if val_tokens else None,
        "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS", "default"),
    })
    io.publish(build, out, move=True)
    return meta
