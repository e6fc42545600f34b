"""Books: a BooksCorpus-like source from .txt and .epub files (GPT-1, Radford et al. 2018).

GPT-1 pre-trained on BooksCorpus (Zhu et al. 2015): 7,000+ books of long contiguous text,
cleaned with ftfy. We read a folder of Project Gutenberg style books, strip the Gutenberg
header and licence footer (boilerplate that would otherwise repeat in every book), fix
mojibake with ftfy, normalise whitespace and drop books too short to be "long text".

Datatrove pipeline, so a Slurm/Ray executor can take over later:
    BookReader (sorted files; .txt decoded as UTF-8, .epub chapters via ebooklib + lxml)
    -> BookCleaner (Gutenberg strip, ftfy, newlines) -> extract.TooShortFilter (too_short, to removed/)
    -> JsonlWriter (docs/)
A file that cannot be read (invalid UTF-8, broken epub) has no text to write: the reader logs it,
records it in an errors journal and the report counts it (errors and dropped, reason "undecodable").
"""
from __future__ import annotations

import io as _io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseDiskReader

from pipeline.core import io, params, records, report, truth
from pipeline.sources import extract
from pipeline.sources.epub import epub_problem, read_epub

log = logging.getLogger(__name__)

STAGE = "books"
TEXT_SUFFIXES = (".txt",)
EPUB_SUFFIXES = (".epub",)
ERRORS_DIR = "errors"  # per-rank journals of files that yielded no document


@dataclass(frozen=True)
class BooksConfig:
    min_words: int = 2000          # BooksCorpus kept long contiguous text
    strip_gutenberg: bool = True   # remove Project Gutenberg header/footer licence text
    fix_text: bool = True          # ftfy.fix_text, as GPT-1 cleaned its text


# --- Project Gutenberg header/footer ---------------------------------------------------------
_F = re.IGNORECASE | re.MULTILINE
# Where the book begins: the end of the "*** START OF THE/THIS PROJECT GUTENBERG EBOOK ... ***" line
# (older files: no or fewer stars, "ETEXT"), or of the old "*END*THE SMALL PRINT! ...*END*" licence header.
_START = re.compile(r"^[ \t]*\**[ \t]*START OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*|^[ \t]*\*END\*?[ \t]*THE SMALL PRINT[^\n]*", _F)
# Where the book ends: the earliest of the END marker, "End of (the) Project Gutenberg's ...",
# the old "This file should be named ..." trailer and the start of a licence (files with no END marker).
_END = re.compile(
    r"^[ \t]*\**[ \t]*END OF (?:THE |THIS )?PROJECT GUTENBERG"
    r"|^[ \t]*\*+[ \t]*This file should be named"
    r"|^[ \t]*\*+[ \t]*START\**[ \t]*THE SMALL PRINT"
    r"|^[ \t]*\**[ \t]*START: FULL LICENSE",
    _F,
)
_TITLE = re.compile(r"Title:[ \t]*(\S[^\n]*)((?:\n[ \t]+\S[^\n]*)*)")
_PG_OF = re.compile(r"^\W*The Project Gutenberg E(?:Book|Text)(?: of|,)[ \t]+([^\n]+)", _F)


def _start_end(text: str, match: re.Match) -> int:
    """End of a START marker; a marker whose closing *** wraps onto the next line (43-0.txt) ends there."""
    end = match.end()
    line = match.group(0)
    if line.lstrip().startswith("*") and not line.rstrip().endswith("*"):
        nxt = text.find("\n", end + 1)
        for _ in range(2):  # the title wraps at most a couple of lines
            if nxt == -1:
                break
            if text[end:nxt].rstrip().endswith("***"):
                return nxt
            nxt = text.find("\n", nxt + 1)
    return end


def _drop_pg_paragraphs(body: str, last: bool) -> str:
    """Drop up to two short first (or last) paragraphs naming Project Gutenberg: the old
    "The Project Gutenberg Etext of X / by Y" lines that some files repeat inside the markers."""
    for _ in range(2):
        body = body.strip()
        cut = body.rfind("\n\n") if last else body.find("\n\n")
        para = body[cut + 2:] if last else body[:cut]
        if cut == -1 or len(para) > 500 or "project gutenberg" not in para.lower():
            return body
        body = body[:cut] if last else body[cut + 2:]
    return body.strip()


def strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header and footer; text without markers is returned unchanged.

    Robust to the variants found in real files: "THE"/"THIS", "EBOOK"/"ETEXT", no space after
    the stars, a START line wrapped over two lines, a missing END marker (the earliest footer
    sign then ends the book) and the 1990s "SMALL PRINT" licence at either end.

    Args:
        text: the whole file, newlines already unified to "\\n".

    Returns:
        The book body between the markers, stripped of surrounding whitespace.
    """
    starts = list(_START.finditer(text))
    first = starts[0].start() if starts else 0
    ends = [m.start() for m in _END.finditer(text) if m.start() > first]
    end = ends[0] if ends else len(text)
    # the last START-like marker before the footer: an old file's "*** START OF ..." followed by a
    # SMALL PRINT licence header starts its book after the licence, not after the first marker
    begin = max((_start_end(text, m) for m in starts if m.start() < end), default=0)
    if not starts and not ends:
        return text
    body = text[begin:end]
    if starts:
        body = _drop_pg_paragraphs(body, last=False)
    if ends:
        body = _drop_pg_paragraphs(body, last=True)
    return body.strip()


def find_title(text: str) -> str | None:
    """The book title from the Gutenberg header: a "Title:" line (continuation lines joined),
    else "The Project Gutenberg eBook of <Title>, by <Author>"; None when neither is there."""
    starts = _START.search(text)
    head = text[: starts.start()] if starts else text[:5000]
    m = _TITLE.search(head)
    if m:
        return " ".join((m.group(1) + m.group(2)).split())
    m = _PG_OF.search(head)
    if m:
        return re.split(r",\s+by\s+", m.group(1).strip(), maxsplit=1, flags=re.IGNORECASE)[0].strip() or None
    return None


# --- normalisation ---------------------------------------------------------------------------
_TRAILING_WS = re.compile(r"[ \t\u00a0]+\n")
_MANY_BLANKS = re.compile(r"\n{4,}")


def unify_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def normalise(text: str, fix_text: bool) -> str:
    """ftfy (GPT-1 cleaned its books with it), newlines unified, trailing spaces dropped,
    runs of more than two blank lines collapsed to two."""
    if fix_text:
        import ftfy

        text = ftfy.fix_text(text)
    text = _TRAILING_WS.sub("\n", unify_newlines(text))
    return _MANY_BLANKS.sub("\n\n\n", text).strip()


# --- datatrove steps -------------------------------------------------------------------------
class BookReader(BaseDiskReader):
    """Read .txt and .epub books from a folder, one Document per file, in sorted file order.

    A file that yields no text (invalid UTF-8, broken epub) is logged and written to
    `<errors_dir>/<rank:05d>.jsonl` as {"file", "reason"}; the pipeline goes on.
    """

    name = "📚 Books reader"

    def __init__(self, data_folder: str, errors_dir: str, **kwargs):
        super().__init__(data_folder, add_file_path=False, recursive=True, **kwargs)
        self.errors_dir = errors_dir
        self._journal = None

    def _error(self, rel: str, reason: str, detail: str) -> None:
        log.warning("book %s skipped (%s): %s", rel, reason, detail)
        self.stat_update(f"error_{reason}")
        self._journal.write(json.dumps({"file": rel, "reason": reason}) + "\n")
        self._journal.flush()

    def read_file(self, filepath: str):
        rel = str(PurePosixPath(filepath))
        suffix = PurePosixPath(rel).suffix.lower()
        if suffix not in TEXT_SUFFIXES + EPUB_SUFFIXES:
            log.info("ignoring %s: not a .txt or .epub book", rel)
            return
        try:
            if suffix in EPUB_SUFFIXES:
                with self.data_folder.open(filepath, "rb") as fh:  # through fsspec: remote folders work too
                    data = fh.read()
                problem = epub_problem(data)
                if problem:
                    self._error(rel, "bad_epub", problem)
                    return
                text, title = read_epub(_io.BytesIO(data))
                if not text.strip():
                    self._error(rel, "bad_epub", "no readable chapter")
                    return
            else:
                with self.data_folder.open(filepath, "rb") as fh:
                    raw = fh.read()
                try:
                    text = raw.decode("utf-8-sig")  # the sample and PG files are UTF-8; a BOM is common
                except UnicodeDecodeError as err:
                    self._error(rel, "undecodable", f"invalid UTF-8 at byte {err.start}")
                    return
                text = unify_newlines(text)
                title = find_title(text)
        except Exception as err:  # a broken epub/zip or unreadable file must not stop the stage
            self._error(rel, "bad_epub" if suffix in EPUB_SUFFIXES else "unreadable", f"{type(err).__name__}: {err}")
            return
        yield Document(
            text=text,
            id=records.book_id(rel),
            metadata={
                records.SOURCE: records.BOOKS,
                records.SOURCE_FILE: rel,
                records.BOOK_TITLE: title or PurePosixPath(rel).stem,
            },
        )

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        path = Path(self.errors_dir) / f"{rank:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as self._journal:  # rewritten by a rerun of this rank
            yield from super().run(data, rank, world_size)


class BookCleaner(PipelineStep):
    """Strip the Gutenberg header/footer, then ftfy + whitespace normalisation."""

    name = "🧽 Book cleaner"
    type = "✂️ - FORMAT"

    def __init__(self, cfg: BooksConfig):
        super().__init__()
        self.cfg = cfg

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            with self.track_time():
                text = unify_newlines(doc.text)
                if self.cfg.strip_gutenberg:
                    stripped = strip_gutenberg(text)
                    self.stat_update("gutenberg_stripped" if stripped != text.strip() else "no_gutenberg_markers")
                    text = stripped
                doc.text = normalise(text, self.cfg.fix_text)
            yield doc


# --- the stage -------------------------------------------------------------------------------
def _input_files(in_dir: Path) -> list[Path]:
    return sorted(p for p in in_dir.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + EPUB_SUFFIXES)


def run(cfg: BooksConfig, in_dir: str | Path, out_dir: str | Path, truth_path: str | Path | None = None,
        rep: report.StageReport | None = None) -> report.StageReport:
    """Read, clean and filter the books of `in_dir` into the document folder `out_dir`.

    Args:
        cfg: books params.
        in_dir: folder of .txt/.epub files (searched recursively; file names relative to it are the keys).
        out_dir: output document folder (docs/, removed/too_short/, _manifest.json).
        truth_path: the sample's truth.json; adds precision/recall of the drops to the report.
        rep: report to fill (a new StageReport("books") by default).

    Returns:
        The filled StageReport (not yet written).
    """
    from datatrove.executor import LocalPipelineExecutor

    rep = rep or report.StageReport(STAGE)
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"books input folder {in_dir} does not exist")
    files = _input_files(in_dir)
    work = io.work_dir(STAGE, io.run_fingerprint(cfg, inputs=[in_dir], code=[__file__]))  # absolute, as datatrove needs
    build, errors_dir = work / "out", work / ERRORS_DIR
    pipeline = [
        BookReader(str(in_dir.resolve()), errors_dir=str(errors_dir)),  # absolute too: io.work_dir says why
        BookCleaner(cfg),
        extract.TooShortFilter(cfg.min_words, exclusion_writer=io.removed_writer(build, "too_short")),
        io.doc_writer(build),
    ]
    if files:  # datatrove's reader raises on an empty folder; no books is an empty output, not a crash
        # one task: a single shard per folder keeps output bytes independent of the worker count
        LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(work / "logs")).run()
    else:
        log.warning("no .txt or .epub books in %s", in_dir)

    kept, dropped, words_out = [], [], 0
    for doc in io.iter_docs(build):
        kept.append(records.natural_key(doc.metadata))
        rep.docs_out += 1
        rep.bytes_out += len(doc.text.encode("utf-8"))
        words_out += len(doc.text.split())
    for doc in io.iter_removed(build):
        dropped.append(records.natural_key(doc.metadata))
        rep.drop(doc.metadata.get(records.FILTER_REASON, "unknown"))
    failed = []
    for journal in sorted(errors_dir.glob("*.jsonl")):
        for line in journal.read_text(encoding="utf-8").splitlines():
            failed.append(json.loads(line))
    failed.sort(key=lambda e: e["file"])
    for entry in failed:
        rep.error(entry["reason"])
        rep.drop(entry["reason"])  # a file with no readable text is a dropped book too
        dropped.append(entry["file"])
    rep.docs_in = len(kept) + len(dropped)
    rep.bytes_in = sum(p.stat().st_size for p in files)
    rep.extra["files_failed"] = failed
    rep.extra["words_out"] = words_out
    scored = truth.score_drops(truth.load(truth_path), STAGE, dropped, kept)
    if scored is not None:
        rep.extra["truth"] = scored

    io.write_manifest(build, STAGE, params.as_dict(cfg))
    io.publish(build, out_dir)
    return rep
