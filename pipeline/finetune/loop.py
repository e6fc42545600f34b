"""GPT-1 fine-tuning loop: L3 = L2 + lambda * L1, linear warmup then linear decay, exact resume.

GPT-1 sec. 4.1 ("Fine-tuning details"): learning rate 6.25e-5, batch 32, 3 epochs, linear warmup
over 0.2% of training then linear decay to 0, classifier dropout 0.1, lambda 0.5; the pretraining
settings otherwise (dropout 0.1, Adam with decoupled L2 0.01 on weights, grad norm clip 1 in their
code). The sample's tiny model needs a larger learning rate to move in a few dozen steps; params.yaml
notes the paper value beside it.

Determinism and resume: torch's generator is seeded from (seed, lambda) before the head is built, each
epoch's order is a permutation drawn from (seed, epoch), and every `checkpoint_every` steps the model,
optimizer, torch RNG state and loss log go to a resume file keyed by a fingerprint of everything that
changes the numbers. A killed fine-tune restarts from its last resume file and ends bit-identical to
an uninterrupted one (tests/test_finetune.py).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core import io, rng
from pipeline.finetune.data import Item, collate
from pipeline.finetune.head import TaskModel


@dataclass(frozen=True)
class FinetuneConfig:
    """params.yaml `finetune`."""

    task: str = "piqa"  # a multiple-choice task of tasks.py, read from inputs.finetune
    lm_weights: tuple[float, ...] = (0.5, 0.0)  # lambda of each run; the first is the headline (GPT-1: 0.5)
    transfer_layers: int = -1  # pretrained blocks kept, from the bottom; -1 = all (GPT-1 figure 2, left)
    lr: float = 6.25e-5
    batch_size: int = 32
    epochs: int = 3
    warmup_fraction: float = 0.002
    weight_decay: float = 0.01
    dropout: float = 0.1  # residual, embedding, attention
    clf_dropout: float = 0.1
    grad_clip: float = 1.0
    test_fraction: float = 0.2  # held out when the task has no train file (PIQA: only valid is labelled)
    checkpoint_every: int = 20  # steps between resume files


class FinetuneStopped(RuntimeError):
    """Raised by `fit(stop_after=k)` after step k, without saving: a kill, for resume tests."""


def lr_at(step: int, total: int, cfg: FinetuneConfig) -> float:
    """Linear warmup over warmup_fraction of the steps (at least one), then linear decay to 0."""
    warmup = max(1, math.ceil(total * cfg.warmup_fraction))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * max(0.0, (total - step) / max(1, total - warmup))


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(int(rng.uniform(seed, f"epoch/{epoch}", "finetune_order") * 2**53))
    return torch.randperm(n, generator=gen).tolist()


def _optimizer(model: TaskModel, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # weights; biases and LayerNorm gains are not decayed
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def fit(model: TaskModel, train: list[Item], cfg: FinetuneConfig, lm_weight: float, seed: int, pad: int,
        resume_path: Path | None = None, fingerprint: str = "", stop_after: int | None = None,
        progress: bool = True) -> list[dict]:
    """Fine-tune `model` in place on `train`; returns the per-step log (step, lr, task_loss, lm_loss)."""
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    opt = _optimizer(model, cfg)
    start, log = 0, []
    if resume_path is not None and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            start, log = int(state["step"]), list(state["log"])
    model.train()
    for step in tqdm(range(start, total), desc=f"finetune lambda={lm_weight}", disable=not progress,
                     initial=start, total=total):
        epoch, pos = divmod(step, per_epoch)
        order = epoch_order(len(train), seed, epoch)
        idx, lengths, labels = collate([train[i] for i in order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]], pad)
        lr = lr_at(step, total, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        logits, lm = model(idx, lengths, with_lm=lm_weight != 0)
        task_loss = F.cross_entropy(logits, labels)
        loss = task_loss + lm_weight * lm if lm is not None else task_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        log.append({"step": step + 1, "lr": lr, "task_loss": round(task_loss.item(), 6),
                    "lm_loss": round(lm.item(), 6) if lm is not None else None})
        if stop_after is not None and step + 1 >= stop_after:
            raise FinetuneStopped(f"stopped after step {step + 1}")
        if resume_path is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            with io.atomic_path(resume_path) as tmp:
                torch.save({"fingerprint": fingerprint, "step": step + 1, "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "log": log}, tmp)
    return log


@torch.no_grad()
def predict(model: TaskModel, items: list[Item], pad: int, batch_size: int = 32) -> list[dict]:
    """Per item: the predicted answer, the right one, and the softmax over the answers."""
    model.eval()
    rows = []
    for b in range(0, len(items), batch_size):
        chunk = items[b:b + batch_size]
        idx, lengths, labels = collate(chunk, pad)
        probs = F.softmax(model(idx, lengths, with_lm=False)[0].float(), dim=-1)
        for it, p in zip(chunk, probs):
            rows.append({"index": it.index, "pred": int(p.argmax()), "gold": it.label,
                         "probs": [round(float(v), 6) for v in p]})
    return rows
