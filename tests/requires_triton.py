"""The Triton kernel's test modules call require_triton() first: skipped with a reason where triton is absent (a
CPU torch without `make test`'s triton), an error where GPT_REPRO_REQUIRE_TRITON=1 (set by .ci/run, so CI always
runs them), as conftest.shared_data does for the real data."""
import importlib.util
import os

import pytest


def require_triton(what: str) -> None:
    if importlib.util.find_spec("triton") is not None:
        return
    reason = (f"triton is not installed, so {what} cannot run (CUDA builds of torch bring it; `make test` installs "
              "it where torch brought none)")
    if os.environ.get("GPT_REPRO_REQUIRE_TRITON") == "1":
        pytest.fail(reason + "; GPT_REPRO_REQUIRE_TRITON=1 makes this an error", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
