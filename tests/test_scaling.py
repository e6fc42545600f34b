"""The scaling claim (GPT-4's predictable scaling): the power-law fit, its interval, the predict-then-train order,
and the stage end to end on a tiny token set."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.claims import scaling, scaling_fit
from pipeline.core import io, params
from pipeline.core.report import StageReport
from pipeline.lm import tokens

ROOT = Path(__file__).resolve().parents[1]
TRUE = dict(a=300.0, alpha=0.5, c=2.5)
N = np.geomspace(5e3, 5e5, 6)


def law(x, a=TRUE["a"], alpha=TRUE["alpha"], c=TRUE["c"]):
    return a * np.power(x, -alpha) + c


# --- the fit ----------------------------------------------------------------------------------------
def test_config_defaults_equal_params_yaml():
    got = dataclasses.asdict(scaling.ScalingConfig())
    assert got | {"widths": list(got["widths"])} == params.load("scaling", ROOT / "params.yaml")


def test_fit_recovers_an_exact_power_law():
    fit = scaling_fit.fit(N[:-1], law(N[:-1]))
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=1e-3)
    assert fit.c == pytest.approx(TRUE["c"], rel=1e-3)
    assert fit.a == pytest.approx(TRUE["a"], rel=1e-2)
    assert float(fit(N[-1])) == pytest.approx(float(law(N[-1])), rel=1e-4)


def test_fit_recovers_a_noisy_power_law_and_the_interval_covers_the_truth():
    rng = np.random.default_rng(7)
    y = law(N) + rng.normal(0, 0.01, len(N))
    fit = scaling_fit.fit(N[:-1], y[:-1])
    assert abs(fit.alpha - TRUE["alpha"]) < 0.15
    assert abs(fit.c - TRUE["c"]) < 0.1
    pred = scaling_fit.predict(fit, N[:-1], y[:-1], N[-1], draws=300, seed=0)
    lo, hi = pred.interval_95
    assert lo < pred.interval_68[0] <= pred.value <= pred.interval_68[1] < hi
    assert lo <= float(law(N[-1])) <= hi
    assert abs(pred.value - float(law(N[-1]))) < 0.05


def test_interval_widens_with_the_noise():
    rng = np.random.default_rng(3)
    eps = rng.normal(0, 1, len(N) - 1)
    widths = []
    for sd in (0.002, 0.02):
        y = law(N[:-1]) + sd * eps
        pred = scaling_fit.predict(scaling_fit.fit(N[:-1], y), N[:-1], y, N[-1], draws=200, seed=0)
        widths.append(pred.interval_95[1] - pred.interval_95[0])
    assert widths[1] > 5 * widths[0]


def test_prediction_flags_a_measurement_far_off():
    y = law(N[:-1]) + np.array([0.01, -0.01, 0.005, -0.005, 0.0])
    pred = scaling_fit.predict(scaling_fit.fit(N[:-1], y), N[:-1], y, N[-1], draws=200, seed=0)
    assert pred.inside(float(law(N[-1])))
    assert not pred.inside(float(law(N[-1])) + 0.5)


def test_l_of_c_at_fixed_tokens_is_l_of_n_rescaled():
    d = 150 * 16 * 64
    c = 6 * N[:-1] * d
    fn, fc = scaling_fit.fit(N[:-1], law(N[:-1])), scaling_fit.fit(c, law(N[:-1]))
    assert fc.alpha == pytest.approx(fn.alpha, rel=1e-3) and fc.c == pytest.approx(fn.c, rel=1e-3)
    assert fc.a == pytest.approx(fn.a * (6 * d) ** fn.alpha, rel=1e-2)


def test_fit_needs_three_distinct_points_and_finite_losses():
    with pytest.raises(ValueError):
        scaling_fit.fit([1e3, 2e3], [3.0, 2.9])
    with pytest.raises(ValueError):
        scaling_fit.fit([1e3, 2e3, 4e3], [3.0, float("nan"), 2.8])


# --- the order: predict, then train ----------------------------------------------------------------
def _tokens(folder: Path, vocab: int = 64, n: int = 6000, seed: int = 0) -> Path:
    """A bigram chain: each token picks its successor among 4, so wider models have something to learn."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, vocab, (vocab, 4))
    seq = [0]
    for choice in rng.integers(0, 4, n - 1):
        seq.append(int(succ[seq[-1], choice]))
    seq = np.asarray(seq, dtype=np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    cut = int(n * 0.9)
    tokens.write_shard(folder / "train_00000.bin", seq[:cut], vocab, vocab - 1)
    tokens.write_shard(folder / "val_00000.bin", seq[cut:], vocab, vocab - 1)
    return folder


SMALL = scaling.ScalingConfig(widths=(16, 32, 48, 64, 80), n_layer=1, head_dim=16, block_size=16, batch_size=8,
                              steps=20, warmup_steps=2, lr=0.01, eval_batches=2, bootstrap_draws=50)


def test_prediction_is_on_disk_before_the_largest_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, out = _tokens(tmp_path / "tok"), tmp_path / "out"
    calls = []

    def fake(data_dir, mcfg, tcfg, seed):
        largest = mcfg.n_embd == max(SMALL.widths)
        wobble = 0.003 * (-1) ** (mcfg.n_embd // 16)  # run-to-run noise: the interval needs a residual
        on_disk = (out / scaling.PREDICTION).exists()
        calls.append((mcfg.n_embd, on_disk))
        if largest:
            assert io.read_json(out / scaling.PREDICTION)["target"] == f"d{mcfg.n_embd}"
        n = scaling.count_params(mcfg, 64)[0]
        return {"final_val_loss": float(law(n)) + wobble, "final_train_loss": 0.0, "tokens_seen": 20 * 8 * 16,
                "tokens_per_s": 1.0}

    rep = StageReport("scaling")
    res = scaling.run(data, out, SMALL, 1, rep, train_fn=fake)
    assert calls == [(16, False), (32, False), (48, False), (64, False), (80, True)]  # smallest first, largest last, after
    assert res["order"]["prediction_before_largest"] is True
    assert res["order"]["prediction_written_at"] < res["order"]["largest_started_at"]
    assert res["inside"] is True and abs(res["error"]) < 0.02  # a power law is predicted
    assert [r["role"] for r in res["sizes"]] == ["fit", "fit", "fit", "fit", "predicted"]
    assert res["sizes"][-1]["C"] == 6 * res["sizes"][-1]["N"] * 20 * 8 * 16


def _lawful_training(loss_of_width=lambda width, loss: loss):
    """A stand-in for lm.train.train: each size's loss on the law, +-0.003 by width, then `loss_of_width(width, loss)`."""
    def fake(data_dir, mcfg, tcfg, seed):
        loss = float(law(scaling.count_params(mcfg, 64)[0])) + 0.003 * (-1) ** (mcfg.n_embd // 16)
        return {"final_val_loss": loss_of_width(mcfg.n_embd, loss), "tokens_seen": 2560}
    return fake


def test_a_largest_run_off_the_law_is_reported_outside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    fake = _lawful_training(loss_of_width=lambda width, loss: loss + 1.0 if width == 80 else loss)
    res = scaling.run(_tokens(tmp_path / "tok"), tmp_path / "out", SMALL, 1, StageReport("scaling"), train_fn=fake)
    assert res["inside"] is False and res["error"] > 0.9


def test_a_diverged_small_size_is_counted_and_left_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = dataclasses.replace(SMALL, widths=(16, 32, 48, 64, 80, 96))

    fake = _lawful_training(loss_of_width=lambda width, loss: math.nan if width == 32 else loss)
    rep = StageReport("scaling")
    res = scaling.run(_tokens(tmp_path / "tok"), tmp_path / "out", cfg, 1, rep, train_fn=fake)
    assert rep.errors["nonfinite_val_loss"] == 1
    assert [r["role"] for r in res["sizes"]] == ["fit", "excluded", "fit", "fit", "fit", "predicted"]
    json.dumps(res, allow_nan=False)  # the report stays strict JSON


def test_a_diverged_largest_size_is_reported_not_inside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    fake = _lawful_training(loss_of_width=lambda width, loss: math.inf if width == 80 else loss)
    rep = StageReport("scaling")
    res = scaling.run(_tokens(tmp_path / "tok"), tmp_path / "out", SMALL, 1, rep, train_fn=fake)
    assert res["measured"] is None and res["inside"] is False and rep.errors["nonfinite_val_loss"] == 1
    json.dumps(res, allow_nan=False)


# --- end to end -------------------------------------------------------------------------------------
def test_stage_runs_end_to_end_and_is_deterministic(tmp_path, monkeypatch):
    """The stage script on a tiny token set (real training), then run() again: same prediction, same plots."""
    monkeypatch.setenv("GPT_REPRO_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    data = _tokens(tmp_path / "tok")
    ps = yaml.safe_load((ROOT / "params.yaml").read_text())
    ps["scaling"] = dataclasses.asdict(SMALL) | {"widths": list(SMALL.widths)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(ps))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "scaling.py"), "--tokens", str(data),
                           "--out", "reports/scaling"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((tmp_path / "reports" / "scaling.json").read_text())
    assert rep["order"]["prediction_before_largest"] is True
    assert [r["name"] for r in rep["sizes"]] == ["d16", "d32", "d48", "d64", "d80"]
    losses = [r["final_val_loss"] for r in rep["sizes"]]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]  # a wider model learned more
    assert set(rep["interval_95"]) and rep["interval_95"][0] <= rep["predicted"] <= rep["interval_95"][1]
    assert rep["inside"] == (rep["interval_95"][0] <= rep["measured"] <= rep["interval_95"][1])
    plots = tmp_path / "reports" / "plots" / "scaling"
    first = {p.name: p.read_bytes() for p in sorted(plots.glob("*.json"))}
    assert set(first) == {"points.json"}
    kinds = [r["kind"] for r in json.loads(first["points.json"])]
    assert kinds[:6] == ["fit"] * 4 + ["measured", "prediction"] and set(kinds[6:]) == {"curve"}
    pred1 = io.read_json(tmp_path / "reports" / "scaling" / scaling.PREDICTION)

    shutil.rmtree(tmp_path / "reports")
    scaling.run(data, tmp_path / "reports" / "scaling", SMALL, ps["seed"], StageReport("scaling"))
    assert {p.name: p.read_bytes() for p in sorted(plots.glob("*.json"))} == first
    pred2 = io.read_json(tmp_path / "reports" / "scaling" / scaling.PREDICTION)
    assert {k: v for k, v in pred1.items() if k != "written_at"} == {k: v for k, v in pred2.items() if k != "written_at"}


def test_the_plot_template_dvc_yaml_names_exists_with_a_log_n_axis():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["scaling"]
    (plot,) = stage["plots"]
    (props,) = plot.values()
    spec = json.loads((ROOT / ".dvc" / "plots" / f"{props['template']}.json").read_text())
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
    assert "<DVC_METRIC_DATA>" in json.dumps(spec) and props["x"] == "N" and props["y"] == "loss"
