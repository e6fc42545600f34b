"""GPT checkpoints: atomic, byte-identical save; load; the RNG states and resume lookup of exact resume.

A checkpoint (models/gpt/ckpt.pt) holds model_args, the state dict, the optimizer, iter, the params
used and the tokenizer's sha256 (STYLE.md: every artifact carries its provenance), like nanoGPT's.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
import random
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core import io
from pipeline.lm.model import GPT, GPTConfig

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, model: GPT, optimizer: torch.optim.Optimizer | None, step: int,
                    extra: dict[str, Any] | None = None, states: tuple[dict, dict | None] | None = None) -> None:
    """Write a checkpoint atomically (temp file, then rename).

    Keys: model_args (GPTConfig as a dict), model (state dict), optimizer (state dict or None),
    iter (the step count), params (the params.yaml values used), tokenizer_sha256, plus `extra`.

    Args:
        path: destination, e.g. models/gpt/ckpt.pt.
        model: the GPT (unwrapped: pass `ddp_model.module`).
        optimizer: its optimizer, kept so training can resume; None to save weights only.
        step: optimisation steps done.
        extra: more keys; `params` and `tokenizer_sha256` here land at the top level.
        states: (model, optimizer) state dicts already gathered whole (an FSDP run: distributed.full_states),
            written in place of the model's and optimizer's own, which hold only this rank's shards.
    """
    extra = dict(extra or {})
    model_sd, optim_sd = states if states is not None else (
        model.state_dict(), optimizer.state_dict() if optimizer is not None else None)
    ckpt = {
        "model_args": dataclasses.asdict(model.config),
        "model": model_sd,
        "optimizer": optim_sd,
        "iter": int(step),
        "params": extra.pop("params", {}),
        "tokenizer_sha256": extra.pop("tokenizer_sha256", None),
    }
    clash = set(extra) & set(ckpt)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite checkpoint fields")
    ckpt.update(extra)
    with io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # A file object, not a path: torch.save names the zip's root folder after a path's stem,
        # which would put the random temp name into the bytes (checkpoints must be byte-identical).
        torch.save(ckpt, fh, pickle_module=_memoless_pickle)


class _MemolessPickler(pickle.Pickler):
    """pickle without its memo: the bytes then depend on values only, not on which Python objects
    happen to be shared (a resumed run's optimizer holds loaded floats where a fresh run shares
    one object), so a resumed run's checkpoint is byte-identical to an uninterrupted one's.
    Tensor storages are shared through torch's persistent ids, not the memo, so tying survives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = True  # no memo; safe because checkpoints hold no self-referencing containers


_memoless_pickle = types.SimpleNamespace(Pickler=_MemolessPickler, __name__="pickle")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GPT, dict[str, Any]]:
    """Rebuild the GPT of a checkpoint, in eval mode. Returns (model, checkpoint dict)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
    rows = model.transformer.wte.weight.shape[0]
    for key in ("transformer.wte.weight", "lm_head.weight"):  # a checkpoint from before vocabulary padding
        if key in state and state[key].shape[0] < rows:
            pad = state[key].new_zeros(rows - state[key].shape[0], state[key].shape[1])
            state[key] = torch.cat([state[key], pad])
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, ckpt


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random state a step can touch: the sampler's generator, torch, numpy, python (and CUDA)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "sampler": gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"bit_generator": np_state["bit_generator"], "pos": int(np_state["state"]["pos"]),
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    """Restore what `rng_state` saved."""
    gen.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def find_resume(candidates: list[Path], fingerprint: str) -> dict[str, Any] | None:
    """The most advanced checkpoint among `candidates` whose run fingerprint matches, else None."""
    best = None
    for path in candidates:
        if not path.is_file():
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated file from a kill mid-write: ignore it, start over
            log.error("Cannot read checkpoint %s (%s); not resuming from it.", path, exc)
            continue
        state = ckpt.get("train_state") or {}
        if state.get("fingerprint") == fingerprint and (best is None or ckpt["iter"] > best["iter"]):
            best = ckpt
    return best
