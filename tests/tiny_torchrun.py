"""A tiny GPT trained by stages/train.py under torchrun with 2 CPU ranks: the setup test_train_fsdp.py and
test_triton_loss.py share (imported as a plain module, as test_executor_slurm imports slurm_cluster)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from pipeline.lm import tokens

ROOT = Path(__file__).resolve().parents[1]
PLAIN_ENV = {"GPT_REPRO_THREADS": "1", "PATH": "/usr/bin:/bin"}


def setup(folder: Path, dropout: float = 0.0, **train_kw) -> dict:
    """A tiny model and a period-50 token stream in `folder`; returns the params written to its params.yaml."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    # block 17: the position table's 17 rows split 9 / 8, so uneven shards are gathered and cut back too
    p["model"].update(n_layer=2, n_embd=32, n_head=2, block_size=17, dropout=dropout)
    p["train"].update({"max_steps": 4, "eval_interval": 2, "eval_batches": 1, "batch_size": 8, "warmup_steps": 2,
                       **train_kw})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(p))
    tokens.write_shard(folder / "tok" / "train_00000.bin", np.tile(np.arange(50), 20), 64, 63)
    tokens.write_shard(folder / "tok" / "val_00000.bin", np.tile(np.arange(50), 4), 64, 63)
    return p


def torchrun(folder: Path, script: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`script` on 2 ranks in `folder`; `env` replaces the plain environment (one torch thread, a bare PATH)."""
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *script], cwd=folder, capture_output=True, text=True, timeout=240, env=env or PLAIN_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def stage(folder: Path, env: dict | None = None) -> dict:
    """stages/train.py on 2 ranks in `folder`; its reports/train.json."""
    torchrun(folder, [str(ROOT / "stages/train.py"), "--data", "tok", "--out", "models/gpt", "--live", "live"], env)
    return json.loads((folder / "reports/train.json").read_text())
