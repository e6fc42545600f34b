"""Registers and spills of the LM-head loss kernel (pipeline/lm/triton_loss.py) compiled for a GPU, without one.

Why: a Triton kernel that needs more registers than a thread may have spills to local memory, which a bandwidth-
bound kernel pays for on every block. Whether it does is a property of the compiled code, not of the card: triton
compiles for any target offline (its wheel brings ptxas and cuobjdump), so the block sizes and warp counts worth
timing on the next GPU call can be chosen here, on a CPU machine. Per (block, warps) it prints the registers a
thread uses and its stack frame (bytes a thread spills to local memory; 0 means none).

Usage: python3 bench/kernel_resources.py [--arch 90] [--blocks 8192 16384 32768] [--warps 8 16 32]
          [--vocab 50257 --width 50304]
Needs triton (CUDA builds of torch bring it; `pip install triton` elsewhere). Writes bench/out/kernel_resources.json.

Measured 2026-11-27 (triton 3.6, sm90, bf16 logits, GPT-2's 50,257 columns padded to 50,304): the kernel's block
of 32,768 at 32 warps, what the H200 rows ran, uses 64 registers and spills a 400-byte stack a thread (720 at 16
warps, 960 at 8); 16,384 at 32 warps: 64 registers, no stack; 8,192 at 32 warps: 32 registers, no stack (two
blocks an SM). A kernel holding the whole row (65,536 columns, tried as a one-read variant) spilled 1,000-2,100
bytes a thread at every warp count, so it was not kept.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import subprocess
import tempfile


def resources(kernel, arch: int, block: int, warps: int, n_cols: int, width: int) -> dict:
    """Compile `kernel` (triton_loss's signature) for sm_<arch> and read its resource usage with cuobjdump."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {"logits_ptr": "*bf16", "row_stride": "i64", "targets_ptr": "*i64", "losses_ptr": "*fp32",
                 "n_valid_ptr": "*fp32", "n_cols": "constexpr", "row_width": "constexpr", "IGNORE": "constexpr",
                 "BLOCK": "constexpr"}
    constants = {"n_cols": n_cols, "row_width": width, "IGNORE": -1, "BLOCK": block}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants),
                              target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    cuobjdump = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = pathlib.Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        out = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True,
                             check=True).stdout
    # a line such as "REG:64 STACK:400 SHARED:1024 LOCAL:0 CONSTANT[0]:584 ..."
    fields = dict(f.split(":", 1) for f in next(line for line in out.splitlines() if "REG:" in line).split())
    return {"block": block, "warps": warps, "registers": int(fields["REG"]), "stack_bytes": int(fields["STACK"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (H100/H200: 90, A100: 80)")
    ap.add_argument("--blocks", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--warps", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--vocab", type=int, default=50257, help="real columns (GPT-2: 50,257)")
    ap.add_argument("--width", type=int, default=50304, help="the padded row width (model.padded_vocab)")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "out" / "kernel_resources.json"))
    args = ap.parse_args()
    # the interpreter (the CPU tests set it) replaces @triton.jit kernels with Python ones that cannot compile
    os.environ.pop("TRITON_INTERPRET", None)
    try:
        from pipeline.lm import triton_loss
    except ImportError:
        raise SystemExit("kernel_resources: triton is not installed (pip install triton; no GPU needed)")
    rows = [resources(triton_loss._loss_and_grad_in_place, args.arch, block, warps, args.vocab, args.width)
            for block in args.blocks for warps in args.warps]
    print(f"triton_loss kernel on sm_{args.arch}, bf16 logits, {args.vocab} of {args.width} columns "
          f"(default block {triton_loss.BLOCK}, {triton_loss.WARPS} warps)")
    print(f"{'block':>7} {'warps':>5} {'registers':>9} {'stack B':>8}")
    for r in rows:
        print(f"{r['block']:7} {r['warps']:5} {r['registers']:9} {r['stack_bytes']:8}"
              + ("   spills" if r["stack_bytes"] else ""))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"arch": args.arch, "vocab": args.vocab, "width": args.width, "rows": rows},
                              indent=2))
    if os.environ.get("OUT"):
        (pathlib.Path(os.environ["OUT"]) / "kernel_resources.json").write_text(out.read_text())


if __name__ == "__main__":
    main()
