"""The house rules of pipeline/ (STYLE.md sec. 2), checked rather than hoped for: modules live in the
phase packages, imports flow one way (stages -> later phases -> earlier phases -> core), there is no
import circle, not even a deferred or TYPE_CHECKING one, no module is over 400 lines, and a package's
__init__ holds only its docstring (so dvc.yaml need not list it as a dep)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from test_dvc_yaml import ROOT, module_files

# The order the DAG flows; a module may import its own phase and the phases before it.
PHASES = ("core", "sample", "sources", "curate", "lm", "evaluation", "finetune", "claims")
MAX_LINES = 400
MODULES = sorted(p for p in (ROOT / "pipeline").rglob("*.py") if p.name != "__init__.py")


def dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def direct_imports(path: Path) -> set[str]:
    """pipeline modules `path` imports anywhere in its body (deferred and TYPE_CHECKING imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        out.update(m for m in module_files(node) if (ROOT / f"{m.replace('.', '/')}.py").exists())
    return out


GRAPH = {dotted(p): direct_imports(p) for p in MODULES}


def test_every_module_sits_in_a_phase_package():
    loose = [str(p.relative_to(ROOT)) for p in MODULES if len(p.relative_to(ROOT / "pipeline").parts) != 2]
    assert not loose, f"modules outside pipeline/<phase>/: {loose}"
    packages = {p.relative_to(ROOT / "pipeline").parts[0] for p in MODULES}
    assert packages <= set(PHASES), f"unknown phase packages: {sorted(packages - set(PHASES))}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_flow_one_way(module):
    rank = PHASES.index(module.split(".")[1])
    upward = sorted(m for m in GRAPH[module] if PHASES.index(m.split(".")[1]) > rank)
    assert not upward, f"{module} (phase {PHASES[rank]}) reaches up into {upward}"


def test_no_import_circles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_line_guide(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (guide: {MAX_LINES}); split it by responsibility"


def test_package_inits_hold_only_a_docstring():
    for init in sorted((ROOT / "pipeline").rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        extra = body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        assert not extra, f"{init.relative_to(ROOT)} holds code; dvc.yaml deps assume package inits are empty"


def test_stage_scripts_import_only_the_library():
    for script in sorted((ROOT / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "stages", f"{script.name} imports another stage script"
