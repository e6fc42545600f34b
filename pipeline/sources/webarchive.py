"""The scrape stage's WARC side: archive entries, the resumable journal, and replay into documents.

An entry is the records of one fetched URL, each its own gzip member (so a file can be cut and
appended anywhere between members): a response and a request record per HTTP hop, then a `metadata`
record (application/warc-fields) stating the outcome (ok, or the drop reason), every URL of the redirect
chain and the Reddit fields. Record ids are uuid5 of (URL, record kind, payload digest) and dates come
from the server's Date header, so the same fetches give the same bytes (Common Crawl's and
OpenWebText2's design: crawl to WARC first, extract from the WARC after).

`replay(warc, out, extract_cfg)` turns such a WARC, with no network, into the WebText documents: a
datatrove pipeline (WARC reader -> trafilatura -> no_text / too_short / wrong_language / boilerplate filters
with exclusion writers -> writer). Language is language.py's offline stopword heuristic (GPT-2 removed non-English
pages); "unknown" (no language's stopword profile) passes, as in cc.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import threading
import uuid
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.core import io, params, records
from pipeline.sources import extract, language

log = logging.getLogger(__name__)


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: the unit robots.txt applies to."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _digest(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _record_id(*parts: str) -> str:
    """Deterministic WARC-Record-ID: uuid5 of the entry URL, record kind, target URL and payload digest."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, chr(31).join(parts))}>"


def entry_bytes(out, reddit: dict[str, str] | None = None) -> bytes:
    """The WARC records of one URL (a crawler.Outcome), each its own gzip member: (response, request) per hop,
    then metadata with the outcome and `reddit` fields."""
    buf = BytesIO()
    writer = WARCWriter(buf, gzip=True, warc_version="1.0")
    final_id = ""
    for i, ex in enumerate(out.hops):
        digest = _digest(ex.body)
        final_id = _record_id(out.url, str(i), "response", ex.url, digest)
        head = {"WARC-Record-ID": final_id, "WARC-Date": ex.date, "WARC-IP-Address": ex.ip,
                "WARC-Payload-Digest": digest}
        if ex.truncated:
            head["WARC-Truncated"] = ex.truncated
        writer.write_record(writer.create_warc_record(ex.url, "response", payload=BytesIO(ex.body), length=len(ex.body),
                                                      http_headers=ex.response, warc_headers_dict=head))
        head = {"WARC-Record-ID": _record_id(out.url, str(i), "request", ex.url, digest), "WARC-Date": ex.date,
                "WARC-Concurrent-To": final_id, "WARC-Payload-Digest": _digest(b"")}
        writer.write_record(writer.create_warc_record(ex.url, "request", payload=BytesIO(b""), length=0,
                                                      http_headers=ex.request, warc_headers_dict=head))
    last = out.hops[-1] if out.hops else None
    fields = [("purpose", out.purpose), ("outcome", out.reason), *[("uri", u) for u in out.tried],
              ("status", str(last.status if last else 0)), ("content-type", last.header("Content-Type") if last else ""),
              ("bytes", str(len(last.body) if last else 0)),
              *([("retries", str(out.retries))] if getattr(out, "retries", 0) else []),
              *([("detail", out.detail)] if getattr(out, "detail", "") else []), *sorted((reddit or {}).items())]
    payload = "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8")
    head = {"WARC-Record-ID": _record_id(out.url, "metadata", _digest(payload)), "WARC-Date": out.date}
    if final_id:
        head["WARC-Refers-To"] = final_id
    writer.write_record(writer.create_warc_record(out.url, "metadata", payload=BytesIO(payload), length=len(payload),
                                                  warc_content_type="application/warc-fields", warc_headers_dict=head))
    return buf.getvalue()


@dataclass
class Entry:
    """One URL's records as read back from a WARC."""
    url: str
    fields: dict[str, list[str]]
    start: int = 0
    end: int = 0
    final: dict | None = None  # the response the metadata refers to: offset, record_id, headers, body

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, [default])[0]


def iter_entries(stream, bodies: bool = True) -> Iterator[Entry]:
    """Entries of a WARC stream in file order; an entry ends with its metadata record."""
    it = ArchiveIterator(stream)
    responses: dict[str, dict] = {}
    start = None
    for record in it:
        rid = record.rec_headers.get_header("WARC-Record-ID")
        info = None
        if record.rec_type == "response":
            info = {"record_id": rid, "headers": record.http_headers,
                    "body": record.raw_stream.read() if bodies else b""}
        elif record.rec_type == "metadata":
            fields: dict[str, list[str]] = {}
            for line in record.raw_stream.read().decode("utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), []).append(value.strip())
        offset, length = it.get_record_offset(), it.get_record_length()
        start = offset if start is None else start
        if info is not None:
            responses[rid] = {**info, "offset": offset}
        elif record.rec_type == "metadata":
            url = record.rec_headers.get_header("WARC-Target-URI")
            final = responses.get(record.rec_headers.get_header("WARC-Refers-To") or "")
            yield Entry(url, fields, start, offset + length, final)
            responses, start = {}, None


def _complete_prefix(path: Path) -> int:
    """Bytes of `path` made of complete gzip members: a member cut by a killed run is left out."""
    good = pos = 0
    dec = zlib.decompressobj(zlib.MAX_WBITS | 16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            while chunk:
                try:
                    dec.decompress(chunk)
                except zlib.error:
                    return good
                if not dec.eof:
                    pos += len(chunk)
                    break
                pos += len(chunk) - len(dec.unused_data)
                good, chunk = pos, dec.unused_data
                dec = zlib.decompressobj(zlib.MAX_WBITS | 16)
    return good


class Journal:
    """Append-only WARC of finished entries: the resume state of a fetch.

    Each entry is appended in one write when its URL is done; on open, a tail cut by a killed run
    (a partial gzip member, or an entry without its metadata record) is detected and cut off.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.scan()

    def scan(self) -> None:
        self.pages: dict[str, Entry] = {}
        self.robots: dict[str, Entry] = {}
        if not self.path.exists():
            self.path.touch()
        size, valid = self.path.stat().st_size, _complete_prefix(self.path)
        if valid < size:  # a gzip member cut by a killed run
            with open(self.path, "r+b") as fh:
                fh.truncate(valid)
        end = 0
        with open(self.path, "rb") as fh:
            for entry in iter_entries(fh, bodies=False):
                if entry.get("purpose") == "robots":
                    self.robots.setdefault(origin(entry.url), entry)
                else:
                    self.pages.setdefault(entry.url, entry)
                end = entry.end
        if end < size:
            log.warning("journal %s: dropped %d bytes of an unfinished entry (killed run)", self.path.name, size - end)
            with open(self.path, "r+b") as fh:
                fh.truncate(end)

    def append(self, blob: bytes) -> None:
        with self.lock, open(self.path, "ab") as fh:
            fh.write(blob)
            fh.flush()

    def read(self, entry: Entry) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(entry.start)
            return fh.read(entry.end - entry.start)

    def robots_answers(self) -> dict[str, tuple[str, int, bytes]]:
        """robots.txt answers archived by earlier runs: origin -> (outcome, status, body)."""
        answers = {}
        for key, entry in self.robots.items():
            (full,) = iter_entries(BytesIO(self.read(entry)))
            answers[key] = (full.get("outcome"), int(full.get("status", "0")), full.final["body"] if full.final else b"")
        return answers

    def export(self, dst: Path, urls: list[str]) -> int:
        """Write the entries of `urls` (and the robots.txt entries of the origins they touched) sorted by URL."""
        pages = [self.pages[u] for u in sorted(set(urls)) if u in self.pages]
        origins = {origin(u) for e in pages for u in e.fields.get("uri", [e.url])}
        chosen = sorted(pages + [self.robots[o] for o in origins if o in self.robots], key=lambda e: (e.url, e.get("purpose")))
        with io.atomic_path(dst) as tmp, open(tmp, "wb") as out:
            for entry in chosen:
                out.write(self.read(entry))
        return len(pages)


# --- replay: WARC -> documents -------------------------------------------------------------------
def _decode_body(body: bytes, headers: StatusAndHeaders) -> tuple[str, bool]:
    encoding = (headers.get_header("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            body = zlib.decompress(body, zlib.MAX_WBITS | 32 if encoding != "deflate" else zlib.MAX_WBITS)
        except zlib.error:
            return "", False
    charset = None
    for part in (headers.get_header("Content-Type") or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    return extract.decode_html(body, charset)


class WarcPages(PipelineStep):
    """Reader: one Document (text = decoded HTML) per successfully fetched page entry of a scrape WARC."""
    name, type = "webtext WARC", "📖 - READER"

    def __init__(self, warc: str | Path, warc_name: str):
        super().__init__()
        self.warc, self.warc_name = str(warc), warc_name

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with open(self.warc, "rb") as fh:
            for entry in iter_entries(fh):
                if entry.get("purpose") != "page" or entry.get("outcome") != "ok" or not entry.final:
                    continue
                html, clean = _decode_body(entry.final["body"], entry.final["headers"])
                if not clean:
                    log.warning("%s: invalid bytes for its charset, decoded with replacement", entry.url)
                    self.stat_update("decode_replaced")
                self.stat_update("pages")
                yield Document(text=html, id=records.webtext_id(entry.url), metadata={
                    records.SOURCE: records.WEBTEXT, records.URL: entry.url,
                    records.REDDIT_POST_ID: entry.get("reddit-post-id"),
                    records.REDDIT_SCORE: int(entry.get("reddit-score", "0") or 0),
                    records.SUBREDDIT: entry.get("subreddit"), records.WARC_FILE: self.warc_name,
                    records.WARC_OFFSET: entry.final["offset"], records.WARC_RECORD_ID: entry.final["record_id"]})


class ExtractText(BaseFilter):
    """trafilatura main text (pipeline/sources/extract.py); a page with none is dropped as no_text, its HTML kept."""
    name = "trafilatura"

    def __init__(self, out: str | Path, ecfg: extract.ExtractConfig):
        super().__init__(exclusion_writer=io.removed_writer(out, "no_text"))
        self.ecfg = ecfg

    def filter(self, doc):
        with self.track_time():
            text = extract.extract_text(doc.text, self.ecfg, url=doc.metadata[records.URL])
        if not text or not text.strip():
            return False, "no_text"
        doc.text = text
        return True


class LineRatio(BaseFilter):
    """Drops documents breaking one boilerplate rule of extract.boilerplate_reason (reason = the rule)."""
    name = "boilerplate"

    def __init__(self, out: str | Path, ecfg: extract.ExtractConfig, reason: str):
        super().__init__(exclusion_writer=io.removed_writer(out, reason))
        self.ecfg, self.reason = ecfg, reason

    def filter(self, doc):
        return (False, self.reason) if extract.boilerplate_reason(doc.text, self.ecfg) == self.reason else True


def document_filters(out: str | Path, ecfg: extract.ExtractConfig) -> list[BaseFilter]:
    """The filters after extraction, each with its exclusion writer; a rule switched off adds no step."""
    steps: list[BaseFilter] = [extract.TooShortFilter(ecfg.min_words, io.removed_writer(out, "too_short"))]
    if ecfg.languages:
        steps.append(language.LanguageFilter(ecfg.languages, exclusion_writer=io.removed_writer(out, "wrong_language")))
    rules = (("too_many_duplicate_lines", ecfg.max_duplicate_line_ratio < 1.0),
             ("too_many_short_lines", ecfg.max_short_line_ratio < 1.0),
             ("too_few_punct_lines", ecfg.min_punct_line_ratio > 0.0))
    return steps + [LineRatio(out, ecfg, reason) for reason, on in rules if on]


def replay(warc: str | Path, out: str | Path, ecfg: extract.ExtractConfig, logging_dir: str | Path | None = None) -> dict:
    """Rebuild the WebText documents of `out` from a scrape WARC alone (no network).

    Args:
        warc: a WARC written by the scrape stage (entries ending in metadata records).
        out: folder to write: docs/, removed/<reason>/ (no_text, too_short, wrong_language, boilerplate
            rules), fetch_log.parquet (url, status, reason,
            bytes, content_type, detail: the cause behind robots_unreachable or tls_error; sorted by url,
            reason "ok" for a kept document).
        ecfg: extract params.
        logging_dir: datatrove logging dir (wiped first); default under data/resume/scrape/.

    Returns:
        {"rows": the fetch log rows, "stats": {"pages": n, "decode_replaced": n}}.
    """
    warc, out = Path(warc), Path(out)
    logging_dir = Path(logging_dir or io.work_dir("scrape", params.fingerprint(ecfg)) / "replay")
    shutil.rmtree(logging_dir, ignore_errors=True)
    for sub in (io.DOCS, io.REMOVED):
        shutil.rmtree(out / sub, ignore_errors=True)
    steps = [WarcPages(warc, f"warc/{warc.name}"), ExtractText(out, ecfg), *document_filters(out, ecfg), io.doc_writer(out)]
    LocalPipelineExecutor(steps, tasks=1, workers=1, logging_dir=str(logging_dir), skip_completed=False).run()

    rows = {}
    with open(warc, "rb") as fh:
        for e in iter_entries(fh, bodies=False):
            if e.get("purpose") == "page":
                rows[e.url] = {"url": e.url, "status": int(e.get("status", "0")), "reason": e.get("outcome"),
                               "bytes": int(e.get("bytes", "0")), "content_type": e.get("content-type"),
                               "detail": e.get("detail")}
    for doc in io.iter_removed(out):
        rows[doc.metadata[records.URL]]["reason"] = doc.metadata[records.FILTER_REASON]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([rows[u] for u in sorted(rows)], schema=pa.schema(
        [("url", pa.string()), ("status", pa.int32()), ("reason", pa.string()), ("bytes", pa.int64()),
         ("content_type", pa.string()), ("detail", pa.string())]))
    with io.atomic_path(out / "fetch_log.parquet") as tmp:
        pq.write_table(table, tmp)
    stats = {}
    for step in io.read_json(logging_dir / "stats.json"):
        for key, value in step.get("stats", {}).items():
            if key in ("decode_replaced", "pages"):
                stats[key] = stats.get(key, 0) + int(value.get("total", 0) if isinstance(value, dict) else value)
    return {"rows": [rows[u] for u in sorted(rows)], "stats": stats}
