"""Atomic, bitwise-exact checkpoints of a whole training state.

A checkpoint holds every array leaf of an arbitrary pytree (``TrainState`` with ``nnx.State``
params, optax states with bool masks, int32 counters and typed PRNG keys) plus a JSON metadata dict
(epoch, config, ...). Layout::

    directory/
      step_00000120/
        arrays/          orbax-checkpoint (tensorstore) directory, one entry per leaf
        checkpoint.json  leaf paths, shapes, dtypes, tree structure, user metadata
      step_00000130/
      ...

Storage backend: orbax-checkpoint (``ocp.Checkpointer(ocp.StandardCheckpointHandler())``, the
synchronous form), as the reliability issue asks. Measured on a 2-core CPU machine for a 1.3 MB
``TrainState`` (two Linear layers, bool masks, add_decayed_weights + adam state, typed key): save
70-120 ms (~300 ms for the first save in a process), restore 15-25 ms (~90 ms first) - well under
a second, so a plain ``.npz`` fallback (~3 ms) was not needed. Importing orbax costs ~1.7 s, so it
is imported lazily on the first save/restore rather than with the package.

Leaves are saved as a flat ``{"leaf_00000": array, ...}`` dict of NumPy arrays rather than as the
original tree: orbax then never has to understand ``nnx.State``/``Variable`` nodes, empty optax
states or typed keys, and the tree is rebuilt from ``target_state`` on restore. Typed PRNG keys
are stored as ``jax.random.key_data`` and re-wrapped with the target key's impl.

Atomicity: everything is written into a hidden ``.tmp-step_*`` directory which is renamed to
``step_*`` only once complete, so a checkpoint is either complete or absent (a crash leaves only a
hidden temp directory, ignored by :func:`latest_step` and removed by the next :func:`save`).
One writer per directory at a time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

_STEP_PREFIX = "step_"
_STEP_RE = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".old-"
_ARRAYS = "arrays"
_INFO = "checkpoint.json"
_FORMAT_VERSION = 1
_MAX_STRUCTURE_CHARS = 4000  # keeps error messages readable for big trees


def save(directory, step: int, state, metadata: dict | None = None, *, keep: int = 2) -> Path:
    """Writes ``state`` as the checkpoint for ``step`` atomically and prunes old checkpoints.

    Args:
      directory: folder holding the run's checkpoints (created if missing).
      step: non-negative int identifying the checkpoint; an existing checkpoint with the same step
        is replaced (atomically from the reader's point of view: old or new, never partial).
      state: any pytree of arrays (jax or NumPy, incl. typed PRNG keys) and Python scalars.
      metadata: JSON-serialisable dict stored alongside (e.g. ``{"epoch": 3, "config": {...}}``).
      keep: how many of the newest checkpoints to keep (>= 1); older ones are deleted after the
        new one is complete.

    Returns:
      Path of the completed checkpoint directory.

    Raises:
      ValueError: ``step`` or ``keep`` invalid, or ``metadata`` not JSON-serialisable.
    """
    step = _check_step(step)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        # allow_nan: a diverged run's last loss may legitimately be NaN and must still be recorded.
        meta_json = json.dumps(metadata, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata for step {step} is not JSON-serialisable: {err}") from err

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale(directory)

    entries, arrays, treedef = _flatten(state)
    info = {
        "format": _FORMAT_VERSION,
        "step": step,
        "structure": str(treedef),
        "leaves": entries,
        "metadata": json.loads(meta_json),
    }
    final = directory / _step_name(step)
    tmp = directory / f"{_TMP_PREFIX}{_step_name(step)}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        if arrays:  # a state with no non-empty array leaves needs no orbax directory
            _checkpointer().save(tmp / _ARRAYS, arrays)
        # checkpoint.json is written last: a temp dir without it is incomplete by construction.
        _write_json(tmp / _INFO, info)
        _commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(directory)
    for old in list_steps(directory)[:-keep]:
        shutil.rmtree(directory / _step_name(old), ignore_errors=True)
    return final


def list_steps(directory) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, ascending ([] if none or missing)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        match = _STEP_RE.match(child.name)
        if match and (child / _INFO).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_step(directory) -> int | None:
    """Step of the newest complete checkpoint in ``directory``, or None if there is none."""
    steps = list_steps(directory)
    return steps[-1] if steps else None


def restore(directory, target_state, step: int | None = None) -> tuple[Any, dict]:
    """Loads a checkpoint into the structure of ``target_state``.

    Args:
      directory: folder given to :func:`save`.
      target_state: pytree with the same structure, shapes and dtypes as the saved state (e.g. a
        freshly initialised ``TrainState``); its values are ignored. Typed PRNG key leaves are
        re-wrapped with the target key's impl; jax leaves come back as jax arrays, NumPy leaves
        as NumPy arrays, Python scalars as the same Python type.
      step: which checkpoint; None means the newest complete one.

    Returns:
      ``(state, metadata)``: bitwise the saved values in ``target_state``'s tree structure, and
      the saved metadata dict (JSON round trip: tuples come back as lists).

    Raises:
      FileNotFoundError: ``directory`` missing, holding no checkpoint, or lacking ``step``.
      ValueError: the stored structure, shapes or dtypes differ from ``target_state``'s.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    steps = list_steps(directory)
    if step is None:
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
        step = steps[-1]
    step = _check_step(step)
    path = directory / _step_name(step)
    if step not in steps:
        raise FileNotFoundError(
            f"no checkpoint for step {step} in {directory} (available steps: {steps})")
    with open(path / _INFO, encoding="utf-8") as f:
        info = json.load(f)

    entries, _, treedef = _flatten(target_state, describe_only=True)
    _check_match(path, info, entries, str(treedef))

    target_leaves = jax.tree_util.tree_leaves(target_state)
    # np.zeros only reserves (lazily zeroed) memory; orbax fills it, and it fixes shape and dtype.
    blanks = {_leaf_name(i): np.zeros(e["stored_shape"], e["stored_dtype"])
              for i, e in enumerate(entries)}
    abstract = {name: a for name, a in blanks.items() if a.size > 0}
    if abstract:
        blanks.update(_checkpointer().restore(path / _ARRAYS, abstract))
    leaves = [_unpack(np.asarray(blanks[_leaf_name(i)]), target)
              for i, target in enumerate(target_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves), info["metadata"]


# ----------------------------------------------------------------------------------------------
# Helpers.


def _checkpointer():
    import orbax.checkpoint as ocp  # lazy: importing orbax takes ~1.7 s

    # Synchronous on purpose: save() must not return before the files exist, or the rename that
    # makes the checkpoint visible could expose a partial one.
    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    return int(step)


def _step_name(step: int) -> str:
    return f"{_STEP_PREFIX}{step:08d}"


def _leaf_name(i: int) -> str:
    return f"leaf_{i:05d}"


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree, describe_only: bool = False):
    """Per-leaf descriptions, the arrays to store ({name: np.ndarray}) and the treedef."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    entries, arrays = [], {}
    for i, (keypath, leaf) in enumerate(with_paths):
        if _is_key(leaf):
            data = jax.random.key_data(leaf)
            kind, dtype = "key", str(leaf.dtype)
        elif isinstance(leaf, (bool, int, float, complex)):
            data = np.asarray(leaf)
            kind, dtype = f"py_{type(leaf).__name__}", str(data.dtype)
        elif isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            data = leaf
            kind, dtype = "array", str(np.dtype(leaf.dtype))
        else:
            raise ValueError(
                f"cannot checkpoint leaf {jax.tree_util.keystr(keypath)} of type "
                f"{type(leaf).__name__}: only arrays, typed PRNG keys and Python scalars")
        entries.append({
            "path": jax.tree_util.keystr(keypath),
            "kind": kind,
            "shape": list(np.shape(leaf)),
            "dtype": dtype,
            "stored_shape": list(np.shape(data)),
            "stored_dtype": str(np.dtype(data.dtype)),
        })
        # Zero-size arrays carry no data (and orbax refuses them): shape and dtype rebuild them.
        if not describe_only and np.size(data) > 0:
            arrays[_leaf_name(i)] = np.asarray(jax.device_get(data))
    return entries, arrays, treedef


def _check_match(path: Path, info: dict, entries: list, structure: str) -> None:
    """Raises a ValueError naming both structures unless stored and target trees agree."""
    stored_entries = info["leaves"]
    fields = ("path", "kind", "shape", "dtype")
    problem = None
    if len(stored_entries) != len(entries):
        problem = f"{len(stored_entries)} stored leaves vs {len(entries)} in the target"
    else:
        for s, t in zip(stored_entries, entries):
            if any(s[f] != t[f] for f in fields):
                problem = (f"leaf {s['path']} {s['kind']} {s['dtype']}{s['shape']} stored vs "
                           f"{t['path']} {t['kind']} {t['dtype']}{t['shape']} in the target")
                break
    if problem is None and info["structure"] != structure:
        # Same leaves but different containers, e.g. an extra optax EmptyState or NamedTuple.
        problem = "same leaves but different tree containers"
    if problem is not None:
        raise ValueError(
            f"checkpoint {path} does not match the target state: {problem}.\n"
            f"stored structure: {_clip(info['structure'])}\n"
            f"target structure: {_clip(structure)}")


def _clip(text: str) -> str:
    if len(text) <= _MAX_STRUCTURE_CHARS:
        return text
    return text[:_MAX_STRUCTURE_CHARS] + f"... ({len(text)} chars)"


def _unpack(data: np.ndarray, target):
    """Turns a stored array back into a leaf of the target's type (bitwise, no casts)."""
    if _is_key(target):
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(target))
    if isinstance(target, (bool, int, float, complex)):
        return type(target)(data.item())
    if isinstance(target, np.ndarray):
        return np.array(data)
    if isinstance(target, np.generic):
        return data[()]
    return jax.numpy.asarray(data)


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())


def _commit(tmp: Path, final: Path) -> None:
    """Makes ``tmp`` visible as ``final``; an existing ``final`` is swapped out, then deleted."""
    if final.exists():
        trash = final.with_name(f"{_TRASH_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)


def _remove_stale(directory: Path) -> None:
    """Deletes temp/trash directories left behind by an interrupted save."""
    for child in directory.iterdir():
        if child.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself; not supported on every platform/filesystem, hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
