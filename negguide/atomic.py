"""Files written whole or not at all: a temporary file beside the target, then one rename.

A process killed at any moment leaves either the old file (or none) or the complete new one, plus at worst a
temporary file whose name starts with `TEMP_PREFIX`, which `remove_stale_temporaries` clears.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".negguide-"
TEMP_SUFFIX = ".tmp"


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file is renamed
    over ``path`` (`os.replace`); on any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted `write_atomic` calls left in ``folder``; returns them."""
    stale = sorted(Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
