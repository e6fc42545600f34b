"""The compact clustering core of the dedup driver against plain Python: union-find, exact groups, ranks."""
from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.curate import dedup_cluster
from pipeline.curate.minhash import DedupConfig


def python_components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Smallest member of each node's component: the obvious union-find."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_union_matches_python(seed):
    rng = random.Random(seed)
    n = rng.choice([1, 10, 200, 3000])
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randrange(3 * n))]
    parent = np.arange(n)
    for k in range(0, len(edges), 50):  # in batches, as bands arrive
        batch = np.array(edges[k:k + 50], dtype=np.int64).reshape(-1, 2)
        dedup_cluster._union(parent, batch[:, 0], batch[:, 1])
    assert dedup_cluster._roots(parent, np.arange(n)).tolist() == python_components(n, edges)


def test_exact_groups_and_ranks():
    a = np.array([5, 3, 5, 3, 9], dtype=np.uint64)
    b = np.array([1, 1, 1, 2, 0])
    g = dedup_cluster.exact_groups(a, b)
    assert g[0] == g[2] and len(set(g.tolist())) == 4
    # source rank first, then id order
    rank = dedup_cluster.ranks(np.array([1, 0, 1, 0]), np.array([3, 1, 0, 2]))
    assert rank.tolist() == [2, 1, 3, 0]


def test_cluster_keeps_best_rank_and_streams_like_verify_all():
    """Candidates in bands, repeated, some failing the signature check: the clusters equal the components
    of the verified pairs, each kept document is its cluster's best rank, exact copies say so."""
    rng = np.random.default_rng(0)
    n, cfg = 300, DedupConfig(threshold=0.7)
    sig = rng.integers(0, 1 << 32, (n, cfg.num_perm), dtype=np.uint64).astype(np.uint32)
    truth_edges = []
    for _ in range(120):  # near copies: 90% agreement; weak ones: 50% (must not join)
        i, j = rng.choice(n, 2, replace=False)
        keep = rng.random(cfg.num_perm) < (0.9 if rng.random() < 0.7 else 0.5)
        sig[j, keep] = sig[i, keep]
        truth_edges.append((int(i), int(j), bool(keep.mean() >= 0.7)))
    sig[7] = sig[8]  # an exact copy: same group
    group = np.arange(n)
    group[8] = group[7]
    rank = rng.permutation(n)
    cand = np.array([(i, j) for i, j, _ in truth_edges], dtype=np.int64)

    def bands(mask):
        ok = mask[cand[:, 0]] & mask[cand[:, 1]]
        for k in range(4):  # every candidate shows up in several bands
            yield cand[ok][rng.permutation(int(ok.sum()))]

    cl = dedup_cluster.cluster(rank, group, np.ones(n, bool), sig, cfg, pairs_fn=bands)
    mask = np.ones(n, bool)
    mask[8 if rank[8] > rank[7] else 7] = False
    verified = [(int(rank[i]), int(rank[j])) for i, j in cand if mask[i] and mask[j]
                and (sig[i] == sig[j]).mean() >= cfg.threshold] + [(int(rank[7]), int(rank[8]))]
    comp = python_components(n, verified)  # on ranks: the component's smallest rank is the kept doc
    row_of = np.argsort(rank)
    assert cl.root.tolist() == [int(row_of[comp[rank[i]]]) for i in range(n)]
    assert (cl.size == np.bincount(cl.root, minlength=n)[cl.root]).all()
    assert sum(1 for i, j, strong in truth_edges if not strong and cl.root[i] != cl.root[j]) > 0
    kept_7_8 = min(7, 8, key=lambda r: rank[r])
    assert cl.reason[15 - kept_7_8] == dedup_cluster.EXACT_CODE and cl.reason[kept_7_8] == dedup_cluster.KEPT
    moved = cl.root != np.arange(n)
    assert (cl.reason[moved] != dedup_cluster.KEPT).all() and (cl.est(~moved) == 1.0).all()
