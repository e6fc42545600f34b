"""Typed, strict access to params.yaml.

Each pipeline module declares its knobs as a frozen dataclass whose defaults
mirror params.yaml. `build(Config, section)` turns a params.yaml section into
that dataclass and fails loudly on an unknown key or a wrong type: a typo in
params.yaml must never be silently ignored (nanoGPT#64, without exec).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_FILE = Path("params.yaml")
T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml section does not match the dataclass that reads it."""


def load(section: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one top-level section of params.yaml (a dict, or a scalar such as `seed`)."""
    with open(path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if section not in params:
        raise ParamsError(f"{path} has no section {section!r}; sections: {sorted(params)}")
    return params[section]


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(name, value, arg)
            except ParamsError:
                pass
        raise ParamsError(f"param {name}={value!r} is not {annotation}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"param {name}={value!r} must be a list")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return tuple(_check_type(f"{name}[]", v, item_type) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"param {name}={value!r} must be a mapping")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # YAML writes 1 for 1.0
    if annotation in (int, float, str, bool) and (
        not isinstance(value, annotation) or (annotation is int and isinstance(value, bool))
    ):
        raise ParamsError(f"param {name}={value!r} must be {annotation.__name__}, got {type(value).__name__}")
    return value


def build(cls: type[T], section: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a params section; unknown keys and type mismatches raise ParamsError."""
    section = dict(section or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ParamsError(
            f"unknown param(s) {', '.join(prefix + k for k in unknown)}; "
            f"{cls.__name__} accepts: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in section.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build(hint, value, prefix=f"{prefix}{name}.")
        else:
            values[name] = _check_type(prefix + name, value, hint)
    return cls(**values)


def config(cls: type[T], section: str, path: str | Path = PARAMS_FILE) -> T:
    """Shorthand: `config(DedupConfig, "dedup")` reads params.yaml and builds the dataclass."""
    return build(cls, load(section, path), prefix=f"{section}.")


def as_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def fingerprint(*configs: Any) -> str:
    """Short stable hash of configs: names the resume work dir, so a params change starts clean."""
    blob = json.dumps([as_dict(c) if dataclasses.is_dataclass(c) else c for c in configs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


TEMPLATE = re.compile(r"\$\{([\w.]+)\}")


def interpolate(value: Any, params: dict) -> Any:
    """dvc.yaml's `${group.key}` templating resolved from a params dict, as DVC resolves it (strings, lists
    and dicts walked); for tools that read dvc.yaml without DVC (tests, bench/kill_soak.py)."""
    if isinstance(value, str):
        def lookup(match: re.Match) -> str:
            node = params
            for key in match.group(1).split("."):
                node = node[key]
            return str(node)
        return TEMPLATE.sub(lookup, value)
    if isinstance(value, list):
        return [interpolate(v, params) for v in value]
    if isinstance(value, dict):
        return {interpolate(k, params): interpolate(v, params) for k, v in value.items()}
    return value
