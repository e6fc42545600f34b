"""Decontamination of the training mix after GPT-3 (Brown et al. 2020, appendix C).

Every training n-gram colliding with a benchmark n-gram (the benchmark's n, ngram_index.choose_n)
is cut with 200 characters either side, pieces under 200 characters are dropped and a document
split into more than 10 pieces is dropped whole; n-grams in more than `max_doc_frequency` training
documents are left alone, as the audit ignores them. The contamination stage only counts what it
would cut (`contamination.decontaminate: true`); `python -m pipeline.evaluation.decontaminate decontaminate
--train data/processed/mix --eval data/raw/sample/eval --out data/processed/mix_decontaminated`
(or the older `python -m pipeline.evaluation.contamination decontaminate ...`) writes the cleaned copy of the
mix, a drop-in input for the tokenizer and tokenize stages.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipeline.core import records
from pipeline.evaluation import tasks
from pipeline.evaluation.ngram_index import batch_ngrams
from pipeline.evaluation.ngrams import (BATCH_CHARS, ContaminationConfig, choose_n, ngram_hashes, normalize,
                                       normalize_words, runs, text_word_hashes, word_hashes)

log = logging.getLogger(__name__)

DECON_PIECE = "decontam_piece"  # metadata: index of a piece cut out of a contaminated document


def eval_ngrams(task_map: dict[str, tasks.Task], cfg: ContaminationConfig) -> dict[int, np.ndarray]:
    """Sorted unique n-gram hashes of all benchmarks, grouped by each benchmark's n (choose_n)."""
    by_n: dict[int, list[np.ndarray]] = {}
    for task in task_map.values():
        words = [normalize(ex.contamination_text)[0] for ex in task.examples]
        n = choose_n([len(w) for w in words], cfg)
        by_n.setdefault(n, []).extend(ngram_hashes(word_hashes(w), n) for w in words)
    return {n: np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64) for n, parts in by_n.items()}


class SortedHashes:
    """Membership in a sorted array of unique n-gram hashes, fast for the common case of a miss.

    A table of which 2**22 top-bit buckets hold any hash (4 MB; ~1M benchmark n-grams fill ~20% of them) turns
    most training n-grams away with one lookup; the rest take a binary search, needles sorted so the search walks
    the array in order. (np.isin re-sorted the benchmarks' ~1M n-grams on every call: 0.65 s a document, which made
    a real mix take hours.) The hashes are mix64-finalised, so their top bits are uniform."""

    BITS = 22

    def __init__(self, hashes: np.ndarray):
        self.hashes = hashes
        self.buckets = np.zeros(1 << self.BITS, dtype=bool)
        self.buckets[(hashes >> np.uint64(64 - self.BITS)).astype(np.intp)] = True

    def contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), dtype=bool)
        if not len(h) or not len(self.hashes):
            return found
        maybe = np.flatnonzero(self.buckets[(h >> np.uint64(64 - self.BITS)).astype(np.intp)])
        order = maybe[np.argsort(h[maybe])]
        at = np.minimum(np.searchsorted(self.hashes, h[order]), len(self.hashes) - 1)
        found[order] = self.hashes[at] == h[order]
        return found


def _colliding(wh: np.ndarray, bad: dict[int, SortedHashes]) -> list[tuple[int, int]]:
    """(n, start word) of every training n-gram that is also a benchmark n-gram."""
    out = []
    for n, b in sorted(bad.items()):
        out += [(n, int(i)) for i in np.flatnonzero(b.contains(ngram_hashes(wh, n)))]
    return out


def _batches(docs: Iterable[Any]) -> Iterator[list[Any]]:
    """The documents with text, in order, in runs of about BATCH_CHARS characters (hashed in one numpy pass:
    per-document calls cost more than the hashing)."""
    return runs((d for d in docs if isinstance(d.text, str)), BATCH_CHARS, lambda d: len(d.text))


def _batch_hits(texts: list[str], bad: dict[int, SortedHashes]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per n: (text index, hash) of every benchmark n-gram in the texts, hashed together (text_word_hashes gives
    each text's word_hashes(normalize_words(text))); a window spanning two texts is no n-gram of either."""
    wh, counts = text_word_hashes(texts)
    out = {}
    for n, b in bad.items():
        h, text = batch_ngrams(wh, counts, n, 0)  # the audit's batching: no window across two texts
        hit = b.contains(h)
        out[n] = (text[hit], h[hit])
    return out


def split_text(text: str, cuts: list[tuple[int, int]], cfg: ContaminationConfig) -> tuple[list[str], int]:
    """Cut each (start, end) character span out of `text` with `decontaminate_margin` characters either
    side; returns (pieces of at least `decontaminate_min_piece` characters, number of pieces made)."""
    m = cfg.decontaminate_margin
    merged: list[list[int]] = []
    for s, e in sorted((max(0, s - m), min(len(text), e + m)) for s, e in cuts):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    pieces, pos = [], 0
    for s, e in merged:
        pieces.append(text[pos:s])
        pos = e
    pieces.append(text[pos:])
    made = [p for p in pieces if p.strip()]  # nothing left before the first cut is not a piece
    return [p for p in made if len(p) >= cfg.decontaminate_min_piece], len(made)


def decontaminate(docs: Callable[[], Iterable[Any]], task_map: dict[str, tasks.Task], cfg: ContaminationConfig,
                  counts: dict[str, int], eval_hashes: dict[int, np.ndarray] | None = None
                  ) -> Iterator[tuple[Any, str | None]]:
    """GPT-3 appendix C: remove benchmark n-grams from training documents.

    Each training n-gram that collides with a benchmark n-gram (the benchmark's n, choose_n) is
    removed with `decontaminate_margin` characters either side; the remaining pieces shorter than
    `decontaminate_min_piece` characters are dropped, and a document split into more than
    `decontaminate_max_pieces` pieces is dropped whole. N-grams in more than `max_doc_frequency`
    training documents are left alone, as the audit ignores them (common phrases). We count the
    pieces a split makes before the short ones are dropped (the paper does not say which).

    Args:
        docs: a callable returning a fresh iterable of datatrove Documents (read twice: document
            frequencies first, then the cut).
        counts: filled with docs_in, docs_clean, docs_split, docs_dropped_too_many_pieces,
            docs_dropped_all_short, pieces_out, pieces_dropped_short, collisions, chars_in, chars_out.
        eval_hashes: `eval_ngrams(task_map, cfg)` when the caller has built it already (None: built here).

    Yields:
        (document, None) for each kept document or piece (pieces get id "<id>#decon<k>" and
        metadata decontam_piece = k), (original document, reason) for each dropped one.
    """
    bad = {n: SortedHashes(b) for n, b in (eval_hashes or eval_ngrams(task_map, cfg)).items()}
    df: dict[int, dict[int, int]] = {n: {} for n in bad}
    seen: set[str] = set()
    for batch in _batches(docs()):  # pass 1: training document frequency of the benchmark n-grams, repeats once
        fresh = [d for d in batch if d.id not in seen and not seen.add(d.id)]
        for n, (text, h) in _batch_hits([d.text for d in fresh], bad).items():
            o = np.lexsort((h, text))
            first = np.ones(len(o), dtype=bool)  # each (document, n-gram) once
            first[1:] = (text[o][1:] != text[o][:-1]) | (h[o][1:] != h[o][:-1])
            for x, c in zip(*(a.tolist() for a in np.unique(h[o][first], return_counts=True))):
                df[n][x] = df[n].get(x, 0) + c
    frequent = {n: np.array(sorted(x for x, c in d.items() if c > cfg.max_doc_frequency), np.uint64) for n, d in df.items()}
    counts["ignored_frequent_ngrams"] = int(sum(len(f) for f in frequent.values()))
    bad = {n: SortedHashes(np.setdiff1d(b.hashes, frequent[n], assume_unique=True)) if len(frequent[n]) else b
           for n, b in bad.items()}
    for key in ("docs_in", "docs_clean", "docs_split", "docs_dropped_too_many_pieces", "docs_dropped_all_short",
                "pieces_out", "pieces_dropped_short", "collisions", "chars_in", "chars_out"):
        counts.setdefault(key, 0)
    for batch in _batches(docs()):  # pass 2: cut (most documents hold no benchmark n-gram: batched test first)
        found = [text for text, _ in _batch_hits([d.text for d in batch], bad).values()]
        dirty = set(np.concatenate([np.zeros(0, np.int64), *found]).tolist())
        yield from _cut(batch, dirty, bad, cfg, counts)


def _cut(batch: list[Any], dirty: set[int], bad: dict[int, SortedHashes], cfg: ContaminationConfig,
         counts: dict[str, int]) -> Iterator[tuple[Any, str | None]]:
    """decontaminate's pass 2 on one batch; `dirty`: the indices of its documents holding a benchmark n-gram."""
    from datatrove.data import Document

    for at, doc in enumerate(batch):
        counts["docs_in"] += 1
        counts["chars_in"] += len(doc.text)
        hits = _colliding(word_hashes(normalize_words(doc.text)), bad) if at in dirty else []
        if not hits:
            counts["docs_clean"] += 1
            counts["chars_out"] += len(doc.text)
            yield doc, None
            continue
        counts["collisions"] += len(hits)
        spans = normalize(doc.text)[1]
        kept, made = split_text(doc.text, [(spans[i][0], spans[i + n - 1][1]) for n, i in hits], cfg)
        if made > cfg.decontaminate_max_pieces:
            counts["docs_dropped_too_many_pieces"] += 1
            yield doc, "too_many_pieces"
            continue
        if not kept:
            counts["docs_dropped_all_short"] += 1
            yield doc, "all_pieces_short"
            continue
        counts["docs_split"] += 1
        counts["pieces_dropped_short"] += made - len(kept)
        for k, piece in enumerate(kept):
            counts["pieces_out"] += 1
            counts["chars_out"] += len(piece)
            yield Document(text=piece, id=f"{doc.id}#decon{k}", metadata={**doc.metadata, DECON_PIECE: k}), None


def decontaminate_folder(cfg: ContaminationConfig, train: str | Path, eval_dir: str | Path,
                         out: str | Path) -> dict[str, int]:
    """Write a decontaminated copy of a mix folder: <out>/train/docs (clean documents and pieces),
    <out>/removed/contaminated (documents dropped whole), <out>/val copied as is, a manifest.

    A drop-in replacement for the mix output: point tokenizer and tokenize at <out>. Returns the counts.
    """
    import shutil

    from pipeline.core import io, params

    train, out = Path(train), Path(out)
    task_map = tasks.load_all(eval_dir)
    counts: dict[str, int] = {}
    build = out.with_name(f".{out.name}.build")
    if build.exists():
        shutil.rmtree(build)
    with io.doc_writer(build, "train/docs") as kept, io.removed_writer(build, "contaminated") as removed:
        for doc, reason in decontaminate(lambda: io.iter_docs(train, "train/docs"), task_map, cfg, counts):
            if reason is None:
                kept.write(doc, rank=0)
            else:
                doc.metadata[records.FILTER_REASON] = f"decontaminate_{reason}"
                removed.write(doc, rank=0)
    if (train / "val").exists():
        shutil.copytree(train / "val", build / "val")
    io.write_manifest(build, "decontaminate", {**params.as_dict(cfg), "counts": counts}, {"mix": train})
    io.publish(build, out)
    shutil.rmtree(build)
    return counts


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m pipeline.evaluation.decontaminate decontaminate --train MIX --eval EVAL --out OUT`."""
    import argparse

    from pipeline.core import cli, params

    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.decontaminate",
                                     description="GPT-3 appendix C decontamination of a mix folder")
    parser.add_argument("command", choices=["decontaminate"])
    parser.add_argument("--train", required=True, help="mix output folder (train/docs inside)")
    parser.add_argument("--eval", dest="eval_dir", required=True, help="folder of eval set files")
    parser.add_argument("--out", required=True, help="folder for the decontaminated copy of the mix")
    parser.add_argument("--params", default="params.yaml", help="params file (its `contamination` section)")
    args = cli.parse_args(parser, argv)
    cfg = params.config(ContaminationConfig, "contamination", args.params)
    counts = decontaminate_folder(cfg, args.train, args.eval_dir, args.out)
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
