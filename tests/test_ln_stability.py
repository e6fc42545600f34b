"""Pre-LN vs Post-LN stability (pipeline/claims/ln_stability.py): the divergence rule and one tiny cell."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.claims import grid, ln_stability
from pipeline.claims.ln_stability import LnStabilityConfig, divergence
from pipeline.core import params
from pipeline.core.report import StageReport
from pipeline.lm import tokens



pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


FALLING = [7.0 - 2.0 * (1 - math.exp(-i / 30)) for i in range(200)]


# --- the rule ------------------------------------------------------------------------------------
def test_a_falling_curve_is_not_diverged():
    out = divergence(FALLING, window=10, rise_margin=0.5)
    assert not out["diverged"] and out["reason"] is None
    assert out["end"] == pytest.approx(out["min"]) and out["end"] < out["initial"]


def test_a_nan_is_diverged_at_its_step():
    out = divergence(FALLING[:50] + [float("nan")], window=10, rise_margin=0.5)
    assert out["diverged"] and out["reason"] == "non_finite" and out["step"] == 51
    assert divergence(FALLING[:5] + [float("inf")])["reason"] == "non_finite"


def test_a_curve_that_learns_then_rises_is_diverged():
    curve = FALLING[:100] + [FALLING[99] + 0.02 * i for i in range(100)]  # up 2 nats over 100 steps
    out = divergence(curve, window=10, rise_margin=0.5)
    assert out["diverged"] and out["reason"] == "rising"
    assert 100 < out["step"] < 200 and out["min_step"] <= 110


def test_a_small_rise_within_the_margin_is_not_diverged():
    curve = FALLING[:150] + [FALLING[149] + 0.004 * i for i in range(50)]  # up 0.2 nats
    assert not divergence(curve, window=10, rise_margin=0.5)["diverged"]
    assert divergence(curve, window=10, rise_margin=0.1)["reason"] == "rising"


def test_ending_above_the_first_loss_is_diverged():
    curve = [7.0, 6.0, 5.5] + [7.2] * 30
    assert divergence(curve, window=10, rise_margin=5.0)["reason"] == "above_initial"


def test_noise_alone_is_smoothed_away():
    rng = np.random.default_rng(0)
    noisy = [x + float(rng.normal(0, 0.3)) for x in FALLING]  # single steps jump by more than the margin
    assert not divergence(noisy, window=10, rise_margin=0.5)["diverged"]
    assert divergence(noisy, window=1, rise_margin=0.5)["diverged"]  # the rule reads the smoothed curve


def test_verdict_separates_stalled_from_trained():
    stable = divergence(FALLING)
    assert ln_stability.verdict(stable, 5.0, unigram=5.8) == "trained"
    assert ln_stability.verdict(stable, 5.85, unigram=5.8) == "stalled"
    assert ln_stability.verdict(divergence([7.0, float("nan")]), None, unigram=5.8) == "diverged"


# --- one cell ------------------------------------------------------------------------------------
def _tokens(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    text = np.concatenate([np.arange(40) % 37 + (rng.integers(0, 3, 40) == 0) for _ in range(150)])  # mostly periodic
    tokens.write_shard(folder / "train_00000.bin", text, 64, 63)
    tokens.write_shard(folder / "val_00000.bin", text[:800], 64, 63)
    return folder


TINY = LnStabilityConfig(ln="post", n_layer=2, n_head=2, n_embd=16, block_size=16, batch_size=4, lr=0.003,
                         warmup_steps=5, steps=30, eval_batches=2)


def test_one_tiny_cell_is_deterministic_and_learns(tmp_path):
    data = _tokens(tmp_path / "tok")
    a, rows_a = ln_stability.run(data, TINY, 7, StageReport("ln_stability"))
    b, rows_b = ln_stability.run(data, TINY, 7, StageReport("ln_stability"))
    assert rows_a == rows_b  # every step's loss, lr and grad norm, bit for bit
    assert {k: v for k, v in a.items() if k not in ("seconds", "tokens_per_s")} == \
        {k: v for k, v in b.items() if k not in ("seconds", "tokens_per_s")}
    assert len(rows_a) == 30 and a["steps_run"] == 30 and a["verdict"] in ("trained", "stalled")
    assert not a["diverged"] and a["final_loss"] < a["initial_loss"]
    assert rows_a[0]["lr"] == pytest.approx(0.003 / 5)  # warm-up: the first step takes 1/5 of the lr
    assert a["residual_scale_init"] is False  # paper init: post-LN is GPT-1, no scaled residual init
    c, _ = ln_stability.run(data, dataclasses.replace(TINY, ln="pre"), 7, StageReport("ln_stability"))
    assert c["residual_scale_init"] is True and c["initial_loss"] != a["initial_loss"]


def test_a_cell_that_blows_up_stops_and_says_so(tmp_path):
    data = _tokens(tmp_path / "tok")
    cfg = dataclasses.replace(TINY, lr=1e30, grad_clip=0.0, warmup_steps=0, steps=20)  # Adam's steps ~ lr
    out, rows = ln_stability.run(data, cfg, 7, StageReport("ln_stability"))
    assert out["diverged"] and out["verdict"] == "diverged"
    assert out["reason"] == "non_finite" and len(rows) == out["steps_run"] < 20
    assert "diverged" in out["claim"]["ours"] and "expects training" in out["claim"]["verdict"]  # 2 layers
    assert rows[-1]["train_loss"] is None and out["final_val_loss"] is None


def test_the_grid_is_16_distinct_cells_with_ref_safe_names():
    cells = list(grid.cells("ln_stability"))
    assert len(cells) == 16 and len({name for name, _ in cells}) == 16
    assert {tuple(sorted(k.items())) for _, k in cells}.__len__() == 16
    assert all("." not in name and " " not in name for name, _ in cells)
    assert {k["ln"] for _, k in cells} == {"pre", "post"} and {k["n_layer"] for _, k in cells} == {6, 24}
    assert set(grid.GRIDS["ln_stability"]) <= {f.name for f in dataclasses.fields(LnStabilityConfig)}


def test_grid_reads_experiments_from_exp_show_json():
    name, _ = next(grid.cells("ln_stability"))
    shown = [{"rev": "abc", "name": "main", "data": {}, "experiments": [{"revs": [{"rev": "def", "name": name, "data": {
        "timestamp": "2024", "metrics": {"reports/ln_stability.json": {"data": {"verdict": "stalled", "steps_run": 9}}}}}]}]}]
    recs = list(grid.find(shown, {name}))
    assert len(recs) == 1 and recs[0]["data"]["metrics"]["reports/ln_stability.json"]["data"]["verdict"] == "stalled"


def test_defaults_match_params_yaml():
    assert params.config(LnStabilityConfig, "ln_stability", Path(__file__).resolve().parents[1] / "params.yaml") == LnStabilityConfig()
