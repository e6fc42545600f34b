"""GPT-1 fine-tuning: figure 1's input transformations, the grown model, L2 + lambda L1, exact resume, splits."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.evaluation import tasks
from pipeline.finetune import data, head, loop, transforms
from pipeline.lm import bpe
from pipeline.lm.model import GPT, GPTConfig
from pipeline.sample import mc_task

FR = transforms.Framing(start=100, delim=101, extract=102)


# --- GPT-1 figure 1, token for token -------------------------------------------------------------
def test_classification_is_start_text_extract():
    assert transforms.classification([5, 6, 7], FR, 64) == [[100, 5, 6, 7, 102]]


def test_entailment_is_start_premise_delim_hypothesis_extract():
    assert transforms.entailment([1, 2], [3, 4, 5], FR, 64) == [[100, 1, 2, 101, 3, 4, 5, 102]]


def test_similarity_encodes_both_orders():
    assert transforms.similarity([1, 2], [3], FR, 64) == [[100, 1, 2, 101, 3, 102], [100, 3, 101, 1, 2, 102]]


def test_multiple_choice_is_one_sequence_per_answer():
    assert transforms.choice([1, 2], [[3], [4, 5]], FR, 64) == [[100, 1, 2, 101, 3, 102], [100, 1, 2, 101, 4, 5, 102]]


def test_overflow_cuts_the_context_from_the_left_and_keeps_the_framing():
    seqs = transforms.choice(list(range(10, 30)), [[1, 2, 3]], FR, 12)
    seq = seqs[0]
    assert len(seq) == 12
    assert seq[0] == 100 and seq[-1] == 102 and seq.count(101) == 1
    assert seq[1:seq.index(101)] == list(range(24, 30))  # the context keeps its end, next to the answer
    assert seq[seq.index(101) + 1:-1] == [1, 2, 3]  # the short answer is untouched


def test_task_tokens_take_the_next_ids_and_encode_as_one_token(tmp_path):
    tok = bpe.train(["the cat sat on the mat " * 50], bpe.TokenizerConfig(vocab_size=300, min_frequency=2))
    base = tok.get_vocab_size()
    fr = transforms.add_task_tokens(tok)
    assert (fr.start, fr.delim, fr.extract) == (base, base + 1, base + 2)
    ids = tok.encode("the cat<|delim|> sat").ids
    assert fr.delim in ids and ids.count(fr.delim) == 1
    with pytest.raises(ValueError):
        transforms.add_task_tokens(tok)  # a second time would not give fresh ids


# --- the grown model -------------------------------------------------------------------------------
def _gpt(seed=0, n_layer=2, ln="pre") -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=61, block_size=32, n_layer=n_layer, n_head=2, n_embd=16, ln=ln)).eval()


@pytest.mark.parametrize("ln", ["pre", "post"])
def test_grown_model_reads_old_tokens_exactly_as_the_pretrained_one(ln):
    gpt = _gpt(ln=ln)
    model = head.from_pretrained(gpt, 3, "choice", 2, -1, dropout=0.0, clf_dropout=0.0, seed=1).eval()
    idx = torch.randint(0, 61, (2, 20))
    assert torch.equal(model.gpt.features(idx), gpt.features(idx))
    assert model.gpt.config.vocab_size == 64 and gpt.config.vocab_size == 61  # the original is untouched


def test_transfer_layers_keeps_the_bottom_blocks_only():
    gpt = _gpt(n_layer=3)
    model = head.from_pretrained(gpt, 3, "choice", 2, 1, dropout=0.0, clf_dropout=0.0, seed=1)
    old, new = gpt.state_dict(), model.gpt.state_dict()
    assert torch.equal(new["transformer.h.0.attn.c_attn.weight"], old["transformer.h.0.attn.c_attn.weight"])
    assert not torch.equal(new["transformer.h.1.attn.c_attn.weight"], old["transformer.h.1.attn.c_attn.weight"])
    assert torch.equal(new["transformer.wpe.weight"], old["transformer.wpe.weight"])
    assert torch.equal(new["transformer.wte.weight"][:61], old["transformer.wte.weight"][:61])
    with pytest.raises(ValueError):
        head.from_pretrained(gpt, 3, "choice", 2, 4, 0.0, 0.0, 1)


def test_choice_head_scores_each_answer_and_similarity_adds_the_orders():
    gpt = _gpt()
    idx = torch.randint(0, 64, (3, 2, 10))
    lengths = torch.tensor([[10, 7], [5, 9], [8, 8]])
    choice = head.from_pretrained(gpt, 3, "choice", 2, -1, 0.0, 0.0, seed=1).eval()
    logits, lm = choice(idx, lengths)
    assert logits.shape == (3, 2) and lm is not None and torch.isfinite(lm)
    h = choice.gpt.features(idx.view(6, 10))
    want = choice.head(h[torch.arange(6), lengths.view(-1) - 1]).view(3, 2)  # the extract token's state
    assert torch.allclose(logits, want, atol=1e-6)
    sim = head.from_pretrained(gpt, 3, "similarity", 3, -1, 0.0, 0.0, seed=1).eval()
    hs = sim.gpt.features(idx.view(6, 10))[torch.arange(6), lengths.view(-1) - 1].view(3, 2, -1)
    assert torch.allclose(sim(idx, lengths, with_lm=False)[0], sim.head(hs[:, 0] + hs[:, 1]), atol=1e-6)


def test_aux_lm_weight_scales_the_lm_gradient_linearly():
    """grad(L2 + lambda L1) = grad L2 + lambda grad L1: checked at lambda 0, 0.5 and 1 on every parameter."""
    model = head.from_pretrained(_gpt(), 3, "choice", 2, -1, 0.0, 0.0, seed=1)
    idx, lengths, labels = torch.randint(0, 64, (4, 2, 12)), torch.full((4, 2), 12), torch.tensor([0, 1, 1, 0])

    def grads(lam):
        model.zero_grad()
        logits, lm = model(idx, lengths)
        (torch.nn.functional.cross_entropy(logits, labels) + lam * lm).backward()
        return [p.grad.clone() for p in model.parameters()]

    g0, g1, g_half = grads(0.0), grads(1.0), grads(0.5)
    lm_part = [b - a for a, b in zip(g0, g1)]
    assert max(float(x.abs().max()) for x in lm_part) > 1e-4  # the LM loss does reach the weights
    for a, d, h in zip(g0, lm_part, g_half):
        assert torch.allclose(h, a + 0.5 * d, atol=1e-6)
    assert float(lm_part[-1].abs().max()) == 0.0  # ... but never the classifier head's bias


def test_lm_loss_ignores_padding():
    model = head.from_pretrained(_gpt(), 3, "choice", 2, -1, 0.0, 0.0, seed=1).eval()
    idx = torch.randint(0, 64, (1, 1, 12))
    lengths = torch.tensor([[8]])
    noisy = idx.clone()
    noisy[..., 8:] = torch.randint(0, 64, (4,))
    assert torch.equal(model(idx, lengths)[1], model(noisy, lengths)[1])


# --- the loop --------------------------------------------------------------------------------------
def _items(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 2
        seqs = [[60, *torch.randint(0, 50, (6,), generator=g).tolist(), 61, 55 + (k == label), 62] for k in range(2)]
        items.append(data.Item(i, seqs, label))
    return items


def test_resumed_finetune_equals_an_uninterrupted_one(tmp_path):
    cfg = loop.FinetuneConfig(lr=3e-3, batch_size=8, epochs=2, checkpoint_every=3, dropout=0.1, clf_dropout=0.1)
    items = _items()

    def fresh():
        return head.from_pretrained(_gpt(), 3, "choice", 2, -1, cfg.dropout, cfg.clf_dropout, seed=7)

    whole = fresh()
    log_whole = loop.fit(whole, items, cfg, 0.5, 7, 0, progress=False)
    killed = fresh()
    resume = tmp_path / "r.pt"
    with pytest.raises(loop.FinetuneStopped):
        loop.fit(killed, items, cfg, 0.5, 7, 0, resume, "fp", stop_after=7, progress=False)
    assert torch.load(resume, weights_only=True)["step"] == 6  # the last resume file before the kill
    resumed = fresh()
    log_resumed = loop.fit(resumed, items, cfg, 0.5, 7, 0, resume, "fp", progress=False)
    assert log_resumed == log_whole and len(log_whole) == 10
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(loop.FinetuneStopped):  # another fingerprint starts afresh rather than resume from it
        loop.fit(fresh(), items, cfg, 0.5, 7, 0, resume, "other", stop_after=7, progress=False)
    state = torch.load(resume, weights_only=True)
    assert state["fingerprint"] == "other" and state["log"] == log_whole[:6]


def test_finetuning_learns_a_learnable_rule():
    cfg = loop.FinetuneConfig(lr=3e-3, batch_size=8, epochs=3, dropout=0.0, clf_dropout=0.0)
    model = head.from_pretrained(_gpt(), 3, "choice", 2, -1, 0.0, 0.0, seed=7)
    before = loop.predict(model, _items(40, seed=1), 0)
    loop.fit(model, _items(), cfg, 0.5, 7, 0, progress=False)
    after = loop.predict(model, _items(40, seed=1), 0)
    acc = [sum(r["pred"] == r["gold"] for r in rows) / 40 for rows in (before, after)]
    assert acc[1] >= 0.9 and acc[1] > acc[0]


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = loop.FinetuneConfig(lr=1.0, warmup_fraction=0.1)
    lrs = [loop.lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1 / 90)


# --- data ------------------------------------------------------------------------------------------
def test_planted_task_is_piqa_format_with_its_rule(tmp_path):
    counts = mc_task.write(tmp_path, 1337, 50, 20)
    assert counts == {"finetune_train": 50, "finetune_valid": 20}
    train, test, how = data.load_splits(tmp_path, "piqa", 1337, 0.2)
    assert how.startswith("train.jsonl") and len(train.examples) == 50 and len(test.examples) == 20
    for ex in train.examples + test.examples:
        right, wrong = ex.choices[ex.gold], ex.choices[1 - ex.gold]
        assert any(f" {a}." in right for a in mc_task.CAREFUL) and any(f" {a}." in wrong for a in mc_task.CARELESS)
    labels = [ex.gold for ex in train.examples]
    assert 0.2 < sum(labels) / len(labels) < 0.8  # the right answer is not always in one place
    again = tmp_path / "again"
    mc_task.write(again, 1337, 50, 20)
    assert (again / "train.jsonl").read_bytes() == (tmp_path / "train.jsonl").read_bytes()


def test_keyed_split_holds_out_a_stable_disjoint_fraction(tmp_path):
    rows = [{"goal": f"goal {i}", "sol1": "a", "sol2": "b"} for i in range(300)]
    (tmp_path / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "valid-labels.lst").write_text("0\n" * 300)
    train, test, how = data.load_splits(tmp_path, "piqa", 1, 0.2)
    a = {e.index for e in train.examples}
    b = {e.index for e in test.examples}
    assert not a & b and len(a | b) == 300 and 40 <= len(b) <= 80 and "held out" in how
    assert {e.index for e in data.load_splits(tmp_path, "piqa", 1, 0.2)[1].examples} == b
    assert {e.index for e in data.load_splits(tmp_path, "piqa", 2, 0.2)[1].examples} != b


def test_real_piqa_frames_within_the_context(shared_data):
    task = tasks.load_piqa(shared_data / "eval" / "piqa" / "valid.jsonl")
    tok = bpe.train([e.context + c for e in task.examples[:300] for c in e.choices],
                    bpe.TokenizerConfig(vocab_size=500, min_frequency=2))
    fr = transforms.add_task_tokens(tok)
    items = data.frame_task(task, tok, fr, 64)
    assert len(items) == len(task.examples) > 1800
    assert all(len(s) <= 64 and s[0] == fr.start and s[-1] == fr.extract and s.count(fr.delim) == 1
               for it in items for s in it.sequences)
    idx, lengths, labels = data.collate(items[:5], 0)
    assert idx.shape[:2] == (5, 2) and labels.tolist() == [it.label for it in items[:5]]
