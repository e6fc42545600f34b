"""Shared fixtures. Tests that use the real files in ../shared/data take the `shared_data` fixture:
it skips with a reason when the folder is absent (a user's checkout), and fails instead when
GPT_REPRO_REQUIRE_SHARED=1 (set by .ci/run, so CI always runs them); Chromium, Slurm and triton follow the same
rule through skip_unless_required."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPT_REPRO_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from pipeline.core.cpu_numerics import pin_cpu_numerics  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers each run torch with two OpenMP threads on a 2-core machine: libgomp's idle threads spin and
    # steal the other worker's cores. Two tiny-profile `dvc repro`s side by side took 486 s each spinning, 210 s
    # with passive waits (one alone: 140 s); the bytes are the same (waiting changes no arithmetic). Inherited by
    # every stage subprocess; set before any test module imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The tests' own torch code takes the CPU code path the stage processes take (pipeline/core/cpu_numerics.py), so an
# in-process result and a stage's compare bit for bit on any CPU kind; set before any test module's first torch op.
pin_cpu_numerics()


def skip_unless_required(reason: str, flag: str, module_level: bool = False) -> None:
    """Skip for `reason` (a user's checkout without the thing), or fail where .ci/run set `flag`=1, so that CI
    always runs the test."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason}; {flag}=1 makes this an error")
    pytest.skip(reason, allow_module_level=module_level)


def require_triton(what: str) -> None:
    """At the top of a module that needs triton: the loss kernel's tests and bench/kernel_resources.py's."""
    if importlib.util.find_spec("triton") is None:
        skip_unless_required(f"triton is not installed, so {what} cannot run (CUDA builds of torch bring it; "
                             "`make test` installs it where torch brought none)", "GPT_REPRO_REQUIRE_TRITON",
                             module_level=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        skip_unless_required(f"real test data folder {SHARED_DATA} is absent (set GPT_REPRO_SHARED_DATA to point at "
                             "it)", "GPT_REPRO_REQUIRE_SHARED")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's headless Chromium, for the page checks: skipped without it, an error where .ci/run asks for it."""
    path = Path("/usr/bin/chromium")
    if not path.exists():
        skip_unless_required("/usr/bin/chromium is not installed (apt-get install chromium): the page is not "
                             "rendered", "GPT_REPRO_REQUIRE_CHROMIUM")
    return path


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch) -> Path:
    """Run a test inside a temp dir (stages write reports/ and data/resume/ relative to the cwd)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a loaded machine two OpenMP threads spin (10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """Under xdist (`make test`), the modules that run the whole DAG first: `--dist loadfile` hands out files in
    this order, so each worker starts on one of them (two thirds of the suite's time) while the rest fill in,
    instead of both ending the run alone. Order within a module is kept."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    heavy = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in heavy)  # stable: only moves whole modules forward
