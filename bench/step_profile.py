"""Where one training step's time goes: torch.profiler over queued steps of our GPT, kernels grouped by kind.

Before trying the next MFU idea (issue "GPU training at the speed of the best single-GPU loops"), measure which
part of the step it could shorten: the matmuls (cuBLAS / CUTLASS), attention (flash / cuDNN), inductor's fused
Triton kernels (LayerNorm, GELU, residual adds, the softmax of the loss), the optimizer, copies. The model and step
are bench/train_speed.py's "ours" (pipeline.lm.model.GPT, fused AdamW, bf16 autocast, torch.compile).

Usage (GPU): python3 bench/step_profile.py [--batch 64] [--fused-loss | --loss-kernel triton] [--sdpa flash]
                                          [--compile-mode max-autotune-no-cudagraphs]
       (CPU smoke test of the script: python bench/step_profile.py --allow-cpu --small)
Prints a table and writes $OUT/step_profile.json (else bench/out/step_profile.json): per group the milliseconds per
step and the share of the profiled device time, the MFU the step reached, the --top (40) costliest kernels, and on a
GPU how long the device was busy against the profiled span (idle gaps between kernels, which the kernel sum hides).
On CPU the same groups are formed from aten operators' own CPU time (no kernels there).
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import re
from collections import defaultdict

import torch

from bench.train_speed import add_variant_args, apply_variant, make_step, variant_fields
from pipeline.lm.model import GPT, GPTConfig
from pipeline.lm.recipe import TrainConfig, make_optimizer

# First match wins; names are lower-cased kernel names on CUDA, aten operator names on CPU.
GROUPS = [
    ("attention", r"flash|fmha|attention|sdpa|scaled_dot_product|cudnn_generated"),
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|sm\d+_|^triton_tem_|aten::(mm|addmm|bmm|matmul|linear)_?\b"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("loss", r"nll|log_softmax|cross_entropy|logsumexp|loss_and_grad_in_place"),
    ("fused (inductor)", r"^triton_|cpp_fused|graph_\d+_cpp"),
    ("copy / fill", r"memcpy|memset|copy_|fill_|aten::(to|_to_copy|copy_|zero_|clone)\b"),
]


def group_of(name: str) -> str:
    low = name.lower()
    return next((g for g, pattern in GROUPS if re.search(pattern, low)), "other")


def device_rows(prof, on_gpu: bool) -> list[tuple[str, float]]:
    """(name, microseconds) per kernel on CUDA; per aten operator (self CPU time) on CPU."""
    rows = []
    for e in prof.key_averages():
        if on_gpu:
            # a record_function range (Optimizer.step#AdamW.step) has a GPU-side twin spanning the kernels inside
            # it: counted as a kernel it would count them twice (the 2026-11-27 profiles did: ~1.05 ms a step)
            if e.device_type != torch.autograd.DeviceType.CUDA or getattr(e, "is_user_annotation", False):
                continue
            us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        else:
            if not e.key.startswith("aten::") and not e.key.startswith(("graph_", "cpp_fused")):
                continue
            us = e.self_cpu_time_total
        if us > 0:
            rows.append((e.key, float(us)))
    return rows


def timeline(kernels: list[tuple[float, float, str]], steps: int, top: int = 12) -> dict:
    """Busy, idle and span milliseconds a step from kernels' (start, end, name) in microseconds, and the idle gaps
    summed by the kernels on either side: the span less the busy time is the device's idle time (the kernel sum
    less the busy time, time kernels overlapped). A gap names the kernel that ended before it and the one after."""
    kernels = sorted(kernels)
    if not kernels:
        return {"busy_ms_per_step": 0.0, "idle_ms_per_step": 0.0, "span_ms_per_step": 0.0, "largest_gaps": []}
    gaps = defaultdict(lambda: [0.0, 0])  # (kernel before, kernel after) -> [idle microseconds, count]
    busy = 0.0
    cur_start, cur_end, cur_name = kernels[0]  # the stretch of overlapping kernels being merged
    for start, end, name in kernels[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            gap = gaps[(cur_name[:80], name[:80])]
            gap[0], gap[1] = gap[0] + start - cur_end, gap[1] + 1
            cur_start, cur_end, cur_name = start, end, name
        elif end > cur_end:
            cur_end, cur_name = end, name
    busy += cur_end - cur_start
    span = cur_end - kernels[0][0]
    ms = lambda us: round(us / steps / 1000, 3)  # noqa: E731
    return {"busy_ms_per_step": ms(busy), "idle_ms_per_step": ms(span - busy), "span_ms_per_step": ms(span),
            "largest_gaps": [{"ms_per_step": ms(us), "count": n, "after": a, "before": b}
                             for (a, b), (us, n) in sorted(gaps.items(), key=lambda kv: -kv[1][0])[:top]]}


def device_timeline(prof, steps: int) -> dict:
    """timeline() of the profiled GPU kernels (record_function ranges left out, as in device_rows)."""
    return timeline([(e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA
                     and not getattr(e, "is_user_annotation", False)], steps)


def summarise(rows: list[tuple[str, float]], steps: int, top: int = 15) -> dict:
    total = sum(us for _, us in rows) or 1.0
    groups: dict[str, float] = {}
    for name, us in rows:
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + us
    return {"ms_per_step": round(total / steps / 1000, 3),
            "groups": {g: {"ms_per_step": round(us / steps / 1000, 3), "share": round(us / total, 4)}
                       for g, us in sorted(groups.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:160], "group": group_of(n), "ms_per_step": round(us / steps / 1000, 3),
                             "share": round(us / total, 4)} for n, us in sorted(rows, key=lambda r: -r[1])[:top]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="profiled steps (after 3 warm-up steps)")
    add_variant_args(ap)
    ap.add_argument("--top", type=int, default=40, help="kernels listed in the JSON (costliest first)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="for the MFU line (H100/H200 bf16 dense)")
    ap.add_argument("--small", action="store_true", help="L2 H2 D64 T64 V2048: the CPU smoke shape")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU (aten operators, not kernels)")
    args = ap.parse_args()
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.allow_cpu:
        print("step_profile: no CUDA device here; skipped (run it on a GPU machine, or --allow-cpu)")
        return
    device = "cuda" if on_gpu else "cpu"
    V, T, L, H, D = (2048, 64, 2, 2, 64) if args.small else (50304, 1024, 12, 12, 768)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=D)).to(device)
    opt = make_optimizer(model, TrainConfig(lr=3e-4))
    apply_variant(model, args)
    flops_tok = model.flops_per_token(T)
    if not args.no_compile:
        model = torch.compile(model, mode=args.compile_mode)
    step = make_step(model, opt, device, args.sdpa, args.compiled_update)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(V, (args.batch, T), generator=g).to(device) for _ in range(2))
    for _ in range(3):  # compilation, autotuning, allocator
        step(x, y)
    if on_gpu:
        torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            loss = step(x, y)
        if on_gpu:
            torch.cuda.synchronize()
    out = summarise(device_rows(prof, on_gpu), args.steps, args.top)
    out.update({"device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__,
                "shape": f"L{L} H{H} D{D} T{T} B{args.batch} V{V}", **variant_fields(args),
                "compile": not args.no_compile, "loss": float(loss)})
    if on_gpu:  # device time summed over kernels: a step with idle gaps is longer, so this MFU is an upper bound
        out["mfu_of_kernel_time"] = round(flops_tok * args.batch * T / (out["ms_per_step"] / 1000)
                                          / (args.peak_tflops * 1e12), 4)
        out["timeline"] = device_timeline(prof, args.steps)
    print(f"{out['shape']} on {out['device']}: {out['ms_per_step']} ms of {'kernels' if on_gpu else 'CPU ops'} a step"
          + (f", MFU over kernel time {out['mfu_of_kernel_time']:.1%}" if on_gpu else ""))
    if on_gpu:
        print("  device busy {busy_ms_per_step} ms, idle {idle_ms_per_step} ms of a {span_ms_per_step} ms span a step"
              .format(**out["timeline"]))
        for gap in out["timeline"]["largest_gaps"][:5]:
            print(f"    idle {gap['ms_per_step']:.3f} ms a step ({gap['count']}x) after {gap['after'][:50]} "
                  f"before {gap['before'][:50]}")
    for name, row in out["groups"].items():
        print(f"  {name:18} {row['ms_per_step']:9.3f} ms  {row['share']:6.1%}")
    for row in out["top_kernels"][:8]:
        print(f"    {row['ms_per_step']:8.3f} ms  {row['group']:16} {row['name'][:90]}")
    dest = pathlib.Path(os.environ.get("OUT") or pathlib.Path(__file__).parent / "out") / "step_profile.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
