"""The batch layout of one network evaluation: which row is which branch, prompt and image.

Rows are grouped by branch, in the order the combiner declared its branches. Within a branch come first
its image rows (image ``i`` at offset ``i``, prompt-major like diffusers), then any extra rows patchers
added to that branch (a reference image, ...). Nothing else about the order may be assumed: code that
needs a row asks the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class Row:
    """One row of the batch.

    Args:
        branch (`str`): the branch whose text conditions this row.
        prompt (`int`): index of the prompt whose text the row uses.
        image (`int | None`): index of the output image the row denoises; ``None`` for an extra row.
        tag (`str`): ``"image"`` for image rows, the patcher's tag for extra rows.
    """

    branch: str
    prompt: int
    image: int | None
    tag: str = "image"


@dataclass(frozen=True, eq=False)
class ExtraRow:
    """A row a patcher adds to a branch for one step, e.g. a noised reference image.

    It runs through the network with the branch's text for ``prompt``; its output is never combined or
    returned to the user.

    Args:
        branch (`str`): the branch the row joins.
        prompt (`int`): the prompt whose text of that branch the row uses.
        latents (`torch.Tensor`): noisy latents of one image, shape ``(C, H, W)``, on the scale of the step's
            latents (the pipeline applies the scheduler's input scaling to every row).
        tag (`str`): what the row is, for the patcher's own hooks (e.g. ``"reference"``).
    """

    branch: str
    prompt: int
    latents: torch.Tensor
    tag: str


@dataclass(frozen=True)
class BatchLayout:
    """Who is who in a batch of rows."""

    rows: tuple[Row, ...]

    @classmethod
    def build(
        cls,
        branches: Sequence[str],
        num_images: int,
        num_images_per_prompt: int,
        extra: Sequence[ExtraRow] = (),
    ) -> BatchLayout:
        """Layout of ``branches`` with one row per image each, then each branch's extra rows."""
        images = [(i // num_images_per_prompt, i) for i in range(num_images)]
        rows: list[Row] = []
        for branch in branches:
            rows.extend(Row(branch, prompt, image) for prompt, image in images)
            rows.extend(Row(e.branch, e.prompt, None, e.tag) for e in extra if e.branch == branch)
        return cls(tuple(rows))

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def branches(self) -> tuple[str, ...]:
        """Branch names in row order."""
        return tuple(dict.fromkeys(row.branch for row in self.rows))

    @cached_property
    def _image_slices(self) -> dict[str, slice]:
        slices = {}
        for branch in self.branches:
            indices = [i for i, row in enumerate(self.rows) if row.branch == branch and row.image is not None]
            slices[branch] = slice(indices[0], indices[-1] + 1) if indices else slice(0, 0)
        return slices

    def image_rows(self, branch: str) -> slice:
        """The contiguous rows that hold ``branch``'s images, in image order."""
        return self._image_slices[branch]

    def chunks(self, max_rows: int | None, whole_branches: bool = True) -> list[slice]:
        """The fewest consecutive row ranges of at most ``max_rows`` rows, each made of whole units: branches with
        ``whole_branches`` (for hooks that relate the rows of a branch, which must see them in one forward), else
        single rows. A unit larger than ``max_rows`` is a range of its own."""
        if max_rows is None or len(self.rows) <= max_rows:
            return [slice(0, len(self.rows))]
        chunks: list[slice] = []
        start = end = 0
        for size in self.unit_sizes(whole_branches):
            if end > start and end - start + size > max_rows:
                chunks.append(slice(start, end))
                start = end
            end += size
        chunks.append(slice(start, end))
        return chunks

    def unit_sizes(self, whole_branches: bool) -> list[int]:
        """The row counts of the units `chunks` never splits, in row order."""
        if not whole_branches:
            return [1] * len(self.rows)
        return [sum(1 for row in self.rows if row.branch == branch) for branch in self.branches]

    def unit_of(self, row: int, whole_branches: bool) -> slice:
        """The rows of the unit `chunks` keeps together that holds row ``row``: its branch's with
        ``whole_branches``, else the row alone."""
        if not whole_branches:
            return slice(row, row + 1)
        branch = self.rows[row].branch
        indices = [i for i, other in enumerate(self.rows) if other.branch == branch]
        return slice(indices[0], indices[-1] + 1)

    def name(self, num_images: int) -> str:
        """The branches of these rows joined by ``+`` in row order (``"uncond+cond"``), each followed by the range
        of its images, ``"cond[0:4]"``, when it holds only some of the call's ``num_images``."""
        names = []
        for branch in self.branches:
            images = sorted({row.image for row in self.rows if row.branch == branch and row.image is not None})
            whole = images == list(range(num_images))
            names.append(branch if whole or not images else f"{branch}[{images[0]}:{images[-1] + 1}]")
        return "+".join(names)

    def __getitem__(self, rows: slice) -> BatchLayout:
        return BatchLayout(self.rows[rows])
