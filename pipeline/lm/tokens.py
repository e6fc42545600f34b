"""Token shards: uint16 tokens behind a self-describing header (llm.c style).

Shard file `<split>_<n:05d>.bin`: a header of 256 int32 (magic, version, n_tokens,
vocab_size, eot_id, rest zero) then n_tokens uint16 tokens, the end-of-text id
between documents. The header is asserted on read, so a truncated or foreign file
fails loudly instead of training on garbage.

The tokenize stage (GPT-2 recipe: every document followed by "<|endoftext|>", as nanoGPT's
prepare.py and llm.c do) writes a folder of shards plus `doc_index.parquet`, so any token range
maps back to its document (contamination lineage, per-source losses), and `meta.json`, whose
unigram entropy of the train tokens is the loss a language model must beat. Readers for the
trainer and evaluator: `load_meta`, `load_split`, `load_doc_index`, `doc_for_position`.
This module never imports `tokenizers`: the encoder comes in from `bpe.encoder()`, so the train
stage (which reads shards through here) does not depend on the BPE code.
"""
from __future__ import annotations

import dataclasses
import logging
import functools
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipeline.core import io, params, records

log = logging.getLogger(__name__)

MAGIC = 0x47505452  # "GPTR"
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(ValueError):
    """A token shard whose header does not describe its contents."""


def write_shard(path: str | Path, tokens: np.ndarray, vocab_size: int, eot_id: int) -> None:
    """Write one shard atomically."""
    if vocab_size > 2**16:
        raise ShardError(f"vocab_size {vocab_size} does not fit uint16 tokens")
    tokens = np.asarray(tokens, dtype=np.uint16)
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:5] = [MAGIC, VERSION, len(tokens), vocab_size, eot_id]
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.tobytes())
            fh.write(tokens.tobytes())


def read_header(path: str | Path) -> dict:
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if len(header) < HEADER_INTS or header[0] != MAGIC:
        raise ShardError(f"{path}: not a gpt-repro token shard (bad magic)")
    if header[1] != VERSION:
        raise ShardError(f"{path}: shard version {header[1]}, this code reads {VERSION}")
    n_tokens, vocab_size, eot_id = (int(x) for x in header[2:5])
    expected = HEADER_BYTES + 2 * n_tokens
    actual = Path(path).stat().st_size
    if actual != expected:
        raise ShardError(f"{path}: header says {n_tokens} tokens ({expected} bytes) but file has {actual} bytes")
    return {"n_tokens": n_tokens, "vocab_size": vocab_size, "eot_id": eot_id}


def read_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard's tokens (uint16) after checking its header."""
    meta = read_header(path)
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(meta["n_tokens"],))


# --- the tokenize stage: documents -> shards + doc index + meta ------------------------------
# The reader API the trainer and evaluator use, then the stage logic.
# Layout of a tokens folder:
#   <split>_<n:05d>.bin   shards (see above), documents never straddle two shards
#   doc_index.parquet     one row per document: split, shard, start, end, shard_start, doc_id, source, epoch
#                         start/end are positions in the split's concatenated stream (what load_split
#                         returns), end exclusive; the eot token sits at position `end`
#   meta.json             vocab_size, eot_id, tokenizer_sha256, dtype, splits, tokens_per_source, entropy

SPLITS = ("train", "val")
META_JSON = "meta.json"
DOC_INDEX = "doc_index.parquet"
MAX_SHARD_TOKENS = 100_000_000  # 200 MB of uint16 per shard: memmap-friendly, few files
EPOCH_KEY = "epoch"  # metadata key mix sets when it repeats a document (absent = 0)
INDEX_COLUMNS = ("split", "shard", "start", "end", "shard_start", "doc_id", "source", "epoch")


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    """params.yaml `tokenize`."""

    dtype: str = "uint16"  # the shard format stores uint16 only (vocab <= 65,536, as GPT-2's 50,257)


def shard_name(split: str, n: int) -> str:
    return f"{split}_{n:05d}.bin"


def load_meta(tokens_dir: str | Path) -> dict:
    """The tokens folder's meta.json (vocab_size, eot_id, tokenizer_sha256, splits, ...)."""
    return io.read_json(Path(tokens_dir) / META_JSON)


def split_paths(tokens_dir: str | Path, split: str) -> list[Path]:
    """A split's shard files: those meta.json lists, or `<split>_*.bin` in a folder without meta.json."""
    tokens_dir = Path(tokens_dir)
    if not (tokens_dir / META_JSON).exists():
        return sorted(tokens_dir.glob(f"{split}_*.bin"))
    meta = load_meta(tokens_dir)
    if split not in meta["splits"]:
        raise KeyError(f"{tokens_dir} has no split {split!r}; splits: {sorted(meta['splits'])}")
    return [tokens_dir / name for name in meta["splits"][split]["shards"]]


def load_split(tokens_dir: str | Path, split: str, report=None) -> np.ndarray:
    """All tokens of a split, in document order, as one uint16 array.

    One shard (the sample): a read-only memmap, nothing is loaded. Several shards: their
    concatenation in memory (fine up to a few GB; past that, read shards with read_shard).
    With a StageReport, a shard whose header does not match its bytes is skipped and counted
    (errors.bad_shard) and the bytes read are added to bytes_in; without one it raises ShardError.
    """
    shards = []
    for path in split_paths(tokens_dir, split):
        if report is None:
            shards.append(read_shard(path))
            continue
        try:
            shards.append(read_shard(path))
            report.bytes_in += path.stat().st_size
        except (ShardError, OSError) as exc:
            log.error("Skipping token shard %s: %s", path.name, exc)
            report.error("bad_shard")
    if not shards:
        return np.zeros(0, dtype=np.uint16)
    return shards[0] if len(shards) == 1 else np.concatenate(shards)


def load_doc_index(tokens_dir: str | Path) -> list[dict]:
    """Every doc_index row as a dict, in file order (split, then document order)."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(tokens_dir) / DOC_INDEX).to_pylist()


@functools.lru_cache(maxsize=8)
def _split_index(index_path: str, mtime_ns: int, split: str) -> tuple[np.ndarray, list[dict]]:
    rows = [r for r in load_doc_index(Path(index_path).parent) if r["split"] == split]
    return np.array([r["end"] for r in rows], dtype=np.int64), rows


def doc_for_position(tokens_dir: str | Path, split: str, position: int) -> dict:
    """The document a token position of `load_split(tokens_dir, split)` belongs to.

    The eot token after a document belongs to that document. Returns its doc_index row plus
    `offset` (position - start) and `is_eot`. Raises IndexError past the split's end.
    """
    path = Path(tokens_dir) / DOC_INDEX
    ends, rows = _split_index(str(path.resolve()), path.stat().st_mtime_ns, split)
    i = int(np.searchsorted(ends, position, side="left"))  # first doc whose eot (at `end`) is >= position
    if position < 0 or i >= len(rows):
        raise IndexError(f"position {position} is outside split {split!r} of {tokens_dir}")
    row = dict(rows[i])
    row["offset"] = int(position - row["start"])
    row["is_eot"] = bool(position == row["end"])
    return row


def unigram_entropy(counts: np.ndarray) -> float:
    """-sum p ln p (nats) of a token count vector: the loss of the best context-free model."""
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _batches(docs: Iterable[Any], max_docs: int = 512, max_chars: int = 8_000_000) -> Iterator[list[Any]]:
    """Group documents so that encoding runs in tiktoken's threaded batches."""
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _ShardWriter:
    """Accumulates one split's documents into shards of at most `max_tokens` tokens."""

    def __init__(self, out: Path, split: str, vocab_size: int, eot: int, max_tokens: int):
        self.out, self.split, self.vocab_size, self.eot, self.max_tokens = out, split, vocab_size, eot, max_tokens
        self.parts: list[np.ndarray] = []
        self.in_shard = 0  # tokens in the shard being built
        self.position = 0  # tokens written before it in this split
        self.shards: list[str] = []
        self.rows: list[dict] = []
        self.counts = np.zeros(vocab_size, dtype=np.int64)

    def add(self, ids: list[int], doc_id: str, source: str, epoch: int) -> int:
        n = len(ids) + 1
        if self.in_shard and self.in_shard + n > self.max_tokens:
            self.flush()
        arr = np.empty(n, dtype=np.uint16)
        arr[:-1] = ids
        arr[-1] = self.eot
        self.parts.append(arr)
        start = self.position + self.in_shard
        self.rows.append({"split": self.split, "shard": shard_name(self.split, len(self.shards)), "start": start,
                          "end": start + n - 1, "shard_start": self.in_shard, "doc_id": doc_id,
                          "source": source, "epoch": epoch})
        self.in_shard += n
        return n

    def flush(self) -> None:
        if not self.in_shard and self.shards:
            return
        tokens = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.uint16)
        self.counts += np.bincount(tokens, minlength=self.vocab_size)[: self.vocab_size]
        write_shard(self.out / shard_name(self.split, len(self.shards)), tokens, self.vocab_size, self.eot)
        self.shards.append(shard_name(self.split, len(self.shards)))
        self.position += self.in_shard
        self.parts, self.in_shard = [], 0


def _encode(encode_batch: Callable, texts: list[str], report: Any) -> list[list[int] | None]:
    """Encode a batch; if it fails, encode one by one and count the documents that fail."""
    try:
        return encode_batch(texts)
    except Exception:  # one bad text must not sink the batch
        out = []
        for text in texts:
            try:
                out.append(encode_batch([text])[0])
            except Exception as exc:
                print(f"a document could not be encoded ({type(exc).__name__}: {exc}); skipped")
                report.error("encode_failed")
                out.append(None)
        return out


def tokenize(in_dir: str | Path, encoder: Any, out: str | Path, cfg: TokenizeConfig, report: Any,
             max_shard_tokens: int = MAX_SHARD_TOKENS, splits: Iterable[str] = SPLITS) -> dict:
    """Encode every document of `<in_dir>/<split>/docs` into token shards, doc index and meta.json.

    Args:
        in_dir: the mix folder (train/ and val/ document folders).
        encoder: a `bpe.Encoder` (encode_batch, name, vocab_size, eot_id, sha256), from `bpe.encoder()`.
        out: the tokens folder; replaced as a whole once everything is written.
        cfg: params.yaml `tokenize`.
        report: a report.StageReport; docs, bytes, errors and token figures are added to it.
        max_shard_tokens: start a new shard before a document would make one exceed this.
        splits: splits to encode; a split whose folder is absent is written empty.

    Returns:
        The meta.json contents.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    if cfg.dtype != "uint16":
        raise ValueError(f"tokenize.dtype={cfg.dtype!r}: the shard format stores uint16 tokens only")
    vocab_size, eot = encoder.vocab_size, encoder.eot_id
    stage_dir = io.work_dir("tokenize", params.fingerprint(cfg, encoder.sha256))
    build = stage_dir / "out"
    if build.exists():  # a killed run's partial shards: encoding is cheap, so start over
        shutil.rmtree(build)
    build.mkdir(parents=True)

    meta_splits, per_source, rows, counts = {}, {}, [], {}
    seconds, n_tokens_all = 0.0, 0
    for split in splits:
        writer = _ShardWriter(build, split, vocab_size, eot, max_shard_tokens)
        sources: dict[str, int] = {}
        docs = io.iter_docs(Path(in_dir) / split)
        for batch in tqdm(_batches(docs), desc=f"tokenize {split}", unit="batch"):
            texts = [d.text for d in batch]
            t0 = time.perf_counter()
            encoded = _encode(encoder.encode_batch, texts, report)
            seconds += time.perf_counter() - t0
            for doc, text, ids in zip(batch, texts, encoded):
                report.docs_in += 1
                report.bytes_in += len(text.encode("utf-8", "surrogatepass"))
                if ids is None:
                    continue
                if not ids:
                    report.error("empty_text")
                    continue
                source = doc.metadata.get(records.SOURCE) or records.source_of(doc.id)
                n = writer.add(ids, doc.id, source, int(doc.metadata.get(EPOCH_KEY, 0) or 0))
                sources[source] = sources.get(source, 0) + n
                n_tokens_all += n
                report.docs_out += 1
        writer.flush()
        rows += writer.rows
        counts[split] = writer.counts
        meta_splits[split] = {"shards": writer.shards, "tokens": writer.position, "docs": len(writer.rows)}
        per_source[split] = dict(sorted(sources.items()))

    table = pa.table({c: [r[c] for r in rows] for c in INDEX_COLUMNS},
                     schema=pa.schema([("split", pa.string()), ("shard", pa.string()), ("start", pa.int64()),
                                       ("end", pa.int64()), ("shard_start", pa.int64()), ("doc_id", pa.string()),
                                       ("source", pa.string()), ("epoch", pa.int64())]))
    pq.write_table(table, build / DOC_INDEX)
    h_train = unigram_entropy(counts.get("train", np.zeros(0, dtype=np.int64)))
    meta = {
        "vocab_size": vocab_size,
        "eot_id": eot,
        "tokenizer_sha256": encoder.sha256,
        "dtype": cfg.dtype,
        "encoder": encoder.name,
        "splits": meta_splits,
        "tokens_per_source": per_source,
        "unigram_entropy_nats": round(h_train, 6),
        "unigram_entropy_bits": round(h_train / math.log(2), 6),
    }
    io.write_json(build / META_JSON, meta)
    io.publish(build, out)
    shutil.rmtree(build)  # nothing to resume here (encoding is fast): do not keep a second copy of the shards

    report.bytes_out = sum(p.stat().st_size for p in Path(out).glob("*.bin"))
    report.extra.update({
        "tokens": {s: m["tokens"] for s, m in meta_splits.items()},
        "docs_per_split": {s: m["docs"] for s, m in meta_splits.items()},
        "tokens_per_source": per_source,
        "tokens_per_s": round(n_tokens_all / seconds, 1) if seconds > 0 else 0.0,
        "bytes_per_token": round(report.bytes_in / n_tokens_all, 4) if n_tokens_all else 0.0,
        "unigram_entropy_nats": meta["unigram_entropy_nats"],
        "unigram_entropy_bits": meta["unigram_entropy_bits"],
        "encoder": meta["encoder"],
    })
    return meta
