"""Sparse vs dense at equal steps (pipeline/claims/sparse_dense.py): both variants, same tokens, one table."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.claims import sparse_dense
from pipeline.claims.sparse_dense import SparseDenseConfig
from pipeline.core import params
from pipeline.core.report import StageReport
from pipeline.lm import tokens

TINY = SparseDenseConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, sparse_window=4, batch_size=4, lr=0.01,
                         warmup_steps=2, steps=12, eval_batches=2, timing_skip=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _tokens(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    text = rng.integers(0, 60, 6000)
    text[1::2] = text[::2]  # every other token repeats the one before: learnable by a 2-token band too
    tokens.write_shard(folder / "train_00000.bin", text, 64, 63)
    tokens.write_shard(folder / "val_00000.bin", text[:600], 64, 63)
    return folder


def test_both_variants_train_on_the_same_tokens_and_steps(tmp_path):
    result, curves = sparse_dense.run(_tokens(tmp_path / "tok"), TINY, 3, StageReport("sparse_vs_dense"))
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["dense", "alternating_sparse"]
    assert result["same_batches"] and rows["dense"]["batches_sha256"] == rows["alternating_sparse"]["batches_sha256"]
    assert [len(c) for c in curves.values()] == [12, 12] and result["tokens_per_variant"] == 12 * 4 * 32
    for row in rows.values():
        assert row["val_loss"] is not None and row["val_loss"] < np.log(64)  # both learned something
        assert row["tokens_per_s"] > 0 and row["step_ms_min"] <= row["step_ms_median"]
    # the band is narrower than the block, so a banded layer attends to fewer keys: fewer attention FLOPs
    assert rows["alternating_sparse"]["attention_flops_per_token"] < rows["dense"]["attention_flops_per_token"]
    assert result["sparse_over_dense"]["attention_flops"] < 1.0
    # same init (equal shapes, same seed), different attention: the first losses differ only by the band
    assert curves["dense"][0]["train_loss"] != curves["alternating_sparse"][0]["train_loss"]


def test_losses_are_deterministic_and_the_table_has_both_rows(tmp_path):
    data = _tokens(tmp_path / "tok")
    a, ca = sparse_dense.run(data, TINY, 3, StageReport("sparse_vs_dense"))
    b, cb = sparse_dense.run(data, TINY, 3, StageReport("sparse_vs_dense"))
    assert ca == cb and [r["val_loss"] for r in a["rows"]] == [r["val_loss"] for r in b["rows"]]
    table = sparse_dense.markdown(a)
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert [line.split("|")[1].strip() for line in body] == ["dense", "alternating_sparse"]
    assert str(a["rows"][0]["val_loss"]) in table and "sparse / dense" in table
    assert set(a["claim"]) == {"paper", "ours", "verdict"} and str(a["rows"][1]["val_loss"]) in a["claim"]["ours"]


def test_a_band_as_wide_as_the_block_is_refused():
    with pytest.raises(ValueError, match="sparse_window"):
        dataclasses.replace(TINY, sparse_window=32)


def test_defaults_match_params_yaml():
    assert params.config(SparseDenseConfig, "sparse_vs_dense", Path(__file__).resolve().parents[1] / "params.yaml") == SparseDenseConfig()
