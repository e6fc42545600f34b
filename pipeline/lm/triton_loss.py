"""The LM head's cross-entropy as one Triton kernel: loss and gradient in a single pass over the logits (GPU).

Why: on an H200 (bench/step_profile.py, gpt2-small, B64 x T1024, compiled) inductor's two loss kernels took
10.2 ms of a 126 ms step, 8%: the forward's online softmax and the backward's softmax - onehot each read the
(B*T, 50,304) bf16 logits (6.6 GB) at under a third of the memory bandwidth. llm.c's fused classifier and
Liger-Kernel's cross-entropy instead compute the loss and overwrite the logits with their gradient in the
forward pass: two reads and one write, no backward kernel. This is that kernel, written here rather than taken
from Liger because Liger's wrapper reads the count of non-ignored rows to the host (`.item()`, a sync per step)
and scales the gradient in a second pass over the logits; here the count stays on the device and the scale
`dloss` lands on the LM head's two small backward matmul outputs instead of the 6.6 GB gradient.

Per row: pass 1 finds the max and the sum of exponentials online (block by block over the real vocabulary);
pass 2 writes (softmax - onehot(target)) / n_valid in place, 0 for ignored rows (target -1) and for the padding
columns (the rows of a vocabulary padded to a multiple of 128, model.padded_vocab). Arithmetic is fp32; the
gradient is stored in the logits' dtype (bf16 under autocast), as the plain path's gradient is.

Runs wherever Triton runs: CUDA, or the CPU with TRITON_INTERPRET=1 set before triton is imported (the tests do,
where triton is installed; it ships with CUDA builds of torch, not with the CPU wheel). `GPT.triton_head_loss`
switches it on: the stage sets it from train.loss_kernel (`auto` on NVIDIA GPUs, where it measured 1.03-1.04x the
compiled cross-entropy's step; device_knobs.use_triton_loss), the benches with --loss-kernel triton. The loss is kept out
of torch.compile's graph (a graph break before the LM head) so inductor never has to trace an in-place user kernel;
the hidden states are cast to bf16 before that break (in_kernel_dtype), so they cross it at half the bytes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Columns per step of each pass, and warps per row. Liger-Kernel's choice for Hopper (cross_entropy.py: blocks of
# up to 32,768 columns, 32 warps) spills when compiled for sm90 (bench/kernel_resources.py: a 400-byte stack a
# thread); 8,192 columns by 16 warps does not, and measured fastest of five on an H200 (2026-11-28, B64 gpt2-small
# with the bf16 stream: 48.0% MFU against 47.7% for 32,768 by 32). BLOCK and WARPS are read at each call, so a
# bench can set them (bench/train_speed.py --loss-block, --also loss_block=N/W).
BLOCK, WARPS = 8192, 16
IGNORE = -1  # the targets' ignore_index (the whole project's; F.cross_entropy(..., ignore_index=-1))


@triton.jit
def _loss_and_grad_in_place(logits_ptr, row_stride, targets_ptr, losses_ptr, n_valid_ptr,
                            n_cols: tl.constexpr, row_width: tl.constexpr, IGNORE: tl.constexpr, BLOCK: tl.constexpr):
    # the widths are compile-time constants: fixed per model, and loop bounds the compiler (and triton's CPU
    # interpreter, whose runtime scalars are 1-element arrays numpy 2 will not use as a range bound) can see
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * row_stride
    target = tl.load(targets_ptr + row)
    valid = target != IGNORE
    # pass 1: running max m and sum s of exp(x - m) over the real columns
    m = float("-inf")
    s = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    safe_target = tl.where(valid, target, 0)
    x_target = tl.load(base + safe_target).to(tl.float32)
    tl.store(losses_ptr + row, tl.where(valid, lse - x_target, 0.0))
    # pass 2: the gradient of the mean loss, in place of the logits it was computed from
    scale = tl.where(valid, 1.0 / tl.load(n_valid_ptr), 0.0)
    for start in range(0, row_width, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        p = tl.exp(x - lse)  # 0 on the padding columns (x = -inf there)
        grad = tl.where(cols == safe_target, p - 1.0, p) * scale
        tl.store(base + cols, grad.to(logits_ptr.dtype.element_ty), mask=cols < row_width)


def loss_and_grad_in_place(logits: torch.Tensor, targets: torch.Tensor, n_cols: int, block: int | None = None
                           ) -> torch.Tensor:
    """Mean cross-entropy of logits[:, :n_cols] against targets (-1 ignored); `logits` (N, V >= n_cols) becomes
    the gradient of that mean with respect to them (zero in the columns from n_cols on)."""
    if logits.stride(-1) != 1:
        raise ValueError("logits must be contiguous in the vocabulary dimension")
    rows = logits.shape[0]
    targets = targets.contiguous()
    n_valid = (targets != IGNORE).sum().clamp(min=1).to(torch.float32)  # on the device: no host sync
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    _loss_and_grad_in_place[(rows,)](logits, logits.stride(0), targets, losses, n_valid, n_cols, logits.shape[1],
                                     IGNORE=IGNORE, BLOCK=block or BLOCK, num_warps=WARPS)
    return losses.sum() / n_valid


class _TritonHeadLoss(torch.autograd.Function):
    """loss = cross_entropy(x @ weight.T, targets) with the logits' gradient made in the forward pass.

    Backward is two matmuls, dL/dx = G @ W and dL/dW = G.T @ x, scaled by the incoming dloss (e.g. 1 / the
    number of micro-batches) on their small outputs rather than on the (N, V) gradient G."""

    @staticmethod
    def forward(ctx, x, weight, targets, n_cols, dtype):
        xc, w = x.to(dtype), weight.to(dtype)
        logits = xc @ w.t()
        loss = loss_and_grad_in_place(logits, targets, n_cols)
        ctx.save_for_backward(logits, xc, w)
        ctx.x_dtype, ctx.w_dtype = x.dtype, weight.dtype
        return loss

    @staticmethod
    def backward(ctx, dloss):
        grad_logits, xc, w = ctx.saved_tensors
        grad_x = (grad_logits @ w).to(ctx.x_dtype) * dloss
        grad_w = (grad_logits.t() @ xc).to(ctx.w_dtype) * dloss
        return grad_x, grad_w, None, None, None


def in_kernel_dtype(x: torch.Tensor) -> torch.Tensor:
    """The final hidden states cast to the LM head matmul's dtype (bf16 under autocast), for GPT.forward to call
    inside its compiled graph before triton_head_loss: they then cross the graph break in bf16 (half the bytes of
    the fp32 LayerNorm output, no eager cast kernel) and their gradient comes back in bf16 (no eager fp32 cast and
    fp32 scaling). The values are the ones the matmul takes either way. Here rather than in triton_head_loss:
    dynamo cannot resume inside a function it inlined, so a cast there would land in a graph of its own."""
    device = x.device.type
    return x.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else x


@torch.compiler.disable  # a graph break: the compiled body ends at the final LayerNorm (see module doc)
def triton_head_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, n_cols: int) -> torch.Tensor:
    """The model's training loss through the kernel: x (N, d) final hidden states, weight the (padded) LM head."""
    x = in_kernel_dtype(x)  # a no-op after GPT.forward's cast; a caller that skipped it still gets bf16 matmuls
    with torch.autocast(x.device.type, enabled=False):  # the casts are explicit in forward()
        return _TritonHeadLoss.apply(x, weight, targets, n_cols, x.dtype)
