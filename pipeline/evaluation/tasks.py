"""Evaluation tasks as data plus a small parser each (the lm-eval-harness design).

A task is a list of `Example`s with a stable `index`: the position of the item among the
non-blank lines of its file, so a skipped malformed line never shifts the indices after it.
The index is the join key between `evaluate` (scores), `contamination` (dirty flags) and the
sample's truth.json (planted leaks), so all three enumerate the file the same way.

Formats and prompts (lm-eval-harness task YAMLs, GPT-2/GPT-3 papers):
- LAMBADA, OpenAI detokenised jsonl {"text"} (GPT-2 sec. 3.3): context = text minus its last
  word, target = " " + last word (lm-eval `lambada_openai`).
- WikiText raw: articles start at " = Title = " level-1 headings (lm-eval `wikitext`, GPT-2
  sec. 3.1). Scored as whole documents; an example is one non-empty, non-heading paragraph line,
  so scores and contamination flags share one paragraph enumeration.
- HellaSwag (Zellers et al. 2019): official jsonl (ctx_a, ctx_b, endings, label) with lm-eval's
  `preprocess`, or llama.cpp's 6-lines-per-item text ("label: ctx", gold index, 4 endings).
- PIQA (Bisk et al. 2020): valid.jsonl (goal, sol1, sol2) + valid-labels.lst; prompt
  "Question: <goal>\\nAnswer:" as lm-eval `piqa`.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LAMBADA, WIKITEXT, HELLASWAG, PIQA = "lambada", "wikitext", "hellaswag", "piqa"
TASKS = (LAMBADA, WIKITEXT, HELLASWAG, PIQA)
# File names as the sample writes them (and as the public datasets name them).
FILES = {
    LAMBADA: ("lambada_test.jsonl",),
    WIKITEXT: ("wikitext-2-raw-v1_test.txt", "wiki.test.raw"),
    HELLASWAG: ("hellaswag_val.jsonl", "hellaswag_val_full.txt.gz", "hellaswag_val_full.txt"),
    PIQA: ("valid.jsonl",),
}
HEADING = re.compile(r"^ ?(=+) .* \1 ?$")


@dataclass
class Example:
    """One scored item.

    `context` + each of `choices` is what the model scores (a choice includes its leading space);
    `gold` indexes the right choice. `contamination_text` is what could leak into training data.
    WikiText paragraphs have no choices: they are scored inside their document (`doc`).
    """

    task: str
    index: int
    context: str
    choices: list[str]
    gold: int
    contamination_text: str
    doc: int | None = None  # WikiText: the article this paragraph belongs to


@dataclass
class Task:
    """A loaded benchmark: examples, plus (WikiText) the documents that are scored."""

    name: str
    kind: str  # "loglik" (LAMBADA: greedy + loglik of one target), "choice", "perplexity"
    examples: list[Example]
    path: str
    chance: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    # WikiText: per article, its lines as (text, paragraph index or None for a heading).
    docs: list[list[tuple[str, int | None]]] = field(default_factory=list)


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.read().splitlines()


def _jsonl(path: Path, task: str, errors: dict[str, int]) -> list[tuple[int, dict]]:
    """(index, record) for each non-blank line; malformed lines are counted and logged, not fatal."""
    out, index = [], 0
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
            out.append((index, rec))
        except ValueError as exc:
            log.warning("%s: line %d of %s is not a JSON object (%s); skipped", task, lineno, path.name, exc)
            errors["malformed_line"] = errors.get("malformed_line", 0) + 1
        index += 1
    return out


# --- LAMBADA --------------------------------------------------------------------------------------
def load_lambada(path: str | Path) -> Task:
    path, errors, examples = Path(path), {}, []
    for index, rec in _jsonl(path, LAMBADA, errors):
        text = str(rec.get("text", "")).strip()
        if " " not in text:
            errors["no_target"] = errors.get("no_target", 0) + 1
            continue
        context, word = text.rsplit(" ", 1)
        examples.append(Example(LAMBADA, index, context, [" " + word], 0, text))
    return Task(LAMBADA, "loglik", examples, path.name, errors=errors)


# --- WikiText ---------------------------------------------------------------------------------------
def wikitext_detokenize(string: str) -> str:
    """Undo WikiText's tokenisation (lm-eval `wikitext_detokenizer`, from GPT-2's evaluation)."""
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for p in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {p} ", f"{p} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n").replace("\n ", "\n")
    string = string.replace(" N ", " 1 ").replace(" 's", "'s")
    return string


def is_level1_heading(line: str) -> bool:
    m = HEADING.match(line)
    return bool(m) and len(m.group(1)) == 1 and not line.strip().startswith("= =")


def load_wikitext(path: str | Path) -> Task:
    """Articles split at level-1 headings; one Example per non-empty, non-heading line."""
    path = Path(path)
    docs: list[list[tuple[str, int | None]]] = []
    examples: list[Example] = []
    for line in _lines(path):
        if not line.strip():
            continue
        if is_level1_heading(line) or not docs:
            docs.append([])
        if HEADING.match(line):
            docs[-1].append((line, None))
            continue
        index = len(examples)
        docs[-1].append((line, index))
        examples.append(Example(WIKITEXT, index, "", [], 0, line.strip(), doc=len(docs) - 1))
    return Task(WIKITEXT, "perplexity", examples, path.name, docs=docs)


# --- HellaSwag --------------------------------------------------------------------------------------
def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: WikiHow's bracketed artefacts removed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def load_hellaswag(path: str | Path) -> Task:
    path, errors, examples = Path(path), {}, []
    if ".jsonl" in path.name:
        for index, rec in _jsonl(path, HELLASWAG, errors):
            try:
                ctx = rec["ctx_a"] + " " + rec["ctx_b"].capitalize() if "ctx_a" in rec else rec["ctx"]
                endings = [hellaswag_preprocess(e) for e in rec["endings"]]
                gold = int(rec["label"])
                context = hellaswag_preprocess(rec.get("activity_label", "") + ": " + ctx)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("hellaswag: item %d of %s lacks a field (%s); skipped", index, path.name, exc)
                errors["bad_item"] = errors.get("bad_item", 0) + 1
                continue
            raw_ctx = rec.get("ctx") or f"{rec.get('ctx_a', '')} {rec.get('ctx_b', '')}".strip()
            # the leakable text keeps the file's casing (lm-eval's capitalize() lower-cases the rest of ctx_b)
            examples.append(Example(HELLASWAG, index, context, [" " + e for e in endings], gold,
                                    raw_ctx + " " + endings[gold]))
    else:  # llama.cpp layout: 6 lines per item
        lines = _lines(path)
        for index in range(len(lines) // 6):
            head, label, *endings = lines[6 * index: 6 * index + 6]
            try:
                gold = int(label.strip())
                if not 0 <= gold < 4:
                    raise ValueError(f"label {gold}")
            except ValueError as exc:
                log.warning("hellaswag: item %d of %s has a bad gold label (%s); skipped", index, path.name, exc)
                errors["bad_item"] = errors.get("bad_item", 0) + 1
                continue
            ctx = head.split(": ", 1)[1] if ": " in head else head
            examples.append(Example(HELLASWAG, index, head, [" " + e for e in endings], gold,
                                    ctx + " " + endings[gold]))
        if len(lines) % 6:
            errors["truncated_item"] = 1
    return Task(HELLASWAG, "choice", examples, path.name, chance=0.25, errors=errors)


# --- PIQA -------------------------------------------------------------------------------------------
def load_piqa(path: str | Path) -> Task:
    path, errors, examples = Path(path), {}, []
    labels_path = path.with_name(path.name.replace(".jsonl", "-labels.lst"))
    if not labels_path.exists():
        raise FileNotFoundError(f"PIQA labels {labels_path.name} missing beside {path.name}")
    labels = [ln.strip() for ln in _lines(labels_path) if ln.strip()]
    for index, rec in _jsonl(path, PIQA, errors):
        try:
            gold = int(labels[index])
            sols = [str(rec["sol1"]), str(rec["sol2"])]
            goal = str(rec["goal"])
        except (IndexError, KeyError, ValueError) as exc:
            log.warning("piqa: item %d has no usable label or field (%s); skipped", index, exc)
            errors["bad_item"] = errors.get("bad_item", 0) + 1
            continue
        examples.append(Example(PIQA, index, f"Question: {goal}\nAnswer:", [" " + s for s in sols], gold,
                                goal + " " + sols[gold]))
    return Task(PIQA, "choice", examples, path.name, chance=0.5, errors=errors)


LOADERS = {LAMBADA: load_lambada, WIKITEXT: load_wikitext, HELLASWAG: load_hellaswag, PIQA: load_piqa}


def find_file(name: str, eval_dir: str | Path) -> Path | None:
    """The task's file in `eval_dir` or one level below (the sample is flat; ../shared/data nests)."""
    eval_dir = Path(eval_dir)
    for fname in FILES[name]:
        for cand in (eval_dir / fname, *sorted(eval_dir.glob(f"*/{fname}"))):
            if cand.is_file():
                return cand
    return None


def load_task(name: str, eval_dir: str | Path) -> Task | None:
    """Load one task from `eval_dir`; None (with a logged reason) when its file is absent or unreadable."""
    if name not in LOADERS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    path = find_file(name, eval_dir)
    if path is None:
        log.info("task %s skipped: none of %s found in %s", name, ", ".join(FILES[name]), eval_dir)
        return None
    try:
        return LOADERS[name](path)
    except (OSError, UnicodeError, FileNotFoundError) as exc:
        log.warning("task %s skipped: %s could not be read (%s)", name, path, exc)
        return None


def load_all(eval_dir: str | Path, names: tuple[str, ...] = TASKS) -> dict[str, Task]:
    """Every task found in `eval_dir`, by name."""
    return {n: t for n in names if (t := load_task(n, eval_dir)) is not None}
