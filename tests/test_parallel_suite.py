"""How `make test` spreads the suite over two pytest-xdist workers (tests/conftest.py, Makefile `test`)."""
from __future__ import annotations

import os
import re
from types import SimpleNamespace

import conftest
import pytest


def fake_item(module: str, slow: bool) -> SimpleNamespace:
    return SimpleNamespace(module=SimpleNamespace(__name__=module), name=f"{module}-{slow}",
                           get_closest_marker=lambda name, slow=slow: object() if slow and name == "slow" else None)


def collected() -> list[SimpleNamespace]:
    # a DAG module marks only some tests slow (a cheap check beside its fixture's tests): the whole module moves
    return [fake_item("test_a", False), fake_item("test_e2e", False), fake_item("test_b", False),
            fake_item("test_e2e", True), fake_item("test_real_mini", True), fake_item("test_c", False)]


def test_under_xdist_the_dag_modules_come_first_whole_and_in_order(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    items = collected()
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["test_e2e-False", "test_e2e-True", "test_real_mini-True", "test_a-False",
                                       "test_b-False", "test_c-False"]


def test_in_one_process_the_order_is_pytest_s(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    items = collected()
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == [i.name for i in collected()]


def test_make_test_hands_out_whole_files_in_the_collected_order():
    recipe = re.search(r"^test:.*\n\t(.*)", (conftest.ROOT / "Makefile").read_text(), re.M).group(1)
    assert "-n $(TEST_WORKERS)" in recipe and "--dist loadfile" in recipe and "--no-loadscope-reorder" in recipe


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="runs under xdist only (`make test`)")
def test_under_xdist_torch_threads_wait_passively():
    # set by conftest before any torch import; the stage subprocesses inherit it
    assert os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
