"""bench/gpu_telemetry.py: what bench/train_speed.py records of the GPU's clocks and power over its timed rounds.
The parsing runs on nvidia-smi's own csv lines (no GPU here); without nvidia-smi the bench records why."""
import shutil

import pytest

from bench.gpu_telemetry import REASONS, Telemetry, summarise

# `nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,clocks_event_reasons.active
#  --format=csv,noheader,nounits` as an H100/H200 prints it: a full-clock sample, a power-capped one, a field N/A
LINES = ["1980, 1980, 612.40, 700.00, 51, 0x0000000000000000\n",
         "1755, 1980, 699.10, 700.00, 58, 0x0000000000000004\n",
         "1800, 1980, [N/A], 700.00, 60, 0x0000000000000004\n",
         "garbage line without the fields\n"]


def test_summary_gives_clock_against_its_maximum_power_and_why_it_was_held_down():
    out = summarise(LINES)
    assert out["available"] and out["samples"] == 3  # the malformed line is no sample
    assert out["sm_clock_mhz"] == {"median": 1800.0, "min": 1755.0, "max": 1980.0}
    assert out["sm_clock_max_mhz"] == 1980.0 and out["sm_clock_median_of_max"] == pytest.approx(0.909, abs=1e-3)
    assert out["power_w"] == {"median": pytest.approx(655.75), "max": 699.1}  # the N/A sample is left out
    assert out["power_limit_w"] == 700.0 and out["temperature_c_max"] == 60.0
    assert out["clock_event_reasons"] == ["sw_power_cap"]


def test_reasons_decode_every_bit_set_in_any_sample():
    out = summarise(["1500, 1980, 700, 700, 85, 0x44\n", "1600, 1980, 650, 700, 84, 0x1\n"])
    assert out["clock_event_reasons"] == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert set(REASONS.values()) >= set(out["clock_event_reasons"])


def test_no_samples_is_said_not_invented():
    assert summarise([])["available"] is False


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="nvidia-smi is present: the bench samples it")
def test_without_nvidia_smi_the_bench_records_why():
    with Telemetry() as telemetry:
        pass
    assert telemetry.summary() == {"available": False, "why": "nvidia-smi not found"}
