"""Eval task loaders: formats, stable indices, prompts, and counts on the real public files."""
from __future__ import annotations

import gzip
import json

from pipeline.evaluation import tasks


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_lambada_context_target_and_stable_index(tmp_path):
    _write(tmp_path / "lambada_test.jsonl", [
        json.dumps({"text": "she opened the door and saw her brother"}),
        "{not json",
        json.dumps({"text": "the cat sat on the mat"}),
    ])
    task = tasks.load_task("lambada", tmp_path)
    assert [e.index for e in task.examples] == [0, 2]  # the malformed line keeps its index slot
    ex = task.examples[0]
    assert ex.context == "she opened the door and saw her" and ex.choices == [" brother"]
    assert ex.contamination_text == "she opened the door and saw her brother"
    assert task.errors == {"malformed_line": 1}


def test_wikitext_documents_and_paragraph_enumeration(tmp_path):
    _write(tmp_path / "wikitext-2-raw-v1_test.txt", [
        " = Alpha = ", " Alpha is a letter @-@ like sign , first of all . ", " = = History = = ",
        " It was used in 1 @,@ 000 places . ", " = Beta = ", " Beta follows ( after ) alpha . ",
    ])
    task = tasks.load_task("wikitext", tmp_path)
    assert len(task.docs) == 2
    assert [e.index for e in task.examples] == [0, 1, 2] and [e.doc for e in task.examples] == [0, 0, 1]
    assert [p for _, p in task.docs[0]] == [None, 0, None, 1]  # headings stay in the document, unindexed
    assert tasks.wikitext_detokenize(task.examples[0].contamination_text) == \
        "Alpha is a letter-like sign, first of all ."
    assert tasks.wikitext_detokenize(" in 1 @,@ 000 ( after ) places") == " in 1,000 (after) places"


def test_hellaswag_both_layouts(tmp_path):
    rec = {"ind": 4, "activity_label": "Baking cookies", "ctx_a": "A woman mixes dough.", "ctx_b": "she",
           "ctx": "A woman mixes dough. she", "endings": ["flies away.", "puts it in [title] the oven.",
                                                       "sings.", "sleeps."], "label": "1"}
    _write(tmp_path / "hellaswag_val.jsonl", [json.dumps(rec)])
    ex = tasks.load_task("hellaswag", tmp_path).examples[0]
    assert ex.context == "Baking cookies: A woman mixes dough. She"  # lm-eval capitalises ctx_b
    assert ex.gold == 1 and ex.choices[1] == " puts it in. the oven."
    assert ex.contamination_text == "A woman mixes dough. she puts it in. the oven."

    other = tmp_path / "llama"
    other.mkdir()
    with gzip.open(other / "hellaswag_val_full.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("Baking: A woman mixes dough. she\n2\nflies.\nsings.\nbakes them.\nsleeps.\n")
        fh.write("Bad: item\nx\na\nb\nc\nd\n")
    task = tasks.load_task("hellaswag", other)
    assert len(task.examples) == 1 and task.errors == {"bad_item": 1}
    ex = task.examples[0]
    assert ex.gold == 2 and ex.choices[2] == " bakes them."
    assert ex.contamination_text == "A woman mixes dough. she bakes them."


def test_piqa_labels_and_prompt(tmp_path):
    _write(tmp_path / "valid.jsonl", [json.dumps({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat it"})])
    _write(tmp_path / "valid-labels.lst", ["0"])
    ex = tasks.load_task("piqa", tmp_path).examples[0]
    assert ex.context == "Question: Open a jar\nAnswer:" and ex.gold == 0
    assert ex.contamination_text == "Open a jar twist the lid"


def test_missing_files_skip_the_task(tmp_path):
    assert tasks.load_task("piqa", tmp_path) is None
    assert tasks.load_all(tmp_path) == {}


def test_real_eval_files(shared_data):
    found = tasks.load_all(shared_data / "eval")
    counts = {name: len(t.examples) for name, t in found.items()}
    assert counts["lambada"] == 5153 and counts["hellaswag"] == 10042 and counts["piqa"] == 1838
    assert len(found["wikitext"].docs) == 62  # WikiText-2 test: 62 articles, as lm-eval counts them
    hs = found["hellaswag"].examples[0]
    assert hs.gold == 3 and hs.choices[3] == " starts pulling up roofing on a roof."
    lam = found["lambada"].examples[0]
    assert lam.choices == [" signs"] and lam.context + lam.choices[0] == lam.contamination_text
    assert all(0 <= e.gold < 2 for e in found["piqa"].examples)
