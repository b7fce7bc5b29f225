"""The error a command reports as bad input: one message naming the file, line or argument, exit code 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input to a command (a prompts file, a flag, a config file, an output folder).

    The message names what is wrong and where; the command line prints it and exits with code 2 before
    anything is generated.
    """
