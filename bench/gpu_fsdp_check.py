"""GPU check of train.strategy fsdp and train.deterministic: the code paths CPU tests cannot reach.

On one CUDA device (it refuses to run without one), each run is `python stages/train.py` at the gpt2-small shape on
a learnable synthetic stream (bench/gpu_train_check.py's bigram chain), in the same process tree, same card:
  ddp            compile, the default strategy: the reference for the rows below
  fsdp           compile, strategy fsdp on a one-rank mesh: fully_shard per compiled block + root, bf16
                 MixedPrecisionPolicy, whole-tensor checkpoints gathered to the CPU (resume checkpoint mid-run);
                 loss_kernel triton, which ddp's auto takes on a GPU (FSDP through the kernel, like for like)
  ddp-det        compile, deterministic: its steady tokens/s over ddp's is the cost with torch.compile
  eager, eager-det (each twice): without compile; the two deterministic runs' checkpoints must be the same bytes,
                 and the ratio of the steady tokens/s is the cost in eager mode
Checks: every run exits 0; fsdp's final val loss is within 0.05 nats of ddp's (bf16 gather vs fp32 weights
under autocast); the deterministic reruns are byte-identical; the FSDP checkpoint loads with
checkpoint.load_checkpoint (what export and evaluate call). It also prints memory_estimate.py's estimate beside
the measured allocator peak (cuda_peak_memory_gb) of the ddp and fsdp runs.
Writes bench/out/gpu_fsdp_check.json (and $OUT/gpu_fsdp_check.json when OUT is set) and prints a table.

Usage: python3 bench/gpu_fsdp_check.py [--steps 40] [--batch 8]     (about 3-4 minutes on an H100)
Measured 2026-11-27, one H200, torch 2.11, 40 steps at B8 (bench/gpu_issue12.py part fsdp): the first call found
the fsdp run's evaluation all-reducing a CPU tensor, which NCCL refuses (batches.mean_loss; any multi-GPU torchrun
run had the same fault); after the fix every check passed: fsdp val loss 10.779 vs ddp 10.796, its checkpoint
loads; fsdp 0.27x ddp's steady tokens/s (one rank at B8: FSDP's per-block hooks and DTensor optimizer steps are
host work the 22 ms step cannot hide); peak 9.05 GB vs 9.96 estimated (ddp 7.14 vs 10.28); deterministic 0.678x
the default's tokens/s compiled, 0.66x eager, its two reruns byte-identical while the default's two were not.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import torch
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = {  # name: (train.* overrides)
    "ddp": {"compile": True},
    # the Triton loss kernel named: auto takes it under ddp only, and this compares like with like (and times it)
    "fsdp": {"compile": True, "strategy": "fsdp", "loss_kernel": "triton"},
    "ddp-det": {"compile": True, "deterministic": True},
    "eager": {}, "eager-2": {},
    "eager-det": {"deterministic": True}, "eager-det-2": {"deterministic": True},
}


def run(work: pathlib.Path, name: str, overrides: dict, base: dict) -> dict:
    folder = work / name
    folder.mkdir()
    p = json.loads(json.dumps(base))
    p["train"].update(overrides)
    (folder / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), "--data", str(work / "tokens"), "--out",
                           "models/gpt", "--live", "reports/train"], cwd=folder, capture_output=True, text=True,
                          timeout=600)
    out = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-3000:]
        return out
    rep = json.loads((folder / "reports/train.json").read_text())
    ckpt = folder / "models/gpt/ckpt.pt"
    out.update({k: rep.get(k) for k in ("final_val_loss", "last_step_train_loss", "cuda_peak_memory_gb", "strategy",
                                        "params")})
    out["steady_tokens_per_s"] = rep["throughput"]["steady_tokens_per_s"]
    out["steady_mfu"] = rep["throughput"]["steady_mfu"]
    out["ckpt_sha256"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", nargs="*", default=None, help="a subset of the runs (names above)")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-test the script on CPU: tiny model, no compile")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_fsdp_check: no CUDA device here; skipped (run it on a GPU machine)")
        return
    from bench.gpu_train_check import bigram_tokens
    from pipeline.lm import tokens
    from pipeline.lm.checkpoint import load_checkpoint
    from pipeline.lm.memory_estimate import estimate
    from pipeline.lm.model import PRESETS

    work = pathlib.Path(tempfile.mkdtemp(prefix="fsdpcheck-"))
    vocab, eot = 50257, 50256
    data = bigram_tokens(1_200_000, vocab - 1)
    (work / "tokens").mkdir()
    tokens.write_shard(work / "tokens" / "train_00000.bin", data[:1_100_000], vocab, eot)
    tokens.write_shard(work / "tokens" / "val_00000.bin", data[1_100_000:], vocab, eot)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["model"].update(preset="gpt2-small")
    base["train"].update(max_steps=args.steps, batch_size=args.batch, eval_interval=max(10, args.steps // 2),
                         eval_batches=2, warmup_steps=max(1, args.steps // 10), lr=6e-4, peak_tflops=0.0)
    names = args.only or list(RUNS)
    if args.allow_cpu:
        base["model"].update(preset="tiny", n_layer=2, n_head=2, n_embd=64, block_size=64)
        base["train"].update(batch_size=4)
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__, "steps": args.steps,
               "batch": args.batch, "runs": {}}
    for name in names:
        overrides = {k: v for k, v in RUNS[name].items() if not (args.allow_cpu and k in ("compile", "loss_kernel"))}
        results["runs"][name] = run(work, name, overrides, base)
        print(name, json.dumps(results["runs"][name])[:300], flush=True)
    r = results["runs"]
    ok = {n: v["returncode"] == 0 for n, v in r.items()}
    checks, figures = {"all_runs_exit_0": all(ok.values())}, {}
    if ok.get("ddp") and ok.get("fsdp"):
        checks["fsdp_val_loss_within_0.05_of_ddp"] = abs(r["fsdp"]["final_val_loss"] - r["ddp"]["final_val_loss"]) < 0.05
        figures["fsdp_over_ddp_tokens_per_s"] = round(r["fsdp"]["steady_tokens_per_s"] / r["ddp"]["steady_tokens_per_s"], 3)
        model, _ = load_checkpoint(work / "fsdp/models/gpt/ckpt.pt")
        checks["fsdp_checkpoint_loads"] = model.num_params() == r["fsdp"]["params"]
        cfg = PRESETS["gpt2-small"]
        for n in ("ddp", "fsdp") if r["ddp"].get("cuda_peak_memory_gb") else ():
            est = estimate(cfg, "fsdp" if n == "fsdp" else "ddp", ranks=1, micro_batch=args.batch)["total"] / 1e9
            figures[f"{n}_memory_estimate_gb"] = round(est, 2)
            figures[f"{n}_memory_measured_over_estimate"] = round(r[n]["cuda_peak_memory_gb"] / est, 3)
    if ok.get("ddp") and ok.get("ddp-det"):
        figures["deterministic_cost_compiled"] = round(r["ddp-det"]["steady_tokens_per_s"] / r["ddp"]["steady_tokens_per_s"], 3)
    if ok.get("eager") and ok.get("eager-det"):
        figures["deterministic_cost_eager"] = round(r["eager-det"]["steady_tokens_per_s"] / r["eager"]["steady_tokens_per_s"], 3)
    if ok.get("eager-det") and ok.get("eager-det-2"):
        checks["deterministic_reruns_byte_identical"] = r["eager-det"]["ckpt_sha256"] == r["eager-det-2"]["ckpt_sha256"]
    if ok.get("eager") and ok.get("eager-2"):  # not a check: whether the default GPU path varies at all here
        figures["default_reruns_byte_identical"] = r["eager"]["ckpt_sha256"] == r["eager-2"]["ckpt_sha256"]
    results.update(checks=checks, figures=figures)
    print(f"\n{'run':<12} {'rc':>3} {'tokens/s':>10} {'MFU':>6} {'val loss':>9} {'peak GB':>8}  sha256")
    for n, v in r.items():
        print(f"{n:<12} {v['returncode']:>3} {v.get('steady_tokens_per_s', 0):>10,.0f} {v.get('steady_mfu') or 0:>6.3f} "
              f"{v.get('final_val_loss') or 0:>9.4f} {v.get('cuda_peak_memory_gb') or 0:>8.2f}  {v.get('ckpt_sha256', '')[:12]}")
    print(json.dumps({"checks": checks, "figures": figures}, indent=2))
    text = json.dumps(results, indent=2)
    (ROOT / "bench/out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/out/gpu_fsdp_check.json").write_text(text)
    if os.environ.get("OUT"):
        pathlib.Path(os.environ["OUT"], "gpu_fsdp_check.json").write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
