"""How the training processes run: process group, strategy (DDP or FSDP), full-state checkpoints, determinism.

Strategies (params.yaml `train.strategy`):
- ddp (default): every rank holds the whole model and AdamW state, gradients are all-reduced
  (torch DistributedDataParallel; a single process runs the bare model). Per rank about 16 bytes per
  parameter before activations: gpt2-xl and larger presets do not fit one 80 GB GPU (memory_estimate.py).
- fsdp: torch's FSDP2 `fully_shard` (Zhao et al. 2023, "PyTorch FSDP"; ZeRO-3 of Rajbhandari et al. 2020)
  on every transformer block, then on the root (embeddings, ln_f and the tied LM head). Parameters,
  gradients and AdamW moments are sharded over the ranks (DTensor shards); a block's parameters are
  all-gathered just before its forward / backward and freed after. On CUDA the gathered parameters are
  bf16 and gradients are reduce-scattered in fp32 (MixedPrecisionPolicy); on CPU everything stays fp32:
  there the gradients equal DDP's bit for bit and only the clip norm differs in its last bits (FSDP sums
  it shard by shard), so losses agree to ~1e-6 for the first steps and drift apart slowly after.
  Gradients are reduce-scattered after every micro-batch (they stay sharded: the memory FSDP is for),
  not only after the last as DDP does. CPU cost, 2 gloo ranks, the sample's tiny model: ~0.7x DDP's tokens/s.

Checkpoints keep one format whatever the strategy: `full_states` gathers every shard into whole CPU
tensors on rank 0 (each tensor in turn, so no rank ever holds a second whole model on the GPU), keyed as the
unsharded model's and optimizer's state dicts, with the tied embedding / LM head sharing one storage as
in a DDP checkpoint; export and evaluate read it unchanged. `load_states` cuts the same file back into each
rank's shards, so a killed FSDP run resumes exactly (tests/test_train_fsdp.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterator

import torch

log = logging.getLogger(__name__)
STRATEGIES = ("ddp", "fsdp")
# cuBLAS picks a reduction split per call unless its workspace is fixed (CUDA docs, "Results reproducibility");
# ":4096:8" (8 buffers of 4 MiB) is the setting torch's reproducibility notes give.
CUBLAS_WORKSPACE = ":4096:8"


# --- process setup --------------------------------------------------------------------------------
def setup_distributed(strategy: str = "ddp") -> tuple[int, int]:
    """(rank, world_size) from torchrun's env; initialises the process group when world_size > 1, and for
    FSDP in a single process too (a one-rank mesh: the code path of a sharded run, nothing to shard)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {strategy!r}")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if (world > 1 or strategy == "fsdp") and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():  # NCCL and FSDP's default device mesh use the current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if world > 1:
            torch.distributed.init_process_group(backend=backend)
        else:  # a plain `python stages/train.py`: no torchrun rendezvous, an in-memory store
            torch.distributed.init_process_group(backend=backend, store=torch.distributed.HashStore(), rank=0,
                                                 world_size=1)
    return rank, world


def exit_after_collectives(strategy: str) -> None:
    """End a process that ran collectives (a torchrun rank, any FSDP run) at once with os._exit(0), its output
    flushed; in a plain single-process DDP run, return and let Python exit as usual. Call it last, once every
    file is written (stages/train.py does).

    Why not a normal exit: gloo's worker threads (pt_gloo_runloop) outlive destroy_process_group, and the one
    that ran a collective frees it, with tensors whose Python objects it must release under the GIL, a moment
    after the caller has moved on. A rank with nothing left to do reaches interpreter shutdown inside that
    window; Python then ends the thread inside a C++ destructor and the process aborts ("terminate called
    without an active exception", SIGABRT: ~4% of 2-rank CPU runs under load; gdb on the core showed
    ~AsyncAllgatherCoalescedWork in ProcessGroupGloo::runLoop). A barrier first does not help: the barrier's
    own work keeps the all-gather alive until it is freed on that thread in turn. os._exit skips interpreter
    shutdown, so there is nothing to race with.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) == 1 and strategy != "fsdp":
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def is_master() -> bool:
    """True in a single process and on rank 0 under torchrun: the one process that writes files."""
    return int(os.environ.get("RANK", 0)) == 0


@contextlib.contextmanager
def deterministic(on: bool) -> Iterator[None]:
    """Deterministic kernels for the run, restored after it.

    CPU runs are always deterministic (its kernels honour the switch at no measurable cost). `on` extends it to
    CUDA for bit-identical GPU reruns: use_deterministic_algorithms (an op without a deterministic kernel raises
    instead of silently varying), cuDNN's deterministic algorithms without autotuning, and a fixed cuBLAS
    workspace (set only if the user has not; it must precede the first cuBLAS call, so this runs before any
    CUDA work). The cost on a GPU is measured by bench/gpu_fsdp_check.py.
    """
    prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark)
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if on or not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[1], prev[2]


# --- strategies -----------------------------------------------------------------------------------
def shard(model: torch.nn.Module, device: str, compile_blocks: bool = False) -> None:
    """FSDP2 in place: fully_shard each transformer block, then the root. Run it before building the optimizer
    (fully_shard swaps the parameters for DTensor shards). With `compile_blocks` each block is compiled first,
    as torchtitan does: FSDP's hooks then stay outside the compiled graphs."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    on_gpu = torch.device(device).type == "cuda"
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if on_gpu \
        else MixedPrecisionPolicy()  # CPU: fp32 throughout, comparable with DDP
    for block in model.transformer.h:
        if compile_blocks:
            block.compile()
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def replicate(model: torch.nn.Module, compile_model: bool, world: int) -> torch.nn.Module:
    """The DDP path: torch.compile when asked, then DistributedDataParallel when there is more than one rank."""
    model = torch.compile(model) if compile_model else model
    return torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model


def grad_sync(model: torch.nn.Module, sharded: bool, world: int, last_micro: bool):
    """Context of one micro-batch's backward: DDP all-reduces on the last micro-batch only (nanoGPT's
    require_backward_grad_sync); FSDP reduce-scatters every micro-batch, so gradients never sit unsharded."""
    if sharded or world == 1 or last_micro:
        return contextlib.nullcontext()
    return model.no_sync()


def local_scalar(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from what clip_grad_norm_ returns: a DTensor when the parameters are FSDP shards."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


# --- one checkpoint format for every strategy -----------------------------------------------------
def _full(value: Any, keep: bool) -> Any:
    """A DTensor shard gathered whole (a collective: every rank calls it), on the CPU where `keep`, else None."""
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return value
    whole = value.full_tensor()
    return whole.cpu() if keep else None


def full_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                master: bool) -> tuple[dict | None, dict | None]:
    """(model state dict, optimizer state dict) of a sharded model, whole, as the unsharded model's would be.

    Every rank must call it (each tensor is all-gathered); rank 0 gets the dicts, the others (None, None).
    Parameters are gathered once each: the tied embedding / LM head stays one tensor under two keys.
    """
    gathered: dict[int, Any] = {}
    model_sd = {}
    for key, param in model.state_dict(keep_vars=True).items():
        if id(param) not in gathered:
            gathered[id(param)] = _full(param.detach(), master)
        model_sd[key] = gathered[id(param)]
    optim_sd = None
    if optimizer is not None:
        raw = optimizer.state_dict()
        state = {i: {k: _full(v, master) for k, v in s.items()} for i, s in raw["state"].items()}
        optim_sd = {"state": state, "param_groups": raw["param_groups"]}
    return (model_sd, optim_sd) if master else (None, None)


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` cut into the shard `like` (a DTensor) holds; every rank read the same file, so no scatter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor) or full.shape != like.shape:
        return full  # a plain tensor, or a scalar such as AdamW's step count
    local = full.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(local, like.device_mesh, like.placements, src_data_rank=None)


def load_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: dict[str, Any]) -> None:
    """Load a checkpoint's whole model and optimizer states into a model (sharded or not) and its optimizer."""
    current = model.state_dict(keep_vars=True)
    model.load_state_dict({k: _shard_like(v, current[k]) for k, v in ckpt["model"].items()})
    params_by_id = [p for group in optimizer.param_groups for p in group["params"]]
    saved = ckpt["optimizer"]
    state = {i: {k: _shard_like(v, params_by_id[i]) for k, v in s.items()} for i, s in saved["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def replica_divergence(model: torch.nn.Module) -> float:
    """Largest |parameter - rank 0's parameter| over all ranks: 0.0 when DDP kept replicas in sync."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    ref = flat.clone()
    torch.distributed.broadcast(ref, 0)
    diff = (flat - ref).abs().max().reshape(1)
    torch.distributed.all_reduce(diff, op=torch.distributed.ReduceOp.MAX)
    return float(diff)
