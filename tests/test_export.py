"""pipeline/lm/export.py and stages/export.py: the Hugging Face GPT-2 layout loads in transformers and gives our
logits; AutoTokenizer loads the exported tokenizer offline and gives our ids."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pipeline.core import params
from pipeline.lm import bpe
from pipeline.lm.export import export_hf, hf_state_dict
from pipeline.lm.model import GPT, GPTConfig, ModelConfig, from_params
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


# --- the export stage (stages/export.py): the default model and tokenizer, end to end -------------------------

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3, "It said: \"Don't stop!\" 1,024 times, then 12 more.",
         "Naïve café owners wrote 37 letters to the mayor of Springfield.\n\nNobody answered them."] * 20


def _stage_main():
    spec = importlib.util.spec_from_file_location("export_stage", ROOT / "stages" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _default_run(tmp_path, overrides=None):
    """A tokenizer and a briefly trained model of params.yaml's default `model` section (plus overrides)."""
    tok = bpe.train(TEXTS, bpe.TokenizerConfig(vocab_size=320, min_frequency=2))
    bpe.save(tok, tmp_path / "tokenizer")
    mcfg = params.config(ModelConfig, "model", ROOT / "params.yaml")
    cfg = dataclasses.replace(from_params(mcfg, tok.get_vocab_size()), **(overrides or {}))
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor([sum((tok.encode(t).ids + [bpe.eot_id(tok)] for t in TEXTS[:3]), [])[: cfg.block_size]])
    for _ in range(3):
        model(ids, ids)[1].backward()
        opt.step()
        opt.zero_grad()
    save_checkpoint(tmp_path / "ckpt.pt", model, None, 3, extra={"eot_id": bpe.eot_id(tok)})
    return tok, cfg


def test_default_model_exports_through_the_stage(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (optional)")
    monkeypatch.chdir(tmp_path)  # the stage writes reports/export.json relative to the cwd
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok, cfg = _default_run(tmp_path)
    assert (cfg.ln, cfg.attn) == ("pre", "dense")  # the default tiny preset is GPT-2-shaped
    res = _stage_main()(["--ckpt", "ckpt.pt", "--tokenizer", "tokenizer", "--out", "models/gpt-hf"])
    out = tmp_path / "models" / "gpt-hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(res["files"])
    assert sorted(res["files"]) == sorted(p.name for p in out.iterdir())

    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out), local_files_only=True).eval()
    ours, _ = load_checkpoint(tmp_path / "ckpt.pt")
    idx = torch.tensor([tok.encode(TEXTS[2]).ids[: cfg.block_size]])
    with torch.no_grad():
        theirs, mine = hf(idx).logits, ours(idx)[0]
    assert theirs.shape == mine.shape == (1, idx.shape[1], tok.get_vocab_size())
    assert torch.allclose(theirs, mine, atol=1e-4), (theirs - mine).abs().max()

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    sentence = "Naïve café owners wrote 37 letters<|endoftext|> to   the mayor.\n\nNobody answered."
    assert hf_tok(sentence)["input_ids"] == tok.encode(sentence).ids
    assert hf_tok.eos_token == bpe.EOT and hf_tok.eos_token_id == bpe.eot_id(tok) == hf.config.eos_token_id
    assert hf_tok.decode(tok.encode(sentence).ids) == sentence

    rep = json.loads((tmp_path / "reports" / "export.json").read_text())
    assert rep["stage"] == "export" and rep["exported"] is True and rep["params"] == ours.num_params()
    assert rep["check"]["max_abs_logit_diff"] < 1e-4 and rep["check"]["tokenizer_ids_equal"] is True
    assert rep["bytes_out"] == sum(p.stat().st_size for p in out.iterdir())


def test_stage_reports_why_a_post_ln_model_does_not_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _default_run(tmp_path, {"ln": "post"})  # GPT-1's blocks
    res = _stage_main()(["--ckpt", "ckpt.pt", "--tokenizer", "tokenizer", "--out", "models/gpt-hf"])
    assert res["exported"] is False and "ln=post" in res["reason"]
    assert "NOT exported" in capsys.readouterr().err
    assert "ln=post" in (tmp_path / "models" / "gpt-hf" / "NOT_EXPORTED.txt").read_text()
    rep = json.loads((tmp_path / "reports" / "export.json").read_text())
    assert rep["exported"] is False and "pre-LN" in rep["reason"] and "files" not in rep
