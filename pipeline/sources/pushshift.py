"""Pushshift submission dumps, streamed: the raw Reddit posts behind WebText's URL list.

GPT-2's WebText (Radford et al. 2019) took every outbound Reddit link with at least 3 karma; the open
reproductions, OpenWebText (Gokaslan & Cohen 2019) and OpenWebText2 (Gao et al. 2020, the Pile), read
those posts from the Pushshift submission dumps (Baumgartner et al. 2020): monthly RS_YYYY-MM files of
one JSON object per line, zstd-compressed with a long window (older ones .bz2/.xz; .gz and plain
.jsonl also accepted). This module finds dump files by glob, skips monthly files outside a date
window unread, opens each as a decompressed byte stream, reads lines in bounded memory and parses
them into submission dicts, counting and logging every bad line or broken file instead of failing.
pipeline/sources/reddit.py filters and de-duplicates what comes out.
"""
from __future__ import annotations

import bz2
import gzip
import io as _io
import json
import logging
import lzma
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.core import report

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 << 20         # a Pushshift submission is a few KB; a longer line is damage, not data
LOG_PER_REASON = 200             # log this many bad lines per reason, then only count them


# --- monthly files and the date window -------------------------------------------------------------
_MONTH_FILE = re.compile(r"R[SC]_(\d{4})-(\d{2})")


def file_in_window(path: Path, lo: int | None, hi: int | None) -> bool:
    """False only for a monthly dump (RS_YYYY-MM...) whose whole month lies outside [lo, hi): such a file
    is skipped unread, which is what makes a date range cheap over years of dumps."""
    m = _MONTH_FILE.match(path.name)
    if not m:
        return True
    year, month = int(m[1]), int(m[2])
    if not 1 <= month <= 12:
        return True
    start = int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp())
    end = int(datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc).timestamp())
    return (lo is None or end > lo) and (hi is None or start < hi)



# --- streaming dumps -----------------------------------------------------------------------------
def dump_files(in_dir: str | Path, pattern: str = "**/*") -> list[Path]:
    """Dump files of a folder matching the glob `pattern` (relative to the folder), sorted by path; only
    *.jsonl, *.json, *.ndjson, *.zst, *.gz, *.bz2, *.xz count (a glob of "*" skips README.txt and the like)."""
    suffixes = {".jsonl", ".json", ".ndjson", ".zst", ".gz", ".bz2", ".xz"}
    return sorted(p for p in Path(in_dir).glob(pattern) if p.is_file() and p.suffix.lower() in suffixes)


class _ZstdRaw(_io.RawIOBase):
    """Decompressed bytes of a (multi-frame) zstd file, read in bounded chunks.

    Not zstandard's stream_reader: at a truncated file it returns a silent EOF, and a dump cut
    short must be counted as an error, not read as complete. decompressobj exposes `eof`.
    """

    CHUNK = 1 << 16

    def __init__(self, fh):
        import zstandard

        self.fh = fh
        self.dctx = zstandard.ZstdDecompressor(max_window_size=2**31)  # Pushshift dumps use long windows
        self.obj, self.in_frame = self.dctx.decompressobj(), False
        self.buf, self.pos = b"", 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        out = []
        while not out:
            chunk = self.fh.read(self.CHUNK)
            if not chunk:
                if self.in_frame:
                    raise EOFError("zstd stream ends inside a frame: the file is truncated")
                return False
            while chunk:  # a frame may end inside this chunk and the next begin
                self.in_frame = True
                out.append(self.obj.decompress(chunk))
                chunk = b""
                if self.obj.eof:
                    chunk, self.in_frame = self.obj.unused_data, False
                    self.obj = self.dctx.decompressobj()
            out = [b"".join(out)] if any(out) else []
        self.buf, self.pos = out[0], 0
        return True

    def readinto(self, b) -> int:
        if self.pos >= len(self.buf) and not self._fill():
            return 0
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos:self.pos + n]
        self.pos += n
        return n

    def close(self) -> None:
        self.fh.close()
        super().close()


def open_dump(path: str | Path) -> _io.BufferedIOBase:
    """A binary stream of a dump's decompressed bytes (zstd with a 2 GiB window, as Pushshift needs)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zst":
        return _io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=1 << 20)
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


def iter_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line bytes) of a dump, in constant memory; None for a line over `max_line_bytes`
    (its rest is read and discarded in bounded chunks, never held whole)."""
    with open_dump(path) as fh:
        lineno = 0
        while True:
            line = fh.readline(max_line_bytes + 1)
            if not line:
                return
            lineno += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = fh.readline(1 << 20)
                yield lineno, None
            else:
                yield lineno, line


class _Errors:
    """Counts bad input per reason into the report; logs each (file, line) until a per-reason cap."""

    def __init__(self, rep: report.StageReport):
        self.rep = rep

    def __call__(self, reason: str, where: str, detail: str, skipped: str = "line skipped") -> None:
        self.rep.error(reason)
        n = self.rep.errors[reason]
        if n <= LOG_PER_REASON:
            log.warning("%s: %s (%s); %s", where, detail, reason, skipped)
        elif n == LOG_PER_REASON + 1:
            log.warning("further %s lines are counted but no longer logged", reason)


_INT = re.compile(r"[+-]?\d{1,18}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _as_int(value: Any) -> int | None:
    """`score`: an integer, or a string of one ("7"); anything else (a bool, "x", "7.5", 7.5) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    return None


def _as_time(value: Any) -> int | None:
    """`created_utc`: a number or a numeric string (Pushshift has both: 1546300800, 1546300800.0, "1546300800")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and value == value and abs(value) < 2**40:
        return int(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        return int(number) if abs(number) < 2**40 else None
    return None


# field -> types a present value may have (None is absence); the rest of an object is ignored
_TYPES = {"id": (str, int), "url": (str,), "subreddit": (str,), "title": (str,), "is_self": (bool,),
          "over_18": (bool,)}


def parse_submission(obj: Any) -> tuple[dict | None, str | None, str]:
    """Validate one Pushshift object. Returns (submission, None, "") or (None, error reason, detail).

    Types, checked field by field (bad_field otherwise): id a string (or integer), url a string, score an
    integer or an integer string, created_utc a number or numeric string, subreddit and title strings,
    is_self and over_18 booleans; a field may be absent or null except id, url and score (missing_field)."""
    if not isinstance(obj, dict):
        return None, "not_an_object", f"a JSON {type(obj).__name__}, not an object"
    missing = [k for k in ("id", "url", "score") if obj.get(k) is None]
    if missing:
        return None, "missing_field", f"no {', '.join(missing)}"
    for key, types in _TYPES.items():
        value = obj.get(key)
        if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            return None, "bad_field", f"{key} {str(value)[:80]!r} is a {type(value).__name__}, not {types[0].__name__}"
    score = _as_int(obj["score"])
    if score is None:
        return None, "bad_field", f"score {str(obj['score'])[:80]!r} is not an integer"
    created = _as_time(obj["created_utc"]) if obj.get("created_utc") is not None else 0
    if created is None:
        return None, "bad_field", f"created_utc {str(obj['created_utc'])[:80]!r} is not a number"
    return {
        "id": str(obj["id"]),
        "url": obj["url"],
        "score": score,
        "created_utc": created,
        "subreddit": obj.get("subreddit") or "",
        "title": obj.get("title") or "",
        "is_self": bool(obj.get("is_self", False)),
        "over_18": bool(obj.get("over_18", False)),
    }, None, ""


def iter_dump_submissions(paths: Iterable[Path], rep: report.StageReport, root: Path | None = None,
                          max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[dict]:
    """Valid submissions of dump files in order; every bad line is counted and logged with file:line."""
    errors = _Errors(rep)
    for path in paths:
        name = str(path.relative_to(root)) if root else path.name
        try:
            for lineno, line in iter_lines(path, max_line_bytes):
                where = f"{name}:{lineno}"
                if line is None:
                    errors("line_too_long", where, f"line longer than {max_line_bytes} bytes")
                    continue
                rep.bytes_in += len(line)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as err:  # JSONDecodeError and invalid UTF-8 alike
                    errors("malformed_json", where, f"malformed JSON: {err}")
                    continue
                sub, reason, detail = parse_submission(obj)
                if sub is None:
                    errors(reason, where, detail)
                    continue
                yield sub
        except (OSError, EOFError, ValueError) as err:  # truncated/corrupt compressed stream: keep what was read
            errors("corrupt_file", name, f"stream broken ({type(err).__name__}: {err})", "rest of file skipped")
