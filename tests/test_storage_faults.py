"""Storage faults for real: a stage run under an OS file-size limit (RLIMIT_FSIZE, the same EFBIG a full
quota gives) fails with one line that names where it was writing, publishes nothing, leaves the previous
output whole, and the rerun without the limit succeeds with the same bytes as a clean run."""
from __future__ import annotations

import errno
import hashlib
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.core import storage
from pipeline.lm import bpe

ROOT = Path(__file__).resolve().parents[1]


def limited(max_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_describe_names_the_path_and_the_cause():
    exc = OSError(errno.ENOSPC, "No space left on device", "data/interim/books/docs/00000.jsonl.zst")
    line = storage.describe(exc, ["stages/books.py", "--out", "data/interim/books"])
    assert "data/interim/books/docs/00000.jsonl.zst" in line and "no space left" in line
    assert "--out" not in storage.describe(OSError(errno.EROFS, "Read-only file system"), ["x", "--out=o/p"])
    assert "o/p" in storage.describe(OSError(errno.EROFS, "Read-only file system"), ["x", "--out=o/p"])


def test_a_stage_that_hits_the_limit_fails_clearly_and_publishes_nothing(in_tmp_cwd):
    texts = [f"document {i} " + "the quick brown fox jumps over the lazy dog " * 40 for i in range(300)]
    from datatrove.data import Document

    from pipeline.core import io

    list(io.doc_writer(in_tmp_cwd / "mix", "train/docs").run(
        iter(Document(text=t, id=f"books/{i}", metadata={"source": "books"}) for i, t in enumerate(texts)), 0, 1))
    shutil.copy(ROOT / "params.yaml", in_tmp_cwd / "params.yaml")
    cmd = [sys.executable, str(ROOT / "stages/tokenizer.py"), "--in", "mix", "--out", "tok"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree_hash(in_tmp_cwd / "tok")
    (in_tmp_cwd / "reports" / "tokenizer.json").unlink()
    size = (in_tmp_cwd / "tok" / bpe.TOKENIZER_JSON).stat().st_size  # the limit: half the tokenizer file
    broken = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limited(size // 2))
    assert broken.returncode == 1
    assert "storage fault while writing" in broken.stderr and "Traceback" not in broken.stderr, broken.stderr[-2000:]
    assert "tok" in broken.stderr.splitlines()[-1]
    assert tree_hash(in_tmp_cwd / "tok") == before  # the previous output is whole
    assert not list(in_tmp_cwd.glob("tok*.tmp*")) and not list((in_tmp_cwd / "tok").glob("*.tmp*"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert tree_hash(in_tmp_cwd / "tok") == before  # and the rerun gives the same bytes
