"""Randomness that does not depend on processing order.

Every random decision is a pure function of (seed, document id, purpose): the
same document gets the same draw whatever the worker count or shard order, which
is what makes outputs byte-identical across executors.
"""
from __future__ import annotations

import hashlib
import math


def uniform(seed: int, key: str, purpose: str = "") -> float:
    """A uniform draw in [0, 1) keyed by (seed, key, purpose): 53 bits of blake2b."""
    digest = hashlib.blake2b(f"{seed}\x1f{purpose}\x1f{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def pareto(alpha: float, u: float) -> float:
    """Inverse CDF of numpy's `pareto(alpha)` (a Lomax: P(X > x) = (1 + x) ** -alpha).

    GPT-3 keeps a crawl document when `np.random.pareto(alpha) > 1 - score`; feeding
    a keyed uniform here gives the same distribution with a per-document draw.
    """
    return math.pow(1.0 - u, -1.0 / alpha) - 1.0
