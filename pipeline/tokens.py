"""Token shards: uint16 tokens behind a self-describing header (llm.c style).

Shard file `<split>_<n:05d>.bin`: a header of 256 int32 (magic, version, n_tokens,
vocab_size, eot_id, rest zero) then n_tokens uint16 tokens, the end-of-text id
between documents. The header is asserted on read, so a truncated or foreign file
fails loudly instead of training on garbage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io

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
