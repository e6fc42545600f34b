"""GPT pretraining loop: random token windows, AdamW, warmup + cosine, grad clip, DDP, exact resume.

Recipe: recipe.py (TrainConfig = params.yaml `train`, the learning-rate schedule, batch sizes, AdamW).
Batches are random (B, T) windows of the concatenated training tokens (nanoGPT's get_batch).
`batch_size` is the GLOBAL batch of one optimiser step: every rank draws the same window starts
from one generator seeded with `seed` and takes its own slice of them, so 2 processes x B/2
compute the gradient of the same batch as 1 process x B (and as B/k with k accumulation steps).

Distributed (distributed.py): torchrun's RANK / WORLD_SIZE / LOCAL_RANK; `strategy` ddp wraps the model in
DDP when WORLD_SIZE > 1, fsdp shards it with FSDP2 (gloo on CPU, nccl on GPU); rank 0 alone writes files,
and checkpoints hold whole tensors whatever the strategy. On CUDA the step runs under bf16 autocast;
`compile` wraps the model in torch.compile (FSDP: each block). `deterministic` makes GPU reruns bit-identical.
`loss_kernel: triton` computes the LM head's loss and gradient in one Triton kernel (triton_loss.py); `auto` does
so on NVIDIA GPUs under ddp, `torch`'s path elsewhere. `residual_dtype: bfloat16` keeps the
residual stream between blocks in bf16 under the GPU's autocast; `auto` does so on GPUs under ddp, fp32
elsewhere. Both resolve per device in device_knobs.py.

Resume: at every eval (nanoGPT saves there too) rank 0 writes `resume.pt` into
io.work_dir("train", <fingerprint>) -- outside DVC's outs, which DVC deletes before a rerun. It holds
model, optimiser, step, tokens seen, the data sampler's generator state, torch/numpy/python (and CUDA) RNG states
and the logged curves. `train` resumes from it, or from `<out>/ckpt.pt`, when the fingerprint (params that change
the result + the data's meta.json) matches; on CPU a resumed run is bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from pipeline.core import io, params
from pipeline.core.report import StageReport
from pipeline.lm import tokens
from pipeline.lm.batches import PinnedWindows, autocast, data_meta, load_tokens, mean_loss, random_batch, windows
from pipeline.lm.checkpoint import find_resume, rng_state, save_checkpoint, set_rng_state
from pipeline.lm.device_knobs import residual_dtype_of, resolved_residual_dtype, use_triton_loss
from pipeline.lm.device_peak import detected_peak
from pipeline.lm.distributed import (deterministic, full_states, grad_sync, load_states, local_scalar, replica_divergence,
                                     replicate, setup_distributed, shard)
from pipeline.lm.model import GPT, ModelConfig, from_params
from pipeline.lm.recipe import TrainConfig, batch_at, lr_at, make_optimizer, micro_batch
from pipeline.lm.throughput import Throughput

log = logging.getLogger(__name__)
CKPT_NAME = "ckpt.pt"
RESUME_NAME = "resume.pt"
# Speed/reporting knobs, never the numbers: out of the resume fingerprint (flipping one keeps a half-done run).
NEUTRAL_KNOBS = ("compile", "peak_tflops")
# Knobs added after the first published models: written into the checkpoint and the resume fingerprint only when
# set away from their default, so a default run keeps its checkpoint bytes and an older run still resumes.
# residual_dtype is recorded resolved (`auto` -> what ran), so float32 here: a CPU run's bytes are as before `auto`
# became the default, and a GPU run's bf16 stream enters its fingerprint (an older fp32 run does not resume into it).
LATE_KNOBS = {"strategy": "ddp", "deterministic": False, "loss_kernel": "auto", "residual_dtype": "float32"}
LOG_EVERY = 10  # steps between reads of the loss on the host (nanoGPT's log_interval); reads lag by as many
WARMUP_STEPS = 2  # first steps of a run timed apart (compilation): throughput.py


class TrainingStopped(RuntimeError):
    """Raised by `train(stop_after=k)` after step k: stands in for a kill in resume tests."""


# --- process setup --------------------------------------------------------------------------------
def num_threads(threads: int | None = None) -> int:
    """Torch intra-op threads: the argument, else env GPT_REPRO_THREADS / OMP_NUM_THREADS, else 2."""
    return int(threads or os.environ.get("GPT_REPRO_THREADS") or os.environ.get("OMP_NUM_THREADS") or 2)


# --- resume state ----------------------------------------------------------------------------------
def recorded(tcfg: TrainConfig) -> dict:
    """params.yaml `train` as a checkpoint records it: LATE_KNOBS left out while at their defaults."""
    return {k: v for k, v in dataclasses.asdict(tcfg).items() if not (k in LATE_KNOBS and LATE_KNOBS[k] == v)}


def run_fingerprint(mcfg: ModelConfig, tcfg: TrainConfig, seed: int, data_dir: str | Path) -> str:
    """Key of a resumable run: params that change the numbers, plus the data (meta.json, or shard sizes)."""
    knobs = {k: v for k, v in recorded(tcfg).items() if k not in NEUTRAL_KNOBS}
    h = hashlib.sha256()
    data_dir = Path(data_dir)
    meta = data_dir / tokens.META_JSON
    if meta.is_file():
        h.update(meta.read_bytes())
    for token_file in sorted(data_dir.glob("*.bin")):  # not `shard`: that name is the FSDP helper imported above
        h.update(f"{token_file.name}:{token_file.stat().st_size}".encode())
    return params.fingerprint(mcfg, knobs, seed, h.hexdigest())


# --- the loop ------------------------------------------------------------------------------------
def train(data_dir: str | Path, out_dir: str | Path, live_dir: str | Path, mcfg: ModelConfig, tcfg: TrainConfig,
          seed: int, threads: int | None = None, progress: bool = True, stop_after: int | None = None) -> StageReport:
    """Train a GPT on the token shards in `data_dir`; write `<out_dir>/ckpt.pt` and dvclive files.

    Args:
        data_dir: tokens folder (`<split>_*.bin` shards, meta.json when the tokenize stage wrote it).
        out_dir: checkpoint folder (models/gpt).
        live_dir: dvclive folder (reports/train): metrics.json and plots/metrics/*.tsv.
        mcfg, tcfg: params.yaml `model` and `train`.
        seed: params.yaml `seed`; seeds init, dropout, batch draws.
        threads: torch threads (default: env GPT_REPRO_THREADS / OMP_NUM_THREADS, else 2).
        progress: show a tqdm bar.
        stop_after: raise TrainingStopped after this step, without saving (a kill, for resume tests).

    Returns:
        The StageReport (not yet written): losses, unigram baseline, steps, tokens, throughput.
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads(threads))
    try:
        with deterministic(tcfg.deterministic):  # always on CPU: its kernels honour it, reruns are bit-identical
            return _train(Path(data_dir), Path(out_dir), Path(live_dir), mcfg, tcfg, seed, progress, stop_after)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        torch.set_num_threads(prev_threads)


def _train(data_dir: Path, out_dir: Path, live_dir: Path, mcfg: ModelConfig, tcfg: TrainConfig, seed: int,
           progress: bool, stop_after: int | None) -> StageReport:
    from dvclive import Live
    from tqdm import tqdm

    rank, world = setup_distributed(tcfg.strategy)
    sharded = tcfg.strategy == "fsdp"
    master = rank == 0
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    # from here on tcfg names the stream that runs: the checkpoint, the fingerprint and the report record it
    tcfg = dataclasses.replace(tcfg, residual_dtype=resolved_residual_dtype(tcfg.residual_dtype, device,
                                                                            tcfg.strategy))
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
    micro = micro_batch(tcfg, world)

    # seed every global RNG, not only torch's: their states go into the checkpoint for exact resume,
    # and an unseeded one would make the checkpoint bytes differ from run to run
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    raw_model = GPT(gcfg).to(device)
    raw_model.triton_head_loss = use_triton_loss(tcfg.loss_kernel, device, tcfg.strategy)
    raw_model.residual_dtype = residual_dtype_of(tcfg.residual_dtype, device)
    if sharded:  # before the optimizer: fully_shard swaps the parameters for this rank's DTensor shards
        shard(raw_model, device, compile_blocks=tcfg.compile)
    optimizer = make_optimizer(raw_model, tcfg)
    gen = torch.Generator().manual_seed(seed)  # one sampler for all ranks: each takes its slice
    fingerprint = run_fingerprint(mcfg, tcfg, seed, data_dir)
    work = io.work_dir("train", fingerprint) if master else io.WORK_ROOT / "train" / fingerprint
    start, tokens_seen, history = 0, 0, []
    ckpt = find_resume([work / RESUME_NAME, work / CKPT_NAME, out_dir / CKPT_NAME], fingerprint)
    if ckpt is not None:  # every rank reads the same file: all resume from the same step
        load_states(raw_model, optimizer, ckpt)  # FSDP: each rank cuts its shards out of the whole tensors
        state = ckpt["train_state"]
        start, tokens_seen, history = ckpt["iter"], state["tokens_seen"], state["history"]
        set_rng_state(state["rng"], gen)
        if master:
            log.info("Resuming from step %d of %d (%s).", start, tcfg.max_steps, fingerprint)
        report.extra["resumed_from_step"] = start
    model = raw_model if sharded else replicate(raw_model, tcfg.compile, world)
    # Fixed eval batches, drawn once: every eval sees the same windows, so the curve is not noise.
    val_batches = [random_batch(val_data, tcfg.batch_size, val_block, torch.Generator().manual_seed(seed + 10_007 + i))
                   for i in range(max(1, tcfg.eval_batches))]
    train_eval = [random_batch(train_data, tcfg.batch_size, block, torch.Generator().manual_seed(seed + 20_011 + i))
                  for i in range(max(1, tcfg.eval_batches))]
    flops_tok = raw_model.flops_per_token(block)
    on_gpu = device.startswith("cuda")
    peak, device_name = detected_peak(tcfg.peak_tflops) if on_gpu else (None, "cpu")  # no MFU on CPU

    def evaluate() -> float:
        return mean_loss(model, val_batches, micro, device)

    def checkpoint(path: Path, step: int, val_loss: float, **extra) -> None:
        states = full_states(raw_model, optimizer, master) if sharded else None  # a collective: every rank
        if not master:
            return
        state = {"fingerprint": fingerprint, "tokens_seen": tokens_seen, "history": history, "val_loss": val_loss,
                 "rng": rng_state(gen)}
        save_checkpoint(path, raw_model, optimizer, step, extra={
            "params": {"seed": seed, "model": dataclasses.asdict(mcfg), "train": recorded(tcfg)},
            "tokenizer_sha256": meta["tokenizer_sha256"], "eot_id": meta["eot_id"], "val_loss": val_loss,
            "train_state": state, **extra}, states=states)

    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) if master else None
    if ckpt is None:
        val_loss = evaluate()
        history.append({"val_loss": val_loss})
    else:
        val_loss = ckpt["train_state"]["val_loss"]
    if live:  # replay the curves logged before a resume so the plots cover the whole run
        for row in history:
            for name, value in row.items():
                live.log_metric(name, value)
            live.next_step()
    loss_f = float("nan")
    clock = Throughput(on_gpu, WARMUP_STEPS)
    pinned = PinnedWindows(micro, block, device) if on_gpu else None  # CPU: plain tensors, nothing to overlap
    pending: list[tuple] = []  # (step, lr, batch, (loss, grad norm) copied to the host, its CUDA event or None)
    lap_tokens = 0  # tokens trained since the clock's last lap

    def flush(drain: bool, eval_now: bool = False) -> None:
        """Log pending steps: all if `drain` (a host sync: evaluation, warm-up, end), else those older than LOG_EVERY
        steps (their copies finished long ago: the GPU never runs dry while the host logs); same history either way.
        So the bar's loss trails the step counter by up to 2 x LOG_EVERY steps; its `of_step` names the loss's step."""
        nonlocal loss_f, val_loss, lap_tokens
        clock.lap(lap_tokens)
        lap_tokens = 0
        ready = pending[:] if drain else pending[:max(0, len(pending) - LOG_EVERY)]
        del pending[:len(ready)]
        rows = []
        for _, lr_k, batch_k, host_k, done_k in ready:
            if done_k is not None:
                done_k.synchronize()
            loss_k, norm_k = host_k.tolist()
            rows.append({"train_loss": loss_k, "lr": lr_k, "grad_norm": norm_k, "batch_size": batch_k})
        if eval_now:
            with clock.paused():
                val_loss = evaluate()
            rows[-1]["val_loss"] = val_loss
        if not rows:
            return
        loss_f = rows[-1]["train_loss"]
        history.extend(rows)
        bar.set_postfix(loss=f"{loss_f:.3f}", lr=f"{rows[-1]['lr']:.2e}", of_step=ready[-1][0], refresh=False)
        if live:
            tps = clock.interval_tps
            for i, row in enumerate(rows):
                for name, value in row.items():
                    live.log_metric(name, value)
                if i == len(rows) - 1 and tps:  # timings stay out of `history` (deterministic)
                    live.log_metric("tokens_per_s", tps)
                    if peak:
                        live.log_metric("mfu", flops_tok * tps / (peak * 1e12))
                live.next_step()

    model.train()
    bar = tqdm(range(start + 1, tcfg.max_steps + 1), desc="train", disable=not (progress and master),
               mininterval=1.0, initial=start, total=tcfg.max_steps)
    for step in bar:
        lr = lr_at(step - 1, tcfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch_at(tokens_seen, tcfg, world * micro)
        ix = torch.randint(len(train_data) - block, (batch,), generator=gen).tolist()
        n_micro = batch // (world * micro)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for k in range(n_micro):
            rows = ix[(k * world + rank) * micro:(k * world + rank + 1) * micro]
            x, y = pinned(train_data, rows, block) if pinned else windows(train_data, rows, block)
            with grad_sync(model, sharded, world, last_micro=k == n_micro - 1):
                with autocast(device):
                    _, loss = model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                (loss / n_micro).backward()  # backward outside autocast, as torch.amp advises
            loss_sum += loss.detach().double()  # stays on the device: no host sync per micro-batch
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tcfg.grad_clip if tcfg.grad_clip > 0
                                                   else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_t = loss_sum / n_micro
        if world > 1:  # the logged loss is the global batch's, as a single process would see it
            torch.distributed.all_reduce(loss_t)
            loss_t /= world
        tokens_seen += batch * block
        lap_tokens += batch * block
        # loss and grad norm leave the device by an async copy (pinned memory on CUDA), read at a later flush
        host = torch.stack([loss_t, local_scalar(grad_norm.detach()).double()]).to("cpu", non_blocking=on_gpu)
        pending.append((step, lr, batch, host, torch.cuda.Event() if on_gpu else None))
        if on_gpu:
            pending[-1][4].record()  # the copy is done once the GPU passes this event
        eval_now = step % tcfg.eval_interval == 0 or step == tcfg.max_steps
        stopping = stop_after is not None and step >= stop_after
        if eval_now or stopping or step <= start + WARMUP_STEPS:
            flush(drain=True, eval_now=eval_now)
        elif step % LOG_EVERY == 0:
            flush(drain=False)
        if (master or sharded) and step % tcfg.eval_interval == 0 and step < tcfg.max_steps:
            with clock.paused():
                checkpoint(work / RESUME_NAME, step, val_loss)
        if stop_after is not None and step >= stop_after:
            raise TrainingStopped(f"stopped after step {step} (stop_after={stop_after})")
    final_train = mean_loss(model, train_eval, micro, device)
    if live:
        live.end()
    divergence = replica_divergence(raw_model) if world > 1 and not sharded else 0.0

    entropy = meta["unigram_entropy_nats"]
    tps = clock.steady_tps
    report.extra.update({
        "final_val_loss": round(val_loss, 6),
        "final_train_loss": round(final_train, 6),
        "last_step_train_loss": round(loss_f, 6),
        "unigram_entropy_nats": round(float(entropy), 6),
        "val_loss_below_unigram": bool(val_loss < entropy),
        "steps": tcfg.max_steps,
        "tokens_seen": tokens_seen,
        "tokens_per_s": round(tps, 1),  # steady state: the first WARMUP_STEPS and every evaluation excluded
        "params": raw_model.num_params(),
        "flops_per_token": flops_tok,
        "block_size": block,
        "world_size": world,
        "strategy": tcfg.strategy,
        "loss_kernel": "triton" if raw_model.triton_head_loss else "torch",  # what train.loss_kernel resolved to
        "residual_dtype": tcfg.residual_dtype,
        "device": device.split(":")[0],
        "model": dataclasses.asdict(gcfg),
        "tokens": {"train": int(len(train_data)), "val": int(len(val_data))},
    })
    report.extra["throughput"] = clock.summary(flops_tok, peak)
    if on_gpu:  # rank 0's allocator peak: what memory_estimate.py estimates (bench/gpu_fsdp_check.py compares)
        report.extra["cuda_peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    if peak:
        report.extra["mfu"] = round(flops_tok * tps / (peak * 1e12), 4)
        report.extra["peak_tflops"] = {"value": peak, "device": device_name,
                                       "from": "params train.peak_tflops" if tcfg.peak_tflops > 0 else "device table"}
    if world > 1 and not sharded:
        report.extra["ddp_max_param_divergence"] = divergence
    # written in the work folder, then renamed into out_dir: a kill mid-write leaves nothing in the output
    checkpoint(work / CKPT_NAME, tcfg.max_steps, val_loss)
    if master:
        io.publish_file(work / CKPT_NAME, out_dir / CKPT_NAME)
        (work / RESUME_NAME).unlink(missing_ok=True)  # the final checkpoint resumes too
        with contextlib.suppress(OSError):  # a finished run leaves no empty folder behind (a kill leaves its files)
            work.rmdir()
    report.bytes_out = (out_dir / CKPT_NAME).stat().st_size if master else 0
    return report

