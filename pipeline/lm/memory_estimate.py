"""GPU memory per rank of training a preset under DDP and FSDP: a computed estimate, not a measurement.

Bytes per rank = model states + working copies + activations, for the train stage as it runs on CUDA
(fp32 master weights, bf16 autocast, fused AdamW, no activation checkpointing):
- model states (ZeRO, Rajbhandari et al. 2020, sec. 3.1): fp32 parameters 4 + fp32 gradients 4 + AdamW's two
  fp32 moments 8 = 16 bytes per parameter. DDP keeps all of them on every rank; FSDP divides them by the ranks.
- working copies. DDP: its gradient buckets (a second fp32 copy of the gradients: gradient_as_bucket_view is off)
  4 + autocast's bf16 weights, saved for backward 2 = 6 bytes per parameter. FSDP2: the unsharded bf16
  parameters, bf16 gradients and fp32 reduce-scatter input (2 + 2 + 4 bytes) of the root (embeddings, tied head,
  ln_f: gathered for the whole step) and of two blocks (the one computing and the one prefetched).
- activations saved for backward, per layer: 34 * s * b * h bytes (Korthikanti et al. 2022, "Reducing Activation
  Recomputation", sec. 4.1, 16-bit, dropout masks included). Their 5 * a * s^2 * b attention-score term is left
  out: SDPA's flash / memory-efficient kernels (the dense path, and the banded mask on CUDA) keep no s x s scores.
  Plus the LM head: b * s * V_padded * 12 bytes (bf16 logits, the fp32 log-softmax cross-entropy saves, its
  fp32 gradient), and 4 * s * b * h for the embedding sum and ln_f.
A card "fits" a run when the estimate is at most 90% of its memory: the rest for the CUDA context, NCCL
buffers and allocator fragmentation. bench/gpu_fsdp_check.py compares the estimate with torch's measured peak.

Usage: python -m pipeline.lm.memory_estimate [--ranks 8]   (prints the README's fit table)
"""
from __future__ import annotations

import argparse

from pipeline.lm.model import PRESETS, GPTConfig, padded_vocab

STATE_BYTES = 16  # fp32 param + fp32 grad + AdamW exp_avg + exp_avg_sq
DDP_EXTRA_BYTES = 6  # DDP gradient buckets (fp32) + autocast's bf16 weight copies saved for backward
FSDP_UNSHARDED_BYTES = 8  # bf16 gathered param + bf16 unsharded grad + fp32 reduce-scatter input
FSDP_LIVE_BLOCKS = 2  # the block computing and the one being prefetched
ACT_PER_LAYER = 34  # x s*b*h bytes (Korthikanti et al. 2022, flash attention: no s^2 term)
LOGIT_BYTES = 12  # x b*s*V_padded: bf16 logits, fp32 log-softmax, fp32 gradient
USABLE = 0.9  # of a card's memory; the rest: CUDA context, NCCL, fragmentation
CARDS_GB = (24, 40, 80, 141)  # RTX 4090 / A10G, A100-40GB, A100 / H100 80GB, H200
GB = 1e9


def param_counts(cfg: GPTConfig) -> dict[str, int]:
    """Parameter counts of GPT(cfg), from its shapes: `params` as GPT.num_params() counts them (tied weights once,
    no vocabulary padding), `stored` as memory holds them (padding rows included), `root` the stored ones outside
    the blocks (embeddings, untied head, ln_f: FSDP's root unit), `block` one transformer block."""
    d, b = cfg.n_embd, int(cfg.bias)
    ln = d * (1 + b)
    block = 2 * ln + (3 * d * d + 3 * d * b) + (d * d + d * b) + (4 * d * d + 4 * d * b) + (4 * d * d + d * b)
    rows = padded_vocab(cfg.vocab_size)
    heads = 1 if cfg.tie_weights else 2  # the LM head shares the token embedding unless untied
    root = heads * rows * d + cfg.block_size * d + (ln if cfg.ln == "pre" else 0)
    stored = root + cfg.n_layer * block
    return {"params": stored - heads * (rows - cfg.vocab_size) * d, "stored": stored, "root": root, "block": block}


def estimate(cfg: GPTConfig, strategy: str = "ddp", ranks: int = 8, micro_batch: int = 1,
             seq_len: int | None = None) -> dict[str, float]:
    """Bytes per rank of one training step: states, working copies, activations and total (module docstring)."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy must be ddp or fsdp, got {strategy!r}")
    n = param_counts(cfg)
    s, bsz, h = seq_len or cfg.block_size, micro_batch, cfg.n_embd
    if strategy == "ddp":
        states, working = STATE_BYTES * n["stored"], DDP_EXTRA_BYTES * n["stored"]
    else:
        states = STATE_BYTES * n["stored"] / ranks
        working = FSDP_UNSHARDED_BYTES * (n["root"] + min(FSDP_LIVE_BLOCKS, cfg.n_layer) * n["block"])
    activations = (ACT_PER_LAYER * cfg.n_layer + 4) * s * bsz * h + LOGIT_BYTES * bsz * s * padded_vocab(cfg.vocab_size)
    return {"states": states, "working": working, "activations": activations,
            "total": states + working + activations}


def max_micro_batch(cfg: GPTConfig, strategy: str, ranks: int, card_gb: float, limit: int = 1024) -> int:
    """Largest micro-batch (full-length sequences per rank) whose estimate fits the card; 0 when even 1 does not."""
    fits = [b for b in range(1, limit + 1) if estimate(cfg, strategy, ranks, b)["total"] <= USABLE * card_gb * GB]
    return fits[-1] if fits else 0


def fit_table(ranks: int = 8, cards: tuple[int, ...] = CARDS_GB) -> str:
    """Markdown: per preset, GB per rank at micro-batch 1 under DDP and FSDP over `ranks`, and the largest
    micro-batch each card holds (0: does not fit)."""
    head = ["preset", "params", "T", "DDP GB/rank (b=1)", f"FSDP x{ranks} GB/rank (b=1)"]
    head += [f"max micro-batch {c} GB: DDP / FSDP" for c in cards]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cfg in PRESETS.items():
        if name == "tiny":
            continue
        ddp, fsdp = estimate(cfg, "ddp", ranks), estimate(cfg, "fsdp", ranks)
        row = [name, f"{param_counts(cfg)['params'] / 1e6:,.0f}M", str(cfg.block_size),
               f"{ddp['total'] / GB:.1f}", f"{fsdp['total'] / GB:.1f}"]
        row += [f"{max_micro_batch(cfg, 'ddp', ranks, c)} / {max_micro_batch(cfg, 'fsdp', ranks, c)}" for c in cards]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=8, help="GPUs FSDP shards over (one node: 8)")
    args = ap.parse_args()
    print(fit_table(args.ranks))
    for name in ("gpt2-xl", "gpt3-xl", "gpt3-2.7b"):
        for strategy in ("ddp", "fsdp"):
            parts = estimate(PRESETS[name], strategy, args.ranks)
            print(name, strategy, {k: round(v / GB, 2) for k, v in parts.items()})


if __name__ == "__main__":
    main()
