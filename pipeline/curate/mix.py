"""The training mixture: per-source weights and a held-out validation split (GPT-3 sec. 2.2, table 2.2).

GPT-3 sampled its training data by source weight rather than by source size (CC 60%, WebText2 22%,
Books1 8%, Books2 8%, Wikipedia 3%), so small high-quality sources are seen several times
("epochs elapsed" 2.9 for WebText2, 0.44 for CC). Without a token budget, we size the mixture so that
no source is cut: the source with the most characters per unit of weight is used exactly once and
every other one is repeated (whole documents, deterministic) until its share of training
characters equals its weight; the fractional last pass takes documents in a keyed random order.

Validation documents are chosen before any of this, by rng.uniform(seed, doc id, "val") <
val_fraction, so the split of a document never depends on the order or the other documents, and a
validation document never enters training (not even as a repeat).

Everything is held in memory (fine for the sample; a streaming two-pass version is the scaling step).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections import Counter, defaultdict
from pathlib import Path

from datatrove.data import Document
from tqdm import tqdm

from pipeline.core import io, params, records, report, rng

log = logging.getLogger(__name__)
STAGE = "mix"
TRAIN, VAL = "train", "val"
MAX_SANE_EPOCHS = 10.0  # above this the report flags a source as over-repeated
EPOCH = "epoch"  # metadata: 0 for a document's first copy in training, k for its k-th repeat


@dataclasses.dataclass(frozen=True)
class MixConfig:
    """params.yaml `mix`: per-source share of training characters, and the validation fraction."""

    weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {records.CC: 0.6, records.WEBTEXT: 0.22, records.BOOKS: 0.18})
    val_fraction: float = 0.1
    max_epochs: float = 4.0


def is_val(seed: int, doc_id: str, val_fraction: float) -> bool:
    """Whether a document is held out for validation: a keyed draw, independent of everything else."""
    return rng.uniform(seed, doc_id, "val") < val_fraction


def plan(chars: dict[str, list[tuple[str, int]]], weights: dict[str, float], seed: int,
         max_epochs: float = 0.0) -> dict[str, list[tuple[str, int]]]:
    """Choose the training copies of each source: {source: [(doc id, epoch), ...]}.

    Args:
        chars: source -> [(doc id, characters)] of its training documents.
        weights: source -> target share of training characters (normalised over the sources given).
        seed: keys the order in which a partial pass picks documents.
        max_epochs: cap on how often a source is repeated (0 = no cap); GPT-3 repeated none more
            than 3.4 times (Wikipedia). A capped source falls short of its weight and the report
            says so: with no token budget to fill, no document is ever cut to honour a share.

    Returns:
        The (id, epoch) copies per source; sources without weight or documents get none.
    """
    sizes = {s: sum(n for _, n in docs) for s, docs in chars.items()}
    live = {s: float(weights[s]) for s in chars if weights.get(s, 0) > 0 and sizes[s] > 0}
    norm = sum(live.values())
    if not live:
        return {s: [] for s in chars}
    total = max(sizes[s] / (w / norm) for s, w in live.items())  # the largest relative source, used once
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in chars}
    for s, w in live.items():
        budget = total * w / norm
        if max_epochs > 0:
            budget = min(budget, max_epochs * sizes[s])
        full = math.floor(budget / sizes[s] + 1e-9)
        docs = sorted(chars[s])
        out[s] = [(d, k) for k in range(full) for d, _ in docs]
        left = budget - full * sizes[s]
        # partial pass: documents in keyed random order while adding one moves the total nearer the budget
        for d, n in sorted(docs, key=lambda x: (rng.uniform(seed, x[0], f"mix_epoch_{full}"), x[0])):
            if left < n / 2:
                continue
            out[s].append((d, full))
            left -= n
    return out


def _source_folders(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and io.shard_paths(p)} if root.is_dir() else {}


def run(cfg: MixConfig, seed: int, in_dir: str | Path, out: str | Path) -> report.StageReport:
    """Build <out>/train and <out>/val document folders from the deduplicated sources in `in_dir`.

    Args:
        cfg: params.yaml `mix`.
        seed: params.yaml `seed`.
        in_dir: the dedup output (one document folder per source).
        out: output folder: train/docs, val/docs, _manifest.json.

    Returns:
        The filled StageReport (the caller writes it).
    """
    rep = report.StageReport(STAGE)
    # absolute paths: fsspec caches a datatrove folder by its path string (a relative one would stick
    # to the first working directory it was resolved in)
    folders = _source_folders(Path(in_dir).resolve())
    if not folders:
        log.error("mix input %s holds no source document folders", in_dir)
        rep.error("missing_input")
    docs: dict[str, Document] = {}
    train_chars: dict[str, list[tuple[str, int]]] = defaultdict(list)
    stats: dict[str, Counter] = defaultdict(Counter)
    for source, folder in folders.items():
        for doc in tqdm(io.iter_docs(folder), desc=f"mix read {source}", unit="doc", disable=None, leave=False):
            if doc.id in docs:
                log.error("document %s appears twice in the mix input; the second copy is skipped", doc.id)
                rep.error("duplicate_id")
                continue
            docs[doc.id] = doc
            n = len(doc.text)
            stats[source].update(docs_in=1, chars_in=n)
            rep.docs_in += 1
            rep.bytes_in += len(doc.text.encode("utf-8"))
            if is_val(seed, doc.id, cfg.val_fraction):
                stats[source].update(val_docs=1, val_chars=n)
            else:
                train_chars[source].append((doc.id, n))
    for source in sorted(set(folders) - set(cfg.weights)):
        log.error("source %s has no weight in mix.weights; its documents stay out of training", source)
        rep.drop("unweighted_source", len(train_chars.get(source, [])))
    copies = plan(dict(train_chars), cfg.weights, seed, cfg.max_epochs)

    fp = params.fingerprint(cfg, {"seed": seed})
    staging = io.work_dir(STAGE, fp) / "out"
    if staging.exists():
        shutil.rmtree(staging)
    train = [(rng.uniform(seed, f"{d}\x1f{k}", "mix_order"), d, k) for cs in copies.values() for d, k in cs]
    with io.doc_writer(staging / TRAIN) as writer:
        for _, d, k in tqdm(sorted(train), desc="mix write train", unit="doc", disable=None, leave=False):
            src = docs[d]
            doc = Document(text=src.text, id=d, metadata={**src.metadata, records.SPLIT: TRAIN, EPOCH: k})
            writer.write(doc, 0)
            stats[records.source_of(d)].update(train_docs=1, train_chars=len(src.text))
            stats[records.source_of(d)]["train_unique_docs"] += k == 0
            rep.bytes_out += len(src.text.encode("utf-8"))
    val = sorted(d for d in docs if is_val(seed, d, cfg.val_fraction))
    with io.doc_writer(staging / VAL) as writer:
        for d in val:
            writer.write(Document(text=docs[d].text, id=d, metadata={**docs[d].metadata, records.SPLIT: VAL}), 0)
            rep.bytes_out += len(docs[d].text.encode("utf-8"))
    rep.docs_out = len(train) + len(val)
    _summarise(rep, cfg, stats)
    io.write_manifest(staging, STAGE, {"mix": params.as_dict(cfg), "seed": seed}, {"dedup": in_dir})
    io.publish(staging, out)
    return rep


def _summarise(rep: report.StageReport, cfg: MixConfig, stats: dict[str, Counter]) -> None:
    total = sum(c["train_chars"] for c in stats.values())
    live = {s: w for s, w in cfg.weights.items() if stats.get(s, {}).get("train_chars")}
    norm = sum(live.values()) or 1.0
    per_source = {}
    for s in sorted(set(stats) | set(cfg.weights)):
        c = stats.get(s, Counter())
        train_in = c["chars_in"] - c["val_chars"]
        per_source[s] = {
            **{k: c[k] for k in ("docs_in", "chars_in", "val_docs", "val_chars", "train_unique_docs",
                                 "train_docs", "train_chars")},
            "epochs": round(c["train_chars"] / train_in, 3) if train_in else 0.0,
            "target_share": round(live.get(s, 0.0) / norm, 4),
            "achieved_share": round(c["train_chars"] / total, 4) if total else 0.0,
        }
    rep.extra["per_source"] = per_source
    rep.extra["train_docs"] = sum(c["train_docs"] for c in stats.values())
    rep.extra["train_chars"] = total
    rep.extra["val_docs"] = sum(c["val_docs"] for c in stats.values())
    rep.extra["max_share_error"] = round(max((abs(v["achieved_share"] - v["target_share"])
                                              for v in per_source.values()), default=0.0), 4)
    # GPT-3's most repeated source (Wikipedia) ran 3.4 epochs; far more means a starved source
    heavy = {s: v["epochs"] for s, v in per_source.items() if v["epochs"] > MAX_SANE_EPOCHS}
    for s, e in sorted(heavy.items()):
        log.warning("source %s is repeated %.1f times to reach its weight: too few documents for it", s, e)
    rep.extra["over_repeated_sources"] = dict(sorted(heavy.items()))
    if set(cfg.weights) - set(live):
        rep.extra["weights_without_documents"] = sorted(set(cfg.weights) - set(live))
