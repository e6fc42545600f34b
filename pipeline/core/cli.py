"""What every stage script shares on its command line: a --help that shows the script's whole docstring (its
In, Out, Params, Resume and Usage lines, not only the first), and one log format for the pipeline's loggers."""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def stage_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser for a stage script: the docstring's first line describes it, the rest is the epilog
    of --help, kept as written."""
    head, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(description=head, epilog=rest.strip() or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed arguments; then INFO logging in the pipeline's format (after parsing, so --help stays quiet)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return args
