"""GPU check: the train stage as the DAG runs it on a GPU, launched by torchrun (params `launch.train`).

What it checks, on one CUDA device (run it where one is at hand; it refuses to run without):
  - `torchrun --standalone --nproc_per_node=N stages/train.py ...` trains the gpt2-small preset with bf16
    autocast and torch.compile from a params.yaml, exactly the command `dvc exp run -S launch.train=...` runs;
  - the MFU denominator comes from the detected device (pipeline/lm/device_peak.py) when train.peak_tflops is 0;
  - the loss falls on a learnable synthetic token stream (a fixed random bigram chain over GPT-2's vocabulary).
Prints one JSON object (also written to $OUT/gpu_train_check.json when OUT is set) with the report's figures.

Usage: python3 bench/gpu_train_check.py [--steps 150] [--batch 16] [--nproc 1] [--loss-kernel auto|torch|triton]
                                        [--residual-dtype auto|float32|bfloat16]
On a bare GPU image without dvclive, carry the wheels `bash bench/device_wheels.sh` downloads into .whl/ (cp312,
--no-deps, the versions requirements.lock pins; 26 files, 9.2 MB) and put them on PYTHONPATH as its header says.

Measured 2026-11-26, one H200 (torch 2.11): gpt2-small, B16 x T1024, compile, 150 steps: every check passed; peak
989 TFLOP/s from the device table; val loss 10.49 < unigram 10.67 nats; the report's tokens/s (76,489) and MFU (6.6%)
divide by wall time including compilation and evaluation (issue "GPU training at the speed...": steady state is
reported separately there).
Measured 2026-11-26 (later), same H200, after the loop stopped syncing per step and reports steady vs wall: 200
steps, B16: stage steady 428,905 tokens/s = 37.1% MFU (wall 108,186 = 9.4%: 16.8 s warm-up/compile, 5.9 s eval);
bench/train_speed.py --compile at the same shape in the same run: ours 479,856 (41.5%), reference 463,602 (40.1%);
stage/bench = 0.894x (0.86x before). Then with the vocabulary padded inside the model (50,257 -> 50,304, as the
bench): stage steady 445,570 tokens/s = 38.5% MFU vs bench ours 468,987 (40.6%), reference 454,871 (39.3%):
0.950x. With two reused pinned buffers (batches.PinnedWindows) instead of a pinned allocation per step: 447,299
(38.7%) vs 469,200 (40.6%): 0.953x. Left between them: the numpy window assembly on the host (the bench feeds
device tensors) and the log cadence's syncs; then the issue's fused CE / CUDA graphs / larger micro-batches.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch
import yaml

from pipeline.lm.device_knobs import LOSS_KERNELS, RESIDUAL_DTYPES

ROOT = pathlib.Path(__file__).resolve().parents[1]


NOISE = 0.05  # the share of bigram_tokens' tokens drawn uniformly instead of from the 4 successors


def bigram_successors(rng: np.random.Generator, vocab: int) -> np.ndarray:
    """Each token's 4 likely successors: the first draw from bigram_tokens' generator, so bigram_floor gets the
    same table from the same seed."""
    return rng.integers(0, vocab, size=(vocab, 4))


def bigram_tokens(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    """A stream where each token has 4 likely successors: a model can learn it, unigram entropy stays high."""
    rng = np.random.default_rng(seed)
    nxt = bigram_successors(rng, vocab)
    out = np.empty(n, dtype=np.uint16)
    cur = 0
    choice = rng.integers(0, 4, size=n)
    noise = rng.random(n) < NOISE
    rand = rng.integers(0, vocab, size=n)
    for i in range(n):
        cur = rand[i] if noise[i] else nxt[cur, choice[i]]
        out[i] = cur
    return out


def bigram_floor(stream: np.ndarray, vocab: int, seed: int = 0) -> float:
    """The least mean loss (nats) any model can reach on `stream` = bigram_tokens(n, vocab, seed): the entropy of
    each token's true next-token distribution (1 - NOISE over its 4 successors, NOISE spread over the vocabulary),
    weighted by how often the stream visits it. A model at this loss has learnt the chain; above it, not yet."""
    nxt = bigram_successors(np.random.default_rng(seed), vocab)
    uniform = NOISE / vocab
    entropy = np.empty(vocab)
    for token, successors in enumerate(nxt):
        counts = np.unique(successors, return_counts=True)[1]
        p = (1 - NOISE) * counts / 4 + uniform
        entropy[token] = -(p * np.log(p)).sum() - (vocab - len(counts)) * uniform * np.log(uniform)
    visits = np.bincount(stream[:-1], minlength=vocab)[:vocab]
    return float((entropy * visits).sum() / visits.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--loss-kernel", choices=LOSS_KERNELS, default="auto",
                    help="train.loss_kernel for the stage; the bench step beside it takes the path the stage "
                         "reports it resolved to")
    ap.add_argument("--residual-dtype", choices=("auto", *RESIDUAL_DTYPES), default="auto",
                    help="train.residual_dtype for the stage; the bench step beside it takes the stream the stage "
                         "reports it resolved to (--bf16-residual)")
    ap.add_argument("--no-bench", action="store_true", help="skip bench/train_speed.py at the same shape")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-test the script itself on CPU (checks will fail)")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_train_check: no CUDA device here; skipped (run it on a GPU machine)")
        return
    from pipeline.lm import tokens
    from pipeline.lm.device_peak import detected_peak

    work = pathlib.Path(tempfile.mkdtemp(prefix="gpucheck-"))
    vocab, eot = 50257, 50256
    t0 = time.perf_counter()
    data = bigram_tokens(3_000_000, vocab - 1)
    (work / "tokens").mkdir()
    tokens.write_shard(work / "tokens" / "train_00000.bin", data[:2_800_000], vocab, eot)
    tokens.write_shard(work / "tokens" / "val_00000.bin", data[2_800_000:], vocab, eot)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(preset="gpt2-small")
    params["train"].update(max_steps=args.steps, batch_size=args.batch, eval_interval=max(10, args.steps // 3),
                           eval_batches=2, warmup_steps=max(1, args.steps // 10), lr=6e-4,
                           compile=not args.no_compile, peak_tflops=0.0, loss_kernel=args.loss_kernel,
                           residual_dtype=args.residual_dtype)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # `torchrun` is `python -m torch.distributed.run`; the module form needs no PATH entry
    launch = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node={args.nproc}"
    cmd = launch.split() + [str(ROOT / "stages/train.py"), "--data", "tokens", "--out", "models/gpt", "--live",
                            "reports/train"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)
    result = {"cmd": " ".join(cmd), "returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "detected_peak": detected_peak(0.0)[0]}
    if proc.returncode:
        result["stderr_tail"] = proc.stderr[-4000:]
    else:
        rep = json.loads((work / "reports/train.json").read_text())
        keys = ("device", "world_size", "params", "steps", "tokens_per_s", "mfu", "peak_tflops", "throughput",
                "final_val_loss", "unigram_entropy_nats", "seconds", "block_size", "loss_kernel", "residual_dtype")
        result["report"] = {k: rep.get(k) for k in keys}
        result["checks"] = {
            "ran_on_cuda": rep.get("device") == "cuda",
            "peak_from_device_table": (rep.get("peak_tflops") or {}).get("from") == "device table",
            "mfu_reported": rep.get("mfu") is not None,
            "loss_below_unigram": rep["final_val_loss"] < rep["unigram_entropy_nats"],
        }
    if proc.returncode == 0 and torch.cuda.is_available() and not args.no_bench:
        # the step alone, same shape, in the same run: the stage's steady state should match it (issue: >= 0.97x)
        bench = subprocess.run([sys.executable, str(ROOT / "bench/train_speed.py"), "--compile", "--layers", "12",
                                "--width", "768", "--heads", "12", "--block", "1024", "--batch", str(args.batch),
                                "--steps", "20", "--peak-tflops", str(result["detected_peak"] or 989.0),
                                # the loss path the stage's train.loss_kernel resolved to (auto: the kernel on GPUs)
                                *(["--loss-kernel", "triton"] if rep.get("loss_kernel") == "triton" else []),
                                *(["--bf16-residual"] if rep.get("residual_dtype") == "bfloat16" else [])],
                               capture_output=True, text=True, timeout=600)
        if bench.returncode == 0:
            rows = json.loads((ROOT / "bench/out/train_speed.json").read_text())["results"]
            result["bench_step"] = rows
            steady = result["report"]["throughput"]["steady_tokens_per_s"]
            result["stage_steady_vs_bench_ours"] = round(steady / rows["ours"]["tokens_per_s"], 3)
        else:
            result["bench_stderr_tail"] = bench.stderr[-2000:]
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        pathlib.Path(os.environ["OUT"], "gpu_train_check.json").write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if proc.returncode == 0 and all(result.get("checks", {}).values()) else 1)


if __name__ == "__main__":
    main()
