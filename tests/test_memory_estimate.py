"""pipeline/lm/memory_estimate.py: the parameter counts behind the README's fit table are the model's own."""
from __future__ import annotations

import pytest
import torch

from pipeline.lm.memory_estimate import (GB, STATE_BYTES, USABLE, estimate, fit_table, max_micro_batch,
                                         param_counts)
from pipeline.lm.model import GPT, PRESETS, GPTConfig

VARIANTS = {**PRESETS, "untied-nobias": GPTConfig(n_layer=3, n_head=2, n_embd=64, vocab_size=1000, block_size=64,
                                                  tie_weights=False, bias=False),
            "post-ln-odd-vocab": GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=77, block_size=16, ln="post")}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_counts_equal_the_models(name):
    cfg = VARIANTS[name]
    with torch.device("meta"):  # shapes only: gpt3-2.7b costs no memory
        model = GPT(cfg)
    n = param_counts(cfg)
    assert n["params"] == model.num_params()
    assert n["stored"] == sum(p.numel() for p in model.parameters())  # padding rows included, tied once
    assert n["block"] == sum(p.numel() for p in model.transformer.h[0].parameters())
    assert n["root"] + cfg.n_layer * n["block"] == n["stored"]


def test_fsdp_divides_the_states_and_activations_grow_with_the_batch():
    cfg = PRESETS["gpt3-xl"]
    ddp, fsdp = estimate(cfg, "ddp", ranks=8), estimate(cfg, "fsdp", ranks=8)
    assert ddp["states"] == STATE_BYTES * param_counts(cfg)["stored"] == 8 * fsdp["states"]
    assert ddp["activations"] == fsdp["activations"] and fsdp["total"] < ddp["total"]
    b1, b4 = estimate(cfg, "ddp", micro_batch=1), estimate(cfg, "ddp", micro_batch=4)
    assert b4["activations"] == pytest.approx(4 * b1["activations"]) and b4["states"] == b1["states"]
    short = estimate(cfg, "ddp", seq_len=cfg.block_size // 2)
    assert short["activations"] == pytest.approx(b1["activations"] / 2)
    with pytest.raises(ValueError):
        estimate(cfg, "zero3")


def test_max_micro_batch_is_the_largest_that_fits():
    cfg = PRESETS["gpt2-medium"]
    b = max_micro_batch(cfg, "ddp", 8, 80)
    assert estimate(cfg, "ddp", 8, b)["total"] <= USABLE * 80 * GB < estimate(cfg, "ddp", 8, b + 1)["total"]
    assert max_micro_batch(cfg, "fsdp", 8, 80) >= b
    assert max_micro_batch(PRESETS["gpt3-2.7b"], "ddp", 8, 24) == 0  # 16 bytes x 2.7B parameters > 24 GB


def test_fit_table_has_a_row_per_paper_preset():
    table = fit_table(ranks=8)
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == [n for n in PRESETS if n != "tiny"]
    assert "| gpt3-xl | 1,316M | 2048 |" in table
