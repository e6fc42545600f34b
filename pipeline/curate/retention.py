"""GPT-3's probabilistic retention: keep a document when `np.random.pareto(alpha) > 1 - score` (appendix A).

The draw is `rng.pareto(alpha, rng.uniform(seed, id, "retention"))`: numpy's distribution, keyed by
document id, so a document's fate never depends on processing order or worker count.
P(keep | score) = (2 - score) ** -alpha, which the reports print beside the observed kept fraction.
"""
from __future__ import annotations

from pipeline.core import rng


def retention(seed: int, doc_id: str, score: float, alpha: float) -> tuple[float, bool]:
    """(draw, kept): GPT-3 keeps a document when pareto(alpha) > 1 - score; the draw is keyed by id."""
    draw = rng.pareto(alpha, rng.uniform(seed, doc_id, "retention"))
    return draw, draw > 1.0 - score


def keep_probability(score: float, alpha: float) -> float:
    """P(pareto(alpha) > 1 - score) = (1 + (1 - score)) ** -alpha = (2 - score) ** -alpha."""
    return (2.0 - score) ** -alpha
