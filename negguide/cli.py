"""The ``negguide`` command line: one subcommand per task (``negguide generate ...``, ``negguide demo``).

A subcommand module provides ``add_parser(subparsers)``, which registers its parser, returns it and sets
``handler``: a function of the parsed arguments that returns the exit code. The subcommand modules load diffusers
and transformers, so they are imported only once what those print is set up: nothing but errors unless
``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from negguide.errors import InputError
from negguide.quiet import LIBRARIES, library_output

EXIT_BAD_INPUT = 2
VERBOSE = "--verbose"


def build_parser() -> argparse.ArgumentParser:
    """The ``negguide`` parser with every subcommand, each with ``--verbose``."""
    from negguide.commands import analyze as analyze_command
    from negguide.commands import remove as remove_command
    from negguide.demo import command as demo_command
    from negguide.generate import command as generate_command

    parser = argparse.ArgumentParser(prog="negguide", description="Negative guidance for diffusers.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (generate_command, analyze_command, remove_command, demo_command):
        command.add_parser(subparsers).add_argument(
            VERBOSE,
            action="store_true",
            help=f"show the warnings, log lines and loading bars of {', '.join(LIBRARIES)}",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``negguide`` with ``argv`` (the process's arguments by default); returns the exit code.

    What the libraries print while they load follows ``--verbose`` as written in ``argv``, what they print while
    the command runs follows the parsed flag. Bad input ends with a one-paragraph message on stderr and exit code 2,
    as argparse's own errors do.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    with library_output(VERBOSE in argv):
        args = build_parser().parse_args(argv)
    try:
        with library_output(args.verbose):
            return args.handler(args)
    except InputError as error:
        print(f"negguide {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
