"""GPT-1/2/3 decoder-only transformers in one nanoGPT-style module.

References:
- GPT-1 (Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training"):
  12 layers x 768, 12 heads, 512 context, learned positions, GELU, post-LN blocks, N(0, 0.02) init.
- GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", sec. 2.3):
  LayerNorm moved to the input of each sub-block, a final LayerNorm after the last block, residual
  projections initialised scaled by 1/sqrt(N) with N the number of residual layers (2 per block),
  1,024 context, 50,257 tokens.
- GPT-3 (Brown et al. 2020, sec. 2.1): GPT-2's model with "alternating dense and locally banded
  sparse attention patterns in the layers of the transformer, similar to the Sparse Transformer".
- Code design after nanoGPT (karpathy/nanoGPT model.py): names match the GPT-2 checkpoints
  (wte, wpe, h, c_attn, c_proj, c_fc, ln_f), so released weights map one to one.

Preset rule (`from_params`): `tiny` takes its sizes from params.yaml `model.*`; every other preset
uses the paper's values (`model.*` sizes are then ignored). `model.overrides` then replaces any
GPTConfig field of any preset (`dvc exp run -S model.preset=gpt2-small -S model.overrides.dropout=0.1`).
Vocabulary: tiny uses the data's vocabulary; paper presets keep the paper vocabulary, which must be at
least as large as the data's.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.lm.banded import banded_attention


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """params.yaml `model`: which architecture to train (sizes used by the `tiny` preset only)."""

    preset: str = "tiny"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # any GPTConfig field, any preset


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of one GPT. Defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-1/2/3 all used biases in Linear and LayerNorm
    ln: str = "pre"  # "post": GPT-1 (LN after each residual add); "pre": GPT-2/3 (LN at sub-block input + ln_f)
    attn: str = "dense"  # "dense" | "alternating_sparse" (GPT-3: odd layers locally banded)
    sparse_window: int = 256  # band width of sparse layers: a token sees itself and the previous window-1
    tie_weights: bool = True  # LM head shares the token embedding (all three papers)
    residual_scale_init: bool = True  # GPT-2: residual projections init std 0.02/sqrt(2*n_layer)

    def __post_init__(self) -> None:
        if self.ln not in ("pre", "post"):
            raise ValueError(f"GPTConfig.ln must be 'pre' or 'post', got {self.ln!r}")
        if self.attn not in ("dense", "alternating_sparse"):
            raise ValueError(f"GPTConfig.attn must be 'dense' or 'alternating_sparse', got {self.attn!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")


_GPT2 = dict(vocab_size=50257, block_size=1024, ln="pre", attn="dense", residual_scale_init=True)
# GPT-3 (Table 2.1): GPT-2's model at 2,048 context with alternating dense / banded layers. The band
# width is not published; 256 follows the Sparse Transformer's local pattern scale (stride ~ sqrt(n)).
_GPT3 = dict(vocab_size=50257, block_size=2048, ln="pre", attn="alternating_sparse", sparse_window=256)
PRESETS: dict[str, GPTConfig] = {
    # tiny: placeholder sizes; from_params replaces them with params.yaml model.* and the data's vocab.
    "tiny": GPTConfig(vocab_size=2048, block_size=128, n_layer=2, n_head=4, n_embd=128),
    # GPT-1: 40,478 = 40,000 BPE merges + base symbols (OpenAI's encoder_bpe_40000.json), dropout 0.1.
    "gpt1": GPTConfig(vocab_size=40478, block_size=512, n_layer=12, n_head=12, n_embd=768, dropout=0.1,
                      ln="post", residual_scale_init=False),
    "gpt2-small": GPTConfig(n_layer=12, n_head=12, n_embd=768, **_GPT2),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024, **_GPT2),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280, **_GPT2),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600, **_GPT2),
    "gpt3-small": GPTConfig(n_layer=12, n_head=12, n_embd=768, **_GPT3),
    "gpt3-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024, **_GPT3),
    "gpt3-large": GPTConfig(n_layer=24, n_head=16, n_embd=1536, **_GPT3),
    # Table 2.1 lists 24 heads of 128 for XL, which is 3,072 wide, not its 2,048 d_model (an erratum);
    # 16 heads of 128 keeps the published width and head size (as Pythia-1.4B, an XL-sized replica, does).
    "gpt3-xl": GPTConfig(n_layer=24, n_head=16, n_embd=2048, **_GPT3),
    "gpt3-2.7b": GPTConfig(n_layer=32, n_head=32, n_embd=2560, **_GPT3),
}

# The papers' optimisation settings per preset (train.* is not switched by model.preset; set these with
# `-S train.lr=... -S train.batch_size=...`). GPT-3 Table 2.1: batch in tokens, max lr; warmup 375M
# tokens, cosine to 10% over 260B. GPT-1 sec. 4.1: 64 x 512 tokens, lr 2.5e-4, 2,000 warmup updates,
# cosine to 0. GPT-2 sec. 2.3: 512 sequences of 1,024; its learning rates were "manually tuned" (unpublished).
PAPER_TRAIN: dict[str, dict[str, float]] = {
    "gpt1": {"lr": 2.5e-4, "batch_tokens": 64 * 512, "min_lr_ratio": 0.0},
    "gpt2-small": {"batch_tokens": 512 * 1024}, "gpt2-medium": {"batch_tokens": 512 * 1024},
    "gpt2-large": {"batch_tokens": 512 * 1024}, "gpt2-xl": {"batch_tokens": 512 * 1024},
    "gpt3-small": {"lr": 6.0e-4, "batch_tokens": 0.5e6, "min_lr_ratio": 0.1},
    "gpt3-medium": {"lr": 3.0e-4, "batch_tokens": 0.5e6, "min_lr_ratio": 0.1},
    "gpt3-large": {"lr": 2.5e-4, "batch_tokens": 0.5e6, "min_lr_ratio": 0.1},
    "gpt3-xl": {"lr": 2.0e-4, "batch_tokens": 1e6, "min_lr_ratio": 0.1},
    "gpt3-2.7b": {"lr": 1.6e-4, "batch_tokens": 1e6, "min_lr_ratio": 0.1},
}


def from_params(mcfg: ModelConfig, vocab_size: int) -> GPTConfig:
    """GPTConfig for params.yaml `model` and a data vocabulary (see the preset rule in the module doc)."""
    if mcfg.preset not in PRESETS:
        raise ValueError(f"unknown model.preset {mcfg.preset!r}; known: {', '.join(PRESETS)}")
    if mcfg.preset == "tiny":
        cfg = dataclasses.replace(PRESETS["tiny"], vocab_size=vocab_size, block_size=mcfg.block_size,
                                  n_layer=mcfg.n_layer, n_head=mcfg.n_head, n_embd=mcfg.n_embd,
                                  dropout=mcfg.dropout)
    else:
        cfg = PRESETS[mcfg.preset]
    unknown = sorted(set(mcfg.overrides) - {f.name for f in dataclasses.fields(GPTConfig)})
    if unknown:
        raise ValueError(f"model.overrides has unknown field(s) {unknown}; GPTConfig fields: "
                         f"{', '.join(f.name for f in dataclasses.fields(GPTConfig))}")
    cfg = dataclasses.replace(cfg, **mcfg.overrides)
    if vocab_size > cfg.vocab_size:
        raise ValueError(f"data vocabulary {vocab_size} exceeds preset {mcfg.preset}'s {cfg.vocab_size}")
    return cfg


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, sparse: bool = False):
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout
        self.sparse, self.window = sparse, cfg.sparse_window
        self.banded_kernel = "auto"  # banded.py: FlexAttention on CUDA, the SDPA band mask elsewhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if self.sparse and T > self.window:
            y = banded_attention(q, k, v, self.window, p, self.banded_kernel)
        else:  # dense, or a band at least as wide as the sequence (then it is just causal)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)  # FFN 3072 for 768 (GPT-1)
        self.gelu = nn.GELU(approximate="tanh")  # the papers' GELU is the tanh approximation
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.post_ln = cfg.ln == "post"
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # GPT-3 alternates: even layers dense, odd layers banded.
        self.attn = CausalSelfAttention(cfg, sparse=cfg.attn == "alternating_sparse" and layer % 2 == 1)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_ln:  # GPT-1 / original Transformer: normalise the residual stream after each add
            x = self.ln_1(x + self.attn(x))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x))  # GPT-2: the residual stream itself is never normalised
        return x + self.mlp(self.ln_2(x))


VOCAB_MULTIPLE = 128  # nanoGPT pads GPT-2's 50,257 to 50,304: the LM head's matmul then runs on aligned tiles


def padded_vocab(vocab_size: int) -> int:
    """Rows of the embedding / LM head: the vocabulary rounded up to VOCAB_MULTIPLE. The extra rows are masked
    out of the softmax (their logits are -inf), so the loss is exactly the unpadded model's and they never
    train; forward() returns only the real vocab_size columns, export writes only the real rows, and
    num_params does not count them. (A vocabulary already a multiple, like the sample's 2,048, is unchanged.)"""
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


class _LMHeadLoss(torch.autograd.Function):
    """Mean cross-entropy of `x @ weight.T` against targets (-1 = ignore), with the gradients computed
    chunk by chunk in the forward pass (the fused linear cross-entropy of Liger-Kernel / Unsloth).

    Per chunk of rows: logits, log-sum-exp, loss, then in place softmax - onehot, which gives the
    chunk's share of dL/dx and dL/dW at once. The same FLOPs as autograd, a fraction of the memory.
    The three matmuls run in `dtype` (bf16 under autocast), the softmax and the sums in fp32; columns
    from `vocab` on (the padding rows of the weight) are -inf logits, so they are never a class.
    """

    @staticmethod
    def forward(ctx, x, weight, targets, chunk, dtype, vocab):
        valid = targets != -1
        n = valid.sum().clamp(min=1).to(torch.float32)
        w = weight.to(dtype)
        grad_x, grad_w = torch.empty_like(x), torch.zeros_like(weight)
        loss = torch.zeros((), dtype=torch.float64, device=x.device)
        for i in range(0, x.shape[0], chunk):
            xc, vc = x[i:i + chunk].to(dtype), valid[i:i + chunk]
            tc = targets[i:i + chunk].clamp(min=0)[:, None]
            logits = (xc @ w.t()).float()
            if vocab < logits.shape[1]:
                logits[:, vocab:] = float("-inf")
            lse = torch.logsumexp(logits, dim=-1)
            loss += ((lse - logits.gather(1, tc).squeeze(1)) * vc).sum().double()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs.scatter_add_(1, tc, -vc[:, None].to(probs.dtype))  # minus the one-hot target
            probs.mul_((vc.to(probs.dtype) / n)[:, None])  # mean over valid rows; ignored rows -> 0
            probs = probs.to(dtype)
            grad_x[i:i + chunk] = probs @ w
            if dtype == grad_w.dtype:
                grad_w.addmm_(probs.t(), xc)
            else:  # accumulate the low-precision chunk products in the weight's own precision
                grad_w += probs.t() @ xc
        ctx.save_for_backward(grad_x, grad_w)
        return (loss / n.double()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_out, grad_w * grad_out, None, None, None, None


def lm_head_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int | None = None
                 ) -> torch.Tensor:
    """F.cross_entropy((x @ weight.T)[:, :vocab], targets, ignore_index=-1) without the (N, V) logits in memory.

    Under autocast the matmuls take autocast's dtype, as nn.Linear would. Chunks hold ~128 MB of fp32
    logits on CPU (cache-sized work), ~1 GB on a GPU (fewer, larger matmuls)."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    chunk = max(64, (1 << (28 if device == "cuda" else 25)) // weight.shape[0])
    with torch.autocast(device, enabled=False):  # the casts above are explicit; autocast must not redo them
        return _LMHeadLoss.apply(x, weight, targets, chunk, dtype, vocab or weight.shape[0])


class GPT(nn.Module):
    """Decoder-only transformer LM. forward(idx, targets) -> (logits (B, T, V), loss or None).

    In training mode on CPU (targets given, grad enabled) logits are None: the loss comes from the
    chunked `lm_head_loss`; evaluation (no_grad) and GPUs take the plain path. `fused_head_loss`
    True / False forces either path on any device (bench/train_speed.py --fused-loss measures it on GPUs).
    """

    fused_head_loss: bool | None = None  # None: the chunked loss on CPU only, where it measured faster
    # True: LM head + loss through pipeline/lm/triton_loss.py (needs triton: CUDA, or its CPU interpreter); the
    # stage sets it from train.loss_kernel (device_knobs.use_triton_loss: auto takes it on NVIDIA GPUs, measured faster)
    triton_head_loss: bool = False
    # A dtype: the residual stream is cast to it after the embeddings (bf16: llm.c's all-bf16 activations, half
    # the bytes in every LayerNorm and residual kernel). None: it stays as the embeddings give it (fp32 under
    # autocast). The stage sets it from train.residual_dtype (device_knobs.residual_dtype_of: GPU only), the benches
    # with --bf16-residual.
    residual_dtype: torch.dtype | None = None

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(padded_vocab(cfg.vocab_size), cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),  # learned positions (all three papers)
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer)),
            # Post-LN blocks already end in a LayerNorm; GPT-2 added ln_f because pre-LN blocks do not.
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias) if cfg.ln == "pre" else nn.Identity(),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, padded_vocab(cfg.vocab_size), bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        if cfg.residual_scale_init:
            # Each block adds two residual branches; scale their output projections so the
            # residual stream's variance does not grow with depth (GPT-2 sec. 2.3).
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)  # GPT-1: N(0, 0.02) suffices with LayerNorm
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, tied weights counted once; `non_embedding` drops the position table."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        pad = (padded_vocab(self.config.vocab_size) - self.config.vocab_size) * self.config.n_embd
        n -= pad * (1 if self.config.tie_weights else 2)  # padding rows are no part of the model
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward): 6N + 12 * L * d * T_attended.

        The 6N term is Kaplan et al. 2020 (sec. 2.1); the attention term is PaLM's appendix B
        estimate, with a banded layer attending to at most `sparse_window` keys.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        attn = 0
        for block in self.transformer.h:
            attended = min(T, cfg.sparse_window) if block.attn.sparse else T
            attn += 12 * cfg.n_embd * attended
        return 6 * self.num_params(non_embedding=True) + attn

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, n_embd), what the LM head reads (and GPT-1's task heads)."""
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        if self.residual_dtype is not None:
            x = x.to(self.residual_dtype)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.features(idx)
        training_loss = targets is not None and self.training and torch.is_grad_enabled()
        if training_loss and self.triton_head_loss:
            from pipeline.lm.triton_loss import in_kernel_dtype, triton_head_loss  # triton only where asked for

            return None, triton_head_loss(in_kernel_dtype(x.reshape(-1, x.size(-1))), self.lm_head.weight,
                                          targets.reshape(-1), self.config.vocab_size)
        fused = self.fused_head_loss if self.fused_head_loss is not None else x.device.type == "cpu"
        if training_loss and fused:
            # CPU training: the tied LM head is ~80% of the FLOPs at GPT-2's vocabulary; computing it
            # with its loss and gradients chunk by chunk never materialises the (B*T, V) logits,
            # their softmax and their gradient (3 x 412 MB per step at B*T=2048, V=50,304).
            # The padded weight keeps the matmuls aligned; its padding columns are masked out of the softmax.
            return None, lm_head_loss(x.reshape(-1, x.size(-1)), self.lm_head.weight, targets.reshape(-1),
                                      self.config.vocab_size)
        logits = self.lm_head(x)  # over the padded vocabulary: an aligned matmul (see padded_vocab)
        if logits.size(-1) > self.config.vocab_size:  # padding columns out of the softmax: the loss is exact
            logits[..., self.config.vocab_size:] = float("-inf")
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits[..., :self.config.vocab_size], loss  # callers only ever see the real rows
