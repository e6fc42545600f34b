"""GPT-3's probabilistic retention: keep a document when `np.random.pareto(alpha) > 1 - score` (appendix A).

The draw is `rng.pareto(alpha, rng.uniform(seed, id, "retention"))`: numpy's distribution, keyed by
document id, so a document's fate never depends on processing order or worker count.
P(keep | score) = (2 - score) ** -alpha, which the reports print beside the observed kept fraction.
`retention_batch` gives the same draws for a whole batch at once (the filter's path).
"""
from __future__ import annotations

import hashlib
import math
from itertools import repeat

import numpy as np

from pipeline.core import rng

PURPOSE = "retention"


def retention(seed: int, doc_id: str, score: float, alpha: float) -> tuple[float, bool]:
    """(draw, kept): GPT-3 keeps a document when pareto(alpha) > 1 - score; the draw is keyed by id."""
    draw = rng.pareto(alpha, rng.uniform(seed, doc_id, PURPOSE))
    return draw, draw > 1.0 - score


def retention_batch(seed: int, doc_ids: list[str], scores: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(draws, kept) of `retention` for every document of a batch, bit for bit the same values.

    The keyed hash is one blake2b per id (rng.uniform's recipe: 53 bits of an 8-byte digest); the
    digests become uniforms in one numpy step, exactly, since a 53-bit integer over 2**53 is a float64
    without rounding. The power stays libm's `pow`, one C call per draw: numpy's vectorised float64
    power (SVML on AVX-512) differs from it in the last bit for about 4% of inputs (measured), which
    could flip a draw at the keep threshold or its 6-digit rounding.
    """
    prefix = f"{seed}\x1f{PURPOSE}\x1f"
    digests = b"".join(hashlib.blake2b(f"{prefix}{i}".encode(), digest_size=8).digest() for i in doc_ids)
    uniform = (np.frombuffer(digests, dtype=">u8") >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    draws = libm_pow(1.0 - uniform, -1.0 / alpha) - 1.0
    return draws, draws > 1.0 - np.asarray(scores, dtype=np.float64)


def libm_pow(base: np.ndarray, exponent: float) -> np.ndarray:
    """base ** exponent elementwise with the C library's pow, as math.pow and Python floats compute it."""
    return np.fromiter(map(math.pow, np.asarray(base, np.float64).tolist(), repeat(exponent)), np.float64, len(base))


def keep_probability(score: float, alpha: float) -> float:
    """P(pareto(alpha) > 1 - score) = (1 + (1 - score)) ** -alpha = (2 - score) ** -alpha."""
    return (2.0 - score) ** -alpha


def keep_probabilities(scores: np.ndarray, alpha: float) -> np.ndarray:
    """keep_probability of every score, the same floats (libm_pow)."""
    return libm_pow(2.0 - np.asarray(scores, np.float64), -alpha)
