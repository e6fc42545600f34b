"""The train step's knobs whose meaning depends on the device: which LM-head loss runs (`train.loss_kernel`) and
which dtype the residual stream takes (`train.residual_dtype`). Each `auto` resolves to what was measured faster
on that kind of device, and a forced choice that cannot run there fails with a clear error before training.
"""
from __future__ import annotations

import importlib.util
import os

import torch

LOSS_KERNELS = ("auto", "torch", "triton")
RESIDUAL_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}  # None: the stream stays as autocast gives it


def use_triton_loss(loss_kernel: str, device: str, strategy: str = "ddp") -> bool:
    """Whether the LM head's loss runs through pipeline/lm/triton_loss.py; a clear error where it cannot run.

    `auto` takes the kernel where it was measured faster (an H200 at gpt2-small: 1.03-1.04x the compiled
    cross-entropy's step, README "Speed"): an NVIDIA GPU of compute capability 8.0 or newer, triton importable, and
    strategy ddp (FSDP with the kernel has not run on a GPU yet). Anywhere else `auto` is `torch`: the compiled
    cross-entropy on GPUs, the chunked loss on CPUs (GPT.lm_head_loss).
    """
    if loss_kernel not in LOSS_KERNELS:
        raise ValueError(f"train.loss_kernel must be one of {LOSS_KERNELS}, got {loss_kernel!r}")
    if loss_kernel == "torch":
        return False
    has_triton = importlib.util.find_spec("triton") is not None
    if loss_kernel == "auto":
        return (has_triton and strategy == "ddp" and device.startswith("cuda") and torch.version.hip is None
                and torch.cuda.get_device_capability(device) >= (8, 0))
    if not has_triton:
        raise ValueError("train.loss_kernel: triton needs the triton package, which CUDA builds of torch install")
    if not device.startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("train.loss_kernel: triton runs on a GPU (on a CPU only through triton's interpreter, "
                         "TRITON_INTERPRET=1, which the tests use); set it back to auto here")
    return True


def resolved_residual_dtype(name: str, device: str, strategy: str = "ddp") -> str:
    """train.residual_dtype with `auto` resolved to the stream that runs; other names pass through unchecked.

    `auto` is `bfloat16` on a GPU under ddp: on an H200 at gpt2-small it measured 1.05-1.08x the fp32 stream's
    step, and its loss held (bench/residual_parity.py: 400 steps, val loss within 0.01% of the fp32 stream's,
    inside the 0.08% a reordered fp32 run moves; README "Speed"). Elsewhere `float32`: a CPU step has no
    autocast, and FSDP with the bf16 stream has not run on a GPU yet.
    """
    if name != "auto":
        return name
    return "bfloat16" if device.startswith("cuda") and strategy == "ddp" else "float32"


def residual_dtype_of(name: str, device: str) -> torch.dtype | None:
    """GPT.residual_dtype for a resolved train.residual_dtype; a clear error where it cannot run.

    `bfloat16` casts the residual stream to bf16 after the embeddings (llm.c's all-bf16 activations): under the
    GPU step's bf16 autocast the stream is otherwise fp32, so every LayerNorm and residual add moves twice the
    bytes. A CPU step runs without autocast, where a bf16 stream would meet fp32 weights, so it is refused there.
    `float32` (None) leaves the stream alone.
    """
    if name not in RESIDUAL_DTYPES:
        raise ValueError(f"train.residual_dtype must be one of {('auto', *RESIDUAL_DTYPES)}, got {name!r}")
    if RESIDUAL_DTYPES[name] is not None and not device.startswith("cuda"):
        raise ValueError(f"train.residual_dtype: {name} needs a GPU (the step's bf16 autocast; a CPU step runs in "
                         "fp32 throughout); set it to auto or float32 here")
    return RESIDUAL_DTYPES[name]
