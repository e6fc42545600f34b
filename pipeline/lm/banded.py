"""GPT-3's locally banded attention layers: a token attends to itself and the previous `window - 1` tokens.

Two kernels compute the same function:
- mask: SDPA with a boolean (T, T) band mask. Any device, dropout included; but a mask sends SDPA to a kernel
  that visits every (query, key) block, so the band costs as much as dense attention (more, as the flash
  kernel takes causal masks only). The CPU path and the reference in tests.
- flex: FlexAttention (torch.nn.attention.flex_attention) with a block mask, which skips the key blocks
  outside the band: work grows as T * window instead of T^2. CUDA only here: its backward has no CPU kernel
  in torch 2.13, and it needs torch.compile to run as a fused kernel (eager flex is a slow reference).
`kernel="auto"` picks flex on CUDA without attention dropout (flex has none) once T >= FLEX_MIN_BANDS * window,
mask otherwise. Measured on an H200 (bench/banded_attention.py, window 256, fwd + bwd): flex 0.88x the mask's
speed at T=1,024, 2.82x at 2,048; the mask's time per token grows with T and flex's does not, so they cross
near T = 4.6 windows.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

KERNELS = ("auto", "flex", "mask")
FLEX_MIN_BANDS = 5  # auto: flex from T = 5 windows on (the measured crossover is ~4.6)


def banded_causal_mask(T: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (T, T) mask, True where query i may attend key j: j <= i and i - j < window."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (i - j < window)


def _band_mod(window: int):
    def band(b, h, q_idx, kv_idx):  # FlexAttention's mask_mod: the same predicate as banded_causal_mask
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)
    return band


def _create_block_mask(T: int, window: int, device: torch.device | str):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(_band_mod(window), None, None, T, T, device=device)


@functools.lru_cache(maxsize=16)
def _cached_block_mask(T: int, window: int, device: str):
    return _create_block_mask(T, window, device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    """flex_attention compiled once per process: outside a compiled model this is what makes it a fused kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def block_mask(T: int, window: int, device: torch.device | str):
    """The band as FlexAttention's BlockMask. Inside torch.compile it is built in the graph (a few tiny kernels,
    no graph break); in eager mode it is built once per (T, window, device) and cached."""
    if torch.compiler.is_compiling():
        return _create_block_mask(T, window, device)
    return _cached_block_mask(T, window, str(device))


def use_flex(kernel: str, on_cuda: bool, T: int, window: int, dropout_p: float) -> bool:
    if kernel not in KERNELS:
        raise ValueError(f"banded attention kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "flex":
        if dropout_p > 0:
            raise ValueError("FlexAttention has no attention dropout: use kernel 'mask' (or 'auto') with dropout")
        return True
    return kernel == "auto" and on_cuda and dropout_p == 0 and T >= FLEX_MIN_BANDS * window


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, dropout_p: float = 0.0,
                     kernel: str = "auto") -> torch.Tensor:
    """Causal attention limited to a band of `window` keys; q, k, v are (B, H, T, head_dim)."""
    T = q.shape[-2]
    if use_flex(kernel, q.is_cuda, T, window, dropout_p):
        from torch.nn.attention.flex_attention import flex_attention

        bm = block_mask(T, window, q.device)
        # on CPU (forward only) eager flex is fine for tests; on CUDA eager flex would be a slow reference
        fn = _compiled_flex() if q.is_cuda and not torch.compiler.is_compiling() else flex_attention
        return fn(q, k, v, block_mask=bm)
    mask = banded_causal_mask(T, window, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
