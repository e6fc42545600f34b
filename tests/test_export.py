"""pipeline/lm/export.py: the Hugging Face GPT-2 layout loads in transformers and gives our logits."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from pipeline.lm.export import export_hf, hf_state_dict
from pipeline.lm.model import GPT, GPTConfig
from pipeline.lm.checkpoint import load_checkpoint, save_checkpoint

CFG = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32)


def _trained_ckpt(tmp_path, cfg=CFG):
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    for _ in range(3):  # move the weights off their init (biases and LayerNorms included)
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, None, 3, extra={"eot_id": 96})
    return path


def test_export_loads_in_transformers_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (optional)")
    pytest.importorskip("safetensors", reason="safetensors is not installed (optional)")
    out = export_hf(_trained_ckpt(tmp_path), tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["vocab_size"], config["eos_token_id"]) == (2, 32, 97, 96)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    ours, _ = load_checkpoint(tmp_path / "ckpt.pt")
    idx = torch.randint(0, CFG.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(idx).logits
        mine = ours(idx)[0]
    assert theirs.shape == mine.shape == (3, 32, 97)
    assert torch.allclose(theirs, mine, atol=1e-4), (theirs - mine).abs().max()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied, as ours


def test_only_gpt2_shaped_models_export():
    with pytest.raises(ValueError, match="post"):
        hf_state_dict(GPT(dataclasses.replace(CFG, ln="post")))
    with pytest.raises(ValueError, match="alternating_sparse"):
        hf_state_dict(GPT(dataclasses.replace(CFG, attn="alternating_sparse")))
    sd = hf_state_dict(GPT(CFG))
    assert "lm_head.weight" not in sd
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
