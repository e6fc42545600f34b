"""train.strategy fsdp (pipeline/lm/distributed.py): FSDP2 against DDP on CPU with gloo under torchrun, exact
resume of a killed sharded run, one checkpoint format for both, and the train.deterministic switch."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core import io, params
from pipeline.lm import tokens
from pipeline.lm.checkpoint import load_checkpoint
from pipeline.lm.distributed import CUBLAS_WORKSPACE, deterministic
from pipeline.lm.model import ModelConfig
from pipeline.lm.device_knobs import resolved_residual_dtype
from pipeline.lm.train import TrainConfig, recorded, run_fingerprint, train
from tiny_torchrun import setup, stage, torchrun

ROOT = Path(__file__).resolve().parents[1]
# A driver for a killed run: the stage has no stop switch, train() has (stop_after stands in for a kill).
DRIVER = f"""import sys; sys.path.insert(0, {str(ROOT)!r})
from pipeline.core import params
from pipeline.lm.distributed import exit_after_collectives
from pipeline.lm.model import ModelConfig
from pipeline.lm.train import TrainConfig, TrainingStopped, train
try:
    train("tok", "models/gpt", "live", params.config(ModelConfig, "model"), params.config(TrainConfig, "train"),
          seed=params.load("seed"), threads=1, progress=False, stop_after=int(sys.argv[1]))
except TrainingStopped:
    exit_after_collectives("fsdp")
"""


def _weights(folder: Path) -> dict:
    return load_checkpoint(folder / "models/gpt/ckpt.pt")[0].state_dict()


def test_fsdp_two_processes_match_ddp_and_write_the_same_checkpoint_format(tmp_path):
    """2 ranks FSDP vs 2 ranks DDP, 2 micro-batches per rank: the same losses and weights to 1e-5 (reduce-scatter
    per micro-batch vs one all-reduce: float summation order only), and a checkpoint export/evaluate read alike."""
    runs = {}
    for strategy in ("ddp", "fsdp"):
        setup(tmp_path / strategy, strategy=strategy, grad_accum_steps=2)
        runs[strategy] = stage(tmp_path / strategy)
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    assert (fsdp["strategy"], fsdp["world_size"], fsdp["tokens_seen"]) == ("fsdp", 2, 4 * 8 * 17)
    assert "ddp_max_param_divergence" not in fsdp and ddp["ddp_max_param_divergence"] == 0.0
    for key in ("last_step_train_loss", "final_val_loss", "final_train_loss"):
        assert fsdp[key] == pytest.approx(ddp[key], abs=1e-5), key
    curves = {s: [float(r.split("\t")[1]) for r in
                  (tmp_path / s / "live/plots/metrics/train_loss.tsv").read_text().split("\n")[1:] if r]
              for s in runs}
    assert len(curves["fsdp"]) == 4 and np.allclose(curves["fsdp"], curves["ddp"], atol=1e-5, rtol=0)
    assert curves["fsdp"][-1] < curves["fsdp"][0]  # it trains
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "fsdp")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    raw = {s: torch.load(tmp_path / s / "models/gpt/ckpt.pt", weights_only=True) for s in runs}
    for s, ckpt in raw.items():  # plain whole tensors, the tied embedding / LM head one storage
        assert all(type(v) is torch.Tensor for v in ckpt["model"].values()), s
        assert ckpt["model"]["lm_head.weight"].untyped_storage().data_ptr() == \
            ckpt["model"]["transformer.wte.weight"].untyped_storage().data_ptr(), s
    assert raw["fsdp"]["params"]["train"]["strategy"] == "fsdp" and "strategy" not in raw["ddp"]["params"]["train"]
    od, of = raw["ddp"]["optimizer"], raw["fsdp"]["optimizer"]  # the same optimizer state layout, whole moments
    assert od["param_groups"] == of["param_groups"] and od["state"].keys() == of["state"].keys()
    for i, s in od["state"].items():
        assert {k: v.shape for k, v in s.items()} == {k: v.shape for k, v in of["state"][i].items()}
        assert torch.allclose(s["exp_avg"], of["state"][i]["exp_avg"], atol=1e-6, rtol=0)


GRADS = f"""import sys; sys.path.insert(0, {str(ROOT)!r})
import torch
from torch.distributed.fsdp import fully_shard
from pipeline.lm.model import GPT, GPTConfig
torch.distributed.init_process_group("gloo")
rank = torch.distributed.get_rank()
torch.manual_seed(0)
cfg = GPTConfig(vocab_size=77, block_size=33, n_layer=2, n_head=2, n_embd=40)
ref = GPT(cfg)
sharded = GPT(cfg)
sharded.load_state_dict(ref.state_dict())
ddp = torch.nn.parallel.DistributedDataParallel(ref)
for block in sharded.transformer.h:
    fully_shard(block)
fully_shard(sharded)
g = torch.Generator().manual_seed(1)
x, y = torch.randint(0, 77, (4, 33), generator=g), torch.randint(0, 77, (4, 33), generator=g)
rows = slice(2 * rank, 2 * rank + 2)
ddp(x[rows], y[rows])[1].backward()
sharded(x[rows], y[rows])[1].backward()
diff = max((p.grad - q.grad.full_tensor()).abs().max().item() for p, q in zip(ref.parameters(), sharded.parameters()))
n_ddp = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0).item()
n_fsdp = torch.nn.utils.clip_grad_norm_(sharded.parameters(), 1.0).full_tensor().item()
if rank == 0:
    print("RESULT", diff, n_ddp, n_fsdp)
"""


def test_fsdp_gradients_are_ddps_bit_for_bit(tmp_path):
    """Where the two strategies part: not the gradients (a 2-rank sum is the same sum), only the clip norm, which
    FSDP adds up shard by shard; that last-bits difference is what the 1e-5 loss tolerance above absorbs."""
    (tmp_path / "grads.py").write_text(GRADS)
    out = torchrun(tmp_path, ["grads.py"])
    diff, n_ddp, n_fsdp = map(float, out.stdout.split("RESULT")[1].split())
    assert diff == 0.0
    assert n_fsdp == pytest.approx(n_ddp, rel=1e-5) and n_ddp > 0


def test_killed_fsdp_run_resumes_to_the_same_bits(tmp_path):
    """Stop both ranks after step 5 (last resume checkpoint: step 4), rerun the stage: the final checkpoint equals
    an uninterrupted FSDP run's byte for byte (weights, AdamW moments cut back into shards, RNG, curves)."""
    for name in ("full", "killed"):
        setup(tmp_path / name, dropout=0.1, strategy="fsdp", max_steps=6)
    full = stage(tmp_path / "full")
    (tmp_path / "killed" / "driver.py").write_text(DRIVER)
    torchrun(tmp_path / "killed", ["driver.py", "5"])
    assert not (tmp_path / "killed/models/gpt/ckpt.pt").exists()
    (resume,) = (tmp_path / "killed/data/resume/train").rglob("resume.pt")
    assert torch.load(resume, weights_only=True)["iter"] == 4
    resumed = stage(tmp_path / "killed")
    assert resumed["resumed_from_step"] == 4 and "resumed_from_step" not in full
    for key in ("last_step_train_loss", "final_val_loss", "final_train_loss", "tokens_seen"):
        assert resumed[key] == full[key], key
    assert io.sha256_file(tmp_path / "full/models/gpt/ckpt.pt") == io.sha256_file(tmp_path / "killed/models/gpt/ckpt.pt")


def test_fsdp_in_one_process_equals_the_plain_model(tmp_path, in_tmp_cwd):
    """strategy fsdp without torchrun: a one-rank mesh (the sharded code path, nothing to shard) computes what the
    bare model computes, and the process group it opened is closed again."""
    p = setup(tmp_path)
    mcfg, tcfg = params.build(ModelConfig, p["model"]), params.build(TrainConfig, p["train"])
    plain = train("tok", "models/plain", "live1", mcfg, tcfg, seed=1, threads=1, progress=False).to_dict()
    fsdp = train("tok", "models/fsdp", "live2", mcfg, dataclasses.replace(tcfg, strategy="fsdp"), seed=1, threads=1,
                 progress=False).to_dict()
    assert not torch.distributed.is_initialized()
    assert fsdp["strategy"] == "fsdp" and fsdp["world_size"] == 1
    assert fsdp["final_val_loss"] == pytest.approx(plain["final_val_loss"], abs=1e-6)
    a, b = load_checkpoint("models/plain/ckpt.pt")[0].state_dict(), load_checkpoint("models/fsdp/ckpt.pt")[0].state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    with pytest.raises(ValueError, match="strategy"):
        train("tok", "models/x", "live3", mcfg, dataclasses.replace(tcfg, strategy="zero3"), seed=1, threads=1,
              progress=False)


def test_new_knobs_leave_a_default_run_as_it_was(tmp_path):
    """strategy, deterministic, loss_kernel and residual_dtype came after the first models: at their defaults the
    checkpoint's recorded params and the resume fingerprint are what they were (the committed models/ keep their
    bytes); set, they count."""
    late = {"strategy", "deterministic", "loss_kernel", "residual_dtype"}
    # a default run records residual_dtype resolved: on a CPU `auto` is float32, the stream the first models had
    default = dataclasses.replace(TrainConfig(), residual_dtype=resolved_residual_dtype(TrainConfig().residual_dtype,
                                                                                         "cpu"))
    assert set(recorded(default)) == {f.name for f in dataclasses.fields(TrainConfig)} - late
    assert recorded(TrainConfig(strategy="fsdp"))["strategy"] == "fsdp"
    assert recorded(TrainConfig(deterministic=True))["deterministic"] is True
    assert recorded(TrainConfig(loss_kernel="triton"))["loss_kernel"] == "triton"
    assert recorded(TrainConfig(residual_dtype="bfloat16"))["residual_dtype"] == "bfloat16"
    tokens.write_shard(tmp_path / "train_00000.bin", np.arange(50), 64, 63)
    prints = {run_fingerprint(ModelConfig(), cfg, 1, tmp_path) for cfg in
              (default, TrainConfig(strategy="fsdp"), TrainConfig(deterministic=True),
               TrainConfig(loss_kernel="triton"), TrainConfig(residual_dtype="bfloat16"))}
    assert len(prints) == 5  # a bf16 stream's run never resumes an fp32 one


def test_deterministic_switch_sets_and_restores_the_cuda_settings(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    torch.use_deterministic_algorithms(False)
    with deterministic(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.deterministic
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own setting is kept
    with deterministic(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    with deterministic(False):  # off: CPU runs stay deterministic anyway, GPU runs untouched
        assert torch.are_deterministic_algorithms_enabled() == (not torch.cuda.is_available())


def test_a_process_that_ran_collectives_ends_at_once_with_its_output_flushed():
    """exit_after_collectives: os._exit(0) for torchrun ranks and FSDP runs (gloo's worker threads must not race
    interpreter shutdown), after flushing what was printed; a plain single-process DDP run returns and goes on."""
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pipeline.lm.distributed import exit_after_collectives\n"
              "print('written', end='')\n"
              "exit_after_collectives(sys.argv[1])\n"
              "print(' and returned', end='')\n"
              "raise SystemExit(3)\n")
    env = {"PATH": "/usr/bin:/bin"}
    ended = subprocess.run([sys.executable, "-c", script, "fsdp"], capture_output=True, text=True, env=env)
    assert (ended.returncode, ended.stdout) == (0, "written")
    ranked = subprocess.run([sys.executable, "-c", script, "ddp"], capture_output=True, text=True,
                            env={**env, "WORLD_SIZE": "2"})
    assert (ranked.returncode, ranked.stdout) == (0, "written")
    plain = subprocess.run([sys.executable, "-c", script, "ddp"], capture_output=True, text=True, env=env)
    assert (plain.returncode, plain.stdout) == (3, "written and returned")
