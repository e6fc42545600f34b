"""The GPU's clocks, power and clock-event reasons, sampled by nvidia-smi while a bench times its steps.

Why: on an H200 the bf16-stream step timed at ~117 ms while its kernels summed to ~113 ms under the profiler
(bench/step_profile.py), and 50% MFU at gpt2-small needs ~113 ms. The missing milliseconds are either idle gaps
between kernels (step_profile's busy span tells) or a card running below its top clock through a long GEMM-heavy
run (power or thermal capping, which a 5-step profile does not see). This records the second: the SM clock against
its maximum, the power draw against the limit, and nvidia-smi's reasons for holding the clock down.

Used by bench/train_speed.py around its timed rounds on CUDA. Where nvidia-smi is absent (a CPU machine, some
containers) or does not answer, it records why instead of failing the bench. `gpu_idle` among the reasons is
expected: the bench syncs the host between rounds, and a sample may fall there.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading

QUERY = ("clocks.sm", "clocks.max.sm", "power.draw", "power.limit", "temperature.gpu")
# nvidia-smi renamed clocks_throttle_reasons to clocks_event_reasons (driver 535); older drivers know the first only
REASON_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")
# nvmlClocksEventReasons bits (nvml.h): which ones held the SM clock down during the samples
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
           0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting"}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def summarise(lines: list[str]) -> dict:
    """Median and extremes of `nvidia-smi --query-gpu=<QUERY>,<reason> --format=csv,noheader,nounits` lines."""
    rows = [[f.strip() for f in line.split(",")] for line in lines if line.count(",") == len(QUERY)]
    if not rows:
        return {"available": False, "why": "no samples (the timed window was shorter than one sampling period?)"}
    cols = {name: [v for v in (_number(r[i]) for r in rows) if v is not None] for i, name in enumerate(QUERY)}
    reasons = 0
    for r in rows:
        try:
            reasons |= int(r[-1], 16)
        except ValueError:
            pass
    sm, power = cols["clocks.sm"], cols["power.draw"]
    out = {"available": True, "samples": len(rows),
           "sm_clock_mhz": {"median": statistics.median(sm), "min": min(sm), "max": max(sm)} if sm else None,
           "sm_clock_max_mhz": max(cols["clocks.max.sm"]) if cols["clocks.max.sm"] else None,
           "power_w": {"median": statistics.median(power), "max": max(power)} if power else None,
           "power_limit_w": max(cols["power.limit"]) if cols["power.limit"] else None,
           "temperature_c_max": max(cols["temperature.gpu"]) if cols["temperature.gpu"] else None,
           "clock_event_reasons": [name for bit, name in REASONS.items() if reasons & bit]}
    if sm and out["sm_clock_max_mhz"]:
        out["sm_clock_median_of_max"] = round(statistics.median(sm) / out["sm_clock_max_mhz"], 3)
    return out


class Telemetry:
    """`with Telemetry() as t: ...` samples every `period_ms`; `t.summary()` afterwards (summarise's dict)."""

    def __init__(self, period_ms: int = 200, gpu: int | None = None):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        self.gpu = gpu if gpu is not None else int(visible) if visible.isdigit() else 0
        self.period_ms, self.lines, self.why, self.proc = period_ms, [], None, None

    def _argv(self, reason_field: str) -> list[str]:
        return ["nvidia-smi", f"--id={self.gpu}", f"--query-gpu={','.join(QUERY)},{reason_field}",
                "--format=csv,noheader,nounits"]

    def __enter__(self) -> "Telemetry":
        if shutil.which("nvidia-smi") is None:
            self.why = "nvidia-smi not found"
            return self
        for field in REASON_FIELDS:  # one query first: an unknown field (or no GPU) fails it, with nvidia-smi's why
            try:
                probe = subprocess.run(self._argv(field), capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as e:  # the bench goes on without the samples
                self.why = f"nvidia-smi: {e}"
                return self
            if probe.returncode == 0:
                self.why = None
                self.proc = subprocess.Popen(self._argv(field) + [f"-lms={self.period_ms}"], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
                self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
                self._reader.start()
                break
            self.why = f"nvidia-smi: {(probe.stdout + probe.stderr).strip()[:200] or f'exit {probe.returncode}'}"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self._reader.join(timeout=5)

    def summary(self) -> dict:
        return {"available": False, "why": self.why} if self.why else summarise(self.lines)
