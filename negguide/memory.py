"""Memory of network evaluations: measuring a forward's peak, and sizing batches to a budget.

A step's rows (every branch of every image, Perp-Neg's negatives, NegToMe's reference rows) run through the network
in one batched forward. When they would not fit, the core splits the forward into the fewest chunks that do, the
way ComfyUI sizes its condition batches: the memory a forward needs per row is measured once (one small chunk run
under `peak_memory`), and the rest of the rows go in chunks of as many rows as the budget holds.

The budget is the memory one forward may use beyond what is allocated before it (weights, latents, the call's
conditions): a number of bytes, a size such as ``"6GB"`` or ``"512MiB"``, or ``"auto"``, the device's free memory
when the forward starts (`free_memory`) with a margin of `AUTO_MARGIN`.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MemoryBudget = int | str | None
"""A forward's memory budget as a user gives it: bytes, a size string, ``"auto"``, or ``None`` (no splitting)."""

AUTO = "auto"
AUTO_MARGIN = 0.9
"""The share of the device's free memory an ``"auto"`` budget lets one forward use."""

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)


def parse_budget(value: object, name: str = "memory_budget") -> int | str | None:
    """``value`` checked: ``None``, ``"auto"``, or a positive number of bytes (an int, or a string with a unit,
    ``"6GB"``, ``"512MiB"``); TypeError or ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == AUTO:
            return AUTO
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(
                f"`{name}` must be 'auto', a number of bytes or a size such as '6GB' or '512MiB', got {value!r}."
            )
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    elif isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int (bytes), a size string or 'auto', got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive number of bytes, got {value}.")
    return value


def free_memory(device: torch.device) -> int:
    """Bytes a forward on ``device`` can still take: CUDA's free memory plus what its caching allocator holds
    unused; elsewhere the system's available memory (`psutil.virtual_memory`)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return psutil.virtual_memory().available


def budget_bytes(budget: int | str, device: torch.device) -> int:
    """A checked budget (`parse_budget`) in bytes now: ``"auto"`` is `AUTO_MARGIN` of `free_memory`."""
    return int(AUTO_MARGIN * free_memory(device)) if budget == AUTO else int(budget)


@dataclass
class Peak:
    """The peak of one `peak_memory` block: bytes above what was allocated when it began."""

    bytes: int = 0


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Peak]:
    """Measure the peak memory that the block allocates on ``device`` beyond what was allocated at its start.

    On CUDA, the caching allocator's peak statistics (`torch.cuda.max_memory_allocated`). Elsewhere (CPU), where
    torch keeps no such statistics, the peak of the tensor storage created inside the block and still alive
    (`StorageTracker`): every aten operation's outputs are counted once per storage, until no tensor holding the
    storage is left.
    """
    peak = Peak()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        torch.cuda.synchronize(device)
        peak.bytes = torch.cuda.max_memory_allocated(device) - start
        return
    tracker = StorageTracker()
    with tracker:
        yield peak
    peak.bytes = tracker.peak


class StorageTracker(TorchDispatchMode):
    """A dispatch mode counting the bytes of tensor storage created by the operations run inside it.

    ``live`` is what is still held, ``peak`` its largest value. Storage that existed before (weights, inputs) and
    views or in-place results on it are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._holders: dict[int, list[int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {_storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._hold(tensor, inputs)
        return out

    def _hold(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        key = _storage_key(tensor)
        if key == 0 or (key in inputs and key not in self._holders):
            return
        entry = self._holders.get(key)
        if entry is None:
            entry = self._holders[key] = [tensor.untyped_storage().nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._holders[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._holders[key]


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def rows_that_fit(budget: int, bytes_per_row: float, name: str = "memory_budget") -> int:
    """How many rows one forward can take within ``budget`` bytes; a ValueError when not even one fits."""
    rows = int(budget // bytes_per_row) if bytes_per_row > 0 else 2**31
    if rows < 1:
        raise ValueError(
            f"`{name}` is {_size(budget)}, but one row of this network's batch needs about {_size(bytes_per_row)}: "
            "raise the budget (or set it to 'auto'), or make smaller images."
        )
    return rows


def _size(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"
