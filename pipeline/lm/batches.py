"""What the training loop reads: token splits, their meta, random (B, T) windows, and the mean eval loss.

Batches are random windows of the concatenated training tokens (nanoGPT's get_batch), drawn from a
torch.Generator the loop seeds and checkpoints, so a resumed run draws the same windows.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.report import StageReport
from pipeline.lm import tokens


def load_tokens(data_dir: str | Path, split: str, report: StageReport | None = None) -> np.ndarray:
    """A split's tokens (tokens.load_split); a split meta.json does not list is empty, not an error.

    A shard whose header does not match its bytes is skipped and counted as errors.bad_shard.
    """
    try:
        return tokens.load_split(data_dir, split, report if report is not None else StageReport("train"))
    except KeyError:
        return np.zeros(0, dtype=np.uint16)


def data_meta(data_dir: str | Path, train_tokens: np.ndarray) -> dict[str, Any]:
    """vocab_size, eot_id, tokenizer_sha256, unigram_entropy_nats: from meta.json, else shard headers/counts."""
    data_dir = Path(data_dir)
    meta = tokens.load_meta(data_dir) if (data_dir / tokens.META_JSON).exists() else {}
    if "vocab_size" not in meta:
        shards = sorted(data_dir.glob("train_*.bin"))
        if not shards:
            raise FileNotFoundError(f"{data_dir} has neither meta.json nor train_*.bin shards")
        meta.update({k: v for k, v in tokens.read_header(shards[0]).items() if k != "n_tokens"})
    if meta.get("unigram_entropy_nats") is None:
        meta["unigram_entropy_nats"] = tokens.unigram_entropy(np.bincount(train_tokens, minlength=meta["vocab_size"]))
    return {k: meta.get(k) for k in ("vocab_size", "eot_id", "tokenizer_sha256", "unigram_entropy_nats")}


def windows(data: np.ndarray, ix: list[int], block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of shape (len(ix), block): windows of `data` starting at `ix`, and the same shifted by one."""
    x = np.stack([np.asarray(data[i:i + block], dtype=np.int64) for i in ix])
    y = np.stack([np.asarray(data[i + 1:i + 1 + block], dtype=np.int64) for i in ix])
    return torch.from_numpy(x), torch.from_numpy(y)


class PinnedWindows:
    """windows() for a CUDA device without a pinned allocation per step: two page-locked host buffers used in
    turn, each reused only once the GPU has finished the copy out of it (a CUDA event), so filling the next
    batch on the host overlaps with the current step on the device."""

    def __init__(self, rows: int, block: int, device: str | torch.device):
        self.device = device
        self.bufs = [tuple(torch.empty((rows, block), dtype=torch.int64).pin_memory() for _ in range(2))
                     for _ in range(2)]
        self.done: list = [None, None]
        self.turn = 0

    def __call__(self, data: np.ndarray, ix: list[int], block: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, self.turn = self.turn, self.turn ^ 1
        if self.done[i] is not None:
            self.done[i].synchronize()  # the copy out of this buffer (two batches ago) has finished
        xb, yb = (b[:len(ix)] for b in self.bufs[i])
        xv, yv = xb.numpy(), yb.numpy()
        for r, start in enumerate(ix):
            xv[r] = data[start:start + block]
            yv[r] = data[start + 1:start + 1 + block]
        x, y = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        self.done[i] = torch.cuda.Event()
        self.done[i].record()
        return x, y


def random_batch(data: np.ndarray, batch_size: int, block: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(x, y) of shape (B, T): random windows of `data` and the same windows shifted by one."""
    return windows(data, torch.randint(len(data) - block, (batch_size,), generator=gen).tolist(), block)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], chunk: int | None = None,
              device: str | torch.device = "cpu") -> float:
    """Mean loss over fixed batches (eval mode: no dropout).

    Under DDP each batch is cut into `chunk`-sized pieces dealt round robin to the ranks and the
    sums are all-reduced, so the figure equals a single process's to float rounding.
    """
    was_training = model.training
    model.eval()
    ddp = torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if ddp else (0, 1)
    # (sum of losses x rows, rows), kept on the model's device: NCCL reduces CUDA tensors only (a CPU tensor
    # there fails with "No backend type associated with device type cpu"), and no host sync per batch
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in batches:
        step = chunk or len(x)
        for n, i in enumerate(range(0, len(x), step)):
            if n % world == rank:
                with autocast(device):
                    loss = model(x[i:i + step].to(device), y[i:i + step].to(device))[1]
                rows = len(x[i:i + step])
                total[0] += loss.double() * rows
                total[1] += rows
    if ddp:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1])


def autocast(device: str | torch.device):
    """bf16 autocast on CUDA (GPT-3 trained in half precision); plain fp32 elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
