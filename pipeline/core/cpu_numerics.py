"""One CPU code path for torch's float math, so a model trained on the CPU has the same bytes on any x86-64 machine.

Why: torch picks its vectorised kernels (ATen: AVX2 or AVX-512) and MKL its GEMM code path by the CPU it runs on;
the paths add in different orders, so the last bits of every sum differ, and over 300 steps so do the weights. On
2026-11-27 the embedded sample's `models/gpt` came out with another hash on an AMD EPYC (AVX2) than in the
dvc.lock a machine of another kind had committed, while every data output matched. Pinning both to their AVX2
path, which every x86-64 server CPU of the last decade has, makes the model's bytes a property of params and
inputs again (the thread count is already fixed: train.num_threads). GPU kernels are not affected.

Every stage script applies it (core.cli.parse_args), before its first torch operation: ATen reads its setting
when it first dispatches, MKL when it first runs. A user's own ATEN_CPU_CAPABILITY / MKL_CBWR / ONEDNN_MAX_CPU_ISA
win; GPT_REPRO_CPU_ISA=native leaves every library to its own choice (the fastest path on this CPU, whose models
then match only models from CPUs of the same kind).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

PINS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised kernels (LayerNorm, softmax, GELU, reductions)
             "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: its AVX2 GEMM path on any CPU
             "ONEDNN_MAX_CPU_ISA": "AVX2"},  # oneDNN's JIT kernels (torch's mkldnn ops)
    "native": {},
}


def has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU runs AVX2 code (pinning a path the CPU lacks would stop on an illegal instruction)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return any(line.startswith("flags") and " avx2" in line for line in cpuinfo.read_text().splitlines())
    except OSError:
        return False


def pin_cpu_numerics(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """Set the pins of GPT_REPRO_CPU_ISA (default avx2) where the environment has not set them; returns the ones
    now in force (empty off x86-64, on a CPU without AVX2, or with GPT_REPRO_CPU_ISA=native)."""
    choice = os.environ.get("GPT_REPRO_CPU_ISA", "avx2")
    if choice not in PINS:
        raise ValueError(f"GPT_REPRO_CPU_ISA must be one of {sorted(PINS)}, got {choice!r}")
    if not PINS[choice] or not has_avx2(cpuinfo):
        return {}
    for key, value in PINS[choice].items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in PINS[choice]}
