"""Zero-, one- and few-shot curves (GPT-3 sec. 3, figures 1.2 and 3.x): accuracy against k shots.

For each multiple-choice or cloze task found in the eval folder (LAMBADA, HellaSwag, PIQA; WikiText is
perplexity and has no shots) and each k in `fewshot.ks`, the evaluate stage's own scorer and prompt
score the first `max_examples` items with k solved examples of the same task in front (GPT-3's format:
"context answer" blocks separated by a blank line; the k items are drawn per scored item, keyed on
(seed, task, item), never the item itself: `evaluate.fewshot_prefix`). The model's context is short
(block_size tokens, left-truncated), so the report also says how many scored requests lost prompt
tokens at each k: past that point extra shots cannot help, whatever the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation import evaluate, tasks

CURVE_TASKS = (tasks.LAMBADA, tasks.HELLASWAG, tasks.PIQA)
PROMPT_FORMAT = "k x (context + gold answer + blank line), then the scored context; evaluate.fewshot_prefix"


@dataclass(frozen=True)
class FewshotConfig:
    """params.yaml `fewshot`."""

    ks: tuple[int, ...] = (0, 1, 2, 4, 8)  # GPT-3: 0, 1 and few (K up to the context); the curve's points
    max_examples: int = 40  # per task and k
    batch_size: int = 16


def truncated(task: tasks.Task, tok, eot: int, k: int, seed: int, block_size: int, n: int) -> int:
    """How many of the first n items' scored requests are longer than the context (lose prompt tokens)."""
    count = 0
    for ex in task.examples[:n]:
        ctx = len(tok.encode(evaluate.fewshot_prefix(task, ex, k, seed) + ex.context).ids) + 1  # + end-of-text
        if any(ctx + len(tok.encode(c).ids) - 1 > block_size for c in ex.choices):
            count += 1
    return count


def curve(model, tok, eval_dir: str | Path, cfg: FewshotConfig, seed: int, eot: int,
          progress: bool = True) -> dict[str, Any]:
    """{task: {k: metrics}} plus the protocol; metrics are evaluate.eval_choice's (acc, acc_norm, chance)."""
    scorer = evaluate.Scorer(model, cfg.batch_size, progress=progress)
    found = tasks.load_all(eval_dir, CURVE_TASKS)
    result: dict[str, Any] = {"tasks": {}, "protocol": {
        "ks": list(cfg.ks), "max_examples": cfg.max_examples, "seed": seed, "format": PROMPT_FORMAT,
        "selection": "k other items of the same file, drawn per scored item keyed on (seed, task, index)",
        "block_size": scorer.block_size, "truncation": "left"}}
    for name, task in found.items():
        per_k = {}
        for k in cfg.ks:
            ecfg = evaluate.EvalConfig(max_examples=cfg.max_examples, batch_size=cfg.batch_size, num_fewshot=k)
            metrics, _ = evaluate.eval_choice(task, scorer, tok, eot, ecfg, seed)
            n = metrics["n"]
            metrics["truncated_prompts"] = truncated(task, tok, eot, k, seed, scorer.block_size, n)
            per_k[str(k)] = metrics
        result["tasks"][name] = per_k
    return result


def plot_rows(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per task: rows (k, acc, chance) for a line plot of accuracy against shots."""
    return {name: [{"k": int(k), "acc": m["acc"], "chance_acc": m["chance_acc"]} for k, m in per_k.items()]
            for name, per_k in result["tasks"].items()}
