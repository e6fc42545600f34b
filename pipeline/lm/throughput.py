"""Training throughput, labelled so nobody mistakes one figure for another.

- steady: tokens per second of optimisation steps after the first `warmup` laps (torch.compile and CUDA
  warm-up happen there), evaluation and checkpointing excluded: the figure a benchmark of the step measures.
- wall: every token of the run over the loop's whole wall time, compilation and evaluation included.
- warmup_s: the first laps' time (compilation, autotuning, allocator warm-up).
A lap is the run of steps between two reads of the clock (the logging cadence). On a GPU the clock is a CUDA
event recorded in the stream, so reading it needs no host-device sync: the loop keeps the GPU fed while it
logs, and a lap's time is what the GPU took from the lap's first queued step to its last (idle gaps included).
On the CPU it is the host's perf_counter.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Throughput:
    def __init__(self, on_gpu: bool, warmup: int):
        self.on_gpu, self.warmup = on_gpu, warmup
        self.t_start = time.perf_counter()
        self.excluded_s = 0.0
        self.laps: list[tuple[int, object, object]] = []  # (tokens, start mark, end mark)
        self._start = self._mark()

    def _mark(self):
        if not self.on_gpu:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def _seconds(start, end) -> float:
        if isinstance(start, float):
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000.0

    def lap(self, tokens: int) -> None:
        """Close the lap: `tokens` were trained since the last lap (or pause)."""
        end = self._mark()
        self.laps.append((tokens, self._start, end))
        self._start = end

    @property
    def interval_tps(self) -> float | None:
        """Tokens/s of the latest lap the clock can read without waiting (on a GPU: whose end event has passed)."""
        for tokens, start, end in reversed(self.laps[-2:]):
            if isinstance(end, float) or end.query():
                seconds = self._seconds(start, end)
                return tokens / seconds if seconds > 0 else None
        return None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Work that is not training (evaluation, checkpoints), called right after lap(): out of the steady
        figure (the next lap starts when it ends), in the wall one."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded_s += time.perf_counter() - t0
            self._start = self._mark()

    def _rate(self, laps) -> float:
        tokens, seconds = sum(t for t, _, _ in laps), sum(self._seconds(s, e) for _, s, e in laps)
        return tokens / seconds if seconds > 0 else 0.0

    @property
    def steady_tps(self) -> float:
        return self._rate(self.laps[self.warmup:] or self.laps)  # a run shorter than the warm-up: all it has

    def summary(self, flops_per_token: float, peak_tflops: float | None) -> dict:
        wall_s = time.perf_counter() - self.t_start
        tokens = sum(t for t, _, _ in self.laps)
        wall_tps = tokens / wall_s if wall_s > 0 else 0.0
        steady = self.steady_tps
        mfu = (lambda tps: round(flops_per_token * tps / (peak_tflops * 1e12), 4) if peak_tflops else None)
        return {"steady_tokens_per_s": round(steady, 1), "steady_mfu": mfu(steady),
                "wall_tokens_per_s": round(wall_tps, 1), "wall_mfu": mfu(wall_tps),
                "warmup_steps": min(self.warmup, len(self.laps)),
                "warmup_s": round(sum(self._seconds(s, e) for _, s, e in self.laps[:self.warmup]), 3),
                "eval_and_checkpoint_s": round(self.excluded_s, 3), "loop_wall_s": round(wall_s, 3),
                "clock": "cuda events" if self.on_gpu else "host perf_counter"}
