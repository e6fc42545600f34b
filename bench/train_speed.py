"""Benchmark: tokens/s of our GPT training step vs a plain nanoGPT-design reference, in one run.

Shape from ../shared/ANCHORS.md: 4 layers, 4 heads, 256 wide, T=256, B=8, vocab 50,304, fp32 on CPU
(the tied LM head is ~79% of the FLOPs). The reference below is written with plain torch modules in
the nanoGPT design (karpathy/nanoGPT model.py: fused qkv Linear, SDPA causal attention, tanh GELU,
pre-LN, tied head, AdamW with torch's default foreach kernel, grad clip 1.0). Ours is
pipeline.lm.model.GPT with pipeline.lm.recipe.make_optimizer (fused AdamW) and the same clip. On CPU steps
alternate (who goes first alternates) so drift on a shared machine hits both; the ratio is the median of the
per-pair ratios, beside each model's median step time. On CUDA each model runs rounds of --steps queued steps
(no host sync inside a round, as a training loop runs), timed by CUDA events, alternating per round.

Usage: python bench/train_speed.py [--small] [--steps 6] [--threads 2]
       python bench/train_speed.py --compile --layers 12 --width 768 --heads 12 --block 1024 --batch 32 --steps 10
              [--sdpa cudnn] [--compile-mode max-autotune-no-cudagraphs] [--fused-loss | --loss-kernel triton]
              [--loss-block 16384] [--bf16-residual] [--compiled-update]
              [--also loss_block=16384 loss_block=8192/16 compiled_update]
              (GPU: gpt2-small, MFU; --also times more rows of ours on the same compiled model, in the same rounds)
Writes bench/out/train_speed.json (--out). On CUDA it also reports MFU (bf16 autocast) against --peak-tflops, and
the GPU's clocks and power over the timed rounds (bench/gpu_telemetry.py: nvidia-smi, where present).
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import contextlib
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.lm.model import GPT, GPTConfig
from pipeline.lm.recipe import TrainConfig, make_optimizer

ANCHOR_TOKENS_PER_S = {2: 1110, 1: 628}  # ../shared/ANCHORS.md, reference design, full shape


# --- the reference: nanoGPT's design, plain torch modules ---------------------------------------
class RefAttn(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.c_attn, s.c_proj, s.h = nn.Linear(d, 3 * d), nn.Linear(d, d), h

    def forward(s, x):
        B, T, C = x.shape
        q, k, v = s.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, s.h, C // s.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return s.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefBlock(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.ln_1, s.attn, s.ln_2 = nn.LayerNorm(d), RefAttn(d, h), nn.LayerNorm(d)
        s.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(s, x):
        x = x + s.attn(s.ln_1(x))
        return x + s.mlp(s.ln_2(x))


class RefGPT(nn.Module):
    def __init__(s, V, T, L, H, D):
        super().__init__()
        s.wte, s.wpe = nn.Embedding(V, D), nn.Embedding(T, D)
        s.h = nn.ModuleList(RefBlock(D, H) for _ in range(L))
        s.ln_f, s.lm_head = nn.LayerNorm(D), nn.Linear(D, V, bias=False)
        s.lm_head.weight = s.wte.weight
        for m in s.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(s, idx, targets):
        x = s.wte(idx) + s.wpe(torch.arange(idx.size(1), device=idx.device))
        for b in s.h:
            x = b(x)
        logits = s.lm_head(s.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def foreach_twin(opt: torch.optim.AdamW) -> torch.optim.AdamW:
    """The same AdamW (groups, hyperparameters) on torch's foreach path, which torch.compile traces into fused
    kernels; the fused path is one opaque kernel that it cannot fuse with the clip. Its lr is a tensor on the
    parameters' device (which foreach AdamW takes only when capturable), as the stage would need it: the stage sets
    a new lr every step, and a float lr is a constant of the compiled graph, so each new value would recompile it
    (PyTorch's compiled-optimizer recipe wraps the lr in a tensor for that reason)."""
    groups = [{**{k: v for k, v in g.items() if k not in ("fused", "foreach", "capturable", "lr")},
               "lr": torch.tensor(float(g["lr"]), device=g["params"][0].device)} for g in opt.param_groups]
    return torch.optim.AdamW(groups, fused=False, foreach=True, capturable=True)


def make_step(model, opt, device, sdpa=None, compiled_update=False):
    """One optimiser step. On CUDA it returns the loss tensor without a sync (timed in blocks of steps by CUDA
    events, as a training loop runs: queued); on CPU the loss as a float. compiled_update: the clip and the AdamW
    step as one torch.compile'd function (PyTorch's compiled-optimizer recipe), on a foreach twin of `opt`."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    kernels = contextlib.nullcontext
    if sdpa:  # force one SDPA backend for this model (ours only: the reference stays as nanoGPT runs it)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernels = lambda: sdpa_kernel([getattr(SDPBackend, sdpa.upper() + ("_ATTENTION" if sdpa != "math" else ""))])  # noqa: E731

    if compiled_update:
        opt = foreach_twin(opt)

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    if compiled_update:
        update = torch.compile(update)

    def step(x, y):
        if device == "cuda":  # a new iteration for CUDA graph trees (compile mode reduce-overhead); else a no-op
            torch.compiler.cudagraph_mark_step_begin()
        with kernels(), amp:
            out = model(x, y)
        loss = out[1] if isinstance(out, tuple) else out
        loss.backward()
        update()
        opt.zero_grad(set_to_none=True)
        return loss.detach() if device == "cuda" else loss.item()
    step.optimizer = opt  # the optimiser it steps (the foreach twin with compiled_update): its lr can be set
    return step


def add_variant_args(ap: argparse.ArgumentParser) -> None:
    """The variants of our step this bench and bench/step_profile.py time (the reference stays as nanoGPT runs)."""
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode for ours (e.g. max-autotune-no-cudagraphs)")
    ap.add_argument("--fused-loss", action="store_true",
                    help="CUDA: ours computes the LM head's loss in chunks (model.lm_head_loss; CPU does by default)")
    ap.add_argument("--loss-kernel", choices=("triton",), default=None,
                    help="ours computes the LM head's loss and gradient in one Triton kernel "
                         "(pipeline/lm/triton_loss.py)")
    ap.add_argument("--loss-block", type=int, default=None,
                    help="with --loss-kernel triton: columns per step of the kernel's passes (triton_loss.BLOCK, "
                         "default 8,192 by 16 warps; 32,768 spills, 16,384 and 8,192 do not)")
    ap.add_argument("--bf16-residual", action="store_true",
                    help="CUDA: ours keeps the residual stream in bf16 (GPT.residual_dtype; llm.c's activations)")
    ap.add_argument("--compiled-update", action="store_true",
                    help="ours runs the grad clip and AdamW step as one torch.compile'd function (foreach AdamW "
                         "traced into fused kernels) instead of fused AdamW after an eager clip")
    ap.add_argument("--sdpa", choices=("flash", "cudnn", "efficient", "math"), default=None,
                    help="CUDA: force this SDPA backend in ours (default: torch's choice, as the reference)")


def apply_variant(model: GPT, args: argparse.Namespace) -> None:
    """The LM-head loss path and residual dtype add_variant_args chose (compile mode and SDPA backend apply where
    the step is made)."""
    if args.fused_loss:
        model.fused_head_loss = True
    if args.loss_kernel:
        model.triton_head_loss = True
    if args.loss_block:
        if not args.loss_kernel or not is_power_of_2(str(args.loss_block)):
            raise SystemExit("--loss-block needs --loss-kernel triton and a power of 2")
        from pipeline.lm import triton_loss

        triton_loss.BLOCK = args.loss_block
    if args.bf16_residual:
        if model.lm_head.weight.device.type != "cuda":  # a CPU step runs without autocast: bf16 meets fp32 weights
            raise SystemExit("--bf16-residual needs CUDA (the step's bf16 autocast)")
        model.residual_dtype = torch.bfloat16


def variant_fields(args: argparse.Namespace) -> dict:
    """The variant add_variant_args chose, as the JSON of this bench and bench/step_profile.py records it."""
    return {k: getattr(args, k) for k in ("compile_mode", "sdpa", "fused_loss", "loss_kernel", "bf16_residual",
                                          "compiled_update", "loss_block")}


ALSO = ("loss_block=N[/WARPS]", "compiled_update")


def also_steps(also: list[str], model, opt, device, args) -> dict:
    """More rows of ours that share its compiled model, each timed in the same rounds as the rest, so one process
    (one compile of each model, one clock history) compares what would otherwise take a process each:
    `loss_block=N` runs the Triton loss kernel with blocks of N columns (`N/W`: and W warps a row; constants of
    the kernel, outside the compiled graph), `compiled_update` the clip and AdamW compiled (its own foreach twin
    of the optimiser)."""
    steps = {}
    for spec in also:
        name, _, value = spec.partition("=")
        block, _, warps = value.partition("/")
        if name == "loss_block" and args.loss_kernel and is_power_of_2(block) and (not warps or is_power_of_2(warps)):
            steps[f"ours+{spec}"] = with_loss_block(make_step(model, opt, device, args.sdpa, args.compiled_update),
                                                    int(block), int(warps) if warps else None)
        elif spec == "compiled_update" and not args.compiled_update:
            steps[f"ours+{spec}"] = make_step(model, opt, device, args.sdpa, compiled_update=True)
        else:
            raise SystemExit(f"--also {spec}: expected one of {ALSO} (loss_block: powers of 2, with --loss-kernel "
                             "triton; compiled_update: without --compiled-update)")
    return steps


def is_power_of_2(text: str) -> bool:
    return text.isdigit() and int(text) > 0 and not int(text) & (int(text) - 1)


def with_loss_block(step, block: int, warps: int | None = None):
    """`step` with triton_loss.BLOCK (and WARPS, when given) set while it runs (the kernel reads them at each
    launch)."""
    from pipeline.lm import triton_loss

    def run(x, y):
        kept = triton_loss.BLOCK, triton_loss.WARPS
        triton_loss.BLOCK, triton_loss.WARPS = block, warps or triton_loss.WARPS
        try:
            return step(x, y)
        finally:
            triton_loss.BLOCK, triton_loss.WARPS = kept
    return run


def time_cuda(steps: dict, batches: list, blocks: int, per_block: int) -> dict:
    """Median seconds per step of each model: `blocks` rounds, each model running `per_block` queued steps timed by
    CUDA events (the order alternates per round, so clock and thermal drift hit both)."""
    times = {k: [] for k in steps}
    for r in range(blocks):
        order = list(steps.items()) if r % 2 else list(steps.items())[::-1]
        for name, step in order:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            for i in range(per_block):
                loss = step(*batches[(r * per_block + i) % len(batches)])
            t1.record()
            t1.synchronize()
            assert math.isfinite(loss.item())
            times[name].append(t0.elapsed_time(t1) / 1000 / per_block)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="vocab 8192, T=128: a quick check (~10 s)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per model (after 1 warm-up step)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    ap.add_argument("--layers", type=int, default=4, help="n_layer (the 124M shape: 12)")
    ap.add_argument("--width", type=int, default=256, help="n_embd (the 124M shape: 768)")
    ap.add_argument("--heads", type=int, default=4, help="n_head (the 124M shape: 12)")
    ap.add_argument("--block", type=int, default=256, help="sequence length T (the 124M shape: 1024)")
    ap.add_argument("--batch", type=int, default=8, help="batch B")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--peak-tflops", type=float, default=312.0, help="GPU peak for MFU (A100 bf16: 312)")
    add_variant_args(ap)
    ap.add_argument("--also", nargs="*", default=[], metavar="VARIANT",
                    help=f"more rows of ours on the same compiled model, timed in the same rounds: {', '.join(ALSO)}")
    ap.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                    help="torch._inductor.config settings for both models (e.g. coordinate_descent_tuning=1)")
    ap.add_argument("--blocks", type=int, default=6, help="CUDA: timed rounds per model (--steps queued steps each)")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "out" / "train_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    V, T = (8192, 128) if args.small else (50304, args.block)
    L, H, D, B = args.layers, args.heads, args.width, args.batch
    torch.manual_seed(0)
    ref = RefGPT(V, T, L, H, D).to(device)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ours = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=D)).to(device)
    ours_opt = make_optimizer(ours, TrainConfig(lr=3e-4))
    apply_variant(ours, args)
    assert sum(p.numel() for p in ref.parameters()) == ours.num_params(), "shapes differ"
    for setting in args.inductor:
        import torch._inductor.config as inductor_config

        key, value = setting.split("=", 1)
        setattr(inductor_config, key, type(getattr(inductor_config, key))(int(value) if value.isdigit() else value))
    if args.compile:
        ref, ours = torch.compile(ref), torch.compile(ours, mode=args.compile_mode)
    steps = {"reference": make_step(ref, ref_opt, device), "ours": make_step(ours, ours_opt, device, args.sdpa,
                                                                        args.compiled_update)}
    steps.update(also_steps(args.also, ours, ours_opt, device, args))
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(V, (B, T), generator=g).to(device), torch.randint(V, (B, T), generator=g).to(device))
               for _ in range(4 if device == "cuda" else args.steps + 1)]
    if device == "cuda":
        for name, step in steps.items():  # warm-up: compilation, autotuning, allocator
            for x, y in batches[:3]:
                step(x, y)
        torch.cuda.synchronize()
        from bench.gpu_telemetry import Telemetry

        with Telemetry() as telemetry:
            times = time_cuda(steps, batches, args.blocks, args.steps)
    else:
        times = {k: [] for k in steps}
        for i, (x, y) in enumerate(batches):
            order = list(steps.items()) if i % 2 else list(steps.items())[::-1]  # alternate who goes first
            for name, step in order:
                t0 = time.perf_counter()
                loss = step(x, y)
                assert math.isfinite(loss)
                if i:  # step 0 is warm-up (allocator, compile)
                    times[name].append(time.perf_counter() - t0)
    flops_tok = ours.flops_per_token(T)
    rows = {}
    for name, ts in times.items():
        s = statistics.median(ts)
        rows[name] = {"s_per_step": round(s, 4), "tokens_per_s": round(B * T / s, 1)}
        if device == "cuda":
            rows[name]["mfu"] = round(flops_tok * B * T / s / (args.peak_tflops * 1e12), 4)
    # Median of per-pair ratios (steps on CPU, rounds on CUDA): a load spike hits one pair, not the figure.
    ratios = {name: round(statistics.median(r / o for r, o in zip(times["reference"], ts)), 3)
              for name, ts in times.items() if name != "reference"}
    ratio = ratios["ours"]
    shape = f"L{L} H{H} D{D} T{T} B{B} V{V}"
    print(f"GPT train step, {shape}, {device}, {args.threads} threads, median of {args.steps} steps")
    width = max(12, *(len(k) for k in rows))
    print(f"{'':{width}} {'s/step':>8} {'tokens/s':>10}" + (f" {'MFU':>6}" if device == "cuda" else ""))
    for name, r in rows.items():
        print(f"{name:{width}} {r['s_per_step']:8.3f} {r['tokens_per_s']:10.0f}" + (f" {r['mfu']:6.1%}" if "mfu" in r else "")
              + (f"  {ratios[name]:.2f}x the reference" if name in ratios and len(ratios) > 1 else ""))
    anchor = ANCHOR_TOKENS_PER_S.get(args.threads) if not args.small and device == "cpu" else None
    print(f"ratio ours/reference (median of paired steps): {ratio:.2f}x" + (f"   (ANCHORS.md reference: {anchor} tokens/s)" if anchor else ""))
    gpu_state = telemetry.summary() if device == "cuda" else None
    if gpu_state and gpu_state["available"]:
        clock = gpu_state["sm_clock_mhz"] or {}
        print(f"GPU over the timed rounds: SM clock median {clock.get('median')} MHz (max {gpu_state['sm_clock_max_mhz']}),"
              f" power median {(gpu_state['power_w'] or {}).get('median')} W of {gpu_state['power_limit_w']},"
              f" clock held down by: {', '.join(gpu_state['clock_event_reasons']) or 'nothing'}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"shape": shape, "device": device, "threads": args.threads, "steps": args.steps,
                               "compile": args.compile, **variant_fields(args), "inductor": args.inductor,
                               "also": args.also, "results": rows, "ratio": ratio, "ratios": ratios,
                               "anchor_tokens_per_s": anchor, "telemetry": gpu_state}, indent=2))


if __name__ == "__main__":
    main()
