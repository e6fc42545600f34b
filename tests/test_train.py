"""pipeline/lm/train.py and stages/train.py: schedule, optimiser groups, real (tiny) training runs."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.core import io, params
from pipeline.lm import tokens
from pipeline.lm.model import GPT, ModelConfig, from_params
from pipeline.lm.checkpoint import load_checkpoint
from pipeline.lm.batches import mean_loss, random_batch
from pipeline.lm.device_knobs import residual_dtype_of, resolved_residual_dtype, use_triton_loss
from pipeline.lm.train import TrainConfig, TrainingStopped, batch_at, lr_at, make_optimizer, recorded, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0)
FAST = TrainConfig(max_steps=100, batch_size=8, lr=0.01, warmup_steps=10, eval_interval=50, eval_batches=2)


def _write_tokens(folder: Path, train_tokens, val_tokens, vocab: int, eot: int, meta: dict | None = None) -> Path:
    tokens.write_shard(folder / "train_00000.bin", np.asarray(train_tokens), vocab, eot)
    if val_tokens is not None:
        tokens.write_shard(folder / "val_00000.bin", np.asarray(val_tokens), vocab, eot)
    if meta is not None:
        io.write_json(folder / "meta.json", meta)
    return folder


def _repetitive(tmp_path: Path, meta: dict | None = None) -> Path:
    # A period-50 stream over 50 symbols: unigram entropy ln 50 = 3.91 nats, but each next token
    # is determined by the previous one, so a working model drives the loss towards 0.
    return _write_tokens(tmp_path / "tok", np.tile(np.arange(50), 100), np.tile(np.arange(50), 10), 64, 63, meta)


def test_train_config_defaults_equal_params_yaml():
    assert dataclasses.asdict(TrainConfig()) == params.load("train")


def test_cosine_schedule_values():
    cfg = TrainConfig(max_steps=110, lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1)  # linear warmup from lr/warmup
    assert lr_at(4, cfg) == pytest.approx(0.5)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(60, cfg) == pytest.approx(0.55)  # halfway: (max + min) / 2
    assert lr_at(110, cfg) == pytest.approx(0.1)  # ends at min_lr_ratio * lr
    assert lr_at(500, cfg) == pytest.approx(0.1)
    decay = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_weight_decay_only_on_matrices():
    model = GPT(from_params(TINY, vocab_size=64))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert any(p is model.transformer.wte.weight for p in decay["params"])
    padding = (model.transformer.wte.weight.shape[0] - 64) * model.config.n_embd  # rows the model pads (tied once)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params() + padding
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_random_batch_is_shifted_by_one_and_seeded():
    data = np.arange(1000, dtype=np.uint16)
    x, y = random_batch(data, 4, 16, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    x2, _ = random_batch(data, 4, 16, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2)


def test_training_beats_unigram_entropy_and_writes_outputs(tmp_path, in_tmp_cwd):
    data = _repetitive(tmp_path, meta={"vocab_size": 64, "eot_id": 63, "tokenizer_sha256": "f" * 64,
                                       "unigram_entropy_nats": math.log(50),
                                       "splits": {"train": {"shards": ["train_00000.bin"]},
                                                  "val": {"shards": ["val_00000.bin"]}}})
    report = train(data, "models/gpt", "reports/train", TINY, FAST, seed=1, threads=1, progress=False).write()
    assert report["unigram_entropy_nats"] == pytest.approx(math.log(50), abs=1e-6)
    assert report["final_val_loss"] < 0.25 * math.log(50) and report["val_loss_below_unigram"] is True
    assert report["final_train_loss"] < 0.25 * math.log(50)
    assert report["steps"] == 100 and report["tokens_seen"] == 100 * 8 * 32
    assert report["params"] > 0 and report["tokens_per_s"] > 0
    assert report["loss_kernel"] == ("triton" if use_triton_loss("auto", "cuda" if torch.cuda.is_available() else "cpu")
                                     else "torch")  # what auto resolved to
    assert report["residual_dtype"] == ("bfloat16" if torch.cuda.is_available() else "float32")  # auto, resolved
    assert json.loads(Path("reports/train.json").read_text())["final_val_loss"] == report["final_val_loss"]
    # dvclive: metrics.json (latest values) and one tsv per metric, val at steps 0, 50, 100.
    metrics = json.loads(Path("reports/train/metrics.json").read_text())
    assert metrics["step"] == 100 and metrics["val_loss"] == pytest.approx(report["final_val_loss"], abs=1e-5)
    val_rows = Path("reports/train/plots/metrics/val_loss.tsv").read_text().split("\n")
    assert [r.split("\t")[0] for r in val_rows[1:] if r] == ["0", "50", "100"]
    assert len(Path("reports/train/plots/metrics/train_loss.tsv").read_text().split()) == 2 + 2 * 100
    assert Path("reports/train/plots/metrics/lr.tsv").exists()
    assert not (in_tmp_cwd / "dvc.yaml").exists()  # dvclive must not write a dvc.yaml of its own
    # The checkpoint reproduces the reported val loss on the same fixed batches.
    model, ckpt = load_checkpoint("models/gpt/ckpt.pt")
    assert ckpt["iter"] == 100 and ckpt["tokenizer_sha256"] == "f" * 64
    assert ckpt["params"]["model"] == dataclasses.asdict(TINY) and ckpt["params"]["seed"] == 1
    val = tokens.read_shard(data / "val_00000.bin")
    batches = [random_batch(val, 8, 32, torch.Generator().manual_seed(1 + 10_007 + i)) for i in range(2)]
    assert mean_loss(model, batches) == pytest.approx(report["final_val_loss"], abs=1e-5)


def test_two_runs_are_identical(tmp_path, in_tmp_cwd):
    data = _repetitive(tmp_path)  # no meta.json: shards found by glob, entropy computed from counts
    cfg = dataclasses.replace(FAST, max_steps=12, eval_interval=6)
    mcfg = dataclasses.replace(TINY, dropout=0.1)  # dropout draws must be seeded too
    runs = []
    for name in ("a", "b"):
        r = train(data, f"models/{name}", f"reports/{name}", mcfg, cfg, seed=7, threads=1, progress=False).to_dict()
        runs.append(r)
    assert runs[0]["final_val_loss"] == runs[1]["final_val_loss"]
    assert runs[0]["last_step_train_loss"] == runs[1]["last_step_train_loss"]
    assert runs[0]["unigram_entropy_nats"] == pytest.approx(math.log(50), abs=1e-6)
    a, b = (load_checkpoint(f"models/{n}/ckpt.pt")[0].state_dict() for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert io.sha256_file("models/a/ckpt.pt") == io.sha256_file("models/b/ckpt.pt")  # byte-identical out
    other = train(data, "models/c", "reports/c", mcfg, cfg, seed=8, threads=1, progress=False).to_dict()
    assert other["last_step_train_loss"] != runs[0]["last_step_train_loss"]


def test_bad_shard_and_missing_val_are_counted_not_fatal(tmp_path, in_tmp_cwd):
    data = _write_tokens(tmp_path / "tok", np.tile(np.arange(20), 50), None, 32, 31)
    (data / "train_00001.bin").write_bytes(b"not a shard at all")
    cfg = dataclasses.replace(FAST, max_steps=3, eval_interval=3)
    report = train(data, "models/gpt", "reports/train", TINY, cfg, seed=1, threads=1, progress=False).to_dict()
    assert report["errors"] == {"bad_shard": 1, "no_val_split": 1}
    assert report["tokens"] == {"train": 900, "val": 101}
    assert math.isfinite(report["final_val_loss"])


def test_stage_script_runs_as_dvc_yaml_says(tmp_path, in_tmp_cwd):
    from test_dvc_yaml import STAGES  # dvc.yaml with ${...} resolved from params.yaml, as DVC runs it

    cmd = STAGES["train"]["cmd"].split()
    assert cmd[:2] == ["python", "stages/train.py"]
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"].update(n_layer=1, n_embd=32, n_head=2, block_size=16)
    p["train"].update(max_steps=4, eval_interval=2, eval_batches=1, batch_size=2)
    Path("params.yaml").write_text(yaml.safe_dump(p))
    _write_tokens(Path(cmd[cmd.index("--data") + 1]), np.tile(np.arange(50), 20), np.tile(np.arange(50), 4), 64, 63)
    out = subprocess.run([sys.executable, str(ROOT / cmd[1]), *cmd[2:]], capture_output=True, text=True,
                         env={"GPT_REPRO_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "val loss" in out.stdout
    report = json.loads(Path("reports/train.json").read_text())
    assert report["steps"] == 4 and report["model"]["n_embd"] == 32
    assert Path("models/gpt/ckpt.pt").is_file() and Path("reports/train/metrics.json").is_file()


def test_loss_falls_on_a_real_book(shared_data, tmp_path, in_tmp_cwd):
    text = (shared_data / "books" / "11-0.txt").read_bytes()  # Alice in Wonderland
    data = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)  # byte-level vocab: 256 bytes + eot 256
    cut = int(len(data) * 0.9)
    _write_tokens(tmp_path / "tok", np.append(data[:cut], 256), np.append(data[cut:], 256), 257, 256)
    cfg = TrainConfig(max_steps=30, batch_size=8, lr=0.01, warmup_steps=5, eval_interval=30, eval_batches=2)
    report = train(tmp_path / "tok", "models/gpt", "reports/train", TINY, cfg, seed=1, threads=1,
                   progress=False).write()
    rows = Path("reports/train/plots/metrics/val_loss.tsv").read_text().split("\n")[1:]
    initial = float(rows[0].split("\t")[1])
    assert initial == pytest.approx(math.log(257), abs=0.3)  # an untrained model is near uniform
    assert report["final_val_loss"] < initial - 1.5  # 30 steps learn English byte statistics
    assert 2.0 < report["unigram_entropy_nats"] < 3.6  # English bytes: about 3 nats


def _state(path):
    return load_checkpoint(path)[0].state_dict()


def test_killed_run_resumes_to_the_same_bits(tmp_path, in_tmp_cwd):
    """Stop at step 7 (last resume checkpoint: step 4), rerun: step 12 equals an uninterrupted run exactly."""
    data = _repetitive(tmp_path)
    cfg = dataclasses.replace(FAST, max_steps=12, eval_interval=4, grad_accum_steps=2)
    mcfg = dataclasses.replace(TINY, dropout=0.1)  # dropout: the torch RNG state must be restored too
    full = train(data, "models/a", "reports/a", mcfg, cfg, seed=3, threads=1, progress=False).to_dict()
    assert not list(Path("data/resume/train").iterdir())  # resume.pt removed once the final ckpt exists, then its folder
    with pytest.raises(TrainingStopped):
        train(data, "models/b", "reports/b", mcfg, cfg, seed=3, threads=1, progress=False, stop_after=7)
    assert not Path("models/b/ckpt.pt").exists()
    (resume_ckpt,) = Path("data/resume/train").rglob("resume.pt")
    assert torch.load(resume_ckpt, weights_only=True)["iter"] == 4
    resumed = train(data, "models/b", "reports/b", mcfg, cfg, seed=3, threads=1, progress=False).to_dict()
    assert resumed["resumed_from_step"] == 4 and "resumed_from_step" not in full
    for key in ("last_step_train_loss", "final_val_loss", "final_train_loss", "tokens_seen"):
        assert resumed[key] == full[key], key
    a, b = _state("models/a/ckpt.pt"), _state("models/b/ckpt.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Same bytes: optimiser moments, RNG states and the logged curves all match too.
    assert io.sha256_file("models/a/ckpt.pt") == io.sha256_file("models/b/ckpt.pt")
    # dvclive curves cover the whole run (steps before the resume are replayed from the checkpoint).
    curve = {n: Path(f"reports/{n}/plots/metrics/train_loss.tsv").read_text() for n in "ab"}
    assert curve["a"] == curve["b"] and len(curve["a"].split()) == 2 + 2 * 12
    assert Path("reports/b/plots/metrics/grad_norm.tsv").is_file()
    # A rerun finds models/b/ckpt.pt finished: nothing to train, same figures.
    again = train(data, "models/b", "reports/b", mcfg, cfg, seed=3, threads=1, progress=False).to_dict()
    assert again["resumed_from_step"] == 12 and again["final_val_loss"] == full["final_val_loss"]
    # The final checkpoint is written in the work folder and renamed into models/: a kill between the two finds
    # it there (what the kill left is made here by moving it back); the rerun takes it and trains nothing.
    final = resume_ckpt.with_name("ckpt.pt")
    assert not final.parent.exists()  # the finished run removed its work folder
    final.parent.mkdir()  # the kill came before that
    Path("models/b/ckpt.pt").rename(final)
    moved = train(data, "models/b", "reports/b", mcfg, cfg, seed=3, threads=1, progress=False).to_dict()
    assert moved["resumed_from_step"] == 12 and not final.exists()
    assert io.sha256_file("models/a/ckpt.pt") == io.sha256_file("models/b/ckpt.pt")
    # Another seed is another run: no resume.
    other = train(data, "models/c", "reports/c", mcfg, dataclasses.replace(cfg, max_steps=4), seed=4,
                  threads=1, progress=False).to_dict()
    assert "resumed_from_step" not in other


def test_gradient_accumulation_matches_one_big_batch(tmp_path, in_tmp_cwd):
    data = _repetitive(tmp_path)
    cfg = dataclasses.replace(FAST, max_steps=5, eval_interval=5)
    one = train(data, "models/one", "reports/one", TINY, cfg, seed=2, threads=1, progress=False).to_dict()
    acc = train(data, "models/acc", "reports/acc", TINY, dataclasses.replace(cfg, grad_accum_steps=4), seed=2,
                threads=1, progress=False).to_dict()
    assert one["tokens_seen"] == acc["tokens_seen"] == 5 * 8 * 32
    assert acc["last_step_train_loss"] == pytest.approx(one["last_step_train_loss"], abs=1e-5)
    a, b = _state("models/one/ckpt.pt"), _state("models/acc/ckpt.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # float summation order only
    with pytest.raises(ValueError, match="divisible"):
        train(data, "models/x", "reports/x", TINY, dataclasses.replace(cfg, grad_accum_steps=3), seed=2,
              threads=1, progress=False)


def test_gpt3_batch_ramp():
    cfg = TrainConfig(batch_size=64, batch_ramp_tokens=1000, batch_ramp_start=8)
    assert batch_at(0, cfg, unit=4) == 8
    assert batch_at(500, cfg, unit=4) == 36  # halfway: (8 + 64) / 2
    assert batch_at(510, cfg, unit=8) == 32  # rounded down to whole micro-batches on every rank
    assert batch_at(1000, cfg, unit=4) == batch_at(10**9, cfg, unit=4) == 64
    assert batch_at(0, TrainConfig(batch_size=64), unit=4) == 64  # ramp off


def test_batch_ramp_in_a_run_logs_growing_batches(tmp_path, in_tmp_cwd):
    data = _repetitive(tmp_path)
    cfg = dataclasses.replace(FAST, max_steps=6, eval_interval=6, batch_ramp_tokens=8 * 32, batch_ramp_start=2,
                              grad_accum_steps=4)  # micro-batch 2: the ramp moves in steps of 2
    report = train(data, "models/gpt", "reports/train", TINY, cfg, seed=1, threads=1, progress=False).to_dict()
    rows = Path("reports/train/plots/metrics/batch_size.tsv").read_text().split("\n")[1:]
    sizes = [int(float(r.split("\t")[1])) for r in rows if r]
    assert sizes == [2, 2, 4, 8, 8, 8]  # 2 + 6 * tokens_seen / 256, in whole micro-batches
    assert report["tokens_seen"] == sum(sizes) * 32


def test_ddp_two_processes_stay_in_sync_and_match_one_process(tmp_path, in_tmp_cwd):
    """torchrun, 2 CPU processes (gloo), global batch 4 = 2 x 2: replicas agree exactly, and the weights
    equal a single process's with batch 4 up to float summation order (all-reduce vs one mean)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"].update(n_layer=1, n_embd=32, n_head=2, block_size=16)
    p["train"].update(max_steps=4, eval_interval=2, eval_batches=1, batch_size=4, warmup_steps=2)
    Path("params.yaml").write_text(yaml.safe_dump(p))
    _write_tokens(Path("tok"), np.tile(np.arange(50), 20), np.tile(np.arange(50), 4), 64, 63)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "stages/train.py"), "--data", "tok", "--out", "models/gpt", "--live", "live"],
                         capture_output=True, text=True, env={"GPT_REPRO_THREADS": "1", "PATH": "/usr/bin:/bin"},
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("val loss") == 1  # one report line: rank 0's
    ddp = json.loads(Path("reports/train.json").read_text())
    assert ddp["world_size"] == 2 and ddp["tokens_seen"] == 4 * 4 * 16
    assert ddp["ddp_max_param_divergence"] == 0.0  # both replicas hold identical weights
    _, ckpt = load_checkpoint("models/gpt/ckpt.pt")
    assert ckpt["iter"] == 4
    single = train("tok", "models/single", "live1", params.build(ModelConfig, p["model"]),
                   params.build(TrainConfig, p["train"]), seed=p["seed"], threads=1, progress=False).to_dict()
    assert "resumed_from_step" not in single
    a, b = _state("models/gpt/ckpt.pt"), _state("models/single/ckpt.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert ddp["last_step_train_loss"] == pytest.approx(single["last_step_train_loss"], abs=1e-5)
    assert ddp["final_val_loss"] == pytest.approx(single["final_val_loss"], abs=1e-5)


def test_mfu_peak_comes_from_the_device_unless_set():
    from pipeline.lm.device_peak import detected_peak, peak_tflops

    assert peak_tflops(0.0, "NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops(0.0, "NVIDIA H100 PCIe") == 756.0
    assert peak_tflops(0.0, "NVIDIA H200") == 989.0
    assert peak_tflops(0.0, "NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops(0.0, "NVIDIA GeForce GTX 1080") is None  # unknown: no MFU rather than a wrong one
    assert peak_tflops(500.0, "NVIDIA H100 80GB HBM3") == 500.0  # params win
    if not torch.cuda.is_available():
        assert detected_peak(0.0) == (None, "cpu") and detected_peak(100.0) == (100.0, "cpu")


def test_report_labels_steady_state_apart_from_wall_clock(tmp_path):
    """Steady tokens/s excludes the warm-up steps and every evaluation; wall includes them, so it is lower."""
    data = tmp_path / "data"
    _write_tokens(data, np.tile(np.arange(50), 40), np.tile(np.arange(50), 4), 64, 63)
    mcfg = ModelConfig(preset="tiny", n_layer=1, n_head=2, n_embd=32, block_size=16)
    tcfg = TrainConfig(max_steps=30, batch_size=4, eval_interval=10, eval_batches=2, warmup_steps=2)
    rep = train(data, tmp_path / "out", tmp_path / "live", mcfg, tcfg, seed=1, threads=1, progress=False).to_dict()
    tp = rep["throughput"]
    assert tp["warmup_steps"] == 2 and tp["eval_and_checkpoint_s"] > 0 and tp["loop_wall_s"] > tp["warmup_s"]
    assert tp["steady_tokens_per_s"] == rep["tokens_per_s"] > tp["wall_tokens_per_s"] > 0
    if not torch.cuda.is_available():
        assert tp["steady_mfu"] is None  # no GPU: no MFU rather than a wrong one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="PinnedWindows serves CUDA devices (run on a GPU machine)")
def test_pinned_windows_equal_plain_windows_on_cuda():
    from pipeline.lm.batches import PinnedWindows, windows

    data = np.random.default_rng(0).integers(0, 50000, 10_000).astype(np.uint16)
    pinned = PinnedWindows(4, 64, "cuda")
    for seed in range(5):  # more calls than buffers: reuse after the event
        ix = np.random.default_rng(seed).integers(0, len(data) - 65, 4).tolist()
        x, y = pinned(data, ix, 64)
        rx, ry = windows(data, ix, 64)
        assert x.device.type == "cuda" and torch.equal(x.cpu(), rx) and torch.equal(y.cpu(), ry)


def test_lagged_log_reads_keep_every_step_in_order(tmp_path, monkeypatch):
    """The loop logs steps LOG_EVERY behind (so a GPU is never drained to log); the history still has every step,
    in order, and dvclive's curve as many rows: reads come later, never fewer. The progress bar's loss says which
    step it is from."""
    import tqdm

    from pipeline.lm.train import LOG_EVERY

    shown = []

    class Bar(tqdm.tqdm):
        def set_postfix(self, **kw):
            shown.append((kw["of_step"], kw["loss"]))
            return super().set_postfix(**kw)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    data = tmp_path / "data"
    _write_tokens(data, np.tile(np.arange(50), 40), np.tile(np.arange(50), 4), 64, 63)
    mcfg = ModelConfig(preset="tiny", n_layer=1, n_head=2, n_embd=32, block_size=16)
    tcfg = TrainConfig(max_steps=37, batch_size=4, eval_interval=30, eval_batches=1, warmup_steps=3)
    assert tcfg.eval_interval > 2 * LOG_EVERY  # two lagged flushes (steps 10, 20) before the first drain
    train(data, tmp_path / "out", tmp_path / "live", mcfg, tcfg, seed=1, threads=1, progress=True)
    _, ckpt = load_checkpoint(tmp_path / "out" / "ckpt.pt")
    steps = [row for row in ckpt["train_state"]["history"] if "train_loss" in row]
    # warm-up steps 1-2 drained; at step 20 the steps up to 10 are read; evaluation (30) and the end drain
    assert shown == [(s, f"{steps[s - 1]['train_loss']:.3f}") for s in (1, 2, 10, 30, 37)]
    assert [row["lr"] for row in steps] == [lr_at(s, tcfg) for s in range(37)]
    assert [i for i, row in enumerate(steps) if "val_loss" in row] == [29, 36]  # evals stay on their steps
    tsv = (tmp_path / "live" / "plots" / "metrics" / "train_loss.tsv").read_text().splitlines()
    assert len(tsv) == 1 + 37 and [float(line.split("\t")[-1]) for line in tsv[1:]] == pytest.approx(
        [row["train_loss"] for row in steps])


def test_throughput_laps_exclude_paused_work():
    import time

    from pipeline.lm.throughput import Throughput

    clock = Throughput(on_gpu=False, warmup=1)
    time.sleep(0.01)
    clock.lap(100)  # warm-up lap
    time.sleep(0.02)
    clock.lap(1000)
    with clock.paused():
        time.sleep(0.2)  # evaluation: in the wall figure only
    time.sleep(0.02)
    clock.lap(1000)
    assert 2000 / 0.08 < clock.steady_tps < 2000 / 0.04
    summary = clock.summary(flops_per_token=1, peak_tflops=None)
    assert summary["eval_and_checkpoint_s"] >= 0.2 and summary["wall_tokens_per_s"] < 2100 / 0.25
    assert summary["clock"] == "host perf_counter" and summary["warmup_steps"] == 1


def test_loss_kernel_is_checked_before_training(tmp_path, in_tmp_cwd, monkeypatch):
    """An unknown loss kernel, or triton where it cannot run, fails at once with the knob's name in the message."""
    data = _repetitive(tmp_path)
    with pytest.raises(ValueError, match="train.loss_kernel must be one of"):
        train(data, "models/gpt", "reports/train", TINY, dataclasses.replace(FAST, loss_kernel="liger"), seed=1,
              threads=1, progress=False)
    if not torch.cuda.is_available():  # no triton here, or triton without its interpreter on a CPU
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # tests/test_triton_loss.py sets it on CPU machines
        with pytest.raises(ValueError, match="train.loss_kernel: triton"):
            train(data, "models/gpt", "reports/train", TINY, dataclasses.replace(FAST, loss_kernel="triton"), seed=1,
                  threads=1, progress=False)
    assert not Path("models/gpt").exists()


def test_residual_dtype_is_checked_before_training(tmp_path, in_tmp_cwd):
    """train.residual_dtype: an unknown name, or bfloat16 on a CPU (whose step has no autocast), fails at once with
    the knob's name in the message, before anything is written."""
    data = _repetitive(tmp_path)
    with pytest.raises(ValueError, match="train.residual_dtype must be one of"):
        train(data, "models/gpt", "reports/train", TINY, dataclasses.replace(FAST, residual_dtype="fp8"), seed=1,
              threads=1, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.residual_dtype: bfloat16 needs a GPU"):
            train(data, "models/gpt", "reports/train", TINY, dataclasses.replace(FAST, residual_dtype="bfloat16"),
                  seed=1, threads=1, progress=False)
    assert not Path("models/gpt").exists()


def test_residual_dtype_resolves_to_the_models_stream_dtype():
    """float32 leaves the stream as autocast gives it (None) anywhere; bfloat16 is torch.bfloat16 on a GPU (what
    GPT.features casts the stream to), refused on a CPU."""
    assert residual_dtype_of("float32", "cpu") is None
    assert residual_dtype_of("float32", "cuda:0") is None
    assert residual_dtype_of("bfloat16", "cuda:1") is torch.bfloat16
    with pytest.raises(ValueError, match="needs a GPU"):
        residual_dtype_of("bfloat16", "cpu")


def test_auto_residual_dtype_is_bf16_only_on_gpus_under_ddp_and_recorded_resolved():
    """auto: the bf16 stream on a GPU under ddp (where its speed and loss parity were measured), fp32 on a CPU and
    under fsdp; explicit names pass through. Recorded resolved: a CPU run's checkpoint keeps no residual_dtype
    (bytes as before auto), a GPU run's names bfloat16, so its fingerprint differs from an fp32 run's."""
    assert TrainConfig().residual_dtype == "auto"
    assert resolved_residual_dtype("auto", "cpu") == "float32"
    assert resolved_residual_dtype("auto", "cuda:0") == "bfloat16"
    assert resolved_residual_dtype("auto", "cuda:0", "fsdp") == "float32"
    assert resolved_residual_dtype("float32", "cuda:0") == "float32"
    assert resolved_residual_dtype("bfloat16", "cpu") == "bfloat16"  # refused later, by residual_dtype_of
    cpu = dataclasses.replace(TrainConfig(), residual_dtype=resolved_residual_dtype("auto", "cpu"))
    gpu = dataclasses.replace(TrainConfig(), residual_dtype=resolved_residual_dtype("auto", "cuda:0"))
    assert "residual_dtype" not in recorded(cpu)
    assert recorded(gpu)["residual_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="must be one of \\('auto', 'float32', 'bfloat16'\\)"):
        residual_dtype_of("fp8", "cuda:0")


def test_auto_loss_kernel_takes_the_triton_kernel_only_where_it_was_measured(monkeypatch):
    """auto: the kernel on an NVIDIA GPU of sm80+ with triton under ddp; torch's path anywhere else, with no error."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    have = {"triton": True}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "triton" and have["triton"] else
                        None if name == "triton" else real_find_spec(name, *a))
    capability = {"cc": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["cc"])
    monkeypatch.setattr(torch.version, "hip", None)
    assert use_triton_loss("auto", "cuda:0") is True
    assert use_triton_loss("torch", "cuda:0") is False  # the way back to torch's path on a GPU
    assert use_triton_loss("auto", "cuda:0", "fsdp") is False  # not yet run on a GPU under FSDP
    assert use_triton_loss("auto", "cpu") is False
    capability["cc"] = (7, 5)
    assert use_triton_loss("auto", "cuda:0") is False
    capability["cc"] = (9, 0)
    monkeypatch.setattr(torch.version, "hip", "6.2")  # ROCm builds also say "cuda"; the kernel's warps are NVIDIA's
    assert use_triton_loss("auto", "cuda:0") is False
    monkeypatch.setattr(torch.version, "hip", None)
    have["triton"] = False
    assert use_triton_loss("auto", "cuda:0") is False
    with pytest.raises(ValueError, match="needs the triton package"):
        use_triton_loss("triton", "cuda:0")
