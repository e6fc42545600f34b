"""A read-only HTTP mirror of a local folder on loopback, with Range requests: stands in for a remote host.

The real-mini profile fetches `../shared/data` through it exactly as a real profile fetches a Gutenberg,
Pushshift or Common Crawl mirror: over HTTP, resumable by Range, verified by sha256. It is also how a
user reruns real-mini by hand:

    python -m pipeline.sources.mirror ../shared/data --port 8765 &
    python -m pipeline.sources.profiles use real-mini && dvc repro

Only files under the root are served (no listings, no '..'); it binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 16
RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, root: str | Path, addr: tuple[str, int] = ("127.0.0.1", 0)):
        self.root = Path(root).resolve()
        self.requests: list[tuple[str, str]] = []  # (path, Range header or "") of every GET, for tests
        self.lock = threading.Lock()
        super().__init__(addr, MirrorHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def file_for(self, url_path: str) -> Path | None:
        rel = unquote(urlsplit(url_path).path).lstrip("/")
        path = (self.root / rel).resolve()
        if self.root not in path.parents or not path.is_file():
            return None
        return path


class MirrorHandler(BaseHTTPRequestHandler):
    server: MirrorServer
    server_version = "gpt-repro-mirror/1"

    def log_message(self, *args) -> None:  # quiet: tests and the CLI report what matters
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.path, self.headers.get("Range", "")))
        path = self.server.file_for(self.path)
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        match = RANGE.match(self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.send_body(path, start, end - start + 1)

    def send_body(self, path: Path, start: int, length: int) -> None:
        with open(path, "rb") as fh:
            fh.seek(start)
            while length > 0:
                chunk = fh.read(min(CHUNK, length))
                if not chunk:
                    break
                self.wfile.write(chunk)
                length -= len(chunk)


@contextlib.contextmanager
def serve(root: str | Path, port: int = 0, handler: type[MirrorHandler] | None = None) -> Iterator[MirrorServer]:
    """Serve `root` on 127.0.0.1:`port` (0: any free port) in a thread for the duration of the block."""
    server = MirrorServer(root, ("127.0.0.1", port))
    if handler is not None:
        server.RequestHandlerClass = handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline.sources.mirror", description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder to serve (e.g. ../shared/data)")
    ap.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765, real-mini's mirror)")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.root):
        ap.error(f"{args.root} is not a folder")
    server = MirrorServer(args.root, ("127.0.0.1", args.port))
    print(f"serving {server.root} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
