"""Pre-LN vs Post-LN stability: one cell of the grid {post, pre} x depth x lr x warm-up (GPT-2 sec. 2.3).

The claim: GPT-2 moved LayerNorm to the input of each sub-block (plus a final LayerNorm, and residual
projections initialised at 0.02/sqrt(2 n_layer)). A Post-LN stack (GPT-1, the original Transformer) puts large
gradients on the layers next to the output at initialisation, so with Adam it needs a learning-rate warm-up,
or a small learning rate, to train once it is deep; Pre-LN trains without warm-up (Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture", sec. 3-4; Liu et al. 2020 on Post-LN's amplified updates).

One stage run trains ONE narrow model (params.yaml `ln_stability`) and says whether it diverged; the grid is a
set of DVC experiments (`python -m pipeline.claims.grid ln_stability`, see its docstring).

Divergence rule (`divergence`): the loss curve is smoothed by a trailing mean over `window` steps; a run
diverged when (1) a loss is NaN or infinite (the run stops there), or (2) the smoothed loss at the end is above
the first step's loss (it ended worse than the untrained model), or (3) the smoothed loss at the end is more
than `rise_margin` nats above the smoothed minimum (it learned, then blew up). A run that neither learns nor
blows up is not called diverged; the verdict then says whether it trained (its smoothed end loss is below the
unigram entropy of the train tokens, the loss of a model that knows only token frequencies) or stalled on that
plateau, which is how a Post-LN stack without warm-up fails at this scale (it learns the frequencies, then its
loss stays there for the rest of the budget).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.claims.small_lm import Run, finite, load_splits
from pipeline.core.report import StageReport
from pipeline.lm.model import GPTConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LnStabilityConfig:
    """params.yaml `ln_stability`: one cell of the grid."""

    ln: str = "pre"  # pre (GPT-2/3) | post (GPT-1)
    n_layer: int = 6  # grid: 6 and 24 (GPT-2 medium's depth; the claim concerns post-LN deeper than ~12)
    n_head: int = 4
    n_embd: int = 64  # narrow, so a 24-layer cell trains in about a minute on 2 cores
    block_size: int = 64
    batch_size: int = 16
    lr: float = 0.001  # grid: low and high
    warmup_steps: int = 0  # grid: 0 and 100
    steps: int = 300
    weight_decay: float = 0.1  # GPT-3
    grad_clip: float = 1.0  # GPT-3; 0 = off
    init: str = "paper"  # paper: GPT-1's plain N(0, 0.02) for post, GPT-2's scaled residual init for pre;
    #                      scaled | plain: the same init for both layouts (LayerNorm placement alone)
    eval_batches: int = 4
    window: int = 10  # steps in the trailing mean of the divergence rule
    rise_margin: float = 0.5  # nats above the smoothed minimum that count as "rising"

    def __post_init__(self) -> None:
        if self.init not in ("paper", "scaled", "plain"):
            raise ValueError(f"ln_stability.init must be paper, scaled or plain, got {self.init!r}")


RULE = ("diverged if a loss is non-finite, or the trailing-{window}-step mean loss at the end is above the "
        "first step's loss, or more than {rise_margin} nats above its minimum")


def model_config(cfg: LnStabilityConfig, vocab_size: int) -> GPTConfig:
    scaled = cfg.ln == "pre" if cfg.init == "paper" else cfg.init == "scaled"
    return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, ln=cfg.ln, residual_scale_init=scaled)


def smoothed(losses: list[float], window: int) -> list[float]:
    """Trailing means over `window` steps (the first window-1 points average what there is so far)."""
    out, total = [], 0.0
    for i, x in enumerate(losses):
        total += x
        if i >= window:
            total -= losses[i - window]
        out.append(total / min(i + 1, window))
    return out


def divergence(losses: list[float], window: int = 10, rise_margin: float = 0.5) -> dict:
    """Apply the rule of the module docstring to a loss curve: {diverged, reason, step, initial, end, min}."""
    if not losses:
        raise ValueError("empty loss curve")
    bad = next((i for i, x in enumerate(losses) if not math.isfinite(x)), None)
    if bad is not None:
        return {"diverged": True, "reason": "non_finite", "step": bad + 1, "initial": finite(losses[0]),
                "end": None, "min": None}
    curve = smoothed(losses, max(1, min(window, len(losses))))
    low = min(range(len(curve)), key=curve.__getitem__)
    end, initial = curve[-1], losses[0]
    out = {"diverged": False, "reason": None, "step": None, "initial": finite(initial), "end": finite(end),
           "min": finite(curve[low]), "min_step": low + 1}
    if end > initial:
        out.update(diverged=True, reason="above_initial")
    elif end > curve[low] + rise_margin:
        out.update(diverged=True, reason="rising")
    if out["diverged"]:  # the first step after the minimum where the smoothed curve left the margin
        out["step"] = next((i + 1 for i in range(low, len(curve)) if curve[i] > curve[low] + rise_margin),
                           len(curve))
    return out


def verdict(div: dict, end: float | None, unigram: float) -> str:
    """diverged (the rule above), trained (smoothed end loss below the unigram entropy) or stalled."""
    if div["diverged"]:
        return "diverged"
    return "trained" if end is not None and end < unigram else "stalled"


CLAIM = ("GPT-2: LayerNorm moved to each sub-block's input; a Post-LN stack deeper than ~12 layers needs a "
         "learning-rate warm-up or a small learning rate")


def claim(result: dict) -> dict[str, str]:
    """report["claim"] for the run summary: this cell against what the claim expects of it (the grid tests it)."""
    risky = result["ln"] == "post" and result["n_layer"] > 12 and result["warmup_steps"] == 0
    expect = "a failure unless the lr is small" if risky else "training"
    ours = (f"{result['ln']}-LN, {result['n_layer']} layers, lr {result['lr']}, warm-up {result['warmup_steps']}: "
            f"{result['verdict']} (loss {result['initial_loss']} -> {result['final_loss']}, unigram "
            f"{result['unigram_entropy_nats']:.3f})")
    return {"paper": CLAIM, "ours": ours, "verdict": f"one cell: {result['verdict']}, the claim expects {expect}; "
            "the 16-cell grid tests it (python -m pipeline.claims.grid ln_stability)"}


def run(tokens_dir: str | Path, cfg: LnStabilityConfig, seed: int, report: StageReport,
        device: str = "cpu") -> tuple[dict, list[dict]]:
    """Train one cell; return (result for reports/ln_stability.json, loss-curve rows for the plot)."""
    splits = load_splits(tokens_dir, report)
    gcfg = model_config(cfg, splits.vocab_size)
    cell = Run(gcfg, splits, cfg.batch_size, cfg.lr, cfg.warmup_steps, cfg.steps, seed,
               weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, device=device)
    val_batches = cell.val_batches(cfg.eval_batches, seed)
    rows, losses = [], []
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        row = cell.step()
        losses.append(row["train_loss"])
        rows.append({"step": row["step"], "train_loss": finite(row["train_loss"]), "lr": row["lr"],
                     "grad_norm": finite(row["grad_norm"])})
        if not math.isfinite(row["train_loss"]):
            log.warning("ln_stability: loss %s at step %d; stopping this cell", row["train_loss"], row["step"])
            break
    seconds = time.perf_counter() - t0
    div = divergence(losses, cfg.window, cfg.rise_margin)
    val = cell.val_loss(val_batches) if div["reason"] != "non_finite" else float("nan")
    end = div["end"]
    result = {
        "ln": cfg.ln, "n_layer": cfg.n_layer, "lr": cfg.lr, "warmup_steps": cfg.warmup_steps,
        "diverged": div["diverged"], "reason": div["reason"] or "stable",
        "diverged_at_step": div["step"], "initial_loss": div["initial"], "final_loss": end,
        "min_loss": div["min"],
        "final_val_loss": finite(val), "unigram_entropy_nats": round(splits.unigram_entropy, 6),
        "below_unigram": bool(end is not None and end < splits.unigram_entropy),
        "verdict": verdict(div, end, splits.unigram_entropy),
        "max_grad_norm": finite(max((r["grad_norm"] for r in rows if r["grad_norm"] is not None), default=math.nan)),
        "steps_run": len(losses), "rule": RULE.format(window=cfg.window, rise_margin=cfg.rise_margin),
        "params": cell.model.num_params(), "residual_scale_init": gcfg.residual_scale_init,
        "seconds": round(seconds, 2), "tokens_per_s": round(len(losses) * cfg.batch_size * cell.block / seconds, 1),
        "config": dataclasses.asdict(cfg), "seed": seed, "device": device, "threads": torch.get_num_threads(),
    }
    result["claim"] = claim(result)
    return result, rows
