"""fastText scoring in a process of its own, so that the quality filter's model runs beside its other work.

fastText's predict holds the GIL for a whole batch (measured: a Python thread makes no progress while it
runs), so no thread can overlap it with the stage's own Python work: parsing pages, preparing the
model's lines, the Pareto draws, tags and JSON lines, which cost the stage about a quarter of the
model's time again on one core (bench/quality_speed.py). A child process can: the stage hands it one
batch's model lines (quality.model_lines) and, while fastText scores them there, finishes the batch
before and prepares the one after. The scores are the same floats: the same lines go to the same model
files through the same Scorer.score_lines; only where they run changes.

The child is a fresh interpreter running this module (`python -m`), not a fork: the parent may hold
threads (zstd, an executor's) that a fork would copy in mid-state, and multiprocessing's spawn would
import the parent's __main__ again. Its start (numpy, fastText; ~0.2 s) overlaps the stage's first reads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # where `pipeline` is importable from


class ScoringProcess:
    """A child process that scores batches of model lines with named models (`paths`: name -> model file).

    submit() sends a batch, result() returns the oldest batch's scores: a caller that submits batch k+1
    before asking for batch k's scores keeps the child busy while it works. A failure in the child is
    raised by result(); a child that dies makes submit() or result() raise."""

    def __init__(self, paths: dict[str, str]):
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", __name__, str(to_child), str(from_child), json.dumps(paths)],
                                      pass_fds=(to_child, from_child), env=env)
        os.close(to_child)
        os.close(from_child)
        self._send, self._recv = Connection(from_parent, readable=False), Connection(to_parent, writable=False)

    def submit(self, parts: list[tuple[str, list[bytes]]]) -> None:
        """Queue a batch: (model name, model lines) parts, scored in order."""
        try:
            self._send.send(parts)  # blocks until the child reads it, i.e. has answered the batch before
        except (BrokenPipeError, ConnectionResetError):
            raise self._died() from None

    def result(self) -> list[np.ndarray]:
        """The oldest unanswered batch's P(high quality), one array per part."""
        try:
            status, value = self._recv.recv()
        except (EOFError, ConnectionResetError):
            raise self._died() from None
        if status != "ok":
            raise RuntimeError(f"the fastText scoring process failed:\n{value}")
        return value

    def _died(self) -> RuntimeError:
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"the fastText scoring process ended (exit code {code})")

    def close(self) -> None:
        try:
            self._send.send(None)  # asks the child to end once it has answered everything before
        except OSError:
            pass
        self._send.close()
        self._recv.close()  # a child still writing answers nobody reads gets a broken pipe and ends
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(recv: Connection, send: Connection, paths: dict[str, str]) -> None:
    """The child: answer each batch with ("ok", scores per part) or ("error", traceback) until None."""
    from pipeline.curate.quality import Scorer

    scorers = {name: Scorer(path) for name, path in paths.items()}  # each loads its model at first use
    try:
        while (parts := recv.recv()) is not None:
            try:
                answer = ("ok", [scorers[name].score_lines(lines) for name, lines in parts])
            except Exception:  # handed to the parent, which raises it
                answer = ("error", traceback.format_exc())
            send.send(answer)
    except (EOFError, BrokenPipeError):  # the parent is gone
        pass


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False),
           json.loads(sys.argv[3]))
