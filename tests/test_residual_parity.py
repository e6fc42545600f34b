"""bench/residual_parity.py (a GPU check prepared for a device call): the script itself, on CPU under bf16 autocast."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_script_trains_both_streams_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "bench/residual_parity.py", "--allow-cpu", "--steps", "6", "--batch", "4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "residual_parity.json").read_text())
    fp32, bf16 = out["fp32_stream"], out["bf16_stream"]
    for run in (fp32, bf16):  # each trained: the last logged loss is under the first (step 0 vs step 5)
        assert run["train_loss_every_10"][0][0] == 0 and run["train_loss_every_10"][-1][0] == 5
        assert run["train_loss_every_10"][-1][1] < run["train_loss_every_10"][0][1]
    # the same initialisation and batches: step 0's losses differ only by the stream's rounding
    assert abs(fp32["train_loss_every_10"][0][1] - bf16["train_loss_every_10"][0][1]) < 0.05
    assert out["relative_gap"] == round((bf16["val_loss"] - fp32["val_loss"]) / fp32["val_loss"], 4)
    assert out["parity"] == (abs(out["relative_gap"]) <= out["tolerance"])
