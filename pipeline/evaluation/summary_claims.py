"""Section (f) of the run summary: each paper claim the claim stages test, beside what this run measured.

Reads only the stages' JSON reports (finetune, fewshot, ln_stability, sparse_vs_dense, scaling); a stage
that did not run gives a "not run" row, never an error. One row per claim: the claim as the paper states
it, our figure, and whether it held at this scale (the stages' own verdicts; "not testable here" where the
report says the setup cannot show it).
"""
from __future__ import annotations

from html import escape
from typing import Any, Callable

from pipeline.evaluation.summary_html import NOT_RUN, _table, num

CLAIM_STAGES = ("finetune", "fewshot", "ln_stability", "sparse_vs_dense", "scaling")


def _finetune(rep: dict) -> dict[str, str]:
    runs = rep.get("finetuned", {})
    ours = f"{rep.get('task')}: zero-shot {num(rep.get('zero_shot', {}).get('acc'))}; " + ", ".join(
        f"fine-tuned {k} {num(v.get('acc'))}" for k, v in runs.items()) + f" (chance {num(rep.get('chance_acc'))})"
    accs = [v.get("acc") for v in runs.values() if v.get("acc") is not None]
    zero = rep.get("zero_shot", {}).get("acc")
    held = accs and zero is not None and max(accs) > zero + 0.05
    return {"paper": "GPT-1: fine-tuning the pretrained model beats its zero-shot use; the auxiliary LM loss "
                     "(lambda 0.5) helps", "ours": ours,
            "verdict": "fine-tuning beat zero-shot" if held else "no gain over zero-shot at this scale"}


def _fewshot(rep: dict) -> dict[str, str]:
    parts, rising = [], []
    for task, per_k in rep.get("tasks", {}).items():
        ks = sorted(per_k, key=int)
        parts.append(f"{task} " + " / ".join(num(per_k[k].get("acc")) for k in ks) + f" at k={','.join(ks)}")
        rising.append(per_k[ks[-1]].get("acc", 0) > per_k[ks[0]].get("acc", 0))
    return {"paper": "GPT-3: accuracy rises with the number of in-context examples k", "ours": "; ".join(parts),
            "verdict": "rose with k" if rising and all(rising) else "did not rise with k (context too short)"}


def _ln_stability(rep: dict) -> dict[str, str]:
    ours = (f"{rep['ln']}-LN, {rep['n_layer']} layers, lr {num(rep['lr'])}, warm-up {rep['warmup_steps']}: "
            f"{rep['reason']}, final loss {num(rep['final_loss'])} (from {num(rep['initial_loss'])})")
    return {"paper": "GPT-2: with LayerNorm at the sub-block inputs (pre-LN) deep models train without the warm-up "
                     "or small learning rate post-LN needs", "ours": ours,
            "verdict": ("diverged" if rep["diverged"] else "trained") + " (one grid cell; the grid: README)"}


def _sparse_vs_dense(rep: dict) -> dict[str, str]:
    ratio = rep["sparse_over_dense"]
    ours = (f"banded/dense tokens/s {num(ratio['tokens_per_s'])}x, attention FLOPs {num(ratio['attention_flops'])}x, "
            f"val loss {num(ratio['val_loss_delta'])} nats vs dense")
    faster = ratio["tokens_per_s"] >= 1.2
    return {"paper": "GPT-3 write-ups: alternating banded layers ~1.5x faster, perplexity a little worse",
            "ours": ours, "verdict": "faster" if faster else "no speed-up here (masked dense kernel on CPU)"}


def _scaling(rep: dict) -> dict[str, str]:
    lo, hi = rep["interval_95"]
    ours = (f"predicted {num(rep['predicted'])} (95% {num(lo)}-{num(hi)}) before training the largest; "
            f"measured {num(rep['measured'])}")
    return {"paper": "GPT-4: the final loss of a large run is predictable from runs with far less compute",
            "ours": ours, "verdict": "held: inside the 95% interval" if rep["inside"] else "missed the 95% interval"}


READERS: dict[str, Callable[[dict], dict[str, str]]] = {
    "finetune": _finetune, "fewshot": _fewshot, "ln_stability": _ln_stability,
    "sparse_vs_dense": _sparse_vs_dense, "scaling": _scaling}


def rows(reports: dict[str, dict]) -> list[dict[str, Any]]:
    out = []
    for stage in CLAIM_STAGES:
        rep = reports.get(stage)
        if rep is None:
            out.append({"stage": stage, "run": False, "paper": "", "ours": NOT_RUN, "verdict": ""})
            continue
        try:
            row = READERS[stage](rep)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a report of another shape: say so
            row = {"paper": "", "ours": f"unreadable report ({type(exc).__name__})", "verdict": ""}
        out.append({"stage": stage, "run": True, **row})
    return out


def markdown(claim_rows: list[dict[str, Any]]) -> list[str]:
    out = ["## (f) The papers' claims at this scale", "", "| stage | claim | ours | verdict |", "|---|---|---|---|"]
    out += [f"| {r['stage']} | {r['paper']} | {r['ours']} | {r['verdict']} |" for r in claim_rows]
    return out + [""]


def html(claim_rows: list[dict[str, Any]]) -> str:
    return _table(["stage", "claim", "ours", "verdict"],
                  [[escape(r["stage"]), escape(r["paper"]), escape(r["ours"]), escape(r["verdict"])] for r in claim_rows])
