"""pipeline/lm/model.py: presets match the papers, LN placement, banded attention, tying, checkpoints."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.core import params
from pipeline.lm.model import GPT, PAPER_TRAIN, PRESETS, CausalSelfAttention, GPTConfig, ModelConfig, from_params
from pipeline.lm.banded import banded_causal_mask
from pipeline.lm.checkpoint import load_checkpoint, save_checkpoint

torch.set_num_threads(1)
SMALL = GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=16)


@pytest.mark.parametrize("preset,expected", [
    ("gpt2-small", 124_439_808), ("gpt2-medium", 354_823_168),
    ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200),
])
def test_gpt2_parameter_counts_match_released_checkpoints(preset, expected):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = GPT(PRESETS[preset])
    assert model.num_params() == expected


@pytest.mark.parametrize("preset,published_m,layers,width", [
    ("gpt3-small", 125, 12, 768), ("gpt3-medium", 350, 24, 1024), ("gpt3-large", 760, 24, 1536),
    ("gpt3-xl", 1300, 24, 2048), ("gpt3-2.7b", 2700, 32, 2560),
])
def test_gpt3_presets_match_table_2_1(preset, published_m, layers, width):
    cfg = PRESETS[preset]
    assert (cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.attn) == (layers, width, 2048, "alternating_sparse")
    with torch.device("meta"):
        n = GPT(cfg).num_params()
    assert abs(n / 1e6 - published_m) / published_m < 0.04  # Table 2.1 rounds its sizes
    assert PAPER_TRAIN[preset]["min_lr_ratio"] == 0.1 and PAPER_TRAIN[preset]["lr"] <= 6e-4


def test_overrides_replace_any_field_of_any_preset():
    cfg = from_params(ModelConfig(preset="gpt2-small", overrides={"dropout": 0.1, "n_layer": 6}), vocab_size=100)
    assert (cfg.dropout, cfg.n_layer, cfg.n_embd) == (0.1, 6, 768)
    tiny = from_params(ModelConfig(overrides={"ln": "post"}), vocab_size=100)
    assert tiny.ln == "post" and tiny.vocab_size == 100
    with pytest.raises(ValueError, match="n_layers"):
        from_params(ModelConfig(overrides={"n_layers": 3}), vocab_size=100)


def test_preset_architectures_follow_the_papers():
    assert PRESETS["gpt1"].ln == "post" and not PRESETS["gpt1"].residual_scale_init
    assert (PRESETS["gpt1"].block_size, PRESETS["gpt1"].vocab_size) == (512, 40478)
    assert all(PRESETS[p].ln == "pre" and PRESETS[p].block_size == 1024 for p in PRESETS if p.startswith("gpt2"))
    g3 = PRESETS["gpt3-small"]
    assert (g3.block_size, g3.attn) == (2048, "alternating_sparse")
    with torch.device("meta"):
        model = GPT(g3)
    assert [b.attn.sparse for b in model.transformer.h] == [False, True] * 6
    with torch.device("meta"):  # banded layers attend fewer keys: fewer FLOPs than the dense twin
        dense = GPT(dataclasses.replace(g3, attn="dense"))
    assert model.flops_per_token() < dense.flops_per_token()


def test_model_config_defaults_equal_params_yaml():
    assert dataclasses.asdict(ModelConfig()) == params.load("model")


def test_from_params_tiny_uses_params_and_presets_use_paper_values():
    tiny = from_params(ModelConfig(n_layer=3, n_head=2, n_embd=32, block_size=64, dropout=0.1), vocab_size=257)
    assert (tiny.n_layer, tiny.n_head, tiny.n_embd, tiny.block_size, tiny.vocab_size, tiny.dropout) == (
        3, 2, 32, 64, 257, 0.1)
    assert from_params(ModelConfig(preset="gpt2-small", n_layer=3), vocab_size=2048) == PRESETS["gpt2-small"]
    with pytest.raises(ValueError, match="exceeds"):
        from_params(ModelConfig(preset="gpt1"), vocab_size=50257)
    with pytest.raises(ValueError, match="unknown"):
        from_params(ModelConfig(preset="gpt5"), vocab_size=10)


def _silence_branches(block):
    """Zero both residual branches' output projections: the block then shows only its LN placement."""
    with torch.no_grad():
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            proj.weight.zero_()
            proj.bias.zero_()


def test_pre_ln_keeps_residual_stream_and_post_ln_normalises_it():
    torch.manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(2, 8, 16)
    pre = GPT(SMALL).transformer.h[0]
    post_model = GPT(dataclasses.replace(SMALL, ln="post"))
    post = post_model.transformer.h[0]
    _silence_branches(pre)
    _silence_branches(post)
    # Pre-LN: LayerNorm only at sub-block inputs, so silent branches leave the stream untouched.
    assert torch.equal(pre(x), x)
    # Post-LN: the stream itself goes through ln_1 then ln_2.
    assert torch.allclose(post(x), post.ln_2(post.ln_1(x)), atol=1e-6)
    assert torch.allclose(post(x).mean(-1), torch.zeros(2, 8), atol=1e-5)
    # GPT-2 adds a final LayerNorm; GPT-1's post-LN stack needs none.
    assert isinstance(GPT(SMALL).transformer.ln_f, torch.nn.LayerNorm)
    assert isinstance(post_model.transformer.ln_f, torch.nn.Identity)


def test_banded_attention_equals_hand_computed_reference():
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, attn="alternating_sparse", sparse_window=3)
    attn = CausalSelfAttention(cfg, sparse=True).eval()
    B, T, C, H = 2, 8, cfg.n_embd, cfg.n_head
    x = torch.randn(B, T, C)
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            allowed[i, j] = j <= i and i - j < 3  # by hand: itself and the two previous tokens
    assert torch.equal(banded_causal_mask(T, 3), allowed)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    expected = attn.c_proj((probs @ v).transpose(1, 2).reshape(B, T, C))
    got = attn(x)
    assert torch.allclose(got, expected, atol=1e-5)
    dense = CausalSelfAttention(cfg, sparse=False).eval()
    dense.load_state_dict(attn.state_dict())
    assert not torch.allclose(dense(x), got, atol=1e-3)  # the band really removes distant keys
    x2 = x.clone()
    x2[:, 0] += 10.0  # token 0 is outside the band of tokens 3..7
    assert torch.allclose(attn(x2)[:, 3:], got[:, 3:], atol=1e-5)


def test_model_is_causal():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(SMALL, attn="alternating_sparse", sparse_window=4)).eval()
    idx = torch.randint(0, SMALL.vocab_size, (1, 12))
    idx2 = idx.clone()
    idx2[0, 8:] = (idx2[0, 8:] + 1) % SMALL.vocab_size
    logits, loss = model(idx)
    assert logits.shape == (1, 12, SMALL.vocab_size) and loss is None
    assert torch.allclose(model(idx2)[0][:, :8], logits[:, :8], atol=1e-6)


def test_weight_tying_shares_one_tensor():
    model = GPT(SMALL)
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = GPT(dataclasses.replace(SMALL, tie_weights=False))
    assert untied.num_params() - model.num_params() == SMALL.vocab_size * SMALL.n_embd
    idx = torch.randint(0, SMALL.vocab_size, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert model.lm_head.weight is model.transformer.wte.weight  # still one tensor after an update


def test_residual_projections_scaled_init():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=256)
    scaled = GPT(cfg).transformer.h[0].attn.c_proj.weight.std().item()
    plain = GPT(dataclasses.replace(cfg, residual_scale_init=False)).transformer.h[0].attn.c_proj.weight.std().item()
    assert scaled == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert plain == pytest.approx(0.02, rel=0.05)


def test_checkpoint_round_trip_gives_same_logits(tmp_path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, ln="post", attn="alternating_sparse", sparse_window=5)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    model(idx, idx)[1].backward()
    opt.step()
    model.eval()
    path = tmp_path / "gpt" / "ckpt.pt"
    save_checkpoint(path, model, opt, step=7, extra={"params": {"seed": 1}, "tokenizer_sha256": "ab" * 32,
                                                      "val_loss": 1.5})
    loaded, ckpt = load_checkpoint(path)
    assert not loaded.training
    assert loaded.config == cfg
    assert (ckpt["iter"], ckpt["params"], ckpt["tokenizer_sha256"], ckpt["val_loss"]) == (7, {"seed": 1}, "ab" * 32, 1.5)
    assert ckpt["optimizer"]["state"]
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    with pytest.raises(ValueError, match="overwrite"):
        save_checkpoint(path, model, None, 1, extra={"model": 1})


def test_loss_is_cross_entropy_of_logits():
    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    idx = torch.randint(0, SMALL.vocab_size, (2, 8))
    logits, loss = model(idx, idx)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, SMALL.vocab_size), idx.reshape(-1)).item())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, SMALL.block_size + 1, dtype=torch.long))


def test_chunked_lm_head_loss_equals_autograd():
    torch.manual_seed(0)
    model = GPT(SMALL)
    idx = torch.randint(0, SMALL.vocab_size, (3, 16))
    targets = idx.clone()
    targets[0, :5] = -1  # ignored positions count neither in the loss nor in the mean
    logits_none, loss = model(idx, targets)  # training path: chunked, no logits
    assert logits_none is None
    loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model.lm_head(model.transformer.ln_f(_hidden(model, idx)))[..., :SMALL.vocab_size]  # real rows
    ref = F.cross_entropy(logits.reshape(-1, SMALL.vocab_size), targets.view(-1), ignore_index=-1)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert all(torch.allclose(fused[n], p.grad, atol=1e-6) for n, p in model.named_parameters())
    with torch.no_grad():  # evaluation takes the plain path and returns logits
        assert model(idx, targets)[0].shape == (3, 16, SMALL.vocab_size)


def test_fused_head_loss_in_bf16_chunks_matches_autocast_cross_entropy():
    """The fused loss as a GPU would run it (bench/train_speed.py --fused-loss): bf16 matmuls under autocast,
    many chunks, a padded weight whose padding columns must never be a class."""
    from pipeline.lm.model import _LMHeadLoss

    torch.manual_seed(0)
    x = torch.randn(50, 16, requires_grad=True)
    weight = (0.5 * torch.randn(128, 16)).requires_grad_()  # 61 real rows, padded to 128
    targets = torch.randint(0, 61, (50,))
    targets[:7] = -1
    loss = _LMHeadLoss.apply(x, weight, targets, 8, torch.bfloat16, 61)  # 7 chunks, the last one short
    loss.backward()
    fused = (loss.item(), x.grad.clone(), weight.grad.clone())
    x.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = (x @ weight.t())[:, :61]
    ref = F.cross_entropy(logits.float(), targets, ignore_index=-1)
    ref.backward()
    assert fused[0] == pytest.approx(ref.item(), rel=1e-3)
    assert torch.allclose(fused[1], x.grad, rtol=0, atol=2e-2 * x.grad.abs().max().item())
    assert torch.allclose(fused[2], weight.grad, rtol=0, atol=2e-2 * weight.grad.abs().max().item())
    assert fused[2][61:].abs().max() == 0  # the padding rows get no gradient
    assert fused[1].dtype == torch.float32 and fused[2].dtype == torch.float32

    model = GPT(SMALL)  # and through the model: forcing the fused path under autocast gives the plain path's loss
    idx = torch.randint(0, SMALL.vocab_size, (2, 16))
    losses = []
    for forced in (True, False):
        model.fused_head_loss = forced
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(idx, idx)[1].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_bf16_residual_stream_stays_bf16_and_trains_like_fp32():
    """GPT.residual_dtype (bench/train_speed.py --bf16-residual): under autocast every block's input and output is
    bf16, gradients reach every parameter, and a few steps of training follow the fp32 stream's losses."""
    torch.manual_seed(0)
    idx = torch.randint(0, SMALL.vocab_size, (4, 16))
    losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)
        model = GPT(SMALL)
        model.residual_dtype = dtype
        seen = []
        hooks = [b.register_forward_hook(lambda m, inp, out: seen.append((inp[0].dtype, out.dtype)))
                 for b in model.transformer.h]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses[dtype] = []
        for _ in range(20):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(idx, idx)[1]
            loss.backward()
            if dtype is not None and not losses[dtype]:
                assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[dtype].append(loss.item())
        for h in hooks:
            h.remove()
        stream = dtype or torch.float32  # fp32: the embeddings' dtype, kept by autocast's residual adds
        assert set(seen) == {(stream, stream)}
    assert losses[torch.bfloat16][-1] < 0.5 * losses[torch.bfloat16][0]  # it learns
    assert losses[torch.bfloat16][-1] == pytest.approx(losses[None][-1], rel=0.05, abs=0.05)


def _hidden(model, idx):
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(idx.shape[1]))
    for block in model.transformer.h:
        x = block(x)
    return x



def test_vocabulary_is_padded_inside_and_invisible_outside():
    """GPT-2's 50,257 rows become 50,304 (a multiple of 128) inside; logits, loss, parameter count and the
    chunked CPU loss are exactly the unpadded model's, and the padding rows never train."""
    from pipeline.lm.model import padded_vocab

    assert padded_vocab(50257) == 50304 and padded_vocab(2048) == 2048 and padded_vocab(61) == 128
    cfg = dataclasses.replace(SMALL, vocab_size=61)
    torch.manual_seed(0)
    model = GPT(cfg)
    assert model.transformer.wte.weight.shape[0] == 128
    unpadded = sum(p.numel() for p in model.parameters()) - (128 - 61) * cfg.n_embd
    assert model.num_params() == unpadded
    idx = torch.randint(0, 61, (2, 8))
    model.eval()
    logits, loss = model(idx, idx)
    assert logits.shape[-1] == 61
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 61), idx.reshape(-1)).item(), abs=1e-6)
    model.train()
    _, cpu_loss = model(idx, idx)  # the chunked CPU path over the real rows only
    assert cpu_loss.item() == pytest.approx(loss.item(), abs=1e-5)
    cpu_loss.backward()
    assert model.transformer.wte.weight.grad[61:].abs().sum() == 0  # padding rows get no gradient
