"""bench/gpu_issue12.py, the prepared device call: a part that names a missing script or a flag its script does not
take would only fail on the lent GPU, minutes into the session's 15. Checked here, on the CPU, before any call."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_issue12

ROOT = Path(__file__).resolve().parents[1]


def test_the_next_call_in_the_docstring_names_parts_that_exist():
    plan = re.search(r"python3 bench/gpu_issue12.py --only ([\w ]+?) --budget", gpu_issue12.__doc__.split("Next call")[1])
    assert plan, "the docstring lost its next call"
    assert set(plan.group(1).split()) <= set(gpu_issue12.PARTS)


def test_every_part_runs_a_script_that_takes_its_flags():
    helps = {}
    for part, rows in gpu_issue12.PARTS.items():
        for label, argv, expected in rows:
            assert expected > 0, label
            script = next((a for a in argv if a.endswith(".py")), None)
            assert script and (ROOT / script).is_file(), (label, script)
            if argv[1] == "-m":  # pytest on a test file: the file is what must exist
                continue
            if script not in helps:
                proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                      timeout=120)
                assert proc.returncode == 0, (script, proc.stderr[-500:])
                helps[script] = proc.stdout
            for flag in (a for a in argv if a.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", helps[script]), (label, script, flag)


@pytest.mark.parametrize("part", ["bf16_rows", "stage_bf16"])
def test_the_bf16_parts_time_the_stream_the_stage_trains_with(part):
    argv = [a for _, argv, _ in gpu_issue12.PARTS[part] for a in argv]
    assert "--bf16-residual" in argv or ("--residual-dtype" in argv and "bfloat16" in argv)
