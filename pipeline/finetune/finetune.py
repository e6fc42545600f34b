"""Stage `finetune` driver: zero-shot vs fine-tuned accuracy on one multiple-choice task (GPT-1 table 3 style).

For the task's test split it reports
  zero-shot   the pretrained model scoring each answer's log-likelihood (the evaluate stage's scorer
              and prompt, so the figure is comparable with reports/evaluate.json)
  fine-tuned  one run per lambda in `finetune.lm_weights` (GPT-1: 0.5; 0 = no auxiliary LM loss), each
              from the same pretrained weights and seed, with `transfer_layers` blocks transferred.
A queued grid over `finetune.transfer_layers` draws GPT-1 figure 2 (left): see the README.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pipeline.core import io, params, rng
from pipeline.core.report import StageReport, write_plot
from pipeline.evaluation import evaluate
from pipeline.finetune import data, head, loop, transforms
from pipeline.lm import bpe, checkpoint

WORK = "finetune"


def zero_shot(gpt, tok_dir: str | Path, test, seed: int, batch_size: int) -> dict[str, Any]:
    tok = bpe.load(tok_dir)  # without the task tokens: the prompt the evaluate stage uses
    scorer = evaluate.Scorer(gpt, batch_size=batch_size, progress=False)
    cfg = evaluate.EvalConfig(max_examples=len(test.examples), batch_size=batch_size, num_fewshot=0)
    metrics, _ = evaluate.eval_choice(test, scorer, tok, bpe.eot_id(tok), cfg, seed)
    return {"acc": metrics["acc"], "acc_norm": metrics["acc_norm"], "n": metrics["n"]}


def run(model_path: str | Path, tok_dir: str | Path, task_dir: str | Path, out_dir: str | Path,
        cfg: loop.FinetuneConfig, seed: int, report: StageReport, stop_after: int | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Zero-shot and fine-tuned accuracy; writes `<out_dir>/predictions.jsonl` and plot data."""
    gpt, ckpt = checkpoint.load_checkpoint(model_path)
    train_task, test_task, how = data.load_splits(task_dir, cfg.task, seed, cfg.test_fraction)
    report.docs_in = len(train_task.examples) + len(test_task.examples)
    tok = bpe.load(tok_dir)
    framing = transforms.add_task_tokens(tok)
    block = gpt.config.block_size
    train, test = data.frame_task(train_task, tok, framing, block), data.frame_task(test_task, tok, framing, block)
    pad = bpe.eot_id(tok)
    results: dict[str, Any] = {
        "task": cfg.task, "split": how, "n_train": len(train), "n_test": len(test), "chance_acc": test_task.chance,
        "transfer_layers": gpt.config.n_layer if cfg.transfer_layers < 0 else cfg.transfer_layers,
        "pretrained_layers": gpt.config.n_layer,
        "zero_shot": zero_shot(gpt, tok_dir, test_task, seed, cfg.batch_size),
        "finetuned": {},
    }
    key = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:16] + io.run_fingerprint(
        cfg, seed, inputs=[task_dir, Path(tok_dir) / bpe.TOKENIZER_JSON], code=[loop.__file__, head.__file__])
    work = io.work_dir(WORK, hashlib.sha256(key.encode()).hexdigest()[:12])
    predictions, plots = [], []
    for lm_weight in cfg.lm_weights:
        started = time.perf_counter()
        init_seed = int(rng.uniform(seed, f"lambda/{lm_weight}", "finetune_init") * 2**31)
        model = head.from_pretrained(gpt, len(transforms.SPECIAL_TOKENS), "choice", 2, cfg.transfer_layers,
                                     cfg.dropout, cfg.clf_dropout, init_seed)
        resume = work / f"lambda_{lm_weight}.pt"
        log = loop.fit(model, train, cfg, lm_weight, init_seed, pad, resume, key, stop_after, progress)
        rows = loop.predict(model, test, pad)
        acc = sum(r["pred"] == r["gold"] for r in rows) / max(1, len(rows))
        results["finetuned"][f"lambda={lm_weight}"] = {
            "lm_weight": lm_weight, "acc": round(acc, 4), "steps": len(log),
            "final_task_loss": log[-1]["task_loss"] if log else None, "wall_s": round(time.perf_counter() - started, 1)}
        predictions += [{"lm_weight": lm_weight, **r} for r in rows]
        write_plot("finetune", f"loss_lambda_{lm_weight}", [{"step": r["step"], "task_loss": r["task_loss"]} for r in log])
        plots.append({"setting": f"fine-tuned, lambda {lm_weight}", "acc": round(acc, 4)})
    plots.insert(0, {"setting": "zero-shot", "acc": results["zero_shot"]["acc"]})
    write_plot("finetune", "accuracy", plots)
    out_dir = Path(out_dir)
    with io.atomic_path(out_dir / "predictions.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in predictions))
    for resume in work.glob("lambda_*.pt"):  # finished: nothing left to resume
        resume.unlink()
    report.docs_out = len(test)
    report.extra.update(results, params=params.as_dict(cfg), checkpoint_iter=ckpt.get("iter"))
    return results
