"""Export a trained checkpoint to the Hugging Face GPT-2 layout: config.json + model.safetensors.

GPT-2's released checkpoints (and `transformers.GPT2LMHeadModel`) store the attention and MLP
projections as Conv1D, i.e. the transpose of nn.Linear's (out, in) weight; our parameter names
already match theirs (nanoGPT's naming), so the export is a rename-free transpose of four matrices
per block. The LM head is tied to `wte` and is not stored (safetensors refuses shared tensors;
`tie_word_embeddings` rebuilds it). Only GPT-2-shaped models export: pre-LN, dense attention, biases,
tied head. GPT-1's post-LN blocks and GPT-3's banded layers have no GPT2LMHeadModel equivalent.

Usage: python -m pipeline.lm.export --ckpt models/gpt/ckpt.pt --out models/gpt-hf [--tokenizer models/tokenizer]
Then: transformers.GPT2LMHeadModel.from_pretrained("models/gpt-hf")
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from pipeline.core import io
from pipeline.lm.model import GPT
from pipeline.lm.checkpoint import load_checkpoint

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_config(model: GPT, eot_id: int | None = None) -> dict:
    """config.json for GPT2LMHeadModel with this model's shape (activation: GPT-2's tanh GELU, "gelu_new")."""
    c = model.config
    eot = c.vocab_size - 1 if eot_id is None else int(eot_id)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
        "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": True,
        "bos_token_id": eot, "eos_token_id": eot, "use_cache": True,
    }


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names, Conv1D matrices transposed, tied head left out."""
    c = model.config
    if c.ln != "pre" or c.attn != "dense" or not c.bias or not c.tie_weights:
        raise ValueError("only GPT-2-shaped models export (pre-LN, dense attention, biases, tied head); "
                         f"this one has ln={c.ln}, attn={c.attn}, bias={c.bias}, tie_weights={c.tie_weights}")
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = t.detach().float().cpu()
        out[name] = (t.t() if name.endswith(CONV1D) else t).contiguous()
    return out


def export_hf(ckpt_path: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write `<out_dir>/config.json` and `model.safetensors` (plus tokenizer.json when given).

    Args:
        ckpt_path: a train-stage checkpoint (models/gpt/ckpt.pt).
        out_dir: destination folder, replaced as a whole.
        tokenizer_dir: the tokenizer stage's folder; its tokenizer.json is copied beside the weights.

    Returns:
        out_dir as a Path.
    """
    from safetensors.torch import save_file

    model, ckpt = load_checkpoint(ckpt_path)
    out_dir = Path(out_dir)
    build = out_dir.with_name(f".{out_dir.name}.build")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    save_file(hf_state_dict(model), str(build / "model.safetensors"), metadata={"format": "pt"})
    io.write_json(build / "config.json", hf_config(model, ckpt.get("eot_id")))
    if tokenizer_dir is not None:
        shutil.copy(Path(tokenizer_dir) / "tokenizer.json", build / "tokenizer.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    build.rename(out_dir)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="models/gpt/ckpt.pt", help="train-stage checkpoint")
    ap.add_argument("--out", required=True, help="folder for config.json + model.safetensors")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder whose tokenizer.json is copied along")
    args = ap.parse_args()
    print(f"exported to {export_hf(args.ckpt, args.out, args.tokenizer)}")


if __name__ == "__main__":
    main()
