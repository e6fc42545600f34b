"""bench/residual_parity.py (a GPU check prepared for a device call): the script itself, on CPU under bf16 autocast."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_script_trains_both_streams_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "bench/residual_parity.py", "--allow-cpu", "--steps", "6", "--batch", "4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "residual_parity.json").read_text())
    runs = {name: out[name] for name in ("fp32_stream", "bf16_stream", "fp32_stream_reordered")}
    for run in runs.values():  # each trained: the last logged loss is under the first (step 0 vs step 5)
        assert run["train_loss_every_10"][0][0] == 0 and run["train_loss_every_10"][-1][0] == 5
        assert run["train_loss_every_10"][-1][1] < run["train_loss_every_10"][0][1]
        assert run["above_floor"] == round(run["val_loss"] - out["floor"], 4)
        assert run["val_loss"] > out["floor"]  # nothing beats the chain's own entropy
    fp32, bf16, reordered = runs.values()
    # the same initialisation and batches: step 0's losses differ only by the stream's rounding
    assert abs(fp32["train_loss_every_10"][0][1] - bf16["train_loss_every_10"][0][1]) < 0.05
    # the reordered run starts from the same weights on other batches: its curve is its own
    assert fp32["train_loss_every_10"] != reordered["train_loss_every_10"]
    assert out["relative_gap"] == round((bf16["val_loss"] - fp32["val_loss"]) / fp32["val_loss"], 4)
    assert out["reordered_gap"] == round((reordered["val_loss"] - fp32["val_loss"]) / fp32["val_loss"], 4)
    assert out["holds"] == ((bf16["val_loss"] - fp32["val_loss"]) / fp32["val_loss"] <= out["tolerance"])


def test_bigram_floor_is_the_streams_conditional_entropy():
    """bigram_floor from the chain's table against the plug-in estimate from a long stream's own bigram counts (at
    16 ids every pair is seen often, so the estimate is tight); a stream over more ids has a higher floor."""
    from bench.gpu_train_check import bigram_floor, bigram_tokens

    stream = bigram_tokens(300_000, 16)
    pairs = np.zeros((16, 16))
    np.add.at(pairs, (stream[:-1], stream[1:]), 1)
    conditional = pairs / pairs.sum(axis=1, keepdims=True)
    estimate = -(pairs[pairs > 0] * np.log(conditional[pairs > 0])).sum() / pairs.sum()
    floor = bigram_floor(stream, 16)
    assert abs(floor - estimate) < 0.01, (floor, estimate)
    assert np.log(4) * 0.8 < floor < np.log(16)  # near the 4 successors' entropy, far under uniform
    assert bigram_floor(bigram_tokens(100_000, 2048), 2048) > floor
