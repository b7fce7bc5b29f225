"""The ``negguide`` command line: one subcommand per task (``negguide generate ...``, ``negguide demo``).

A subcommand module provides ``add_parser(subparsers)``, which registers its parser and sets ``handler``:
a function of the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from negguide.commands import analyze as analyze_command
from negguide.commands import remove as remove_command
from negguide.demo import command as demo_command
from negguide.errors import InputError
from negguide.generate import command as generate_command

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``negguide`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="negguide", description="Negative guidance for diffusers.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate_command.add_parser(subparsers)
    analyze_command.add_parser(subparsers)
    remove_command.add_parser(subparsers)
    demo_command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``negguide`` with ``argv`` (the process's arguments by default); returns the exit code.

    Bad input ends with a one-paragraph message on stderr and exit code 2, as argparse's own errors do.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except InputError as error:
        print(f"negguide {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
