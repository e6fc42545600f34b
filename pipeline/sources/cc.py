"""Common Crawl documents: WARC/WET records -> extracted, language-filtered crawl documents.

GPT-3 (Brown et al. 2020, sec. 2.2 and appendix A) started from raw Common Crawl, extracted
text and kept English; quality filtering and fuzzy dedup are later stages (quality.py,
dedup.py). This module is a datatrove pipeline so Slurm/Ray executors can take it over:

    WarcRecordReader -> HtmlExtractor -> TooShortFilter -> LanguageFilter
        [-> GopherRepetitionFilter] [-> GopherQualityFilter] -> JsonlWriter

datatrove's own WarcReader is not used: it drops the record's byte offset (needed for
provenance: seek to `warc_offset` and the record is there), needs cchardet/libmagic, and
silently stops on a truncated file. warcio is silent on truncation too, so we check it:
a record whose body ends early, or a file whose last record does not reach its end, is
counted as an error (`errors.truncated_record`) and reading goes on with the next file.

Language: a local fastText LID model (lid.176.bin) when `cc.lang_model` is set, else an
offline stopword heuristic (language.py). Nothing is downloaded, ever (datatrove's LanguageFilter would).

Optional Gopher rules (Rae et al. 2021, appendix A1: repetition, and the quality heuristics: word
counts and lengths, symbol and bullet ratios, stopwords), off by default because GPT-3 used only
its classifier. They are datatrove's own filters, given an offline regex word tokenizer: their
default English tokenizer imports spaCy, absent here, and its NLTK alternative downloads punkt.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.utils.logging import logger

from pipeline.core import io, records
from pipeline.sources import extract
from pipeline.sources.extract import TooShortFilter
from pipeline.sources.language import LanguageFilter, RegexWordTokenizer

WARC_SUFFIXES = (".warc.gz", ".warc", ".warc.wet.gz", ".wet.gz", ".wet")
HTML_TYPES = ("text/html", "application/xhtml+xml")
LID_FOLDER = Path("models/lid")  # a dvc.yaml dep of this stage: a LID model here is versioned by its bytes
WARC_TYPE = "warc_type"  # metadata: response (HTML, extracted here) or conversion (WET, text already)
WARC_DATE = "warc_date"


@dataclass(frozen=True)
class CCConfig:
    min_words: int = 50
    languages: tuple[str, ...] = ("en",)  # empty: no language filter
    lang_model: str = ""  # path to fastText lid.176.bin; empty: stopword heuristic
    gopher_repetition: bool = False  # datatrove GopherRepetitionFilter (Gopher table A1); off: GPT-3 had none
    gopher_quality: bool = False  # datatrove GopherQualityFilter (Gopher's quality rules); off: GPT-3 had none


def warc_files(folder: str | Path) -> list[Path]:
    """WARC/WET files of a folder (not recursive), sorted by name so shards are stable."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WARC_SUFFIXES))


# --- reading ---------------------------------------------------------------------------------
def _charset(content_type: str | None, body: bytes = b"") -> str | None:
    """Charset from the HTTP Content-Type, else from a <meta> tag in the page's first 4 KB."""
    match = re.search(r"charset=([\w\-]+)", content_type or "", re.I)
    if not match:
        match = re.search(rb"""<meta[^>]+charset=["']?([\w\-]+)""", body[:4096], re.I)
        return match.group(1).decode("ascii") if match else None
    return match.group(1)


def iter_warc(path: str | Path, stat=lambda key, n=1: None):
    """Yield candidate documents of one WARC/WET file as dicts (text, id, metadata).

    HTML responses keep their raw HTML as text (extracted by HtmlExtractor); WET conversion
    records already hold text. Other records (request, metadata, non-HTML) are read through and
    counted. `stat(key)` receives counters: records, skipped_<type>, error_<reason>.
    A truncated or corrupt file ends its iteration after counting the error; the caller goes on.
    """
    from warcio.archiveiterator import ArchiveIterator

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        it = ArchiveIterator(fh)
        try:
            for record in it:
                if not record.format.startswith("warc"):  # warcio reads any text line as an ARC header
                    raise ValueError(f"not a WARC record (format {record.format})")
                stat("records")
                wanted = record.rec_type == "conversion" or (
                    record.rec_type == "response" and _is_html(record)
                )
                problem = _header_problem(record) if wanted else None
                if problem:  # read through it, keep nothing: the next record is still reachable
                    stat(f"error_{problem}")
                    logger.warning(f"{path.name}: record {record.rec_headers.get_header('WARC-Record-ID')} "
                                   f"skipped: {problem}")
                    wanted = False
                body = record.content_stream().read() if wanted else _drain(record.raw_stream)
                truncated = record.raw_stream.limit > 0  # body shorter than its Content-Length
                offset = it.get_record_offset()  # (reads the record to its end: only after the body)
                if truncated:
                    stat("error_truncated_record")
                    logger.warning(f"{path.name}: record at byte {offset} is truncated; skipping the rest of the file")
                    return
                if not wanted:
                    stat(f"skipped_{record.rec_type}")
                    continue
                yield _record_dict(record, path.name, offset, body, stat)
            # warcio stops silently on a cut-off record header: the last record must reach the file's end
            end = it.get_record_offset() + it.get_record_length() if it.member_info else 0
            fh.seek(end)
            if (end < size and fh.read().strip()) or not _gzip_complete(path):
                stat("error_truncated_record")
                logger.warning(f"{path.name}: file ends inside a record after byte {end}; it is truncated")
        except Exception as exc:  # corrupt gzip, garbage instead of a WARC header...
            stat("error_corrupt_file")
            logger.warning(f"{path.name}: unreadable, not a WARC or corrupt ({exc!r}); going on with the next file")


MAX_RECORD_BYTES = 32 << 20  # Common Crawl cuts payloads at 1 MiB; a record this large is damage, not a page
_WARC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z)?")  # W3C-ISO8601, as WARC 1.1 says


def _header_problem(record) -> str | None:
    """A wanted record whose headers cannot be trusted: missing id, overlong URI, bad date, huge length."""
    head = record.rec_headers
    if not head.get_header("WARC-Record-ID"):
        return "missing_record_id"
    if len(head.get_header("WARC-Target-URI") or "") > records.MAX_URL_CHARS:
        return "url_too_long"
    if not _WARC_DATE.fullmatch((head.get_header("WARC-Date") or "").strip()):
        return "bad_warc_date"
    length = (head.get_header("Content-Length") or "").strip()
    if not length.isdigit() or int(length) > MAX_RECORD_BYTES:
        return "bad_content_length" if not length.isdigit() else "record_too_large"
    return None


def _drain(stream, chunk: int = 1 << 20) -> bytes:
    """Read a record's body to its end in bounded chunks (a skipped 1 GB record never sits in memory)."""
    while stream.read(chunk):
        pass
    return b""


def _gzip_complete(path: Path) -> bool:
    """False when a .gz file's last member is cut short. warcio yields a record whose gzip trailer
    is missing without complaint; one extra decompression pass (cheap next to extraction) catches it."""
    import gzip

    if not path.name.endswith(".gz"):
        return True
    try:
        with gzip.open(path, "rb") as gz:
            while gz.read(1 << 22):
                pass
        return True
    except (EOFError, OSError):
        return False


def _is_html(record) -> bool:
    payload = record.rec_headers.get_header("WARC-Identified-Payload-Type")
    declared = record.http_headers.get_header("Content-Type") if record.http_headers else None
    if record.http_headers and record.http_headers.get_statuscode() not in (None, "200"):
        return False
    return any(t in (payload or declared or "").lower() for t in HTML_TYPES)


def _record_dict(record, file_name: str, offset: int, body: bytes, stat) -> dict:
    declared = record.http_headers.get_header("Content-Type") if record.http_headers else None
    text, clean = extract.decode_html(body, _charset(declared, body))
    if not clean:
        stat("decoded_with_replacement")
    rid = record.rec_headers.get_header("WARC-Record-ID")
    return {
        "text": text,
        "id": records.cc_id(rid),
        "metadata": {
            records.SOURCE: records.CC,
            records.SOURCE_FILE: file_name,
            records.URL: record.rec_headers.get_header("WARC-Target-URI") or "",
            records.WARC_FILE: file_name,
            records.WARC_OFFSET: offset,
            records.WARC_RECORD_ID: rid,
            WARC_DATE: record.rec_headers.get_header("WARC-Date") or "",
            WARC_TYPE: record.rec_type,
        },
    }


class WarcRecordReader(BaseDiskReader):
    """datatrove reader: WARC/WET files -> Documents with WARC provenance (file, offset, record id)."""

    name = "🕷 WARC records (with offsets)"

    def __init__(self, data_folder: str | Path):
        super().__init__(str(data_folder), add_file_path=False)
        self.folder = Path(data_folder)

    def read_file(self, filepath: str):
        for data in iter_warc(self.folder / filepath, stat=lambda key, n=1: self.stat_update(key, value=n)):
            doc = self.get_document_from_dict(data, filepath, data["id"])
            if doc:
                yield doc

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        files = [p.name for p in warc_files(self.folder)][rank::world_size]
        for doc in self.read_files_shard(files):
            self.update_doc_stats(doc)
            yield doc


# --- extraction and filters ------------------------------------------------------------------
class HtmlExtractor(PipelineStep):
    """HTML -> main text with trafilatura (extract.extract_text); WET text passes through.

    A page with no extractable text keeps an empty text, so TooShortFilter drops it *with* a
    reason instead of it vanishing here."""

    name = "⛏ trafilatura"
    type = "🛢 - EXTRAC"

    def __init__(self, cfg: extract.ExtractConfig):
        super().__init__()
        self.cfg = cfg

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            self.stat_update("total")
            if doc.metadata.get(WARC_TYPE) == "response":
                with self.track_time():
                    try:
                        text = extract.extract_text(doc.text, self.cfg, url=doc.metadata.get(records.URL))
                    except Exception as exc:  # a page that breaks the parser is bad input, not a crash
                        self.stat_update("error_extract_failed")
                        logger.warning(f"{doc.id}: extraction failed ({exc!r}); dropping it as too_short")
                        text = None
                doc.text = text or ""
            yield doc


GOPHER_REPETITION, GOPHER_QUALITY = "gopher_repetition", "gopher_quality"


def drop_reasons(cfg: CCConfig) -> list[str]:
    """removed/<reason> folders the pipeline of `cfg` writes, in pipeline order."""
    optional = [(cfg.gopher_repetition, GOPHER_REPETITION), (cfg.gopher_quality, GOPHER_QUALITY)]
    return ["too_short", "wrong_language"] + [name for on, name in optional if on]


def build_pipeline(cfg: CCConfig, ecfg: extract.ExtractConfig, in_dir: str | Path, out_dir: str | Path) -> list:
    """The cc datatrove pipeline: kept documents to out_dir/docs, drops to out_dir/removed/<reason>.

    The Gopher filters (when on) come after the language filter: their thresholds are for English
    prose. The rule that fired is kept in each removed document's metadata filter_reason."""
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    steps = [
        WarcRecordReader(in_dir),
        HtmlExtractor(ecfg),
        TooShortFilter(cfg.min_words, exclusion_writer=io.removed_writer(out_dir, "too_short")),
        LanguageFilter(cfg.languages, cfg.lang_model, exclusion_writer=io.removed_writer(out_dir, "wrong_language")),
    ]
    if cfg.gopher_repetition:  # datatrove's defaults are Gopher's table A1 thresholds
        steps.append(GopherRepetitionFilter(language=RegexWordTokenizer(),
                                            exclusion_writer=io.removed_writer(out_dir, GOPHER_REPETITION)))
    if cfg.gopher_quality:  # its stopword list is built in (the, be, to, of, and, that, have, with)
        steps.append(GopherQualityFilter(language=RegexWordTokenizer(),
                                         exclusion_writer=io.removed_writer(out_dir, GOPHER_QUALITY)))
    return steps + [io.doc_writer(out_dir)]


# --- the stage -------------------------------------------------------------------------------


def unversioned_lid_model(lang_model: str) -> bool:
    """True for a LID model outside models/lid/, whose bytes DVC does not see (only the param's path)."""
    return bool(lang_model) and LID_FOLDER.resolve() not in Path(lang_model).resolve().parents


def run(cfg: CCConfig, ecfg: extract.ExtractConfig, in_dir: str | Path, out_dir: str | Path,
        truth_path: str | Path | None = None, exec_cfg=None):
    """Run the cc stage: WARC/WET files in `in_dir` -> document folder `out_dir`.

    Returns the StageReport (not yet written): in/out, drops per reason, errors per reason,
    record counts, language histogram and, with truth.json, P/R of the drops (key "cc").
    `exec_cfg` (params `executor`) picks local, Ray or Slurm; one task, so output never depends on it.
    """
    from pipeline.core import executor, params, report, truth

    files = warc_files(in_dir)
    rep = report.StageReport("cc")
    if not files:
        rep.error("no_input_files")
        logger.warning(f"no WARC/WET files ({', '.join(WARC_SUFFIXES)}) in {in_dir}")
    # the fingerprint covers params, input bytes and this code: DVC reruns the stage when the code
    # changes, and stale datatrove completions must not turn that rerun into a no-op
    model = [cfg.lang_model] if cfg.lang_model else []  # a replaced LID model must not reuse the old run's work
    if unversioned_lid_model(cfg.lang_model):
        logger.warning(f"cc.lang_model {cfg.lang_model} is outside {LID_FOLDER}/: DVC sees "
                       "only its path, so a model replaced in place will not rerun this stage")
    work = io.work_dir("cc", io.run_fingerprint(cfg, ecfg, inputs=files + model, code=[__file__, extract.__file__]))
    staged = work / "out"
    if files:
        executor.run(build_pipeline(cfg, ecfg, in_dir, staged), 1, work / "logs",
                     exec_cfg or executor.ExecutorConfig())
    staged.mkdir(parents=True, exist_ok=True)
    kept = io.read_records(staged, io.DOCS)
    dropped = {}
    for reason in drop_reasons(cfg):
        dropped[reason] = io.read_records(staged, f"{io.REMOVED}/{reason}")
        rep.drop(reason, len(dropped[reason]))
    for group in (GOPHER_REPETITION, GOPHER_QUALITY):  # which Gopher rule fired (only when the filter is on)
        if group in dropped:
            rules = Counter(r["metadata"].get(records.FILTER_REASON, "-") for r in dropped[group])
            rep.extra.setdefault("gopher_rules", {})[group] = dict(sorted(rules.items()))
    stats = work / "logs" / "stats.json"
    for reason, n in sorted(report.datatrove_counters(stats, "error_").items()):
        rep.error(reason, n)
    rep.docs_out = len(kept)
    rep.docs_in = rep.docs_out + sum(len(v) for v in dropped.values())
    rep.bytes_in = sum(p.stat().st_size for p in files)
    rep.bytes_out = sum(len(r.get("text", "").encode()) for r in kept)
    rep.extra["warc_files"] = len(files)
    reader_keys = ("input_files", "records", "skipped_", "decoded_with_replacement")
    rep.extra["records"] = {k: v for k, v in sorted(report.datatrove_counters(stats, "").items()) if k.startswith(reader_keys)}
    all_docs = kept + [r for rows in dropped.values() for r in rows]
    rep.extra["languages"] = dict(sorted(Counter(r["metadata"].get(records.LANG, "-") for r in all_docs).items()))
    keys = lambda rows: [records.natural_key(r["metadata"]) for r in rows]  # noqa: E731
    score = truth.score_drops(truth.load(truth_path), "cc", [k for rows in dropped.values() for k in keys(rows)],
                              keys(kept))
    if score:
        rep.extra["truth"] = score
    io.write_manifest(staged, "cc", {"cc": params.as_dict(cfg), "extract": params.as_dict(ecfg)})
    io.publish(staged, out_dir)
    return rep
