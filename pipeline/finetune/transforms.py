"""GPT-1 task input transformations (Radford et al. 2018, sec. 3.3 and figure 1).

A structured input becomes one or more token sequences the pretrained model can read, framed by
three learned tokens that pretraining never saw: a start token, a delimiter between the parts and
an extract token whose final hidden state feeds the linear head.

  classification   [start] text [extract]
  entailment       [start] premise [delim] hypothesis [extract]
  similarity       [start] a [delim] b [extract]  and  [start] b [delim] a [extract]  (no inherent
                   order: both are encoded and their extract states added before the head)
  multiple choice  [start] context [delim] answer_k [extract]  for each answer k, scored
                   independently, softmax across the answers

The functions take already-encoded token ids so a test can check the exact sequences; a part that
would overflow the model's context is cut (a context or first part keeps its end, the part nearest
the delimiter; a later part keeps its beginning), never the framing tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

# GPT-1's code calls them _start_, _delimiter_ and _classify_; spelled like GPT-2's <|endoftext|> here.
START, DELIM, EXTRACT = "<|start|>", "<|delim|>", "<|extract|>"
SPECIAL_TOKENS = (START, DELIM, EXTRACT)
KINDS = ("classification", "entailment", "similarity", "choice")


@dataclass(frozen=True)
class Framing:
    """Ids of the three task tokens in the grown vocabulary."""

    start: int
    delim: int
    extract: int


def add_task_tokens(tok) -> Framing:
    """Add the three task tokens to a `tokenizers.Tokenizer` (in place); they take the next free ids.

    The pretrained embedding grows by exactly these rows (`head.from_pretrained`), so the ids must
    be base_vocab, base_vocab + 1, base_vocab + 2: checked here rather than assumed.
    """
    base = tok.get_vocab_size()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [base, base + 1, base + 2]:
        raise ValueError(f"task tokens got ids {ids}, expected {[base, base + 1, base + 2]} (tokenizer already "
                         "holds one of them?)")
    return Framing(*ids)


def _fit(parts: list[list[int]], budget: int) -> list[list[int]]:
    """Cut the longest part one token at a time until the parts fit `budget` tokens in all."""
    parts = [list(p) for p in parts]
    while sum(map(len, parts)) > budget:
        k = max(range(len(parts)), key=lambda i: (len(parts[i]), -i))  # ties: the earliest part
        if not parts[k]:
            raise ValueError(f"context of {budget} tokens cannot hold the framing tokens")
        del parts[k][0 if k == 0 and len(parts) > 1 else -1]
    return parts


def frame(parts: list[list[int]], fr: Framing, block_size: int) -> list[int]:
    """[start] part_0 [delim] part_1 ... [extract], cut to fit block_size."""
    parts = _fit(parts, block_size - len(parts) - 1)
    seq = [fr.start]
    for i, part in enumerate(parts):
        if i:
            seq.append(fr.delim)
        seq.extend(part)
    return seq + [fr.extract]


def classification(text: list[int], fr: Framing, block_size: int) -> list[list[int]]:
    return [frame([text], fr, block_size)]


def entailment(premise: list[int], hypothesis: list[int], fr: Framing, block_size: int) -> list[list[int]]:
    return [frame([premise, hypothesis], fr, block_size)]


def similarity(a: list[int], b: list[int], fr: Framing, block_size: int) -> list[list[int]]:
    return [frame([a, b], fr, block_size), frame([b, a], fr, block_size)]


def choice(context: list[int], answers: list[list[int]], fr: Framing, block_size: int) -> list[list[int]]:
    return [frame([context, ans], fr, block_size) for ans in answers]
