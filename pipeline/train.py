"""GPT pretraining loop: random token windows, AdamW, warmup + cosine, grad clip, dvclive curves.

Recipe (defaults in params.yaml `train`):
- GPT-3 (Brown et al. 2020, appendix B): Adam beta1 0.9, beta2 0.95, global-norm grad clip 1.0,
  cosine decay to 10% of the max lr after a linear warmup, weight decay 0.1.
- GPT-1 (Radford et al. 2018, sec. 4.1): weight decay (their L2 0.01) only on non-bias weights; we
  follow nanoGPT and decay every >= 2-D tensor (matmul weights, embeddings), never biases or LayerNorm.
- Batches are random (B, T) windows of the concatenated training tokens (nanoGPT's get_batch),
  drawn from a torch.Generator seeded with `seed` (+ rank), so a run is reproducible.

Single process by default. `setup_distributed()` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK:
with WORLD_SIZE > 1 the model is wrapped in DDP (gloo on CPU, nccl on GPU), each rank draws its own
batches (seed + rank), eval losses are averaged over ranks and rank 0 alone writes files.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import tokens
from pipeline.model import GPT, ModelConfig, from_params, save_checkpoint
from pipeline.report import StageReport

log = logging.getLogger(__name__)
CKPT_NAME = "ckpt.pt"


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml `train`."""

    max_steps: int = 300
    batch_size: int = 16
    lr: float = 0.003
    min_lr_ratio: float = 0.1  # GPT-3: cosine to 10% of the max lr
    warmup_steps: int = 30
    weight_decay: float = 0.1  # GPT-3
    beta1: float = 0.9
    beta2: float = 0.95  # GPT-3
    grad_clip: float = 1.0  # GPT-3
    eval_interval: int = 50
    eval_batches: int = 8


# --- process setup --------------------------------------------------------------------------------
def setup_distributed() -> tuple[int, int]:
    """(rank, world_size) from torchrun's env; initialises the process group only when world_size > 1."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return rank, world


def is_master() -> bool:
    """True in a single process and on rank 0 under torchrun: the one process that writes files."""
    return int(os.environ.get("RANK", 0)) == 0


def num_threads(threads: int | None = None) -> int:
    """Torch intra-op threads: the argument, else env GPT_REPRO_THREADS / OMP_NUM_THREADS, else 2."""
    return int(threads or os.environ.get("GPT_REPRO_THREADS") or os.environ.get("OMP_NUM_THREADS") or 2)


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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decay on >= 2-D tensors only (biases and LayerNorm gains are not regularised)."""
    params = [p for p in model.parameters() if p.requires_grad]  # a tied tensor appears once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


# --- data ------------------------------------------------------------------------------------------
def load_tokens(data_dir: str | Path, split: str, report: StageReport | None = None) -> np.ndarray:
    """A split's tokens: the shards meta.json lists (or `<split>_*.bin` without meta.json).

    A shard whose header does not match its bytes is skipped and counted as errors.bad_shard.
    """
    data_dir = Path(data_dir)
    meta_path = data_dir / tokens.META_JSON
    if meta_path.exists():
        names = tokens.load_meta(data_dir).get("splits", {}).get(split, {}).get("shards", [])
        paths = [data_dir / n for n in names]
    else:
        paths = sorted(data_dir.glob(f"{split}_*.bin"))
    parts = []
    for path in paths:
        try:
            parts.append(tokens.read_shard(path))
            if report is not None:
                report.bytes_in += path.stat().st_size
        except (tokens.ShardError, OSError) as exc:
            log.error("Skipping token shard %s: %s", path.name, exc)
            if report is not None:
                report.error("bad_shard")
    if not parts:
        return np.zeros(0, dtype=np.uint16)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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


def random_batch(data: np.ndarray, batch_size: int, block: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(x, y) of shape (B, T): random windows of `data` and the same windows shifted by one."""
    ix = torch.randint(len(data) - block, (batch_size,), generator=gen).tolist()
    x = np.stack([np.asarray(data[i:i + block], dtype=np.int64) for i in ix])
    y = np.stack([np.asarray(data[i + 1:i + 1 + block], dtype=np.int64) for i in ix])
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean loss over fixed batches (eval mode: no dropout), averaged over ranks under DDP."""
    was_training = model.training
    model.eval()
    loss = torch.tensor(sum(model(x, y)[1].item() for x, y in batches) / len(batches))
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
    model.train(was_training)
    return float(loss)


# --- the loop ------------------------------------------------------------------------------------
def train(data_dir: str | Path, out_dir: str | Path, live_dir: str | Path, mcfg: ModelConfig, tcfg: TrainConfig,
          seed: int, threads: int | None = None, progress: bool = True) -> StageReport:
    """Train a GPT on the token shards in `data_dir`; write `<out_dir>/ckpt.pt` and dvclive files.

    Args:
        data_dir: tokens folder (`<split>_*.bin` shards, meta.json when the tokenize stage wrote it).
        out_dir: checkpoint folder (models/gpt).
        live_dir: dvclive folder (reports/train): metrics.json and plots/metrics/*.tsv.
        mcfg, tcfg: params.yaml `model` and `train`.
        seed: params.yaml `seed`; seeds init, dropout, batch draws.
        threads: torch threads (default: env GPT_REPRO_THREADS / OMP_NUM_THREADS, else 2).
        progress: show a tqdm bar.

    Returns:
        The StageReport (not yet written): losses, unigram baseline, steps, tokens, throughput.
    """
    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads(threads))
    torch.use_deterministic_algorithms(True)  # CPU kernels honour it; makes reruns bit-identical
    try:
        return _train(Path(data_dir), Path(out_dir), Path(live_dir), mcfg, tcfg, seed, progress)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def _train(data_dir: Path, out_dir: Path, live_dir: Path, mcfg: ModelConfig, tcfg: TrainConfig, seed: int,
           progress: bool) -> StageReport:
    from dvclive import Live
    from tqdm import tqdm

    rank, world = setup_distributed()
    master = rank == 0
    report = StageReport("train")
    train_data = load_tokens(data_dir, "train", report)
    val_data = load_tokens(data_dir, "val", report)
    meta = data_meta(data_dir, train_data)
    gcfg = from_params(mcfg, meta["vocab_size"])
    if len(train_data) < 4:
        raise ValueError(f"{data_dir}: the train split has {len(train_data)} tokens; nothing to train on")
    if int(train_data.max()) >= gcfg.vocab_size:
        raise ValueError(f"token id {int(train_data.max())} >= model vocab_size {gcfg.vocab_size}")
    if len(val_data) < 2:
        # No validation tokens: hold out the last 10% of train rather than report no val loss at all.
        log.error("No validation tokens in %s; holding out the last 10%% of the train tokens instead.", data_dir)
        report.error("no_val_split")
        cut = max(1, int(len(train_data) * 0.9))
        train_data, val_data = train_data[:cut], train_data[cut - 1:]
    block = min(gcfg.block_size, len(train_data) - 1)  # a tiny corpus gets shorter windows
    val_block = min(block, len(val_data) - 1)

    torch.manual_seed(seed)
    model = GPT(gcfg)
    raw_model = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = make_optimizer(raw_model, tcfg)
    gen = torch.Generator().manual_seed(seed + rank)
    # Fixed eval batches, drawn once: every eval sees the same windows, so the curve is not noise.
    val_batches = [random_batch(val_data, tcfg.batch_size, val_block, torch.Generator().manual_seed(seed + 10_007 + i))
                   for i in range(max(1, tcfg.eval_batches))]
    train_eval = [random_batch(train_data, tcfg.batch_size, block, torch.Generator().manual_seed(seed + 20_011 + i))
                  for i in range(max(1, tcfg.eval_batches))]

    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) if master else None
    val_loss = mean_loss(model, val_batches)
    if live:
        live.log_metric("val_loss", val_loss)
        live.next_step()
    tokens_seen, train_seconds, loss_f = 0, 0.0, float("nan")
    model.train()
    bar = tqdm(range(1, tcfg.max_steps + 1), desc="train", disable=not (progress and master), mininterval=1.0)
    for step in bar:
        t0 = time.perf_counter()
        lr = lr_at(step - 1, tcfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = random_batch(train_data, tcfg.batch_size, block, gen)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        loss_f = loss.item()
        dt = time.perf_counter() - t0
        train_seconds += dt
        tokens_seen += x.numel() * world
        bar.set_postfix(loss=f"{loss_f:.3f}", lr=f"{lr:.2e}", refresh=False)
        if step % tcfg.eval_interval == 0 or step == tcfg.max_steps:
            val_loss = mean_loss(model, val_batches)
            if live:
                live.log_metric("val_loss", val_loss)
        if live:
            live.log_metric("train_loss", loss_f)
            live.log_metric("lr", lr)
            live.log_metric("tokens_per_s", x.numel() * world / dt if dt > 0 else 0.0)
            live.next_step()
    final_train = mean_loss(model, train_eval)
    if live:
        live.end()

    entropy = meta["unigram_entropy_nats"]
    report.extra.update({
        "final_val_loss": round(val_loss, 6),
        "final_train_loss": round(final_train, 6),
        "last_step_train_loss": round(loss_f, 6),
        "unigram_entropy_nats": round(float(entropy), 6),
        "val_loss_below_unigram": bool(val_loss < entropy),
        "steps": tcfg.max_steps,
        "tokens_seen": tokens_seen,
        "tokens_per_s": round(tokens_seen / train_seconds, 1) if train_seconds > 0 else 0.0,
        "params": raw_model.num_params(),
        "flops_per_token": raw_model.flops_per_token(block),
        "block_size": block,
        "model": dataclasses.asdict(gcfg),
        "tokens": {"train": int(len(train_data)), "val": int(len(val_data))},
    })
    if master:
        save_checkpoint(out_dir / CKPT_NAME, raw_model, optimizer, tcfg.max_steps, extra={
            "params": {"seed": seed, "model": dataclasses.asdict(mcfg), "train": dataclasses.asdict(tcfg)},
            "tokenizer_sha256": meta["tokenizer_sha256"],
            "eot_id": meta["eot_id"],
            "val_loss": val_loss,
        })
    report.bytes_out = (out_dir / CKPT_NAME).stat().st_size if master else 0
    return report
