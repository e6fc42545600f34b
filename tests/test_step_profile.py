"""bench/step_profile.py: the kernel groups it reports, and the script itself on CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.step_profile import device_rows, group_of, summarise, timeline

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_names_fall_in_their_groups():
    """Names as an H100/H200 profile shows them (cuBLAS, CUTLASS, flash, cuDNN attention, inductor, fused AdamW)."""
    cases = {
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "matmul",
        "nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NNT": "matmul",
        "cutlass3x_sm90_tensorop_gemm_bf16_bf16_f32_bf16_bf16_128x256x64": "matmul",
        "triton_tem_fused_mm_0": "matmul",  # an autotuned matmul template is a matmul, not a fused pointwise kernel
        "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64>>": "attention",
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64": "attention",
        "triton_per_fused_add_native_layer_norm_0": "fused (inductor)",
        "triton_poi_fused_gelu_1": "fused (inductor)",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>": "optimizer",
        "Memcpy HtoD (Pageable -> Device)": "copy / fill",
        "aten::addmm_": "matmul",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
        "void at::native::reduce_kernel<512, 1>": "other",
    }
    assert {name: group_of(name) for name in cases} == cases


def test_summary_shares_add_up_and_rank_the_costliest():
    out = summarise([("triton_poi_fused_gelu_1", 3000.0), ("nvjet_hsh_256x128", 6000.0), ("Memset (Device)", 1000.0)],
                    steps=2)
    assert out["ms_per_step"] == 5.0
    assert list(out["groups"]) == ["matmul", "fused (inductor)", "copy / fill"]
    assert sum(g["share"] for g in out["groups"].values()) == pytest.approx(1.0)
    assert out["top_kernels"][0] == {"name": "nvjet_hsh_256x128", "group": "matmul", "ms_per_step": 3.0, "share": 0.6}


def test_gpu_rows_leave_out_annotations_and_host_events():
    """A record_function range has a GPU-side twin spanning the kernels inside it (Optimizer.step#AdamW.step):
    counted as a kernel, it counts them twice."""
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(key, device, us, annotation=False):
        return SimpleNamespace(key=key, device_type=device, self_device_time_total=us, is_user_annotation=annotation)

    prof = SimpleNamespace(key_averages=lambda: [
        event("multi_tensor_apply_kernel<FusedAdamMathFunctor>", cuda, 1000.0),
        event("Optimizer.step#AdamW.step", cuda, 1050.0, annotation=True),
        event("aten::addmm", cpu, 500.0),
        event("nvjet_sm90_tst_256x128", cuda, 6000.0)])
    assert device_rows(prof, on_gpu=True) == [("multi_tensor_apply_kernel<FusedAdamMathFunctor>", 1000.0),
                                              ("nvjet_sm90_tst_256x128", 6000.0)]


def test_script_runs_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "bench/step_profile.py", "--allow-cpu", "--small", "--no-compile",
                           "--batch", "4", "--steps", "2"], cwd=ROOT, capture_output=True, text=True,
                          env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "step_profile.json").read_text())
    assert out["device"] == "cpu" and out["groups"]["matmul"]["ms_per_step"] > 0
    assert "attention" in out["groups"] and out["ms_per_step"] > 0


def test_timeline_merges_overlapping_kernels_and_names_the_idle_gaps():
    """A step whose kernels sum to 114 ms may still take 117: the span less the busy time is the idle time, and the
    gaps are summed by the kernels on either side, so the profile says where the device waits."""
    kernels = [(0, 10, "gemm"), (5, 12, "gelu"), (12, 20, "ln"), (25, 30, "loss"), (26, 27, "tiny"),  # 2 steps:
               (40, 50, "gemm"), (45, 52, "gelu"), (52, 60, "ln"), (65, 70, "loss"), (80, 81, "adam")]
    kernels = [(start * 1000, end * 1000, name) for start, end, name in kernels]  # ms -> the profiler's us
    out = timeline(kernels[::-1], steps=2)  # any order
    assert out["busy_ms_per_step"] == (20 + 5 + 20 + 5 + 1) / 2
    assert out["span_ms_per_step"] == 81 / 2
    assert out["idle_ms_per_step"] == (5 + 10 + 5 + 10) / 2
    assert out["largest_gaps"][0] == {"ms_per_step": 5.0, "count": 2, "after": "ln", "before": "loss"}
    assert {(g["after"], g["before"]) for g in out["largest_gaps"]} == {("ln", "loss"), ("loss", "gemm"),
                                                                       ("loss", "adam")}
    assert timeline([], steps=1)["span_ms_per_step"] == 0.0
