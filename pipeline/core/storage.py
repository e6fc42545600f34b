"""Storage faults at a stage's edge: a full disk, a file-size limit or a read-only folder end the stage with
one line that names the path, not a traceback, and never with a half-written output.

Outputs are written to a temp path or a staging folder under data/resume/ and renamed into place last
(io.atomic_path, io.publish), so when a write fails the previous outputs are still whole; a rerun after the
fault is fixed resumes from the stage's completed work. `run_stage(main)` is the stage scripts' entry point.
"""
from __future__ import annotations

import errno
import re
import sys
from typing import Callable

STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large for the limit",
                  errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded",
                  errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def describe(exc: OSError, argv: list[str]) -> str:
    """One line: what failed, where (the file if the OS said, else the stage's --out), and what to do."""
    where = exc.filename or _flag(argv, "--out") or "the working folder"
    what = STORAGE_ERRNOS.get(exc.errno, exc.strerror or str(exc))
    return (f"storage fault while writing {where}: {what} ({exc.strerror or exc}). Nothing was published; the "
            f"previous outputs are intact. Free space or fix permissions, then rerun: finished work is reused.")


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage script's main(); a storage fault exits 1 with `describe`'s line on stderr."""
    try:
        main()
    except Exception as exc:  # noqa: BLE001  (re-raised unless it is a storage fault)
        fault = as_storage_fault(exc)
        if fault is None:
            raise
        sys.stderr.write(f"{sys.argv[0]}: {describe(fault, sys.argv)}\n")
        sys.exit(1)


def as_storage_fault(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` when it is a storage fault: Python's own, or a Rust library's (tokenizers
    raises a bare Exception "File too large (os error 27)"); else None."""
    if isinstance(exc, OSError):
        return exc if exc.errno in STORAGE_ERRNOS else None
    match = _RUST_OS_ERROR.search(str(exc))
    if match and int(match.group(1)) in STORAGE_ERRNOS:
        return OSError(int(match.group(1)), str(exc).split(" (os error")[0])
    return None
