"""Input profiles: which raw inputs a run reads, switched in one place.

params.yaml's `inputs` group is the active profile: dvc.yaml is templated from it (`${inputs.books}`,
...), so every stage reads its source from there and depends on that path alone. A profile file
(profiles/<name>.yaml) holds a whole `inputs` group plus the fetch list of its raw files; `use` copies
the group into params.yaml (text-level, so both files keep their comments), after which `dvc repro`
reruns exactly the stages whose sources changed. One key can also change alone:
`dvc exp run -S inputs.mirror=http://127.0.0.1:8765/`.

    python -m pipeline.sources.profiles list
    python -m pipeline.sources.profiles use real-mini
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

PROFILES = Path("profiles")
PARAMS = Path("params.yaml")
GROUP = "inputs"
_TOP = re.compile(r"^[A-Za-z_][\w-]*:", re.M)


def group_block(text: str, key: str = GROUP) -> tuple[int, int]:
    """(start, end) of a top-level YAML key's block in `text`: its line through the line before the next key."""
    match = re.search(rf"^{re.escape(key)}:.*$", text, re.M)
    if match is None:
        raise KeyError(f"no top-level `{key}:` group")
    nxt = _TOP.search(text, match.end())
    end = nxt.start() if nxt else len(text)
    while end > match.end() and text[end - 2: end] == "\n\n":  # leave the blank lines before the next key
        end -= 1
    return match.start(), end


def available(folder: Path = PROFILES) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def use(name: str, params_path: Path = PARAMS, folder: Path = PROFILES) -> dict:
    """Make profile `name` the active one: its `inputs` block replaces params.yaml's. Returns the group."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no profile {name!r}; profiles: {available(folder)}")
    profile_text = path.read_text(encoding="utf-8")
    group = (yaml.safe_load(profile_text) or {}).get(GROUP)
    if not isinstance(group, dict):
        raise ValueError(f"{path} has no `{GROUP}:` group")
    params_text = params_path.read_text(encoding="utf-8")
    current = (yaml.safe_load(params_text) or {}).get(GROUP) or {}
    missing = sorted(set(current) - set(group))
    if missing:
        raise ValueError(f"{path} lacks inputs keys {missing} that params.yaml has: a profile names every input")
    a, b = group_block(profile_text)
    s, e = group_block(params_text)
    params_path.write_text(params_text[:s] + profile_text[a:b].rstrip("\n") + "\n" + params_text[e:], encoding="utf-8")
    return group


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline.sources.profiles", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the profiles in profiles/ and the active one")
    use_p = sub.add_parser("use", help="copy a profile's inputs group into params.yaml")
    use_p.add_argument("name")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        active = (yaml.safe_load(PARAMS.read_text(encoding="utf-8")) or {}).get(GROUP, {}).get("profile")
        for name in available():
            print(("* " if name == active else "  ") + name)
        return
    group = use(args.name)
    print(f"params.yaml inputs -> profile {args.name}: " + ", ".join(f"{k}={v}" for k, v in group.items()))


if __name__ == "__main__":
    main()
