"""GPT-3's Common Crawl quality classifier (the quality_train stage); the filter is quality_filter.py.

Brown et al. 2020, appendix A: a logistic-regression classifier is trained with curated
corpora (WebText, Wikipedia, books) as positives and raw Common Crawl as negatives; a crawl
document is kept when `np.random.pareto(alpha) > 1 - document_score`, alpha = 9, so that
mostly high-scoring documents survive but some out-of-distribution ones do too.

Here the classifier is fastText supervised (fasttext-wheel 0.9.2; thread=1 and a fixed seed so
training is reproducible) and the Pareto draw is `rng.pareto(alpha, rng.uniform(seed, id,
"retention"))`: the same distribution as numpy's, keyed by document id, so a document's fate
never depends on processing order or worker count. P(keep | score) = (2 - score) ** -alpha.
Books are cut into ~100-300-word chunks before training: one 50k-word book is not one
example, and chunks look like crawl documents in length.

Cross-fitting (Chernozhukov et al. 2018's "cross-fitting"; K-fold out-of-fold prediction): the raw
crawl is both the negative class and the data to filter, so a model scores nearly every crawl page
in-sample, pushing good pages towards the negative label they were trained with. GPT-3 scored a
crawl far larger than its classifier's training sample, so most pages were unseen. Here every
training document gets a fold, `int(rng.uniform(seed, id, "quality_fold") * folds)`; fold model k
is trained without fold k, and a page that was used in training (`train_ids.txt`) is scored by
the fold model of its fold, any other page by the full model. The held-out metrics are the
out-of-fold predictions over all training documents.
"""
from __future__ import annotations

import contextlib
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import StringIO
from operator import itemgetter
from pathlib import Path

import numpy as np
from datatrove.utils.logging import logger
from tqdm import tqdm

from pipeline.core import io, records, rng
from pipeline.curate.quality_metrics import calibration, precision_recall, roc_auc

POSITIVE, NEGATIVE = "__label__hq", "__label__raw"
CHUNK_MIN_WORDS, CHUNK_MAX_WORDS = 100, 300  # crawl-page sized pieces of a book
TRAIN_IDS = "train_ids.txt"  # beside model.bin: sorted ids of every document any model trained on
QUALITY_MODEL = records.QUALITY_MODEL
FULL = "full"


@dataclass(frozen=True)
class QualityConfig:
    dim: int = 64
    epoch: int = 20
    word_ngrams: int = 2
    lr: float = 0.5
    min_count: int = 1
    bucket: int = 65536  # fastText's default 2M hash buckets make a 512 MB model at dim 64
    folds: int = 5
    alpha: float = 9.0


# What str.split() splits on but fastText does not: fastText splits on space, \t, \n, \v, \f, \r and \0 only
# (FastText.predict's docstring). tests/test_quality_batch.py rebuilds this list from str.isspace.
SPLIT_ONLY_SPACE = ("\x1c\x1d\x1e\x1f\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
                    + "\u2028\u2029\u202f\u205f\u3000")


def normalise(text: str) -> str:
    """The classifier's view of a text: lowercase, one line, single spaces."""
    return " ".join(text.lower().split())


def model_inputs(texts: list[str]) -> list[str]:
    """Texts as the scorer hands them to fastText: the same fastText tokens as normalise(text), cheaper.

    fastText splits on its own whitespace, so collapsing runs of it (normalise's split and join, over twice
    the cost of lowering) changes nothing the model sees. What must change is the newline (predict takes
    one line) and what str.split() splits on but fastText does not (SPLIT_ONLY_SPACE, e.g. a no-break
    space), which become spaces; then the tokens, and so the scores, equal normalise's
    (tests/test_quality_batch.py::test_model_inputs_score_like_normalise). One scan of the batch says which of
    those characters occur at all; an ASCII batch can only hold the first four.
    """
    joined = "".join(texts)
    odd = [c for c in (SPLIT_ONLY_SPACE[:4] if joined.isascii() else SPLIT_ONLY_SPACE) if c in joined]
    if not odd:
        return [t.lower().replace("\n", " ") for t in texts]
    out = []
    for text in texts:
        text = text.lower().replace("\n", " ")
        for c in odd:
            text = text.replace(c, " ")
        out.append(text)
    return out


# model_lines' fast path, one bytes.translate over the UTF-8 batch: ASCII A-Z lowered as str.lower lowers them;
# \n (predict takes one line), \r (bytes.splitlines would end a line there; fastText splits words on it just as
# on a space) and the ASCII SPLIT_ONLY_SPACE become spaces; 0xFF, a byte UTF-8 never holds, joins the texts and
# becomes each line's closing newline.
_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_LINE_VIEW = bytes.maketrans(_UPPER + b"\n\r" + SPLIT_ONLY_SPACE[:4].encode() + b"\xff",
                             _UPPER.lower() + b" " * 6 + b"\n")
_NOT_WIDE = bytes(range(128)) + b"\xff"  # deleting these from the batch leaves its non-ASCII characters


def model_lines(texts: list[str], utf8: list[bytes] | None = None) -> list[bytes]:
    """The lines fastText's predict would build from model_inputs(texts) (+ "\n", UTF-8), cheaper; the
    same fastText tokens, so the same scores (tests/test_quality_batch.py checks both).

    Lowering every page (str.lower) costs as much as the rest of the stage's text handling, most of it on
    pages with a few non-ASCII characters (curly quotes), which str.lower walks character by character.
    Here the whole batch is lowered and split as bytes (_LINE_VIEW), which is exact for every page that
    holds no non-ASCII character that str.lower changes or that is SPLIT_ONLY_SPACE; the batch's non-ASCII
    characters, a small residue, say whether any page holds one, and only such pages take model_inputs.
    `utf8`: the texts' UTF-8 if the caller has it already. Bytes go to fastText as they are (pybind11 takes
    bytes for std::string), and a line ending in "\n" is what FastText.predict appends before its call.
    """
    utf8 = list(map(str.encode, texts)) if utf8 is None else utf8
    blob = b"\xff".join(utf8 + [b""])
    lines = blob.translate(_LINE_VIEW).splitlines(True)
    wide = blob.translate(None, _NOT_WIDE).decode()
    if wide and (wide.lower() != wide or any(c in wide for c in SPLIT_ONLY_SPACE[4:])):
        odd = [c for c in set(wide) if c.lower() != c or c in SPLIT_ONLY_SPACE]
        for i, text in enumerate(texts):
            if not text.isascii() and any(c in text for c in odd):
                lines[i] = (model_inputs([text])[0] + "\n").encode()
    return lines


def chunk_words(text: str, min_words: int = CHUNK_MIN_WORDS, max_words: int = CHUNK_MAX_WORDS) -> list[str]:
    """Cut a long text into pieces of min_words..max_words words, on paragraph bounds where possible."""
    chunks, current = [], []
    for para in re.split(r"\n\s*\n", text):
        words = para.split()
        while words:
            room = max_words - len(current)
            current.extend(words[:room])
            words = words[room:]
            if len(current) >= max_words:
                chunks.append(" ".join(current))
                current = []
        if len(current) >= min_words:
            chunks.append(" ".join(current))
            current = []
    if current:
        if chunks and len(current) < min_words:
            chunks[-1] += " " + " ".join(current)  # a short tail joins the previous piece
        else:
            chunks.append(" ".join(current))
    return chunks


# --- training set ----------------------------------------------------------------------------
def examples(folder: str | Path, label: str) -> list[tuple[str, str, str, str]]:
    """(example id, parent doc id, label, normalised text) for every document of a folder; books chunked."""
    out = []
    for doc in io.iter_docs(folder):
        pieces = chunk_words(doc.text) if records.source_of(doc.id) == records.BOOKS else [doc.text]
        for i, piece in enumerate(pieces):
            text = normalise(piece)
            if text:
                out.append((f"{doc.id}#{i}" if len(pieces) > 1 else doc.id, doc.id, label, text))
    return out


def fold_of(seed: int, doc_id: str, folds: int) -> int:
    """Cross-fitting fold of a document: a pure function of (seed, parent document id), so the
    chunks of one book share a fold and the filter can recompute it from the id alone."""
    return min(int(rng.uniform(seed, doc_id, "quality_fold") * folds), folds - 1)


def build_dataset(positives: list[Path], negatives: list[Path], seed: int, folds: int):
    """Balanced, deterministically ordered training examples, plus counts.

    The larger class is downsampled to the smaller one's size by rng keyed on example id (positives
    in equal shares per source, as far as each source has examples). Every kept example is trained on
    by the full model and by all fold models but the one of its parent document's fold."""
    pos = [e for folder in positives for e in examples(folder, POSITIVE)]
    neg = [e for folder in negatives for e in examples(folder, NEGATIVE)]
    n = min(len(pos), len(neg))
    by_draw = lambda pool, why: sorted(pool, key=lambda e: (rng.uniform(seed, e[0], why), e[0]))  # noqa: E731
    pos_kept, neg_kept = _round_robin(by_draw(pos, "balance"))[:n], by_draw(neg, "balance")[:n]
    train = by_draw(pos_kept + neg_kept, "order")  # interleaved classes: SGD sees no long runs of one label
    counts = {
        "positive_examples": len(pos), "negative_examples": len(neg), "balanced_per_class": n,
        "positive_sources": _by_source(pos_kept), "negative_sources": _by_source(neg_kept),
        "train": _by_label(train), "train_documents": len({e[1] for e in train}),
        "folds": [_by_label([e for e in train if fold_of(seed, e[1], folds) == k]) for k in range(folds)],
    }
    return train, counts


def _round_robin(rows: list) -> list:
    """Interleave rows source by source (books, webtext, ...), keeping each source's order: a
    downsampled prefix then holds equal shares per source, so book chunks cannot crowd out WebText."""
    groups: dict[str, list] = {}
    for e in rows:
        groups.setdefault(records.source_of(e[1]), []).append(e)
    out, queues = [], [groups[k] for k in sorted(groups)]
    for i in range(max(map(len, queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def _by_source(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in rows:
        out[records.source_of(e[1])] = out.get(records.source_of(e[1]), 0) + 1
    return dict(sorted(out.items()))


def _by_label(rows) -> dict[str, int]:
    return {"positive": sum(e[2] == POSITIVE for e in rows), "negative": sum(e[2] == NEGATIVE for e in rows)}


# --- model ---------------------------------------------------------------------------------
def train_model(train: list, cfg: QualityConfig, seed: int, model_path: str | Path) -> None:
    """Train fastText on `train` examples and save it to model_path (atomically)."""
    import fasttext

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text("".join(f"{label} {text}\n" for _, _, label, text in train), encoding="utf-8")
        model = fasttext.train_supervised(
            input=str(data), dim=cfg.dim, epoch=cfg.epoch, wordNgrams=cfg.word_ngrams, lr=cfg.lr,
            minCount=cfg.min_count, bucket=cfg.bucket, thread=1, seed=seed, verbose=0,
        )  # thread=1: with several threads Hogwild updates make the weights order-dependent
        with io.atomic_path(model_path) as tmp_model:
            model.save_model(str(tmp_model))


class Scorer:
    """P(high quality) of texts under a saved model (loaded lazily: fastText models do not pickle)."""

    def __init__(self, model_path: str | Path):
        self.model_path = str(model_path)
        self._model = None

    def __call__(self, texts: list[str], utf8: list[bytes] | None = None) -> np.ndarray:
        """P(high quality) of each text; `utf8`: the texts' UTF-8, if the caller has it (see model_lines)."""
        return self.score_lines(model_lines(texts, utf8) if texts else [])

    def score_lines(self, lines: list[bytes]) -> np.ndarray:
        """P(high quality) of each of model_lines' lines."""
        if self._model is None:
            import fasttext

            with contextlib.redirect_stderr(StringIO()):  # 0.9.2 prints a stale API notice on every load
                self._model = fasttext.load_model(self.model_path)
        if not lines:
            return np.zeros(0)
        # FastText.predict on a list checks each text for a newline and appends one, then calls
        # multilinePredict; model_lines' lines end in their newline and hold no other, so the call is direct
        # (fasttext-wheel 0.9.2, pinned). A LIST: 0.9.2 + numpy 2 fails on a single string (ANCHORS.md). And
        # k=1: on a list, 0.9.2 returns the top probability repeated k times for k > 1 (found here).
        # With two softmax labels the top one says it all: P(pos) = p or 1 - p (p float32, widened exactly).
        labels, probs = self._model.f.multilinePredict(lines, 1, 0.0, "strict")
        p = np.concatenate(probs).astype(np.float64)
        if len(p) != len(lines):  # k=1: at most one label each, so then exactly one each
            raise ValueError(f"fastText labelled {len(p)} of {len(lines)} texts")
        positive = np.fromiter(map(POSITIVE.__eq__, map(itemgetter(0), labels)), bool, len(lines))
        return np.clip(np.where(positive, p, 1.0 - p), 0.0, 1.0)


class CrossFitScorer:
    """Scores each page with a model that never trained on it (the module docstring's cross-fitting).

    Reads model.json and train_ids.txt beside model_path. A bare model.bin (no model.json) scores
    every page with the full model; a model.json that declares folds whose files are missing is an
    error, since falling back would silently score training pages in-sample again."""

    def __init__(self, model_path: str | Path):
        model_path = Path(model_path)
        meta_path = model_path.parent / "model.json"
        meta = io.read_json(meta_path) if meta_path.exists() else {}
        self.folds, self.fit_seed = int(meta.get("folds", 0)), meta.get("seed")
        self.scorers = {FULL: Scorer(model_path)}
        self.train_ids: frozenset[str] = frozenset()
        if not self.folds:
            logger.warning(f"{model_path} has no cross-fitting folds: every page is scored by the full model")
            return
        ids_path = model_path.parent / TRAIN_IDS
        paths = [ids_path] + [model_path.parent / f"fold_{k}.bin" for k in range(self.folds)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"model.json declares {self.folds} folds but these files are missing: {missing}")
        self.train_ids = frozenset(ids_path.read_text(encoding="utf-8").split())
        self.scorers.update({f"fold_{k}": Scorer(paths[1 + k]) for k in range(self.folds)})

    def model_for(self, doc_id: str) -> str:
        """'fold_<k>' for a document some model trained on, else 'full'."""
        if doc_id in self.train_ids:
            return f"fold_{fold_of(self.fit_seed, doc_id, self.folds)}"
        return FULL

    def __call__(self, ids: list[str], texts: list[str],
                 utf8: list[bytes] | None = None) -> tuple[np.ndarray, list[str]]:
        """(P(high quality) per text, name of the model that scored it); `utf8` as Scorer takes it."""
        names, parts = self.plan(ids, texts, utf8)
        return self.gather(len(ids), parts, [self.scorers[name].score_lines(lines) for name, _, lines in parts]), names

    def plan(self, ids: list[str], texts: list[str], utf8: list[bytes] | None = None):
        """(model name per page, model calls): each call is (name, page positions or None for all, model lines)."""
        # a set test first: almost every crawl page is one no model trained on
        names = [FULL] * len(ids) if self.train_ids.isdisjoint(ids) else [self.model_for(i) for i in ids]
        if len(set(names)) <= 1:  # the usual batch: no training page in it, one model call
            return names, [(names[0] if names else FULL, None, model_lines(texts, utf8))]
        parts = []
        for name in sorted(set(names)):
            idx = [j for j, n in enumerate(names) if n == name]
            parts.append((name, idx, model_lines([texts[j] for j in idx], None if utf8 is None else [utf8[j] for j in idx])))
        return names, parts

    @staticmethod
    def gather(n: int, parts: list, scores: list[np.ndarray]) -> np.ndarray:
        """The batch's scores, in page order, from plan()'s calls and their scores."""
        if len(parts) == 1 and parts[0][1] is None:
            return scores[0]
        out = np.zeros(n)
        for (_, idx, _), part in zip(parts, scores):
            out[idx] = part
        return out

    def digest(self) -> str:
        """Hash of every file that decides a score: part of the filter's resume fingerprint."""
        parent = Path(self.scorers[FULL].model_path).parent
        files = [Path(s.model_path) for _, s in sorted(self.scorers.items())]
        files += [p for p in (parent / "model.json", parent / TRAIN_IDS) if p.exists()]
        with ThreadPoolExecutor(4) as pool:  # hashlib frees the GIL: six ~20 MB models hash side by side
            sums = list(pool.map(io.sha256_file, files))
        self.sha256 = {str(p): h for p, h in zip(files, sums)}  # each file's own, for a manifest to reuse
        return records.sha("".join(f"{p.name}={h};" for p, h in zip(files, sums)))


# --- the stage -----------------------------------------------------------------------------
def run_train(cfg: QualityConfig, seed: int, positives: list, negatives: list, out_dir: str | Path):
    """quality_train: build the balanced set, train the full model and the cross-fitting fold models.

    Writes out_dir/model.bin (full), out_dir/fold_<k>.bin, out_dir/train_ids.txt and out_dir/model.json;
    returns the StageReport (not yet written) with out-of-fold precision/recall/F1/AUC and a calibration
    table (also a plot) over every training example."""
    import fasttext

    from pipeline.core import params, report

    if cfg.folds < 2:
        raise ValueError(f"quality.folds must be at least 2 for cross-fitting, got {cfg.folds}")
    rep = report.StageReport("quality_train")
    positives, negatives = [Path(p) for p in positives], [Path(p) for p in negatives]
    for folder in positives + negatives:
        if not io.shard_paths(folder):
            rep.error("empty_input_folder")
            logger.warning(f"{folder} holds no documents; training goes on without it")
    train, counts = build_dataset(positives, negatives, seed, cfg.folds)
    rep.docs_in = counts["positive_examples"] + counts["negative_examples"]
    rep.docs_out = len(train)
    rep.drop("balance_downsampled", rep.docs_in - 2 * counts["balanced_per_class"])
    fold = np.array([fold_of(seed, e[1], cfg.folds) for e in train], int)
    for k in range(cfg.folds):  # every fold model needs both classes too
        if not all(_by_label([e for e, f in zip(train, fold) if f != k]).values()):
            raise ValueError(f"cannot train two-class fold model {k} from {counts}: both classes need documents")
    build = io.staging_dir("quality_train")  # the output is built there and published whole at the end
    model_path = build / "model.bin"
    train_model(train, cfg, seed, model_path)
    oof = np.zeros(len(train))
    for k in tqdm(range(cfg.folds), desc="fold models"):
        fold_path = build / f"fold_{k}.bin"
        train_model([e for e, f in zip(train, fold) if f != k], cfg, seed, fold_path)
        idx = np.flatnonzero(fold == k)
        oof[idx] = Scorer(fold_path)([train[i][3] for i in idx])
    with io.atomic_path(build / TRAIN_IDS) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in sorted({e[1] for e in train})), encoding="utf-8")
    labels = np.array([e[2] == POSITIVE for e in train], bool)
    metrics = {**precision_recall(labels, oof), "roc_auc": round(roc_auc(labels, oof), 4),
               "examples": len(train), "method": "out_of_fold", "folds": cfg.folds}
    calib = calibration(labels, oof)
    rep.bytes_in = sum(len(e[3].encode()) for e in train)
    rep.bytes_out = sum(p.stat().st_size for p in build.glob("*.bin"))
    rep.extra.update({"heldout": metrics, "counts": counts, "calibration": calib})
    io.write_json(build / "model.json", {
        "labels": {"positive": POSITIVE, "negative": NEGATIVE}, "params": params.as_dict(cfg), "seed": seed,
        "folds": cfg.folds, "fold_rule": 'int(rng.uniform(seed, doc_id, "quality_fold") * folds)',
        "train_ids": TRAIN_IDS, "counts": counts, "heldout": metrics, "model_sha256": io.sha256_file(model_path),
        "fold_sha256": [io.sha256_file(build / f"fold_{k}.bin") for k in range(cfg.folds)],
        "fasttext": getattr(fasttext, "__version__", "0.9.2"), "normalise": "lowercase; whitespace collapsed",
        "chunk_words": [CHUNK_MIN_WORDS, CHUNK_MAX_WORDS],
    })
    report.write_plot("quality_train", "calibration", [r for r in calib if r["docs"]])
    io.publish(build, out_dir, move=True)
    return rep
