"""The training recipe: params.yaml `train`, the learning-rate schedule, batch sizes and the optimiser.

Defaults in params.yaml `train`:
- GPT-3 (Brown et al. 2020, appendix B): Adam beta1 0.9, beta2 0.95, global-norm grad clip 1.0,
  cosine decay to 10% of the max lr after a linear warmup, weight decay 0.1, and "we also gradually
  increase the batch size linearly from a small value (32k tokens) to the full value over the first
  4-12 billion tokens" (`batch_ramp_tokens`, off when 0).
- GPT-1 (Radford et al. 2018, sec. 4.1): weight decay (their L2 0.01) only on non-bias weights; we
  follow nanoGPT and decay every >= 2-D tensor (matmul weights, embeddings), never biases or LayerNorm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml `train`."""

    max_steps: int = 300
    batch_size: int = 16  # global sequences per optimiser step (all ranks, all accumulation steps)
    lr: float = 0.003
    min_lr_ratio: float = 0.1  # GPT-3: cosine to 10% of the max lr
    warmup_steps: int = 30
    weight_decay: float = 0.1  # GPT-3
    beta1: float = 0.9
    beta2: float = 0.95  # GPT-3
    grad_clip: float = 1.0  # GPT-3
    eval_interval: int = 50
    eval_batches: int = 8
    grad_accum_steps: int = 1  # micro-batches per step and rank: batch_size / (world * grad_accum_steps) each
    batch_ramp_tokens: int = 0  # GPT-3: linear batch ramp over the first 4-12B tokens; 0 = off
    batch_ramp_start: int = 16  # GPT-3: the ramp starts at 32k tokens = 16 sequences of 2,048
    compile: bool = False  # torch.compile the model (GPU: faster; CPU needs a C++ compiler)
    peak_tflops: float = 0.0  # MFU denominator; 0: the detected GPU's dense bf16 peak (device_peak.py)
    strategy: str = "ddp"  # ddp: a whole replica per rank; fsdp: FSDP2 shards (distributed.py, memory_estimate.py)
    deterministic: bool = False  # GPU: deterministic kernels for bit-identical reruns (CPU always is)
    loss_kernel: str = "auto"  # auto | torch | triton: device_knobs.use_triton_loss
    residual_dtype: str = "auto"  # auto | float32 | bfloat16 (GPU, under bf16 autocast): device_knobs.resolved_residual_dtype



# --- schedule and optimiser ----------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimisation step `step` (0-based): linear warmup, then cosine to min_lr_ratio*lr."""
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def micro_batch(cfg: TrainConfig, world: int) -> int:
    """Sequences per forward pass on one rank; batch_size must split evenly over ranks x accumulation."""
    parts = world * cfg.grad_accum_steps
    if cfg.batch_size % parts:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by world size {world} x "
                         f"grad_accum_steps {cfg.grad_accum_steps}")
    return cfg.batch_size // parts


def batch_at(tokens_seen: int, cfg: TrainConfig, unit: int) -> int:
    """Global batch (sequences) for the next step: GPT-3's linear ramp, in multiples of `unit` (world x micro)."""
    if cfg.batch_ramp_tokens <= 0 or tokens_seen >= cfg.batch_ramp_tokens:
        return cfg.batch_size
    b = cfg.batch_ramp_start + (cfg.batch_size - cfg.batch_ramp_start) * tokens_seen / cfg.batch_ramp_tokens
    return int(min(cfg.batch_size, max(unit, b // unit * unit)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decay on >= 2-D tensors only (biases and LayerNorm gains are not regularised).

    The fused kernel (one pass over all tensors; CPU and CUDA in torch >= 2.4) is used when present.
    """
    params_ = [p for p in model.parameters() if p.requires_grad]  # a tied tensor appears once
    groups = [
        {"params": [p for p in params_ if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params_ if p.dim() < 2], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError):  # a device/dtype without a fused kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
