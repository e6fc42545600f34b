"""The training corpus as the contamination audit sees it: distinct documents, word hashes, lineage.

The mix may repeat a document; the audit counts each once, in shard order (`iter_train_docs` is the
one place that decides which documents count and their ordinals), and traces a dirty example back to
the document's source and the stages it came through (`TrainCorpus.lineage`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from pipeline.core import io, records
from pipeline.evaluation.ngrams import BATCH_CHARS, text_word_counts, text_word_hashes

log = logging.getLogger(__name__)

STAGE_PATHS = {
    records.BOOKS: "books -> dedup -> mix",
    records.WEBTEXT: "reddit_urls -> scrape -> dedup -> mix",
    records.CC: "cc -> quality_filter -> dedup -> mix",
}
LINEAGE_KEYS = (records.SOURCE, records.BOOK_TITLE, records.URL, records.REDDIT_POST_ID, records.WARC_FILE,
                records.WARC_RECORD_ID, records.SOURCE_FILE, records.DEDUP_CLUSTER_ID)


def iter_train_docs(folder: str | Path, subdir: str = "train/docs", errors: dict[str, int] | None = None,
                    progress: bool = True) -> Iterator[tuple[int, Any]]:
    """(ordinal, Document) for each distinct training document (mix may repeat one), in shard order.

    The one place that decides which documents count and in what order, so the metadata kept by
    TrainCorpus and an index streamed from the same folder agree on ordinals.
    """
    seen: set[str] = set()
    repeats = 0
    for doc in tqdm(io.iter_docs(folder, subdir), desc="read train docs", unit="doc", leave=False,
                    disable=not progress):
        if doc.id in seen:
            repeats += 1
            continue
        if not isinstance(doc.text, str):
            log.warning("training document %s has no text; skipped", doc.id)
            if errors is not None:
                errors["no_text"] = errors.get("no_text", 0) + 1
            continue
        seen.add(doc.id)
        yield len(seen) - 1, doc
    if errors is not None:
        errors["_repeats"] = repeats


class TrainCorpus:
    """Training documents, each counted once (mix may repeat a document): metadata, and word hashes
    unless `keep_words` is off (then an index streams the folder again: ShardedNgramIndex).

    Texts are hashed (or only counted) a batch at a time (ngrams.text_word_hashes): `words` and
    `n_words` hash what is still pending when they are read.
    """

    def __init__(self, keep_words: bool = True) -> None:
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self._words: list[np.ndarray] = []
        self.keep_words = keep_words
        self._n_words = 0
        self.errors: dict[str, int] = {}
        self.repeats = 0
        self.bytes = 0
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._pending_chars = 0

    def add(self, doc_id: str, text: Any, metadata: dict | None) -> None:
        if doc_id in self._seen:
            self.repeats += 1
            return
        if not isinstance(text, str):
            log.warning("training document %s has no text; skipped", doc_id)
            self.errors["no_text"] = self.errors.get("no_text", 0) + 1
            return
        self._seen.add(doc_id)
        self.bytes += len(text.encode("utf-8"))
        self.ids.append(doc_id)
        self.meta.append(dict(metadata or {}))
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.keep_words:
            wh, counts = text_word_hashes(self._pending)
            self._words.extend(np.split(wh, np.cumsum(counts)[:-1]))  # views of one batch array
        else:
            counts = text_word_counts(self._pending)
        self._n_words += int(counts.sum())
        self._pending, self._pending_chars = [], 0

    @property
    def words(self) -> list[np.ndarray]:
        """Each document's word hashes (uint64), in ordinal order; empty when keep_words is off."""
        self._flush()
        return self._words

    @property
    def n_words(self) -> int:
        self._flush()
        return self._n_words

    @classmethod
    def from_folder(cls, folder: str | Path, subdir: str = "train/docs", keep_words: bool = True) -> "TrainCorpus":
        """Read a document folder (the mix's train split by default) with pipeline.core.io.iter_docs."""
        corpus = cls(keep_words)
        errors: dict[str, int] = {}
        for _, doc in iter_train_docs(folder, subdir, errors):
            corpus.add(doc.id, doc.text, doc.metadata)
        corpus.repeats = errors.pop("_repeats", 0)
        corpus.errors = errors
        return corpus

    def lineage(self, ordinal: int) -> dict[str, Any]:
        """Where a training document came from: ids, natural key, provenance keys, stage path."""
        meta, doc_id = self.meta[ordinal], self.ids[ordinal]
        source = meta.get(records.SOURCE) or records.source_of(doc_id)
        out = {"doc_id": doc_id, "natural_key": records.natural_key(meta), "source": source,
               "stage_path": STAGE_PATHS.get(source, f"{source} -> mix")}
        out.update({k: meta[k] for k in LINEAGE_KEYS if meta.get(k) not in (None, "")})
        return out


