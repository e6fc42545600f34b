"""Training throughput, labelled so nobody mistakes one figure for another.

- steady: tokens per second of optimisation steps after the first `warmup` steps (torch.compile and CUDA
  warm-up happen there), evaluation and checkpointing excluded: the figure a benchmark of the step measures.
- wall: every token of the run over the loop's whole wall time, compilation and evaluation included.
- warmup_s: the first steps' time (compilation, autotuning, allocator warm-up).
The loop reads the clock only where it already synchronises (the logging cadence), so timing adds no
host-device sync of its own.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Throughput:
    def __init__(self, on_gpu: bool, warmup: int):
        self.on_gpu, self.warmup = on_gpu, warmup
        self.t_start = self.t_mark = time.perf_counter()
        self.paused_s = self.excluded_s = 0.0
        self.laps: list[tuple[int, float]] = []  # (tokens, seconds) between two reads of the clock
        self.interval_tps: float | None = None

    def sync(self) -> None:
        """Wait for queued GPU work, so the next lap measures work done, not work queued."""
        if self.on_gpu:
            import torch

            torch.cuda.synchronize()

    def lap(self, tokens: int) -> None:
        now = time.perf_counter()
        seconds = now - self.t_mark - self.paused_s
        self.t_mark, self.paused_s = now, 0.0
        self.laps.append((tokens, seconds))
        self.interval_tps = tokens / seconds if seconds > 0 else None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Work that is not training (evaluation, checkpoints): out of the steady figure, in the wall one."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.paused_s += elapsed
            self.excluded_s += elapsed

    @property
    def steady_tps(self) -> float:
        laps = self.laps[self.warmup:] or self.laps  # a run shorter than the warm-up: all it has
        tokens, seconds = sum(t for t, _ in laps), sum(s for _, s in laps)
        return tokens / seconds if seconds > 0 else 0.0

    def summary(self, flops_per_token: float, peak_tflops: float | None) -> dict:
        wall_s = time.perf_counter() - self.t_start
        tokens = sum(t for t, _ in self.laps)
        wall_tps = tokens / wall_s if wall_s > 0 else 0.0
        mfu = (lambda tps: round(flops_per_token * tps / (peak_tflops * 1e12), 4) if peak_tflops else None)
        return {"steady_tokens_per_s": round(self.steady_tps, 1), "steady_mfu": mfu(self.steady_tps),
                "wall_tokens_per_s": round(wall_tps, 1), "wall_mfu": mfu(wall_tps),
                "warmup_steps": min(self.warmup, len(self.laps)),
                "warmup_s": round(sum(s for _, s in self.laps[:self.warmup]), 3),
                "eval_and_checkpoint_s": round(self.excluded_s, 3), "loop_wall_s": round(wall_s, 3)}
