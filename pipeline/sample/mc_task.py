"""A planted multiple-choice task for GPT-1 fine-tuning on the sample, in PIQA's file format.

PIQA itself (real, in ../shared/data) needs physical common sense that a 2-layer model trained for
minutes cannot have, so zero-shot and fine-tuned scores there sit near chance. The sample gets a task
with a rule a small model can learn from labelled examples but not from pretraining alone, so the
fine-tuning stage has an effect to show:

  goal:  "How do I clean the lantern?"
  sol1:  "Take the lantern to the kitchen and clean it quickly."    <- a "careless" manner
  sol2:  "Take the lantern to the kitchen and clean it gently."     <- a "careful" manner: right

The sample's adverbs (all frequent in its pretraining text) are split once into careful and careless
ones; the two answers differ in that adverb alone, so nothing but the labels teaches which is right
(zero-shot sits near chance, fine-tuning should not).
Files
(train.jsonl, train-labels.lst, valid.jsonl, valid-labels.lst) read with the PIQA loader unchanged.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from pipeline.sample.textgen import NOUNS, VERBS

# A fixed split of textgen.ADVERBS (which the sample's prose uses) into the right and the wrong manner.
CAREFUL = ["slowly", "quietly", "carefully", "gently", "calmly", "softly", "firmly", "clearly"]
CARELESS = ["quickly", "suddenly", "loudly", "barely", "briefly", "sadly", "happily", "openly"]
PLACES = ["kitchen", "garden", "station", "market", "harbor", "library", "office", "cellar", "yard", "shed"]
TEMPLATES = [
    "Take the {obj} to the {place} and {verb} it {adv}.",
    "Put the {obj} on a table, then {verb} it {adv}.",
    "Carry the {obj} to the {place}; {verb} it there {adv}.",
    "Hold the {obj} and {verb} it {adv}.",
]


def item(rng: random.Random) -> tuple[dict, int]:
    """One (goal, sol1, sol2) record and the index of the right solution."""
    obj = rng.choice(sorted(set(NOUNS)))
    verb = rng.choice(VERBS)[0]
    template = rng.choice(TEMPLATES)
    fill = dict(obj=obj, place=rng.choice(PLACES), verb=verb)
    right = template.format(adv=rng.choice(CAREFUL), **fill)
    wrong = template.format(adv=rng.choice(CARELESS), **fill)
    gold = rng.randrange(2)
    sols = [right, wrong] if gold == 0 else [wrong, right]
    return {"goal": f"How do I {verb} the {obj}?", "sol1": sols[0], "sol2": sols[1]}, gold


def write(folder: Path, seed: int, n_train: int, n_valid: int) -> dict:
    """Write the train and valid splits into `folder`; returns their counts for the sample report."""
    rng = random.Random(f"{seed}:finetune")  # its own stream: the rest of the sample does not move
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        items = [item(rng) for _ in range(n)]
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(rec) + "\n" for rec, _ in items)
        (folder / f"{split}-labels.lst").write_text("".join(f"{g}\n" for _, g in items), encoding="utf-8")
    return {"finetune_train": n_train, "finetune_valid": n_valid}
