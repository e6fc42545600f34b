"""Every stage script's command line: --help shows the whole docstring (In, Out, Params, Usage), not only its
first line, and the scripts share one parser and log setup (pipeline/core/cli.py)."""
from __future__ import annotations

import ast
import logging
import subprocess
import sys

import pytest

from pipeline.core import cli
from test_dvc_yaml import ROOT

STAGES = sorted((ROOT / "stages").glob("*.py"))


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.stem)
def test_help_carries_every_line_of_the_docstring(script):
    source = script.read_text()
    assert "cli.stage_parser(__doc__)" in source and "cli.parse_args(" in source
    text = cli.stage_parser(ast.get_docstring(ast.parse(source), clean=False)).format_help()
    # the lines as written in the file: a usage line continued with a backslash must show it (a raw docstring),
    # not run on into the next line's indentation
    written = source.split('"""', 2)[1]
    for line in filter(None, (ln.rstrip() for ln in written.strip().splitlines())):
        assert line in text, f"{script.name}: --help lacks {line!r}"


def test_a_real_stage_prints_its_params_and_usage(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "stages/books.py"), "--help"], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.startswith("usage: books.py") and "--truth TRUTH" in out
    assert "Params: books.min_words" in out and "Usage: python stages/books.py" in out


def test_parse_args_sets_the_pipeline_log_format(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # basicConfig acts only on a root without handlers
    monkeypatch.setattr(root, "level", root.level)
    parser = cli.stage_parser("Stage `x`: one line.\n\nIn: --in a folder\n")
    parser.add_argument("--in", dest="in_dir")
    assert cli.parse_args(parser, ["--in", "d"]).in_dir == "d"
    assert root.handlers and root.handlers[0].formatter._fmt == cli.LOG_FORMAT
    with pytest.raises(SystemExit):
        cli.parse_args(parser, ["--bogus"])
