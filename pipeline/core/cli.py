"""What every stage script shares on its command line: a --help that shows the script's whole docstring (its
In, Out, Params, Resume and Usage lines, not only the first), one log format for the pipeline's loggers, and one
CPU code path for torch's float math (cpu_numerics: a CPU-trained model's bytes do not depend on the CPU's kind)."""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from pipeline.core.cpu_numerics import pin_cpu_numerics

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def stage_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser for a stage script: the docstring's first line describes it, the rest is the epilog
    of --help, kept as written."""
    head, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(description=head, epilog=rest.strip() or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed arguments; then INFO logging in the pipeline's format (after parsing, so --help stays quiet) and
    the CPU numerics pins, before the stage's first torch operation."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    pin_cpu_numerics()
    return args
