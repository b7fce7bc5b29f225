"""``manifest.jsonl``: one JSON line per finished image of an output folder.

Lines are appended one ``write`` each, right after the image's rename, so a killed run loses at most a torn
last line, which `ManifestWriter` cuts off before it appends. With several processes each appends to its own
part file; `merge_manifest` folds the parts and the main file into one manifest in plan order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from negguide.atomic import write_atomic

MANIFEST = "manifest.jsonl"
PART_PATTERN = "manifest.part-*.jsonl"


def manifest_path(out: Path, process_index: int, num_processes: int) -> Path:
    """The file a process appends to: the manifest itself for a single process, else its own part."""
    return out / (MANIFEST if num_processes == 1 else f"manifest.part-{process_index}.jsonl")


class ManifestWriter:
    """Appends records to a manifest file, one line each, after cutting off a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _cut_torn_tail(path)

    def append(self, record: Mapping[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        finally:
            os.close(fd)


def merge_manifest(out: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Rewrite ``out/manifest.jsonl`` atomically and delete the part files; returns the number of lines.

    The manifest holds ``records`` (the plan's finished images, in plan order), then the lines of earlier
    runs in the same folder whose images still exist and are not among them. Unreadable lines are dropped.
    """
    merged = {record["file"]: dict(record) for record in records}
    parts = sorted(out.glob(PART_PATTERN))
    for path in [out / MANIFEST, *parts]:
        for record in _read_lines(path):
            if (
                isinstance(record.get("file"), str)
                and record["file"] not in merged
                and (out / record["file"]).is_file()
            ):
                merged[record["file"]] = record
    text = "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in merged.values())
    write_atomic(out / MANIFEST, lambda file: file.write(text.encode()))
    for path in parts:
        path.unlink()
    return len(merged)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _cut_torn_tail(path: Path) -> None:
    try:
        with open(path, "rb+") as file:
            data = file.read()
            if data and not data.endswith(b"\n"):
                file.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass
