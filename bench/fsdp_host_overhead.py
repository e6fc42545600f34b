"""Benchmark: the host (CPU-side) work of one training step under FSDP2 vs plain, part by part.

Why: on one H200 at B8 (bench/gpu_fsdp_check.py), strategy fsdp ran at 0.27x ddp's tokens/s. A one-rank FSDP run
does the same arithmetic, so the difference is host work: FSDP2's pre/post hooks around each block (all-gather,
reduce-scatter, even on one rank), and DTensor dispatch in clip_grad_norm_ and AdamW. A model so small that its
arithmetic is negligible shows that host work alone, here on the CPU: a GPU step shorter than it cannot hide it.

Each strategy runs in its own process (a one-rank gloo group for fsdp, as a plain `python stages/train.py` with
train.strategy fsdp makes); the median milliseconds of forward, backward, clip, AdamW step and zero_grad over 25
steps after 5 warm-up steps.

Usage: python bench/fsdp_host_overhead.py [--layers 12]     (~10 s)
Measured 2026-11-27 on this 2-core machine (12 layers, width 32, T=32, B2), two runs: plain 15.1 / 12.6 ms a step
(forward 5.9 / 5.1, backward 5.7 / 4.4, clip 1.8 / 1.5, AdamW 1.6 / 1.4); fsdp 33.6 / 39.8 ms (forward 10.5 / 12.6,
backward 14.1 / 16.7, clip 3.5 / 4.1, AdamW 5.1 / 6.0): 18-27 ms more a step, 1.5-2.3 ms per block.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import statistics
import subprocess
import time

import torch

PARTS = ("forward", "backward", "clip", "adamw", "zero_grad")


def one_strategy(strategy: str, layers: int) -> dict:
    from pipeline.lm.distributed import local_scalar, setup_distributed, shard
    from pipeline.lm.model import GPT, GPTConfig
    from pipeline.lm.recipe import TrainConfig, make_optimizer

    torch.set_num_threads(1)
    setup_distributed(strategy)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=layers, n_head=2, n_embd=32))
    if strategy == "fsdp":
        shard(model, "cpu")
    opt = make_optimizer(model, TrainConfig(lr=3e-4))
    x, y = torch.randint(512, (2, 32)), torch.randint(512, (2, 32))
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    for i in range(30):
        t = [time.perf_counter()]
        _, loss = model(x, y)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        local_scalar(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        if i >= 5:
            for k, part in enumerate(PARTS):
                times[part].append((t[k + 1] - t[k]) * 1000)
    return {p: round(statistics.median(v), 2) for p, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--strategy", choices=("ddp", "fsdp"), help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "out" / "fsdp_host_overhead.json"))
    args = ap.parse_args()
    if args.strategy:
        print(json.dumps(one_strategy(args.strategy, args.layers)), flush=True)
        os._exit(0)  # a process that ran collectives ends this way (distributed.exit_after_collectives)
    rows = {}
    for strategy in ("ddp", "fsdp"):
        proc = subprocess.run([sys.executable, __file__, "--strategy", strategy, "--layers", str(args.layers)],
                              capture_output=True, text=True, check=True)
        rows["plain" if strategy == "ddp" else "fsdp"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{'ms a step':10}" + "".join(f"{p:>10}" for p in PARTS) + f"{'total':>10}")
    for name, r in rows.items():
        r["total"] = round(sum(r[p] for p in PARTS), 2)
        print(f"{name:10}" + "".join(f"{r[p]:10.2f}" for p in PARTS) + f"{r['total']:10.2f}")
    extra = rows["fsdp"]["total"] - rows["plain"]["total"]
    print(f"fsdp's extra host work: {extra:.1f} ms a step, {extra / args.layers:.2f} ms per block")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"layers": args.layers, "rows": rows, "extra_ms": round(extra, 2)}, indent=2))


if __name__ == "__main__":
    main()
