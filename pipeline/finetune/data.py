"""Fine-tuning data: a multiple-choice task's train/test split, GPT-1-framed and batched.

Splits: a folder with `train.jsonl` (the sample's planted task) trains on it and tests on the task's
usual file (`valid.jsonl` for PIQA); PIQA as published in ../shared/data has only its labelled
validation split, so then a keyed draw per item, `rng.uniform(seed, "<task>/<index>", "finetune_split")`,
holds out `test_fraction` of it for testing (independent of file order and of every other param).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core import rng
from pipeline.evaluation import tasks
from pipeline.finetune import transforms


@dataclass
class Item:
    """One framed example: its token sequences (one per answer) and the right answer."""

    index: int
    sequences: list[list[int]]
    label: int


def load_splits(task_dir: str | Path, name: str, seed: int, test_fraction: float) -> tuple[tasks.Task, tasks.Task, str]:
    """(train task, test task, how they were split) from `task_dir`."""
    task_dir = Path(task_dir)
    full = tasks.load_task(name, task_dir)
    if full is None:
        raise FileNotFoundError(f"no {name} file ({', '.join(tasks.FILES[name])}) in {task_dir}")
    if full.kind != "choice":
        raise ValueError(f"task {name} is not multiple choice; fine-tuning reads choice tasks")
    train_file = task_dir / "train.jsonl"
    if train_file.is_file():
        return tasks.LOADERS[name](train_file), full, "train.jsonl / " + full.path

    def held_out(ex: tasks.Example) -> bool:
        return rng.uniform(seed, f"{name}/{ex.index}", "finetune_split") < test_fraction

    train = tasks.Task(name, full.kind, [e for e in full.examples if not held_out(e)], full.path, full.chance)
    test = tasks.Task(name, full.kind, [e for e in full.examples if held_out(e)], full.path, full.chance)
    return train, test, f"keyed draw: {test_fraction:.0%} of {full.path} held out"


def frame_task(task: tasks.Task, tok, fr: transforms.Framing, block_size: int) -> list[Item]:
    """Every example as GPT-1 multiple-choice sequences: [start] context [delim] answer [extract]."""
    items = []
    for ex in task.examples:
        context = tok.encode(ex.context).ids
        answers = [tok.encode(c).ids for c in ex.choices]
        items.append(Item(ex.index, transforms.choice(context, answers, fr, block_size), ex.gold))
    return items


def collate(items: list[Item], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(idx (B, S, T) right-padded with `pad`, lengths (B, S), labels (B,)); T = the longest sequence."""
    S = len(items[0].sequences)
    if any(len(it.sequences) != S for it in items):
        raise ValueError("items of one batch must have the same number of answers")
    T = max(len(s) for it in items for s in it.sequences)
    idx = torch.full((len(items), S, T), pad, dtype=torch.long)
    lengths = torch.zeros((len(items), S), dtype=torch.long)
    for b, it in enumerate(items):
        for s, seq in enumerate(it.sequences):
            idx[b, s, :len(seq)] = torch.tensor(seq)
            lengths[b, s] = len(seq)
    return idx, lengths, torch.tensor([it.label for it in items])
