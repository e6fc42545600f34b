"""Power tables and the finaliser for polynomial hashes mod 2**64 (dedup's word shingles, contamination's n-grams).

A polynomial hash of a span is a difference of prefix sums scaled by a power of the base; numpy computes those
with uint64 arithmetic, which wraps mod 2**64 exactly as the hash is defined.
"""
from __future__ import annotations

import numpy as np

_CACHE: dict[int, np.ndarray] = {}


def powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64, cached per base and grown by doubling (one cumprod per size class;
    callers keep n near their batch size, so a few MB at most)."""
    have = _CACHE.get(base)
    if have is None or len(have) < n:
        size = 1 << max(16, (n - 1).bit_length())
        out = np.full(size, base, dtype=np.uint64)
        out[0] = 1
        with np.errstate(over="ignore"):
            _CACHE[base] = have = np.cumprod(out, dtype=np.uint64)  # wraps mod 2**64, as wanted
    return have[:n]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (returned): spreads the weak low-order bits of a
    polynomial hash over all 64, so any slice of the bits (an LSH band, a bucket) is well mixed."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x
