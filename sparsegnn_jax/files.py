"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import csv
import json
import os
import pathlib
import tempfile
from typing import Any, Iterable, Sequence


def write_json_atomic(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Writes ``obj`` as JSON via a temp file and rename, so a reader never sees half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[dict], fields: Sequence[str]) -> None:
    """Writes the rows via a temp file and rename: a reader never sees a partial CSV."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
