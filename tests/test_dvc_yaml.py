"""dvc.yaml must be precise: every pipeline module a stage imports is a dep (dvc#9195 by test),
every params section a stage reads is declared, and every stage writes its metrics."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core import params

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
TEMPLATE = params.TEMPLATE


def interpolate(value: Any, values: dict = PARAMS) -> Any:
    return params.interpolate(value, values)


STAGES = interpolate(DVC["stages"])


def module_files(node: ast.AST) -> list[str]:
    """Dotted names of the pipeline modules one import statement loads (`from pipeline.lm import model`
    loads pipeline.lm.model; `from pipeline.lm.model import GPT` loads pipeline.lm.model)."""
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
        subs = [f"{node.module}.{a.name}" for a in node.names]
        return [m for m in subs if (ROOT / f"{m.replace('.', '/')}.py").exists()] or [node.module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("pipeline.")]
    return []


def pipeline_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """pipeline/**/*.py files imported by `path`, transitively. Package __init__ files hold only a
    docstring (tests/test_layout.py checks it), so they are not deps."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        for name in module_files(node):
            candidate = ROOT / f"{name.replace('.', '/')}.py"
            if candidate.exists():
                key = str(candidate.relative_to(ROOT))
                if key not in seen:
                    seen.add(key)
                    pipeline_imports(candidate, seen)
    return seen


def sections_read(path: Path) -> set[str]:
    """params sections a script reads through params.load/params.config (string literals)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "config"):
            if getattr(node.func.value, "id", None) == "params":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        out.add(arg.value)
    return out


def script_of(stage: dict) -> Path:
    return ROOT / stage["cmd"].split()[1]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_script_and_imports_are_deps(name):
    stage = STAGES[name]
    script = script_of(stage)
    assert script.exists(), f"{name}: {script} missing"
    deps = set(stage["deps"])
    assert str(script.relative_to(ROOT)) in deps
    missing = sorted(pipeline_imports(script) - deps)
    assert not missing, f"stage {name} imports {missing} but dvc.yaml does not list them as deps"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_read_are_declared(name):
    stage = STAGES[name]
    declared = {p.split(".")[0] for p in stage.get("params", []) if isinstance(p, str)}
    read = sections_read(script_of(stage))
    undeclared = sorted(read - declared - {"executor"})  # executor.* is output-neutral by design
    assert not undeclared, f"stage {name} reads params {undeclared} that dvc.yaml does not declare"
    for p in stage.get("params", []):
        section, *key = p.split(".")
        assert section in PARAMS, f"{name}: param {p} not in params.yaml"
        if key:
            assert key[0] in PARAMS[section], f"{name}: param {p} not in params.yaml"


@pytest.mark.parametrize("name", sorted(set(STAGES) - {"sample"}))
def test_every_stage_writes_its_metrics(name):
    metrics = [next(iter(m)) if isinstance(m, dict) else m for m in STAGES[name].get("metrics", [])]
    assert f"reports/{name}.json" in metrics


def git_tracked(path: str) -> bool:
    return bool(subprocess.run(["git", "ls-files", path], cwd=ROOT, capture_output=True, text=True, check=True).stdout)


def test_every_dep_is_produced_or_tracked():
    outs = set()
    for stage in STAGES.values():
        for key in ("outs", "metrics", "plots"):  # a stage's metrics and plots are produced too (summary reads them)
            for out in stage.get(key, []):
                outs.add(next(iter(out)) if isinstance(out, dict) else out)
    for name, stage in STAGES.items():
        for dep in stage["deps"]:
            if dep.startswith(("data/", "models/", "reports/")) and not git_tracked(dep):  # models/lid is git's
                assert any(dep == o or dep.startswith(o + "/") for o in outs), f"{name}: dep {dep} has no producer"
            else:
                assert (ROOT / dep).exists(), f"{name}: dep {dep} missing"


def test_raw_inputs_come_from_the_profile():
    """Only the sample stage names data/raw/sample; every other stage reads its raw inputs through
    ${inputs.*}, so switching the profile (params.yaml `inputs`) reaches every stage."""
    for name, stage in DVC["stages"].items():
        if name == "sample":
            continue
        text = yaml.safe_dump(stage)
        assert "data/raw/sample" not in text, f"stage {name} hard-codes a sample path instead of ${{inputs.*}}"
        for ref in TEMPLATE.findall(text):
            group, key = ref.split(".", 1)
            assert group in ("inputs", "launch") and key in PARAMS[group], f"stage {name}: unknown template ${{{ref}}}"


def test_every_profile_names_every_input():
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        group = yaml.safe_load(path.read_text())["inputs"]
        assert set(group) == set(PARAMS["inputs"]), f"{path.name}: inputs keys differ from params.yaml"
        assert group["profile"] == path.stem and group["fetch"] == f"profiles/{path.name}"


def test_dvc_parses_yaml_with_the_c_extension():
    """DVC reads params.yaml once per stage with params and dvc.lock twice per `dvc repro`, through ruamel.yaml, whose
    C parser is optional since 0.19 (requirements.lock pins ruamel.yaml.clib): without it a no-op `dvc repro` here took
    5.8 s instead of 3.3 (bench/dvc_noop.py times both)."""
    from ruamel.yaml import YAML
    from ruamel.yaml import main as ruamel_main

    assert ruamel_main.CParser is not None, "ruamel.yaml.clib is missing: `make setup` installs requirements.lock"
    assert YAML(typ="safe").Parser is ruamel_main.CParser  # what dvc.utils.serialize's YAML(typ="safe") loads with
