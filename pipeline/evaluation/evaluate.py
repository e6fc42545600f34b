"""Zero/few-shot evaluation of a trained GPT, lm-eval-harness style (GPT-2 sec. 3, GPT-3 sec. 3).

Every metric reduces to one primitive: the log-likelihood of a continuation given a context,
with contexts longer than the model's block_size left-truncated (lm-eval `loglikelihood`).
- Validation perplexity on the held-out token shards (non-overlapping block_size windows).
- LAMBADA: a hit when every target token is the argmax (greedy), plus perplexity of the target.
- WikiText: rolling log-likelihood over whole articles (lm-eval `loglikelihood_rolling`), reported
  per token, per word of the original text (GPT-2's word-level perplexity) and in bits per byte.
- HellaSwag / PIQA: the choice with the highest summed log-likelihood (acc) or per character
  of the choice (acc_norm, lm-eval's length normalisation).
k-shot (GPT-3): k solved examples of the same task, drawn per item with a seeded keyed rng,
joined by blank lines before the context. Chance rates are reported beside every accuracy.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core import io, rng
from pipeline.evaluation import tasks

log = logging.getLogger(__name__)

# Published figures, with their protocol, to read ours against (117M = GPT-2 small).
REFERENCES = {
    "gpt2_117m_lambada": {
        "paper": {"acc": 45.99, "ppl": 35.13,
                  "protocol": "GPT-2 paper table 3: zero-shot, OpenAI's detokenised LAMBADA test"},
        "lm_eval_harness": {"acc": 32.56, "ppl": 40.06,
                            "protocol": "lm-eval-harness lambada_openai: greedy, every target token argmax, "
                                        "no stop-word filter"},
    },
}


@dataclass(frozen=True)
class EvalConfig:
    """params.yaml `eval`."""

    max_examples: int = 100  # per task: the first N items of each file (deterministic)
    batch_size: int = 16
    num_fewshot: int = 0  # GPT-3 reports zero-, one- and few-shot


class Scorer:
    """Log-likelihoods of (context tokens, continuation tokens) requests under a causal LM.

    The model is any module with forward(idx) -> (logits (B, T, V), loss) and a block_size
    (`model.config.block_size`, or given).
    """

    def __init__(self, model: torch.nn.Module, batch_size: int = 16, block_size: int | None = None,
                 progress: bool = True):
        self.model = model.eval()
        self.batch_size = batch_size
        self.block_size = block_size or model.config.block_size
        self.progress = progress

    @torch.inference_mode()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.model(idx)
        logits = out[0] if isinstance(out, tuple) else out
        if logits.shape[1] != idx.shape[1]:
            raise ValueError(f"model returned logits for {logits.shape[1]} of {idx.shape[1]} positions; "
                             "scoring needs every position")
        return logits

    def score(self, requests: Sequence[tuple[list[int], list[int]]], desc: str = "score") -> list[tuple[np.ndarray, bool]]:
        """For each request: (log-prob of each continuation token, whether every one was the argmax).

        The context must be non-empty (callers prefix end-of-text when there is none). Inputs longer
        than block_size keep their last block_size tokens; a continuation longer than that keeps
        its last block_size tokens too.
        """
        prepared = []
        for ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("every request needs a non-empty context and continuation")
            cont = cont[-self.block_size:]
            full = (ctx + cont)[-(self.block_size + 1):]
            prepared.append((full[:-1], full[1:], len(cont)))
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][0]))  # similar lengths batch together
        results: list[Any] = [None] * len(prepared)
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
            width = len(prepared[batch[0]][0])
            idx = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                inp = prepared[i][0]
                idx[row, : len(inp)] = torch.tensor(inp)  # right padding: causal attention never sees it
            logprobs = F.log_softmax(self.logits(idx).float(), dim=-1)
            for row, i in enumerate(batch):
                inp, tgt, n = prepared[i]
                pos = torch.arange(len(inp) - n, len(inp))
                target = torch.tensor(tgt[-n:])
                lp = logprobs[row, pos]
                token_lp = lp.gather(1, target[:, None])[:, 0].numpy().astype(np.float64)
                results[i] = (token_lp, bool((lp.argmax(-1) == target).all()))
        return results

    def rolling(self, tokens: list[int], desc: str = "rolling") -> np.ndarray:
        """Log-prob of tokens[1:], each predicted with as much preceding context as fits (lm-eval rolling)."""
        requests, n = [], len(tokens) - 1
        for start in range(0, n, self.block_size):
            end = min(start + self.block_size, n)  # this window predicts tokens[start+1 : end+1]
            requests.append((tokens[max(0, end - self.block_size): start + 1], tokens[start + 1: end + 1]))
        return np.concatenate([lp for lp, _ in self.score(requests, desc)]) if requests else np.zeros(0)

    @torch.no_grad()
    def generate(self, tokens: list[int], max_new: int = 40) -> list[int]:
        """Greedy continuation."""
        out = list(tokens)
        for _ in range(max_new):
            idx = torch.tensor([out[-self.block_size:]], dtype=torch.long)
            out.append(int(self.logits(idx)[0, -1].argmax()))
        return out[len(tokens):]


# --- prompts ----------------------------------------------------------------------------------------
def fewshot_prefix(task: tasks.Task, ex: tasks.Example, k: int, seed: int) -> str:
    """GPT-3 k-shot prefix: k other solved items of the task, chosen by a draw keyed on the item."""
    if k <= 0:
        return ""
    pool = [e for e in task.examples if e.index != ex.index]
    gen = np.random.default_rng(int(rng.uniform(seed, f"{task.name}/{ex.index}", "fewshot") * 2**53))
    shots = [pool[i] for i in sorted(gen.choice(len(pool), size=min(k, len(pool)), replace=False))]
    return "".join(s.context + s.choices[s.gold] + "\n\n" for s in shots)


def _encode(tok, text: str) -> list[int]:
    return tok.encode(text).ids if text else []


# --- tasks ------------------------------------------------------------------------------------------
def eval_choice(task: tasks.Task, scorer: Scorer, tok, eot: int, cfg: EvalConfig, seed: int) -> tuple[dict, list]:
    """Multiple choice (HellaSwag, PIQA) and LAMBADA (one choice; hit = greedy match)."""
    examples = task.examples[: cfg.max_examples]
    requests, owners = [], []
    for ex in examples:
        ctx = [eot] + _encode(tok, fewshot_prefix(task, ex, cfg.num_fewshot, seed) + ex.context)
        for c, choice in enumerate(ex.choices):
            requests.append((ctx, _encode(tok, choice)))
            owners.append((ex.index, c))
    scored = scorer.score(requests, desc=task.name)
    ll: dict[int, list[tuple[float, bool, int]]] = {}
    for (index, _), (lp, greedy), (_, cont) in zip(owners, scored, requests):
        ll.setdefault(index, []).append((float(lp.sum()), greedy, len(cont)))
    rows = []
    for ex in examples:
        res = ll[ex.index]
        row = {"task": task.name, "index": ex.index, "loglik": round(res[ex.gold][0], 6),
               "n_tokens": res[ex.gold][2]}
        if task.kind == "loglik":
            row["correct"] = res[0][1]
        else:
            logliks = [r[0] for r in res]
            norm = [lv / max(1, len(ch.strip())) for lv, ch in zip(logliks, ex.choices)]
            row.update(correct=int(np.argmax(logliks)) == ex.gold, correct_norm=int(np.argmax(norm)) == ex.gold,
                       logliks=[round(v, 6) for v in logliks])
        rows.append(row)
    n = len(rows)
    metrics: dict[str, Any] = {"n": n, "acc": round(sum(r["correct"] for r in rows) / n, 4) if n else None}
    if task.kind == "loglik":
        metrics["ppl"] = round(math.exp(-sum(r["loglik"] for r in rows) / n), 4) if n else None
        metrics["chance_acc"] = 0.0
    else:
        metrics["acc_norm"] = round(sum(r["correct_norm"] for r in rows) / n, 4) if n else None
        metrics["chance_acc"] = task.chance
    metrics["num_fewshot"] = cfg.num_fewshot
    return metrics, rows


def eval_wikitext(task: tasks.Task, scorer: Scorer, tok, eot: int, cfg: EvalConfig) -> tuple[dict, list]:
    """Rolling perplexity over whole articles; each paragraph's share becomes one example row.

    Lines are detokenised and encoded one by one (then concatenated, "\\n" after each), so each
    paragraph's tokens are known exactly; articles are taken in order until max_examples
    paragraphs are covered.
    """
    rows, tot_ll, tot_tok, tot_words, tot_bytes = [], 0.0, 0, 0, 0
    covered = n_docs = 0
    for doc in task.docs:
        if covered >= cfg.max_examples:
            break
        n_docs += 1
        tokens, segs = [eot], []
        for line, para in doc:
            seg = _encode(tok, tasks.wikitext_detokenize(line).strip() + "\n")
            segs.append((len(tokens) - 1, len(seg), line, para))  # offset into the predicted tokens
            tokens += seg
        lp = scorer.rolling(tokens, desc=f"{task.name} doc")
        for start, n, line, para in segs:
            ll = float(lp[start: start + n].sum())
            words, nbytes = len(line.split()), len((tasks.wikitext_detokenize(line).strip() + "\n").encode())
            tot_ll, tot_tok, tot_words, tot_bytes = tot_ll + ll, tot_tok + n, tot_words + words, tot_bytes + nbytes
            if para is not None:
                covered += 1
                rows.append({"task": task.name, "index": para, "loglik": round(ll, 6), "n_tokens": n,
                             "n_words": words, "n_bytes": nbytes, "correct": None})
    metrics = {
        "n": len(rows), "documents": n_docs, "tokens": tot_tok, "words": tot_words,
        "token_perplexity": round(math.exp(-tot_ll / tot_tok), 4) if tot_tok else None,
        "word_perplexity": round(math.exp(-tot_ll / tot_words), 4) if tot_words else None,
        "bits_per_byte": round(-tot_ll / tot_bytes / math.log(2), 4) if tot_bytes else None,
    }
    return metrics, rows


def val_perplexity(scorer: Scorer, tokens_dir: str | Path, max_tokens: int = 1 << 18) -> dict | None:
    """Mean next-token loss on the val shards in non-overlapping block_size windows (up to max_tokens)."""
    from pipeline.lm import tokens as shards

    try:
        data = np.asarray(shards.load_split(tokens_dir, "val"))
    except KeyError:
        data = np.zeros(0, dtype=np.uint16)
    if not len(data):
        log.warning("no val tokens in %s: validation perplexity left out", tokens_dir)
        return None
    data = data[: max_tokens + 1].astype(np.int64)
    T = scorer.block_size
    starts = range(0, len(data) - 1, T)
    requests = [(data[s: s + 1].tolist(), data[s + 1: min(s + T, len(data) - 1) + 1].tolist()) for s in starts]
    # A window predicts T tokens from its first token on: context = 1 token, continuation = the rest.
    requests = [r for r in requests if r[1]]
    lps = [lp for lp, _ in scorer.score(requests, desc="val")]
    n = sum(len(lp) for lp in lps)
    if not n:
        log.warning("val shards in %s hold no tokens to predict", tokens_dir)
        return None
    loss = -sum(float(lp.sum()) for lp in lps) / n
    out = {"tokens": n, "loss": round(loss, 4), "perplexity": round(math.exp(loss), 4)}
    meta = Path(tokens_dir) / "meta.json"
    if meta.exists():  # the unigram baseline the tiny model must beat (DESIGN.md)
        out.update({k: v for k, v in io.read_json(meta).items() if "unigram" in k})
    return out


def generate_samples(scorer: Scorer, tok, eot: int, prompts: Sequence[str], max_new: int = 40) -> str:
    out = []
    for p in prompts:
        ids = scorer.generate([eot] + _encode(tok, p), max_new)
        out.append(f"PROMPT: {p}\nGREEDY: {tok.decode(ids)}\n")
    return "\n".join(out)


def run(model: torch.nn.Module, tok, eval_dir: str | Path, out_dir: str | Path, cfg: EvalConfig,
        tokens_dir: str | Path | None = None, seed: int = 0, eot: int | None = None,
        report: Any = None, progress: bool = True) -> dict[str, Any]:
    """The evaluate stage: score every task found in eval_dir, write examples.jsonl and samples.txt.

    Args:
        model: a causal LM (forward(idx) -> (logits, loss), `config.block_size`), in eval mode.
        tok: a tokenizers.Tokenizer.
        eval_dir: folder of eval files (tasks.FILES names).
        out_dir: gets examples.jsonl (one row per example) and samples.txt.
        cfg: eval params. tokens_dir: token shards for validation perplexity (optional).
        seed: keys the few-shot draws. eot: end-of-text id (default: the tokenizer's "<|endoftext|>").
        report: a StageReport to fill.

    Returns:
        {"tasks": {name: metrics}, "val": ..., "references": ...}.
    """
    if eot is None:
        eot = tok.token_to_id("<|endoftext|>")
        eot = 0 if eot is None else eot
    scorer = Scorer(model, cfg.batch_size, progress=progress)
    results: dict[str, Any] = {"tasks": {}, "protocol": {
        "block_size": scorer.block_size, "truncation": "left", "num_fewshot": cfg.num_fewshot,
        "max_examples": cfg.max_examples, "acc_norm": "loglik / characters of the choice",
        "context_prefix": "end-of-text token (the document boundary the model was trained with)"}}
    all_rows = []
    task_map = tasks.load_all(eval_dir)
    for name, task in task_map.items():
        if task.kind == "perplexity":
            metrics, rows = eval_wikitext(task, scorer, tok, eot, cfg)
        else:
            metrics, rows = eval_choice(task, scorer, tok, eot, cfg, seed)
        results["tasks"][name] = {**metrics, "file": task.path, "examples_in_file": len(task.examples)}
        all_rows += rows
        if report is not None:
            for k, v in task.errors.items():
                report.error(f"{name}_{k}", v)
    if tokens_dir is not None:
        results["val"] = val_perplexity(scorer, tokens_dir)
    results["references"] = REFERENCES
    results["chance"] = {"uniform_token_perplexity": tok.get_vocab_size(), "lambada_acc": 0.0,
                         "hellaswag_acc": 0.25, "piqa_acc": 0.5}
    out_dir = Path(out_dir)
    with io.atomic_path(out_dir / "examples.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in all_rows), encoding="utf-8")
    # Greedy generation has no KV cache here: a few short samples keep it cheap on CPU.
    prompts = [ex.context[-200:] for ex in task_map[tasks.LAMBADA].examples[:2]] if tasks.LAMBADA in task_map else []
    with io.atomic_path(out_dir / "samples.txt") as tmp:
        tmp.write_text(generate_samples(scorer, tok, eot, prompts + ["The"], max_new=32), encoding="utf-8")
    if report is not None:
        from pipeline.core.report import write_plot

        report.docs_in = report.docs_out = len(all_rows)
        report.extra.update(results)
        write_plot("evaluate", "accuracy", accuracy_rows(results))
    return results


def accuracy_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Plot rows for `dvc plots show`: each task's accuracies beside its chance rate."""
    rows = []
    for name, m in results["tasks"].items():
        for metric in ("acc", "acc_norm", "chance_acc"):
            if m.get(metric) is not None:
                rows.append({"task_metric": f"{name}/{metric}", "task": name, "metric": metric, "value": m[metric]})
    return rows
