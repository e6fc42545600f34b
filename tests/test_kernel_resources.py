"""bench/kernel_resources.py: the loss kernel compiled for sm90 offline, its registers and stack read back."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import require_triton

require_triton("bench/kernel_resources.py (it compiles for a GPU without one)")

ROOT = Path(__file__).resolve().parents[1]


def test_compiles_for_sm90_and_reads_registers_and_stack(tmp_path):
    out = tmp_path / "resources.json"
    proc = subprocess.run([sys.executable, "bench/kernel_resources.py", "--blocks", "8192", "32768", "--warps", "32",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["block"], r["warps"]) for r in rows] == [(8192, 32), (32768, 32)]
    small, large = rows
    assert 0 < small["registers"] <= 255 and small["stack_bytes"] == 0  # 8 columns a thread: nothing to spill
    # four times the columns a thread never needs fewer registers or less stack
    assert (large["registers"], large["stack_bytes"]) >= (small["registers"], small["stack_bytes"])
    assert "block warps registers" in proc.stdout
