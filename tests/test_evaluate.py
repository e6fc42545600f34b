"""Scoring against hand-computed log-likelihoods, forced answers, rolling windows, and a real run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.core import params
from pipeline.lm import bpe, tokens
from pipeline.evaluation import evaluate
from pipeline.lm import checkpoint
from pipeline.lm import model as gpt_model


class Bigram(nn.Module):
    """forward(idx, targets=None) -> (logits (B, T, V), None): logits depend on the current token only."""

    def __init__(self, table: torch.Tensor, block_size: int):
        super().__init__()
        self.table = nn.Parameter(table)
        self.config = type("Cfg", (), {"block_size": block_size})()

    def forward(self, idx, targets=None):
        return self.table[idx], None


class FirstToken(Bigram):
    """Logits depend on the first token of the window only: shows what left-truncation kept."""

    def forward(self, idx, targets=None):
        return self.table[idx[:, :1]].expand(-1, idx.shape[1], -1), None


def _table(v=6, seed=0):
    return torch.randn(v, v, generator=torch.Generator().manual_seed(seed))


def test_config_matches_params_yaml():
    assert evaluate.EvalConfig() == params.config(evaluate.EvalConfig, "eval",
                                                  Path(__file__).resolve().parents[1] / "params.yaml")


def test_two_token_continuation_matches_hand_computed_log_softmax():
    table = _table()
    scorer = evaluate.Scorer(Bigram(table, 8), batch_size=2, progress=False)
    (lp, greedy), (lp2, _) = scorer.score([([1, 4], [2, 3]), ([5], [0])])
    ls = torch.log_softmax(table, -1)
    expected = [float(ls[4, 2]), float(ls[2, 3])]  # P(2 | ...4) then P(3 | ...2)
    assert lp == pytest.approx(expected, abs=1e-6)
    assert lp2 == pytest.approx([float(ls[5, 0])], abs=1e-6)
    assert greedy == (int(table[4].argmax()) == 2 and int(table[2].argmax()) == 3)


def test_left_truncation_keeps_the_last_block_size_tokens():
    table = _table(seed=1)
    scorer = evaluate.Scorer(FirstToken(table, 4), batch_size=4, progress=False)
    (lp, _), = scorer.score([([5, 1, 2, 3, 4], [0, 1])])  # 7 tokens; the window is the last 5, input [2, 3, 4, 0]
    ls = torch.log_softmax(table, -1)
    assert lp == pytest.approx([float(ls[2, 0]), float(ls[2, 1])], abs=1e-6)


def test_rolling_predicts_every_token_once():
    table = _table(seed=2)
    scorer = evaluate.Scorer(Bigram(table, 4), batch_size=3, progress=False)
    toks = [0, 3, 1, 4, 4, 2, 5, 1, 0, 2, 3]
    lp = scorer.rolling(toks)
    ls = torch.log_softmax(table, -1)
    assert lp == pytest.approx([float(ls[a, b]) for a, b in zip(toks, toks[1:])], abs=1e-6)


def test_val_perplexity_of_a_uniform_model_is_the_vocab_size(tmp_path):
    tokens.write_shard(tmp_path / "val_00000.bin", np.arange(300) % 6, vocab_size=6, eot_id=0)
    scorer = evaluate.Scorer(Bigram(torch.zeros(6, 6), 16), progress=False)
    val = evaluate.val_perplexity(scorer, tmp_path)
    assert val["tokens"] == 299 and val["perplexity"] == pytest.approx(6.0, rel=1e-4)


@pytest.fixture(scope="module")
def tok():
    texts = ["the cat sat on the mat and the dog ran far away"] * 50 + ["a red fox jumps over the lazy dog"] * 50
    return bpe.train(texts, bpe.TokenizerConfig(vocab_size=300, min_frequency=2))


def _eval_dir(root: Path) -> Path:
    root.mkdir()
    lam = ["the dog ran far away and the", "the cat sat on the mat and the"]
    (root / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lam))
    hs = {"activity_label": "Pets", "ctx_a": "the dog ran", "ctx_b": "and",
          "endings": ["a red fox jumps", "the the the", "over lazy dog", "sat on mat"], "label": 1}
    (root / "hellaswag_val.jsonl").write_text(json.dumps(hs) + "\n")
    (root / "wikitext-2-raw-v1_test.txt").write_text(
        " = Cats = \n the cat sat on the mat . \n = = Dogs = = \n the dog ran far away . \n = Fox = \n a red fox . \n")
    return root


def test_forced_answer_scores_perfect(tok, tmp_path):
    the = tok.encode(" the").ids
    assert len(the) == 1
    table = torch.full((tok.get_vocab_size(),) * 2, -20.0)
    table[:, the[0]] = 20.0  # this model always says " the"
    out = evaluate.run(Bigram(table, 32), tok, _eval_dir(tmp_path / "eval"), tmp_path / "out",
                       evaluate.EvalConfig(max_examples=10, batch_size=4, num_fewshot=1), progress=False)
    assert out["tasks"]["lambada"]["acc"] == 1.0 and out["tasks"]["lambada"]["ppl"] == pytest.approx(1.0, abs=1e-3)
    assert out["tasks"]["hellaswag"]["acc"] == 1.0 and out["tasks"]["hellaswag"]["acc_norm"] == 1.0
    assert out["tasks"]["hellaswag"]["chance_acc"] == 0.25
    rows = [json.loads(ln) for ln in (tmp_path / "out" / "examples.jsonl").read_text().splitlines()]
    assert [(r["task"], r["index"]) for r in rows] == [("lambada", 0), ("lambada", 1), ("wikitext", 0),
                                                      ("wikitext", 1), ("wikitext", 2), ("hellaswag", 0)]
    wiki = out["tasks"]["wikitext"]
    assert wiki["documents"] == 2 and wiki["words"] == sum(r.get("n_words", 0) for r in rows) + 3 + 5 + 3  # + headings
    assert "the the the" in (tmp_path / "out" / "samples.txt").read_text()


def test_fewshot_prefix_is_keyed_and_excludes_the_item(tok, tmp_path):
    from pipeline.evaluation import tasks

    task = tasks.load_task("lambada", _eval_dir(tmp_path / "eval"))
    ex = task.examples[0]
    prefix = evaluate.fewshot_prefix(task, ex, 1, seed=3)
    assert prefix == task.examples[1].contamination_text + "\n\n"
    assert prefix == evaluate.fewshot_prefix(task, ex, 1, seed=3) and evaluate.fewshot_prefix(task, ex, 0, 3) == ""


def test_real_gpt_checkpoint_on_real_eval_files(tok, tmp_path, shared_data):
    torch.manual_seed(0)
    cfg = gpt_model.GPTConfig(vocab_size=tok.get_vocab_size(), block_size=32, n_layer=1, n_head=2, n_embd=16)
    checkpoint.save_checkpoint(tmp_path / "ckpt.pt", gpt_model.GPT(cfg), None, 0)
    gpt, _ = checkpoint.load_checkpoint(tmp_path / "ckpt.pt")
    out = evaluate.run(gpt, tok, shared_data / "eval", tmp_path / "out",
                       evaluate.EvalConfig(max_examples=4, batch_size=8), progress=False)
    assert set(out["tasks"]) == {"lambada", "wikitext", "hellaswag", "piqa"}
    assert out["tasks"]["piqa"]["n"] == 4 and out["tasks"]["piqa"]["chance_acc"] == 0.5
    # an untrained model is near uniform: its token perplexity is close to the vocabulary size
    assert 0.5 * tok.get_vocab_size() < out["tasks"]["wikitext"]["token_perplexity"] < 2 * tok.get_vocab_size()
    assert math.isfinite(out["tasks"]["lambada"]["ppl"])


def test_stage_script_runs_with_the_dvc_yaml_flags(tok, in_tmp_cwd):
    """stages/evaluate.py as dvc.yaml's cmd says, on a real checkpoint, tokenizer folder and val shard."""
    import shlex
    import shutil
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    cmd = shlex.split(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["evaluate"]["cmd"])
    flags = [a for a in cmd if a.startswith("--")]
    assert flags == ["--model", "--tokenizer", "--eval", "--tokens", "--out"]
    shutil.copy(root / "params.yaml", in_tmp_cwd / "params.yaml")
    bpe.save(tok, in_tmp_cwd / "tok")
    cfg = gpt_model.GPTConfig(vocab_size=tok.get_vocab_size(), block_size=16, n_layer=1, n_head=2, n_embd=16)
    checkpoint.save_checkpoint(in_tmp_cwd / "ckpt.pt", gpt_model.GPT(cfg), None, 7,
                              {"tokenizer_sha256": bpe.tokenizer_sha(in_tmp_cwd / "tok")})
    (in_tmp_cwd / "tokens").mkdir()
    tokens.write_shard(in_tmp_cwd / "tokens" / "val_00000.bin", tok.encode("the cat sat on the mat " * 20).ids,
                       tok.get_vocab_size(), bpe.eot_id(tok))
    paths = {"--model": "ckpt.pt", "--tokenizer": "tok", "--eval": str(_eval_dir(in_tmp_cwd / "eval")),
             "--tokens": "tokens", "--out": "out"}
    proc = subprocess.run([sys.executable, str(root / "stages" / "evaluate.py"),
                           *[a for f in flags for a in (f, paths[f])]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((in_tmp_cwd / "reports" / "evaluate.json").read_text())
    assert rep["checkpoint"]["iter"] == 7 and rep["val"]["tokens"] > 0
    assert set(rep["tasks"]) == {"lambada", "wikitext", "hellaswag"} and rep["docs_in"] == 6
    assert rep["references"]["gpt2_117m_lambada"]["paper"]["acc"] == 45.99
    assert (in_tmp_cwd / "out" / "samples.txt").read_text().startswith("PROMPT:")
    plot = json.loads((in_tmp_cwd / "reports" / "plots" / "evaluate" / "accuracy.json").read_text())
    assert {r["task_metric"] for r in plot} == {"lambada/acc", "lambada/chance_acc", "hellaswag/acc",
                                               "hellaswag/acc_norm", "hellaswag/chance_acc"}
    assert next(r["value"] for r in plot if r["task_metric"] == "hellaswag/chance_acc") == 0.25
