"""What the libraries under the ``negguide`` command print: their warnings, log lines and loading bars stay out of
a command's output (``--verbose`` shows them)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

LIBRARIES = ("diffusers", "transformers", "accelerate")
"""The libraries kept quiet: below `logging.ERROR` their loggers print nothing and their warnings are ignored."""
_PROGRESS_BARS = (diffusers_logging, transformers_logging)


@contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Inside, unless ``verbose``: the warnings raised in `LIBRARIES` (deprecations, fallbacks) are ignored, their
    loggers print errors only and their loading bars are off. Everything is restored on the way out."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    levels = [logger.level for logger in loggers]
    bars = [library.is_progress_bar_enabled() for library in _PROGRESS_BARS]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=rf"({'|'.join(LIBRARIES)})(\.|$)")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        for library in _PROGRESS_BARS:
            library.disable_progress_bar()
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            for library, enabled in zip(_PROGRESS_BARS, bars):
                if enabled:
                    library.enable_progress_bar()
