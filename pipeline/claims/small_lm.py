"""Small seeded GPT runs for the claims: random windows of the token shards, AdamW, one loss per step.

The claims train many narrow models for a few hundred steps each and need, per step, the loss, the gradient
norm and the step's wall time, and a run that stops cleanly when the loss turns non-finite. pipeline.lm.train
is the pretraining stage (checkpoints, resume files, dvclive folders, DDP/FSDP); its recipe is repeated here in
a few lines instead: the same random (B, T) windows (batches.windows), GPT-3's AdamW (beta2 0.95, weight decay
0.1 on >= 2-D tensors only, as train.make_optimizer), linear warm-up then cosine to 10% (train.lr_at). Not
importing train.py also keeps the experiments' DVC deps to the model and the data readers, so an edit to the
distributed code does not rerun every queued cell.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.report import StageReport
from pipeline.lm.batches import data_meta, load_tokens, mean_loss, random_batch, windows
from pipeline.lm.model import GPT, GPTConfig


@dataclass
class Splits:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    unigram_entropy: float  # nats: the loss of a model that learned token frequencies and nothing else


def load_splits(data_dir: str | Path, report: StageReport) -> Splits:
    """The train and val tokens; without a val split, the last 10% of train (counted as errors.no_val_split)."""
    train = load_tokens(data_dir, "train", report)
    val = load_tokens(data_dir, "val", report)
    if len(train) < 4:
        raise ValueError(f"{data_dir}: the train split has {len(train)} tokens; nothing to train on")
    meta = data_meta(data_dir, train)
    if len(val) < 2:
        report.error("no_val_split")
        cut = max(1, int(len(train) * 0.9))
        train, val = train[:cut], train[cut - 1:]
    return Splits(train, val, int(meta["vocab_size"]), float(meta["unigram_entropy_nats"]))


def lr_at(step: int, lr: float, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    """train.lr_at's schedule: linear warm-up over `warmup` steps, then cosine from lr to min_ratio * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """GPT-3's AdamW (betas 0.9, 0.95); decay on matrices and embeddings, never on biases or LayerNorm."""
    ps = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


class Run:
    """One model, its optimiser and its batch sampler; `step()` trains one optimisation step.

    Everything random is seeded from `seed`: the init (torch's global generator, set just before the model is
    built) and the window starts (a private generator), so two runs with the same seed and the same parameter
    shapes start from the same weights and see the same batches, whatever their attention or LayerNorm layout.
    """

    def __init__(self, gcfg: GPTConfig, splits: Splits, batch_size: int, lr: float, warmup: int, steps: int,
                 seed: int, weight_decay: float = 0.1, grad_clip: float = 1.0, device: str = "cpu"):
        torch.manual_seed(seed)
        self.model = GPT(gcfg).to(device)
        self.model.train()
        self.opt = make_optimizer(self.model, lr, weight_decay)
        self.gen = torch.Generator().manual_seed(seed)
        self.splits, self.device = splits, device
        self.block = min(gcfg.block_size, len(splits.train) - 1)
        self.batch_size, self.lr, self.warmup, self.steps, self.grad_clip = batch_size, lr, warmup, steps, grad_clip
        self.done = 0

    def step(self) -> dict:
        """One optimisation step: {step, lr, train_loss, grad_norm, seconds} (seconds: wall time of the step)."""
        t0 = time.perf_counter()
        lr = lr_at(self.done, self.lr, self.warmup, self.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        ix = torch.randint(len(self.splits.train) - self.block, (self.batch_size,), generator=self.gen).tolist()
        x, y = windows(self.splits.train, ix, self.block)
        _, loss = self.model(x.to(self.device), y.to(self.device))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.grad_clip if self.grad_clip > 0 else float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss_f, norm_f = float(loss.detach()), float(norm)  # reads the device: the step's time includes its work
        self.done += 1
        return {"step": self.done, "lr": lr, "train_loss": loss_f, "grad_norm": norm_f,
                "seconds": time.perf_counter() - t0}

    def val_batches(self, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """n fixed val batches (the same windows for every run with this seed and block)."""
        block = min(self.block, len(self.splits.val) - 1)
        return [random_batch(self.splits.val, self.batch_size, block, torch.Generator().manual_seed(seed + 10_007 + i))
                for i in range(max(1, n))]

    def val_loss(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        return mean_loss(self.model, batches, None, self.device)


def finite(x: float) -> float | None:
    """A loss for JSON: None where it is NaN or infinite (strict JSON readers such as dvc plots reject NaN)."""
    return round(x, 6) if math.isfinite(x) else None
