"""Atomic file writes: a reader sees the old file or the new one, never half a file.

Every writer goes through :func:`atomic_write`: the content is written to a hidden temp file
next to the target (same file system, so the final ``os.replace`` is atomic), flushed to disk,
optionally checked, and only then renamed onto the target. A failing or interrupted writer
leaves the previous file untouched and removes its temp file.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import uuid
from typing import IO, Any, Callable, Iterable, Sequence

__all__ = ["atomic_write", "write_json_atomic", "write_csv_atomic", "output_dir",
           "check_writable_dir"]


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO], None], mode: str = "w", *,
                 verify: Callable[[pathlib.Path], None] | None = None,
                 newline: str | None = None) -> pathlib.Path:
    """Writes a file through a temp file and an atomic rename.

    Args:
      path: the target file; its parent folder is created if missing.
      write_fn: called once with the open temp file; writes the whole content.
      mode: ``"w"`` (text, UTF-8) or ``"wb"`` (binary).
      verify: called with the path of the finished, closed temp file before it replaces the
        target; raising there keeps the old target (e.g. a checksum test).
      newline: passed to ``open`` in text mode (``""`` for the csv module).

    Returns:
      ``path`` as a Path.

    Raises:
      ValueError: ``mode`` is neither ``"w"`` nor ``"wb"``.
      Whatever ``write_fn`` or ``verify`` raise, and OSError from the file system; in every case
      the temp file is removed and the target is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "x") with a random name rather than tempfile.mkstemp: mkstemp creates the file
    # with mode 0600, and the rename would carry that onto e.g. a shared data root.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    text = {"encoding": "utf-8", "newline": newline} if mode == "w" else {}
    try:
        with open(tmp, mode.replace("w", "x"), **text) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Writes ``obj`` as JSON (``indent=2, sort_keys=True``) atomically; returns the path."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True))


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[dict],
                     fields: Sequence[str]) -> pathlib.Path:
    """Writes a header of ``fields`` and the ``rows`` (dicts keyed by field) as CSV atomically.

    Raises:
      ValueError: a row has a key that is not in ``fields`` (csv.DictWriter); the old file stays.
    """
    def write(f):
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    return atomic_write(path, write, newline="")


def output_dir(path: str | os.PathLike, flag: str = "--out") -> pathlib.Path:
    """Creates a results folder (and its parents) and checks that files can be made in it.

    Called before any training, so that a bad folder fails at once, not after the work.

    Args:
      path: the folder.
      flag: the command-line flag that named it, for the message.

    Returns:
      ``path`` as a Path.

    Raises:
      ValueError: the folder cannot be created (a file in the way, permissions) or written.
    """
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag}={str(path)!r} is not a usable folder: "
                         f"{err.strerror or err}") from err
    return check_writable_dir(path, flag)


def check_writable_dir(path: str | os.PathLike, flag: str) -> pathlib.Path:
    """Checks, without creating anything, that ``path`` is or can become a writable folder.

    A missing folder is judged by its nearest existing parent (it would be created there).

    Raises:
      ValueError: ``path`` (or that parent) is a file or not writable; names ``flag``.
    """
    path = pathlib.Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag}={str(path)!r} is not a usable folder: {existing} is a file")
    # os.access rather than a probe file: nothing is left behind, and it also reports a
    # read-only file system (EROFS).
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}={str(path)!r} is not writable"
                         + ("" if existing == path else f" ({existing} is not)"))
    return path
