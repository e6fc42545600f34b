"""Export a trained checkpoint to the Hugging Face GPT-2 layout: config.json + model.safetensors.

GPT-2's released checkpoints (and `transformers.GPT2LMHeadModel`) store the attention and MLP
projections as Conv1D, i.e. the transpose of nn.Linear's (out, in) weight; our parameter names
already match theirs (nanoGPT's naming), so the export is a rename-free transpose of four matrices
per block. The LM head is tied to `wte` and is not stored (safetensors refuses shared tensors;
`tie_word_embeddings` rebuilds it). Only GPT-2-shaped models export: pre-LN, dense attention, biases,
tied head. GPT-1's post-LN blocks and GPT-3's banded layers have no GPT2LMHeadModel equivalent.
With a tokenizer folder, tokenizer.json is copied along with a tokenizer_config.json naming
GPT2TokenizerFast and "<|endoftext|>" as bos/eos/unk (as GPT-2's own), so AutoTokenizer loads it offline.

Usage: python -m pipeline.lm.export --ckpt models/gpt/ckpt.pt --out models/gpt-hf [--tokenizer models/tokenizer]
Then: transformers.GPT2LMHeadModel.from_pretrained("models/gpt-hf"), AutoTokenizer.from_pretrained(...)
The `export` stage (stages/export.py) calls `run`, which also checks the export in transformers.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.core import io
from pipeline.lm.model import GPT
from pipeline.lm.checkpoint import load_checkpoint

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EOT = "<|endoftext|>"  # pipeline.lm.bpe.EOT; not imported so that export does not depend on tokenizers
CHECK_TEXT = "The quick brown fox jumps over the lazy dog.\n\nIt said: \"Don't stop!\" 1,024 times.<|endoftext|>"


def export_problem(model: GPT) -> str | None:
    """Why this model cannot be a GPT2LMHeadModel, or None when it can."""
    c = model.config
    if c.ln != "pre" or c.attn != "dense" or not c.bias or not c.tie_weights:
        return ("only GPT-2-shaped models export (pre-LN, dense attention, biases, tied head); "
                f"this one has ln={c.ln}, attn={c.attn}, bias={c.bias}, tie_weights={c.tie_weights}")
    return None


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
    problem = export_problem(model)
    if problem:
        raise ValueError(problem)
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = t.detach().float().cpu()
        if name == "transformer.wte.weight":
            t = t[:model.config.vocab_size]  # the model pads its vocabulary (model.padded_vocab); HF gets the real rows
        out[name] = (t.t() if name.endswith(CONV1D) else t).contiguous()
    return out


def hf_tokenizer_config(block_size: int) -> dict:
    """tokenizer_config.json: GPT-2's tokenizer class and special tokens over our tokenizer.json.

    Our tokenizer.json has no post-processor and no prefix space, like GPT-2's, so
    AutoTokenizer's ids equal pipeline.lm.bpe's (tests/test_export.py checks it)."""
    return {"tokenizer_class": "GPT2TokenizerFast", "bos_token": EOT, "eos_token": EOT, "unk_token": EOT,
            "add_prefix_space": False, "add_bos_token": False, "model_max_length": block_size,
            "clean_up_tokenization_spaces": False}


def export_hf(ckpt_path: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write `<out_dir>/config.json` and `model.safetensors` (plus tokenizer.json when given).

    Args:
        ckpt_path: a train-stage checkpoint (models/gpt/ckpt.pt).
        out_dir: destination folder, replaced as a whole.
        tokenizer_dir: the tokenizer stage's folder; its tokenizer.json is copied beside the weights,
            with tokenizer_config.json and special_tokens_map.json for AutoTokenizer.

    Returns:
        out_dir as a Path.
    """
    from safetensors.torch import save

    model, ckpt = load_checkpoint(ckpt_path)
    out_dir = Path(out_dir)
    build = io.staging_dir("export")  # published whole: a kill leaves the old export, the new one or none
    with io.atomic_path(build / "model.safetensors") as tmp:  # bytes, not save_file: that one writes mode 0600
        tmp.write_bytes(save(hf_state_dict(model), metadata={"format": "pt"}))
    io.write_json(build / "config.json", hf_config(model, ckpt.get("eot_id")))
    if tokenizer_dir is not None:
        shutil.copy(Path(tokenizer_dir) / "tokenizer.json", build / "tokenizer.json")
        tok_config = hf_tokenizer_config(model.config.block_size)
        io.write_json(build / "tokenizer_config.json", tok_config)
        io.write_json(build / "special_tokens_map.json",  # older transformers read special tokens here
                      {k: tok_config[k] for k in ("bos_token", "eos_token", "unk_token")})
    io.publish(build, out_dir, move=True)
    return out_dir


def check_hf(out_dir: str | Path, model: GPT) -> dict[str, Any]:
    """Load the export in transformers (offline) and compare it with `model`.

    Returns max_abs_logit_diff over one block of token ids (EOT, then ids cycling through the
    vocabulary) and, when a tokenizer was exported, whether AutoTokenizer's ids on CHECK_TEXT equal
    tokenizers' own. Without transformers: {"skipped": reason}.
    """
    try:
        import transformers
    except ImportError:
        return {"skipped": "transformers is not installed"}
    out_dir = Path(out_dir)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out_dir), local_files_only=True).eval()
    c = model.config
    eot = hf.config.eos_token_id
    idx = torch.tensor([[eot] + [(7 * i + 1) % c.vocab_size for i in range(c.block_size - 1)]])
    with torch.no_grad():
        diff = (hf(idx).logits.float() - model(idx)[0].float()).abs().max().item()
    check: dict[str, Any] = {"max_abs_logit_diff": diff, "tokens": int(idx.numel()),
                             "transformers": transformers.__version__}
    if (out_dir / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        theirs = transformers.AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)
        ours = Tokenizer.from_file(str(out_dir / "tokenizer.json")).encode(CHECK_TEXT).ids
        check.update(tokenizer_class=type(theirs).__name__, tokenizer_ids_equal=theirs(CHECK_TEXT)["input_ids"] == ours,
                     tokenizer_eos_id=theirs.eos_token_id)
    return check


def run(ckpt_path: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
        report: Any = None, atol: float = 1e-4) -> dict[str, Any]:
    """The export stage: export, then check the export in transformers; fills `report.extra`.

    A model that is not GPT-2-shaped (GPT-1 post-LN, GPT-3 banded) is not an error of the run: the
    out folder then holds NOT_EXPORTED.txt with the reason, and the report says exported: false.
    A check that fails (logits differ by more than `atol`, or tokenizer ids differ) raises.

    Returns:
        {"exported", "reason" | ("files", "check"), "params", "model"}.
    """
    model, ckpt = load_checkpoint(ckpt_path)
    out_dir = Path(out_dir)
    res: dict[str, Any] = {"params": model.num_params(), "iter": ckpt.get("iter"),
                           "model": {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd",
                                                                           "block_size", "vocab_size", "ln", "attn")}}
    problem = export_problem(model)
    if problem:
        build = io.staging_dir("export")
        (build / "NOT_EXPORTED.txt").write_text(f"Not exported: {problem}\n", encoding="utf-8")
        io.publish(build, out_dir, move=True)
        res.update(exported=False, reason=problem)
    else:
        export_hf(ckpt_path, out_dir, tokenizer_dir)
        res.update(exported=True, files={p.name: p.stat().st_size for p in sorted(out_dir.iterdir())},
                   check=check_hf(out_dir, model))
        check = res["check"]
        if "max_abs_logit_diff" in check and not check["max_abs_logit_diff"] <= atol:
            raise RuntimeError(f"exported logits differ from ours by {check['max_abs_logit_diff']:.3g} > {atol}")
        if check.get("tokenizer_ids_equal") is False:
            raise RuntimeError("AutoTokenizer's ids differ from our tokenizer's on the check text")
    if report is not None:
        report.bytes_in = Path(ckpt_path).stat().st_size
        report.bytes_out = sum(res.get("files", {}).values())
        report.extra.update(res)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="models/gpt/ckpt.pt", help="train-stage checkpoint")
    ap.add_argument("--out", required=True, help="folder for config.json + model.safetensors")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder whose tokenizer.json is copied along")
    args = ap.parse_args()
    print(f"exported to {export_hf(args.ckpt, args.out, args.tokenizer)}")


if __name__ == "__main__":
    main()
