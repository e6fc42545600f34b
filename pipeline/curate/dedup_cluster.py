"""Dedup clustering in compact arrays: keep-rule ranks, exact groups, streamed LSH edges, union-find over ints.

The driver of the dedup stage holds, per document, a priority rank, an exact-group number, a has-words flag
and a parent: about 40 bytes in numpy arrays (plus the ids as one Arrow string array), never a Python
object per document, and never all candidate pairs: they arrive band by band (the band pass writes one
file per band), pairs already joined are dropped, the rest are checked against the signatures (rows read
from the shard files) and hooked into the union-find. The result is the same as verifying every unique
candidate pair first and then clustering (components of the same graph): tests/test_dedup_decisions.py
holds the decisions of the pre-compact code.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from pipeline.curate.minhash import DedupConfig, bucket_pairs, optimal_bands, sorted_bands

KEPT, EXACT_CODE, NEAR_CODE = 0, 1, 2  # Clusters.reason


@dataclasses.dataclass
class Clusters:
    """Per document (row): its cluster's kept row, the cluster size, why it goes (KEPT, EXACT_CODE, NEAR_CODE)
    and how many of the `width` signature values it shares with the kept document (all, for a kept one).
    int32 rows below 2**31 documents: 11 bytes per document in all."""

    root: np.ndarray
    size: np.ndarray
    reason: np.ndarray
    agree: np.ndarray
    width: int = 1

    def est(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Signature agreement (estimated Jaccard) with the kept document: the mean the check used."""
        return (self.agree if rows is None else self.agree[rows]) / self.width


def ranks(source_rank: np.ndarray, id_order: np.ndarray) -> np.ndarray:
    """Keep-rule rank of each row (0 survives first): by source priority, then by id.

    id_order: rows sorted by id (a stable argsort). Ties (a repeated id) go to the earlier row.
    """
    order = id_order[np.argsort(source_rank[id_order], kind="stable")]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def exact_groups(*keys: np.ndarray) -> np.ndarray:
    """Group number of each row: rows with equal keys (all arrays equal) share one."""
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(keys[::-1])
    new = np.ones(len(order), dtype=bool)
    for k in keys:
        s = k[order]
        new[1:] &= s[1:] == s[:-1]
    new = ~new
    new[0] = True
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    return group


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Root of each node of `x` (pointer chasing on the subset, vectorised)."""
    while True:
        up = parent[x]
        if (up == x).all():
            return x
        x = up


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the trees of a[k] and b[k] for every k, the smaller root on top (parent[x] <= x throughout).

    Each round hooks every differing pair's larger root under the smaller (np.minimum.at settles
    collisions: the smallest wins, the others retry next round) and halves the paths.
    """
    while len(a):
        ra, rb = _roots(parent, a), _roots(parent, b)
        differ = ra != rb
        a, b = np.minimum(ra, rb)[differ], np.maximum(ra, rb)[differ]
        np.minimum.at(parent, b, a)
        parent[:] = parent[parent]


def _agreement(sig, rows: np.ndarray, other: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Signature values rows[k] and other[k] share (count / num_perm is the mean the old check took, exactly)."""
    if not len(rows):
        return np.zeros(0, dtype=np.uint16)
    return np.concatenate([(sig[rows[k:k + chunk]] == sig[other[k:k + chunk]]).sum(axis=1, dtype=np.uint16)
                           for k in range(0, len(rows), chunk)])


def in_memory_pairs(sig, cfg: DedupConfig) -> Callable[[np.ndarray], Iterable[np.ndarray]]:
    """pairs_fn for signatures held in memory: candidate pairs band by band among the rows of `mask`."""
    def pairs(mask: np.ndarray):
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        h, order = sorted_bands(np.asarray(sig[idx]), *optimal_bands(cfg.threshold, cfg.num_perm))
        for band in range(h.shape[0]):
            yield idx[bucket_pairs([(h, order, 0)], band, None)]
    return pairs


def cluster(rank: np.ndarray, group: np.ndarray, has_words: np.ndarray, sig, cfg: DedupConfig,
            pairs_fn: Callable[[np.ndarray], Iterable[np.ndarray]] | None = None) -> Clusters:
    """Exact groups, then LSH candidates whose signature agreement is >= threshold, joined; the best-ranked
    row of each cluster is kept.

    Args:
        rank: keep-rule rank per row (`ranks`), a permutation of 0..n-1.
        group: exact-group number per row (`exact_groups`).
        has_words: rows that saw at least one shingle.
        sig: (n, num_perm) signatures: an array or a minhash.SigStore.
        cfg: params.yaml `dedup`.
        pairs_fn: mask -> iterable of candidate pair arrays (rows, any order) among rows where mask is True
            (one per exact group, with words); None: banded in memory from `sig`.
    """
    n = len(rank)
    it = np.int32 if n < 2**31 else np.int64  # row/rank type: 4 bytes per document up to 2 billion
    rank = np.asarray(rank).astype(it, copy=False)
    row_of = np.empty(n, dtype=it)
    row_of[rank] = np.arange(n, dtype=it)
    # the union-find runs on ranks, so a root (the smallest rank of its tree) is the document kept
    by_group = np.lexsort((rank, group))
    head = np.ones(n, dtype=bool)
    head[1:] = group[by_group][1:] != group[by_group][:-1]
    best = rank[by_group][np.maximum.accumulate(np.where(head, np.arange(n), 0))] if n else by_group
    parent = np.empty(n, dtype=it)
    parent[rank[by_group]] = best
    mask = np.zeros(n, dtype=bool)
    mask[by_group[head]] = True
    mask &= np.asarray(has_words, dtype=bool)
    del by_group, best, head
    width = sig[np.zeros(1, dtype=np.int64)].shape[1] if n else 1
    for pairs in (pairs_fn or in_memory_pairs(sig, cfg))(mask):
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        a, b = rank[pairs[:, 0]], rank[pairs[:, 1]]
        new = _roots(parent, a) != _roots(parent, b)  # already joined (an earlier band): nothing to check
        a, b, pairs = a[new], b[new], pairs[new]
        ok = _agreement(sig, pairs[:, 0], pairs[:, 1]) / width >= cfg.threshold
        _union(parent, a[ok], b[ok])
    root_rank = _roots(parent, rank)  # per row
    del parent
    root = row_of[root_rank]
    size = np.bincount(root_rank, minlength=n).astype(it)[root_rank]
    del root_rank, row_of
    moved = np.flatnonzero(root != np.arange(n, dtype=it))
    reason = np.full(n, KEPT, dtype=np.int8)
    reason[moved] = np.where(group[moved] == group[root[moved]], EXACT_CODE, NEAR_CODE)
    agree = np.full(n, width, dtype=np.uint16)
    agree[moved] = _agreement(sig, moved, root[moved])
    return Clusters(root=root, size=size, reason=reason, agree=agree, width=width)
