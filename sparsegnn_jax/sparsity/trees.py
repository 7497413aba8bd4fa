"""Pytree helpers of the sparsity package: layer paths, prunable-leaf filters, pure views and
structure checks.

Layers are named by a path string such as ``"layers/0/kernel"`` (see :func:`path_str`); the same
names are used by :mod:`masks`, :mod:`distributions` and the methods' traces.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

PyTree = Any
FilterFn = Callable[[str, Any], bool]

__all__ = [
    "PyTree",
    "FilterFn",
    "path_str",
    "flatten_with_paths",
    "leaf_paths",
    "default_filter",
    "prunable_flags",
    "prunable",
    "as_pure",
    "check_same_structure",
    "align_to",
]

# Flax NNX Variables (``nnx.Param`` boxes) replaced by their values. An ``nnx.State`` of Params
# and its pure form flatten to the same leaves in the same order, so masks built for one fit the
# other.
as_pure = nnx.as_pure


def _key_str(entry) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return str(entry.name)
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def path_str(keypath) -> str:
    """Formats a pytree key path as a ``/``-separated layer name.

    The trailing ``GetAttrKey('value')`` that Flax NNX Variables add is dropped, so an NNX
    ``nnx.State`` and the equivalent nested dict give the same names.

    Args:
      keypath: a key path from ``jax.tree_util.tree_flatten_with_path`` (a tuple of keys),
        or an already formatted string (returned unchanged).

    Returns:
      The path string, e.g. ``"layers/0/kernel"``.
    """
    if isinstance(keypath, str):
        return keypath
    entries = list(keypath)
    if (
        entries
        and isinstance(entries[-1], jax.tree_util.GetAttrKey)
        and entries[-1].name == "value"
    ):
        entries = entries[:-1]
    return "/".join(_key_str(e) for e in entries)


def flatten_with_paths(tree: PyTree):
    """Flattens a pytree, naming its leaves.

    Returns:
      ``(paths, leaves, treedef)``: path strings (:func:`path_str`) and leaves in leaf order.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [path_str(kp) for kp, _ in with_path]
    leaves = [leaf for _, leaf in with_path]
    return paths, leaves, treedef


def leaf_paths(tree: PyTree) -> list:
    """Path strings (:func:`path_str`) of the leaves, in leaf order."""
    return flatten_with_paths(tree)[0]


def default_filter(path: str, leaf) -> bool:
    """Default choice of prunable leaves: weight matrices and kernels (``ndim >= 2``).

    Args:
      path: the leaf's path string (unused; part of the filter signature).
      leaf: the parameter (or mask) array.

    Returns:
      True when the leaf has at least two dimensions.
    """
    del path
    return jnp.ndim(leaf) >= 2


def prunable_flags(paths, leaves, filter_fn: FilterFn | None = None) -> list:
    """Python bools, one per leaf: ``filter_fn(path, leaf)`` (default :func:`default_filter`)."""
    filter_fn = default_filter if filter_fn is None else filter_fn
    return [bool(filter_fn(p, leaf)) for p, leaf in zip(paths, leaves)]


def prunable(params: PyTree, filter_fn: FilterFn | None = None) -> PyTree:
    """Which leaves are pruned.

    Args:
      params: any parameter pytree.
      filter_fn: ``filter_fn(path, leaf) -> bool``; defaults to :func:`default_filter`.

    Returns:
      A pytree with the structure of ``params`` holding a Python bool per leaf.
    """
    paths, leaves, treedef = flatten_with_paths(params)
    return jax.tree_util.tree_unflatten(treedef, prunable_flags(paths, leaves, filter_fn))


def check_same_structure(params: PyTree, masks: PyTree) -> None:
    """Raises ``ValueError`` unless ``masks`` fits ``params`` leaf for leaf.

    NNX Variable boxes on either side are ignored (:func:`as_pure`).

    Raises:
      ValueError: naming both tree structures when they differ, or the leaf whose mask shape
        differs from the parameter's (a broadcastable shape such as ``[1, n]`` over ``[m, n]``
        would otherwise be accepted silently).
    """
    params, masks = as_pure(params), as_pure(masks)
    ps, ms = jax.tree.structure(params), jax.tree.structure(masks)
    if ps != ms:
        raise ValueError(
            "masks tree structure does not match params:\n"
            f"  params: {ps}\n  masks:  {ms}"
        )
    paths, leaves, _ = flatten_with_paths(params)
    for path, p, m in zip(paths, leaves, jax.tree.leaves(masks)):
        if jnp.shape(p) != jnp.shape(m):
            raise ValueError(f"mask of {path!r} has shape {tuple(jnp.shape(m))} but the "
                             f"parameter has shape {tuple(jnp.shape(p))}")


def align_to(tree: PyTree, reference: PyTree, what: str = "tree") -> PyTree:
    """``tree``'s leaves in ``reference``'s structure, leaves matched by layer path.

    An ``nnx.State`` with Variable boxes, its ``nnx.as_pure`` form and its ``nnx.to_pure_dict``
    form name their leaves alike (:func:`path_str`), so any of them aligns to any other.

    Args:
      tree: the pytree to restructure (e.g. user-supplied masks or scores).
      reference: the pytree whose structure the result takes (e.g. the params).
      what: the name of ``tree`` in the error message.

    Returns:
      A pytree with ``reference``'s structure holding ``tree``'s leaves.

    Raises:
      ValueError: naming both structures when the layer paths differ.
    """
    if leaf_paths(tree) != leaf_paths(reference):
        raise ValueError(f"{what} tree structure does not match params:\n"
                         f"  params: {jax.tree.structure(reference)}\n"
                         f"  {what}: {jax.tree.structure(tree)}")
    return jax.tree.unflatten(jax.tree.structure(reference), jax.tree.leaves(tree))
