"""Atomic, bitwise-exact checkpoints of a whole training state, kept by orbax's CheckpointManager.

A checkpoint holds every array leaf of an arbitrary pytree (``TrainState`` with ``nnx.State``
params, optax states with bool masks, int32 counters and typed PRNG keys) plus a JSON metadata dict
(epoch, config, ...). Layout (orbax's)::

    directory/
      step_00000120/
        state/           the leaves as a flat {"leaf_00000": array} dict (StandardSave)
        meta/metadata    JSON: leaf paths, kinds, shapes, dtypes, tree structure, user metadata
        commit_success.txt, _CHECKPOINT_METADATA   written by orbax
      step_00000130/
      ...

orbax does the step folders, keeping the ``keep`` most recently saved checkpoints, and atomicity:
a step is written as ``step_*.orbax-checkpoint-tmp-*`` and renamed only once complete, so a
killed save leaves an invisible temp folder (removed by the next :func:`save`), never a partial
checkpoint. Saves are synchronous. One writer per directory at a time.

Hand-written on top, because orbax (0.12.8, measured) does not do it:

* The tree is flattened to a dict of plain NumPy arrays and described in the JSON item, and
  :func:`restore` compares that description with the target before reading any array. orbax
  refuses zero-size arrays ("Cannot save arrays with zero size"), and restoring a float64[3]
  into a float64[4] target returned the stored [3] array without any error, so neither the
  whole-tree save nor orbax's own checks give the clear ValueError naming the leaf. Typed PRNG
  keys are stored as ``jax.random.key_data`` so that the stored tree can be rebuilt from the
  JSON description alone; they are re-wrapped with the target key's impl on restore.
* Saving an existing step replaces it: orbax raises StepAlreadyExistsError, so the old step is
  deleted first.
* :func:`list_steps` also requires orbax's ``commit_success.txt``: on a local file system orbax
  counts any step-named folder (e.g. a half-copied one) as a complete checkpoint.
* A committed step that cannot be read (damaged files) is skipped by :func:`restore` and
  :func:`read_metadata` with a :class:`CheckpointWarning` naming it: the newest readable step
  is used. orbax raises whatever its storage layer raises (tensorstore dumps of thousands of
  characters, JSON errors without the file name).
* :func:`save` removes ``step_*`` folders that hold no file at all (left when a process is
  killed while orbax deletes an old step). Nothing else in the folder is touched: orbax's own
  cleanup matches only its ``*.orbax-checkpoint-tmp-*`` names, so a shared folder such as
  ``/tmp`` keeps other programs' files.
"""
from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

_STEP_PREFIX = "step"
_STEP_DIGITS = 8
_STATE = "state"
_META = "meta"
_COMMIT_FILE = "commit_success.txt"
_FORMAT_VERSION = 2
_MAX_STRUCTURE_CHARS = 4000  # keeps error messages readable for big trees
_MAX_REASON_CHARS = 200  # of a storage error quoted in a warning or error line
_STEP_FOLDER = re.compile(rf"{_STEP_PREFIX}_\d{{{_STEP_DIGITS}}}")

__all__ = ["CheckpointWarning", "UnreadableCheckpointError", "save", "list_steps",
           "latest_step", "read_metadata", "restore"]


class UnreadableCheckpointError(ValueError):
    """A committed checkpoint whose files cannot be read (damaged or truncated)."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older one."""


def save(directory, step: int, state, metadata: dict | None = None, *, keep: int = 2) -> Path:
    """Writes ``state`` as the checkpoint for ``step`` atomically and prunes old checkpoints.

    Args:
      directory: folder holding the run's checkpoints (created if missing).
      step: non-negative int identifying the checkpoint; an existing checkpoint with the same step
        is deleted, then written anew (a crash in between leaves that step absent, never partial).
      state: any pytree of arrays (jax or NumPy, incl. typed PRNG keys) and Python scalars.
      metadata: JSON-serialisable dict stored alongside (e.g. ``{"epoch": 3, "config": {...}}``).
      keep: how many of the most recently saved checkpoints to keep (>= 1); older ones are
        deleted after the new one is complete.

    Returns:
      Path of the completed checkpoint directory.

    Raises:
      ValueError: ``step`` or ``keep`` invalid, ``metadata`` not JSON-serialisable, or a leaf
        that is not an array, typed PRNG key or Python scalar.
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

    entries, arrays, treedef = _flatten(state)
    info = {
        "format": _FORMAT_VERSION,
        "step": step,
        "structure": str(treedef),
        "leaves": entries,
        "metadata": json.loads(meta_json),
    }
    ocp = _orbax()
    items = {_META: ocp.args.JsonSave(info)}
    if arrays:  # a state with no non-empty array leaves needs no array item
        items[_STATE] = ocp.args.StandardSave(arrays)
    directory = Path(directory).absolute()
    _remove_empty_steps(directory)
    with _manager(directory, keep=keep) as manager:
        if step in manager.all_steps():
            manager.delete(step)
        # force: orbax would otherwise skip a step lower than its latest one.
        manager.save(step, args=ocp.args.Composite(**items), force=True)
        manager.wait_until_finished()
    return directory / _step_name(step)


def list_steps(directory) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, ascending ([] if none or missing)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        return []
    with _manager(directory) as manager:
        steps = manager.all_steps()
    return sorted(s for s in steps if (directory / _step_name(s) / _COMMIT_FILE).is_file())


def latest_step(directory) -> int | None:
    """Step of the newest complete checkpoint in ``directory``, or None if there is none."""
    steps = list_steps(directory)
    return steps[-1] if steps else None


def read_metadata(directory, step: int | None = None) -> tuple[int, dict]:
    """The metadata dict saved with a checkpoint, without reading its arrays.

    Args:
      directory: folder given to :func:`save`.
      step: which checkpoint; None means the newest readable one (newer unreadable ones are
        skipped with a :class:`CheckpointWarning`).

    Returns:
      ``(step, metadata)``.

    Raises:
      FileNotFoundError: as :func:`restore`.
      UnreadableCheckpointError: ``step``'s (or every step's) metadata cannot be read.
    """
    directory, candidates = _candidates(directory, step)
    with _manager(directory) as manager:
        return _first_readable(candidates, lambda s: (s, _read_info(manager, directory, s)[
            "metadata"]))


def restore(directory, target_state, step: int | None = None) -> tuple[Any, dict]:
    """Loads a checkpoint into the structure of ``target_state``.

    Args:
      directory: folder given to :func:`save`.
      target_state: pytree with the same structure, shapes and dtypes as the saved state (e.g. a
        freshly initialised ``TrainState``); its values are ignored. Typed PRNG key leaves are
        re-wrapped with the target key's impl; jax leaves come back as jax arrays, NumPy leaves
        as NumPy arrays, Python scalars as the same Python type.
      step: which checkpoint; None means the newest readable one: a newer committed step that
        cannot be read is skipped with a :class:`CheckpointWarning` naming it.

    Returns:
      ``(state, metadata)``: bitwise the saved values in ``target_state``'s tree structure, and
      the saved metadata dict (JSON round trip: tuples come back as lists).

    Raises:
      FileNotFoundError: ``directory`` missing, holding no checkpoint, or lacking ``step``.
      ValueError: the stored structure, shapes or dtypes differ from ``target_state``'s (the
        message's first line names the checkpoint folder and the first differing leaf).
      UnreadableCheckpointError: ``step`` (or, for None, every step) cannot be read; the
        message names the folder.
    """
    directory, candidates = _candidates(directory, step)
    entries, _, treedef = _flatten(target_state, describe_only=True)
    with _manager(directory) as manager:
        blanks, info = _first_readable(
            candidates, lambda s: _read_arrays(manager, directory, s, entries, str(treedef)))
    leaves = [_unpack(np.asarray(blanks[_leaf_name(i)]), target)
              for i, target in enumerate(jax.tree.leaves(target_state))]
    return jax.tree.unflatten(treedef, leaves), info["metadata"]


# ----------------------------------------------------------------------------------------------
# Helpers.


def _orbax():
    # Imported on first use rather than with the package: measured on this 2-core machine,
    # `import sparsegnn_jax` takes ~2.8 s and adding orbax makes it ~3.2-3.6 s, paid by every
    # process (sweeps, tests, benchmarks) even when it never checkpoints.
    import orbax.checkpoint as ocp

    return ocp


def _manager(directory: Path, keep: int | None = None):
    """A synchronous CheckpointManager; ``keep`` None for readers (no create, no cleanup).

    A reader must not clean up temp folders: another process may be writing one right now.
    (orbax's ``read_only`` option would also do, but logs two warnings per manager.)
    ``lightweight_initialize``: without it the manager reads every step's metadata on creation
    and fails (FileNotFoundError / ValueError, seen in the kill-and-resume test) when a writer
    in another process deletes an old step meanwhile; we need neither save times nor metrics.
    """
    ocp = _orbax()
    writer = keep is not None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        step_name_format=ocp.path.step.standard_name_format(
            step_prefix=_STEP_PREFIX, step_format_fixed_length=_STEP_DIGITS),
        # Synchronous: save() must not return before the checkpoint is complete and visible.
        enable_async_checkpointing=False,
        create=writer,
        cleanup_tmp_directories=writer,
        lightweight_initialize=True,
    )
    return ocp.CheckpointManager(directory, options=options)


def _candidates(directory, step: int | None) -> tuple[Path, list[int]]:
    """The absolute folder and the steps to try, newest first (just ``step`` when given)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    steps = list_steps(directory)
    if step is None:
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
        return directory, steps[::-1]
    step = _check_step(step)
    if step not in steps:
        raise FileNotFoundError(
            f"no checkpoint for step {step} in {directory} (available steps: {steps})")
    return directory, [step]


def _first_readable(candidates: list[int], read):
    """``read(step)`` of the first candidate that is readable; warns about those skipped."""
    for i, step in enumerate(candidates):
        try:
            return read(step)
        except UnreadableCheckpointError as err:
            if i == len(candidates) - 1:
                raise
            # Reported from here, so that the same damaged step read twice in a run (its
            # metadata, then its arrays) is one warning under the default filter.
            warnings.warn(f"{err}; using step {candidates[i + 1]} instead", CheckpointWarning)
    raise AssertionError("no candidates")  # _candidates never returns an empty list


def _unreadable(directory: Path, step: int, err: BaseException) -> UnreadableCheckpointError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[:_MAX_REASON_CHARS] + "..."
    return UnreadableCheckpointError(f"checkpoint {directory / _step_name(step)} is unreadable "
                                     f"({type(err).__name__}: {reason})")


def _read_info(manager, directory: Path, step: int) -> dict:
    """The JSON item of ``step``, checked to hold what :func:`save` writes."""
    ocp = _orbax()
    try:
        info = manager.restore(step, args=ocp.args.Composite(
            **{_META: ocp.args.JsonRestore()}))[_META]
        if not (isinstance(info, dict) and isinstance(info.get("leaves"), list)
                and isinstance(info.get("structure"), str)
                and isinstance(info.get("metadata"), dict)):
            raise ValueError("its description is not what save() writes")
    except Exception as err:  # orbax passes on whatever its storage layer raises
        raise _unreadable(directory, step, err) from err
    return info


def _read_arrays(manager, directory: Path, step: int, entries: list,
                 structure: str) -> tuple[dict, dict]:
    """The stored arrays of ``step`` by leaf name, and its JSON item, once they match."""
    info = _read_info(manager, directory, step)
    _check_match(directory / _step_name(step), info, entries, structure)
    # np.zeros only reserves (lazily zeroed) memory; orbax fills it, and it fixes the shape and
    # dtype of what is read.
    blanks = {_leaf_name(i): np.zeros(e["stored_shape"], e["stored_dtype"])
              for i, e in enumerate(entries)}
    abstract = {name: a for name, a in blanks.items() if a.size > 0}
    if abstract:
        ocp = _orbax()
        try:
            stored = manager.restore(
                step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract)}))
        except Exception as err:  # as in _read_info
            _ignore_abandoned_reads()
            raise _unreadable(directory, step, err) from err
        blanks.update(stored[_STATE])
    return blanks, info


def _ignore_abandoned_reads() -> None:
    """Silences the reports of array reads orbax left running when one read failed.

    orbax gives up on the first failing leaf and closes its event loop; the tensorstore reads
    still in flight then call into the closed loop, and each reports an unraisable
    ``RuntimeError('Event loop is closed')`` (28 traceback blocks for a small GCN, measured),
    possibly after :func:`restore` returned. Only that exact report is dropped; every other
    one goes to the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_drops_abandoned_reads", False):
        return

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"
                and unraisable.object is None):
            previous(unraisable)

    hook._drops_abandoned_reads = True
    sys.unraisablehook = hook


def _remove_empty_steps(directory: Path) -> None:
    """Removes ``step_*`` folders that hold no file at all (a kill while orbax deleted one)."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if (_STEP_FOLDER.fullmatch(path.name) and path.is_dir() and not path.is_symlink()
                and not any(p.is_file() or p.is_symlink() for p in path.rglob("*"))):
            for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                sub.rmdir()
            path.rmdir()


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    return int(step)


def _step_name(step: int) -> str:
    return f"{_STEP_PREFIX}_{step:0{_STEP_DIGITS}d}"


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
