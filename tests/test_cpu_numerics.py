"""pipeline/core/cpu_numerics.py: every stage pins torch's CPU code path before its first torch operation."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import cpu_numerics

ROOT = Path(__file__).resolve().parents[1]
KEYS = tuple(cpu_numerics.PINS["avx2"])


@pytest.fixture
def clean_env(monkeypatch):
    for key in (*KEYS, "GPT_REPRO_CPU_ISA"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return path


def test_pins_the_avx2_path_where_the_cpu_has_it(clean_env, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_numerics.platform, "machine", lambda: "x86_64")
    assert cpu_numerics.pin_cpu_numerics(_cpuinfo(tmp_path, "avx avx2 fma")) == {
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert os.environ["MKL_CBWR"] == "AVX2"


def test_a_cpu_without_avx2_or_another_architecture_is_left_alone(clean_env, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_numerics.platform, "machine", lambda: "x86_64")
    assert cpu_numerics.pin_cpu_numerics(_cpuinfo(tmp_path, "avx fma")) == {}  # avx alone, no avx2
    monkeypatch.setattr(cpu_numerics.platform, "machine", lambda: "aarch64")
    assert cpu_numerics.pin_cpu_numerics(_cpuinfo(tmp_path, "avx2")) == {}
    assert not any(key in os.environ for key in KEYS)


def test_the_users_settings_win_and_native_opts_out(clean_env, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_numerics.platform, "machine", lambda: "x86_64")
    info = _cpuinfo(tmp_path, "avx2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    assert cpu_numerics.pin_cpu_numerics(info)["ATEN_CPU_CAPABILITY"] == "avx512"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.delenv("MKL_CBWR")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("GPT_REPRO_CPU_ISA", "native")
    assert cpu_numerics.pin_cpu_numerics(info) == {} and "MKL_CBWR" not in os.environ
    monkeypatch.setenv("GPT_REPRO_CPU_ISA", "avx-512")
    with pytest.raises(ValueError, match="GPT_REPRO_CPU_ISA must be one of"):
        cpu_numerics.pin_cpu_numerics(info)


@pytest.mark.skipif(not cpu_numerics.has_avx2(), reason="the pins apply on x86-64 CPUs with AVX2 only")
def test_importing_every_stage_runs_no_torch_operation_so_the_pin_takes():
    """ATen fixes its kernels at its first dispatch: had a stage's imports run one, a pin set in parse_args would be
    silently ignored. A fresh process imports every stage script, then pins ATen to its generic path (a setting
    this CPU would not choose itself) and checks that torch took it."""
    code = """
import importlib.util, pathlib, sys
sys.path.insert(0, '.')
from pipeline.core import cli, cpu_numerics
for path in sorted(pathlib.Path('stages').glob('*.py')):
    spec = importlib.util.spec_from_file_location('stage_' + path.stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
cpu_numerics.PINS['avx2'] = {'ATEN_CPU_CAPABILITY': 'default'}
cli.parse_args(cli.stage_parser('probe'), [])
import torch
print(torch.backends.cpu.get_cpu_capability())
"""
    env = {k: v for k, v in os.environ.items() if k not in (*KEYS, "GPT_REPRO_CPU_ISA")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "DEFAULT", proc.stdout


@pytest.mark.skipif(not cpu_numerics.has_avx2() or os.environ.get("GPT_REPRO_CPU_ISA") == "native",
                    reason="the pins apply on x86-64 CPUs with AVX2, unless GPT_REPRO_CPU_ISA=native")
def test_the_test_process_takes_the_stages_path():
    """conftest pins this process too: tests that compare an in-process result with a stage's compare one path."""
    import torch

    assert torch.backends.cpu.get_cpu_capability() == os.environ["ATEN_CPU_CAPABILITY"].upper()
