"""Few-shot curves: one point per task and k, the evaluate stage's scoring, prompts cut by the context counted."""
from __future__ import annotations

import json

import torch

from pipeline.claims import fewshot
from pipeline.lm import bpe
from test_evaluate import Bigram, _eval_dir, tok  # noqa: F401  (tok is a fixture)


def test_curve_has_every_task_and_k_and_counts_truncated_prompts(tok, tmp_path):  # noqa: F811
    eval_dir = _eval_dir(tmp_path / "eval")
    rows = [{"text": f"the cat sat on the mat and the dog ran far away number {i} the"} for i in range(12)]
    (eval_dir / "lambada_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    the = tok.encode(" the").ids[0]
    table = torch.full((tok.get_vocab_size(),) * 2, -20.0)
    table[:, the] = 20.0  # always " the": LAMBADA's last word here, so every point is 1.0 while the prompt fits
    cfg = fewshot.FewshotConfig(ks=(0, 1, 4), max_examples=12, batch_size=4)
    res = fewshot.curve(Bigram(table, 40), tok, eval_dir, cfg, seed=1, eot=bpe.eot_id(tok), progress=False)
    assert set(res["tasks"]) == {"lambada", "hellaswag"}  # WikiText has no shots; PIQA is absent
    lam = res["tasks"]["lambada"]
    assert list(lam) == ["0", "1", "4"] and all(m["n"] == 12 and m["acc"] == 1.0 for m in lam.values())
    cut = [lam[k]["truncated_prompts"] for k in ("0", "1", "4")]
    assert cut[0] == 0 and cut[2] == 12 and cut == sorted(cut)  # 4 shots of ~16 tokens overflow 40 tokens
    assert res["protocol"]["seed"] == 1 and res["protocol"]["ks"] == [0, 1, 4]
    again = fewshot.curve(Bigram(table, 40), tok, eval_dir, cfg, seed=1, eot=bpe.eot_id(tok), progress=False)
    assert again == res
    plots = fewshot.plot_rows(res)
    assert plots["lambada"] == [{"k": k, "acc": 1.0, "chance_acc": 0.0} for k in (0, 1, 4)]
