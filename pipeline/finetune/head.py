"""The pretrained GPT with GPT-1's task head: grown embedding, extract-token state, linear classifier.

GPT-1 sec. 3.2: the final transformer state h_l at the extract token goes through a linear layer
W_y; the only new parameters are W_y and the embeddings of the task tokens. The fine-tuning loss is
L3 = L2 (task) + lambda * L1 (language modelling on the same sequences), which "improves
generalization of the supervised model and accelerates convergence".

How the heads read the sequences (`transforms.py` builds them), as in openai/finetune-transformer-lm:
  choice          one logit per answer sequence (W_y: n_embd -> 1), softmax across the answers
  similarity      the two orders' extract states added, then W_y: n_embd -> classes
  classification, entailment   W_y on the single sequence's extract state

Transferred layers (GPT-1 figure 2, left): the embeddings always come from pretraining; of the
blocks, the first `transfer_layers` do and the rest keep a fresh seeded initialisation.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.lm.model import GPT


class TaskModel(nn.Module):
    """forward(idx (B, S, T), lengths (B, S), lm_weight) -> (task logits, task-independent LM loss or None)."""

    def __init__(self, gpt: GPT, kind: str, n_classes: int, clf_dropout: float):
        super().__init__()
        self.gpt, self.kind = gpt, kind
        self.clf_drop = nn.Dropout(clf_dropout)
        self.head = nn.Linear(gpt.config.n_embd, 1 if kind == "choice" else n_classes)
        nn.init.normal_(self.head.weight, std=0.02)  # GPT-1's clf init
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor, with_lm: bool = True):
        B, S, T = idx.shape
        flat = idx.reshape(B * S, T)
        h = self.gpt.features(flat)
        extract = h[torch.arange(B * S, device=idx.device), lengths.reshape(-1) - 1]
        extract = self.clf_drop(extract)
        if self.kind == "choice":
            logits = self.head(extract).view(B, S)
        elif self.kind == "similarity":
            logits = self.head(extract.view(B, S, -1).sum(1))
        else:
            logits = self.head(extract.view(B, -1))
        lm = None
        if with_lm:
            # L1 on the task sequences: every real position predicts the next one (padding is -1).
            targets = flat[:, 1:].clone()
            targets[torch.arange(T - 1, device=idx.device)[None, :] >= lengths.reshape(-1, 1) - 1] = -1
            vocab = self.gpt.config.vocab_size
            lm_logits = self.gpt.lm_head(h[:, :-1])[..., :vocab]
            lm = F.cross_entropy(lm_logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-1)
        return logits, lm


def from_pretrained(gpt: GPT, n_new_tokens: int, kind: str, n_classes: int, transfer_layers: int,
                    dropout: float, clf_dropout: float, seed: int) -> TaskModel:
    """A TaskModel whose GPT is `gpt` with `n_new_tokens` more embedding rows (the task tokens).

    Args:
        gpt: the pretrained model (not modified).
        n_new_tokens: rows appended to the token embedding (ids base_vocab..), N(0, 0.02) like pretraining's init.
        kind, n_classes: the task head (transforms.KINDS).
        transfer_layers: blocks copied from `gpt`, from the bottom; -1 = all.
        dropout: residual / embedding / attention dropout while fine-tuning (GPT-1: 0.1).
        clf_dropout: dropout on the extract state before the head (GPT-1: 0.1).
        seed: seeds every fresh weight (new rows, untransferred blocks, the head).
    """
    old = gpt.config
    n_layer = old.n_layer if transfer_layers < 0 else transfer_layers
    if not 0 <= n_layer <= old.n_layer:
        raise ValueError(f"transfer_layers {transfer_layers} outside 0..{old.n_layer} (or -1 for all)")
    torch.manual_seed(seed)
    grown = GPT(dataclasses.replace(old, vocab_size=old.vocab_size + n_new_tokens, dropout=dropout))
    source = gpt.state_dict()
    with torch.no_grad():
        for name, param in grown.state_dict().items():
            if name.startswith("transformer.h.") and int(name.split(".")[2]) >= n_layer:
                continue  # an untransferred block keeps its fresh init
            if name in ("transformer.wte.weight", "lm_head.weight"):
                param[:old.vocab_size] = source[name][:old.vocab_size]  # rows past the old vocab stay fresh
            elif name in source:
                param.copy_(source[name])
    model = TaskModel(grown, kind, n_classes, clf_dropout)
    return model
