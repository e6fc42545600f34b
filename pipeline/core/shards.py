"""Bulk shard I/O for hot stages: the files io.doc_reader reads and io.doc_writer writes, batch at a time.

datatrove's JsonlReader and JsonlWriter cost microseconds of Python per document (timers, stats, a deep
copy per write) and compress on the calling thread. A stage whose work is a fast vectorised pass (the
quality filter: its model scores ~15k pages a second on one core) reads and writes through here instead:
the same Documents in, the same bytes out (tests/test_quality_batch.py compares both with datatrove's),
with zstd running on background threads, which it can since zstd frees the GIL.
"""
from __future__ import annotations

import locale
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.core.io import DOCS, doc_writer

FSSPEC_ZSTD_LEVEL = 10  # the level of fsspec's python-zstandard opener, i.e. of every shard doc_writer writes
CHUNK_BYTES = 8 << 20  # decompressed bytes per read
WRITE_BYTES = 2 << 20  # uncompressed bytes per compressed write: few GIL handovers, a short tail at close


def _zstandard_opener() -> bool:
    """True when fsspec opens .zst files with python-zstandard (its `zstandard_file`: level 10, first frame
    only), which read_shard and ShardWriter reproduce; otherwise they use datatrove's own file objects."""
    from fsspec.compression import compr

    return getattr(compr.get("zstd"), "__name__", "") == "zstandard_file"


def read_shard(reader, path: str) -> Iterator[Any]:
    """The Documents `reader.read_file(path)` yields (reader: a doc_reader), without its per-line overhead.

    datatrove's JsonlReader spends microseconds of Python per line (a timer, stats, generators). Here the
    shard is decompressed on a background thread (zstd frees the GIL) in CHUNK_BYTES pieces, split into
    lines as text-mode reading splits them, and each line is parsed with orjson; a plain line (exactly
    text, id and a metadata dict, text not empty) becomes its Document directly, any other takes the
    reader's own steps (media, get_document_from_dict: empty text skipped, extra keys into metadata), and
    one that does not parse is skipped with datatrove's warning. One difference: bytes that are not UTF-8
    end the shard at their line, where the text-mode reader ends it at its 8 KiB decode chunk (doc_writer
    only writes UTF-8).
    """
    import base64

    import orjson
    from datatrove.data import Document
    from datatrove.utils.logging import logger

    settings = (reader.text_key, reader.id_key, reader.limit, reader.skip, reader.add_file_path,
                reader.default_metadata, reader.compression, reader.adapter)
    plain = settings == ("text", "id", -1, 0, False, None, "zstd", reader._default_adapter)
    if not plain or not _zstandard_opener() or locale.getpreferredencoding(False).lower().replace("-", "") != "utf8":
        yield from reader.read_file(path)
        return
    li, loads, decode_error = -1, orjson.loads, orjson.JSONDecodeError
    for lines in _text_mode_lines(_decompressed_chunks(reader.data_folder, path)):
        for line in lines:  # a loop per chunk, not a generator per line: this runs once per page
            li += 1
            try:
                row = loads(line)
                if (type(row) is dict and len(row) == 3 and type(meta := row.get("metadata")) is dict
                        and type(text := row.get("text")) is str and text and "id" in row):
                    yield Document(text, row["id"], [], meta)
                    continue
                for media in row.get("media", []):  # JsonlReader.read_file's own steps
                    if media["media_bytes"] is not None:
                        media["media_bytes"] = base64.decodebytes(media["media_bytes"].encode("ascii"))
                doc = reader.get_document_from_dict(row, path, li)
            except (EOFError, decode_error) as exc:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    logger.warning(f"File `{path}` may be corrupted: raised UnicodeDecodeError ({bad})")
                    return
                logger.warning(f"Error when reading `{path}`: {exc}")
                continue
            if doc:
                yield doc


def _text_mode_lines(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The lines of a byte stream as text-mode iteration yields them (\\n, \\r\\n and \\r end a line), unterminated,
    a list per chunk."""
    carry = b""
    for chunk in chunks:
        buf = carry + chunk
        lines = buf.split(b"\n")
        carry = lines.pop()
        if b"\r" in buf:
            lines = [piece for line in lines for piece in (_split_cr(line) if b"\r" in line else (line,))]
        yield lines
    if carry:
        yield _split_cr(carry)


def _split_cr(line: bytes) -> list[bytes]:
    pieces = line.split(b"\r")
    if len(pieces) > 1 and not pieces[-1]:
        pieces.pop()  # the \r of \r\n, or a \r ending the stream: it only ends the line before it
    return pieces


def _decompressed_chunks(folder, path: str) -> Iterator[bytes]:
    """A zstd shard's first frame (as fsspec's opener reads it), decompressed on a background thread."""
    import queue
    import threading

    import zstandard

    with folder.open(path, "rb") as fh:
        raw = fh.read()  # from memory, the decompressor needs the GIL only between chunks
    chunks: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()

    def produce():
        try:
            with zstandard.ZstdDecompressor().stream_reader(raw) as src:
                while not stop.is_set() and (chunk := src.read(CHUNK_BYTES)):
                    chunks.put(chunk)
            chunks.put(b"")
        except Exception as exc:  # handed to the reader, which raises it
            chunks.put(exc)

    threading.Thread(target=produce, name="unzstd", daemon=True).start()
    try:
        while (chunk := chunks.get()) != b"":
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
    finally:
        stop.set()
        while not chunks.empty():  # unblock the producer if the reader stopped early
            chunks.get_nowait()


class ShardWriter:
    """Writes batches of Documents into `<folder>/<subdir>/<rank:05d>.jsonl.zst`: the bytes doc_writer writes.

    One orjson line per Document (datatrove's adapter, without its deep copy, for a plain one), gathered
    into WRITE_BYTES writes; the file is created with the first document, as datatrove's writer does.
    With a `pool` of one thread (writes keep their order) the zstd compression runs there: zstd frees the
    GIL, so it overlaps the caller's work, and a large output buffer means the thread needs the GIL only
    between chunks. zstd's output depends on neither the write sizes nor the buffer (tests/
    test_quality_batch.py compares with doc_writer). Without a pool, or if fsspec compresses otherwise,
    datatrove's own file object writes.
    """

    MAX_PENDING = 4  # chunks queued for compression before write_batch waits

    def __init__(self, folder: str | Path, subdir: str = DOCS, rank: int = 0, pool=None,
                 level: int = FSSPEC_ZSTD_LEVEL):
        self.writer = doc_writer(folder, subdir)
        self.name = self.writer.output_filename.substitute(rank=str(rank).zfill(5))
        own = self.writer.compression == "zstd" and _zstandard_opener()
        self.pool = pool if own else None
        # another level than fsspec's needs our own compressor, pool or not
        self.level, self.own = level, own and (pool is not None or level != FSSPEC_ZSTD_LEVEL)
        self._fh, self._chunk, self._size, self._pending = None, [], 0, []

    def write_batch(self, docs: list) -> None:
        import orjson

        if not docs:
            return
        dumps, opt, adapter = orjson.dumps, orjson.OPT_APPEND_NEWLINE, self.writer.adapter
        chunk = b"".join(dumps({"text": d.text, "id": d.id, "metadata": d.metadata} if d.text and d.id and d.metadata
                               and not d.media else adapter(d), option=opt) for d in docs)
        self._chunk.append(chunk)
        self._size += len(chunk)
        if self._size >= WRITE_BYTES:
            self._flush()

    def _flush(self) -> None:
        data, self._chunk, self._size = b"".join(self._chunk), [], 0
        if not self.own:
            self.writer.output_mg.get_file(self.name).write(data)
            return
        if self._fh is None:
            import zstandard

            raw = self.writer.output_folder.open(self.name, "wb")
            self._fh = zstandard.ZstdCompressor(level=self.level).stream_writer(raw, write_size=WRITE_BYTES)
        if self.pool is None:
            self._fh.write(data)
            return
        self._pending.append(self.pool.submit(self._fh.write, data))
        while len(self._pending) > self.MAX_PENDING:
            self._pending.pop(0).result()

    def close(self) -> None:
        fh, pending = self._fh, self._pending
        try:
            if self._chunk:
                self._flush()
                fh, pending = self._fh, self._pending
            for future in pending:
                future.result()  # a failed write (full disk) raises here
        finally:
            self._pending, self._fh = [], None
            for future in pending:
                if not future.cancel():
                    future.exception()  # wait: a running write must end before its file is closed
            try:
                if fh is not None:
                    fh.close()  # ends the frame and closes the file, once no write is running
            finally:
                self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
