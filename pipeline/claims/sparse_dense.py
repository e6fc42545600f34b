"""Sparse vs dense at equal steps: GPT-3's alternating dense / locally banded attention against all-dense.

The claim: GPT-3 (Brown et al. 2020, sec. 2.1) uses "alternating dense and locally banded sparse attention
patterns in the layers of the transformer, similar to the Sparse Transformer" (Child et al. 2019); write-ups
of replications at 125M-350M scale report the banded layers ~1.5x faster per step with slightly worse
perplexity. Here the two variants differ in nothing else: the same GPTConfig but for `attn`, the same seed
(so the same initial weights, the shapes being equal) and the same batches, trained in lockstep. Steps are
interleaved (dense then sparse, sparse then dense on the next step) so that load on a shared machine falls
on both alike; tokens/s is the median over the steps after `timing_skip`.

What a CPU can show: model.py runs a banded layer as a dense (T, T) boolean mask through SDPA's math kernel,
which computes every masked score anyway and loses the fused causal kernel; the saving in attention FLOPs
(`attention_flops_per_token`) is an upper bound that only a block-sparse kernel (FlexAttention on a GPU,
issue 12) can turn into time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.claims.small_lm import Run, finite, load_splits
from pipeline.core.report import StageReport
from pipeline.lm.model import GPTConfig

VARIANTS = ("dense", "alternating_sparse")


@dataclass(frozen=True)
class SparseDenseConfig:
    """params.yaml `sparse_vs_dense`."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 256  # GPT-3: 2,048
    sparse_window: int = 32  # GPT-3: unpublished (model.py uses 256 at 2,048); must be < block_size to matter
    batch_size: int = 8
    lr: float = 0.003
    warmup_steps: int = 20
    steps: int = 150
    eval_batches: int = 8
    timing_skip: int = 5  # first steps of each variant left out of tokens/s (allocator and kernel warm-up)

    def __post_init__(self) -> None:
        if self.sparse_window >= self.block_size:
            raise ValueError(f"sparse_window {self.sparse_window} >= block_size {self.block_size}: "
                             "the banded layers would be plain causal layers")


def model_config(cfg: SparseDenseConfig, vocab_size: int, attn: str) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, attn=attn, sparse_window=cfg.sparse_window)


def attention_flops(model: torch.nn.Module, seq_len: int) -> int:
    """Training FLOPs per token in attention scores and sums alone (model.flops_per_token less its 6N part)."""
    return model.flops_per_token(seq_len) - 6 * model.num_params(non_embedding=True)


def run(tokens_dir: str | Path, cfg: SparseDenseConfig, seed: int, report: StageReport,
        device: str = "cpu") -> tuple[dict, dict[str, list[dict]]]:
    """Train both variants in lockstep; return (result for reports/sparse_vs_dense.json, curves per variant)."""
    splits = load_splits(tokens_dir, report)
    runs = {v: Run(model_config(cfg, splits.vocab_size, v), splits, cfg.batch_size, cfg.lr, cfg.warmup_steps,
                   cfg.steps, seed, device=device) for v in VARIANTS}
    val_batches = runs["dense"].val_batches(cfg.eval_batches, seed)  # the same windows for both
    curves: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    drawn = {v: hashlib.sha256() for v in VARIANTS}  # what each variant's sampler drew, to prove they match
    for step in range(cfg.steps):
        for v in (VARIANTS if step % 2 == 0 else VARIANTS[::-1]):
            drawn[v].update(runs[v].gen.get_state().numpy().tobytes())
            row = runs[v].step()
            curves[v].append({"step": row["step"], "train_loss": finite(row["train_loss"]),
                              "seconds": row["seconds"]})
    block = runs["dense"].block
    rows = []
    for v in VARIANTS:
        times = [r["seconds"] for r in curves[v][cfg.timing_skip:]] or [r["seconds"] for r in curves[v]]
        val = runs[v].val_loss(val_batches)
        tail = [r["train_loss"] for r in curves[v][-10:] if r["train_loss"] is not None]
        rows.append({
            "variant": v, "val_loss": finite(val), "val_ppl": finite(2.718281828459045 ** val),
            "train_loss_last10": finite(statistics.fmean(tail)) if tail else None,
            "tokens_per_s": round(cfg.batch_size * block / statistics.median(times), 1),
            "step_ms_median": round(1000 * statistics.median(times), 2),
            "step_ms_min": round(1000 * min(times), 2),
            "attention_flops_per_token": attention_flops(runs[v].model, block),
            "flops_per_token": runs[v].model.flops_per_token(block),
            "batches_sha256": drawn[v].hexdigest()[:16],
        })
    dense, sparse = rows
    result = {
        "rows": rows,
        "sparse_over_dense": {
            "tokens_per_s": round(sparse["tokens_per_s"] / dense["tokens_per_s"], 3),
            "val_loss_delta": finite(sparse["val_loss"] - dense["val_loss"]) if None not in (
                sparse["val_loss"], dense["val_loss"]) else None,
            "attention_flops": round(sparse["attention_flops_per_token"] / dense["attention_flops_per_token"], 3),
            "flops": round(sparse["flops_per_token"] / dense["flops_per_token"], 3),
        },
        "same_batches": dense["batches_sha256"] == sparse["batches_sha256"],
        "steps": cfg.steps, "tokens_per_variant": cfg.steps * cfg.batch_size * block, "block_size": block,
        "params": runs["dense"].model.num_params(), "config": dataclasses.asdict(cfg), "seed": seed,
        "device": device, "threads": torch.get_num_threads(),
    }
    result["claim"] = claim(result)
    return result, {v: [{k: r[k] for k in ("step", "train_loss")} for r in curves[v]] for v in VARIANTS}


CLAIM = ("GPT-3: alternating dense / locally banded attention; replications at 125M-350M report the banded "
         "layers ~1.5x faster, perplexity a little worse")


def claim(result: dict) -> dict[str, str]:
    """report["claim"] for the run summary: speed and loss each held or not."""
    s, dense, sparse = result["sparse_over_dense"], *result["rows"]
    ours = (f"val loss {sparse['val_loss']} banded vs {dense['val_loss']} dense ({s['val_loss_delta']:+} nats); "
            f"tokens/s x{s['tokens_per_s']} on {result['device']} (attention FLOPs x{s['attention_flops']})")
    r = s["tokens_per_s"]
    speed = ("faster" if r >= 1.2 else "slightly faster" if r >= 1.05 else "no faster" if r >= 0.95 else "slower")
    if r < 1.05:
        speed += " (the banded layer is a masked dense kernel: it computes every score)"
    delta = s["val_loss_delta"]
    loss = ("loss not measured" if delta is None else "loss not worse" if delta <= 0 else
            "loss a little worse" if delta < 0.1 else "loss much worse")
    return {"paper": CLAIM, "ours": ours, "verdict": f"{speed}; {loss} at equal steps"}


def markdown(result: dict) -> str:
    """The one table of the claim: val loss and tokens/s of each variant, and sparse/dense ratios."""
    r, c = result["rows"], result["config"]
    lines = [f"Sparse vs dense at equal steps ({result['steps']} steps x {c['batch_size']} x {result['block_size']} "
             f"tokens, {c['n_layer']} layers x {c['n_embd']}, band {c['sparse_window']}, seed {result['seed']}, "
             f"{result['device']}, {result['threads']} threads)", "",
             "| variant | val loss | val ppl | tokens/s (median step) | step ms (min) | attention FLOPs/token |",
             "|---|---|---|---|---|---|"]
    for row in r:
        ppl = "n/a" if row["val_ppl"] is None else f"{row['val_ppl']:.2f}"
        lines.append(f"| {row['variant']} | {row['val_loss']} | {ppl} | {row['tokens_per_s']} | "
                     f"{row['step_ms_min']} | {row['attention_flops_per_token']} |")
    s = result["sparse_over_dense"]
    delta = "n/a" if s["val_loss_delta"] is None else f"{s['val_loss_delta']:+}"
    lines += ["", f"sparse / dense: tokens/s x{s['tokens_per_s']}, val loss {delta} nats, "
              f"attention FLOPs x{s['attention_flops']}, all FLOPs x{s['flops']}; same batches: {result['same_batches']}"]
    return "\n".join(lines) + "\n"
