"""Pure functions on sparsity masks for any parameter pytree.

A *mask* pytree has exactly the tree structure of the parameters it masks (a Flax NNX
``nnx.State``, a Linen-style nested dict, a plain dict of arrays, ...) with a bool array per
leaf. Leaves that are not prunable (biases and norms under the default filter) hold an
all-True mask - never ``None`` - so masks and params can always be zipped with
``jax.tree.map``.

Layers are named by path strings (:func:`path_str`), as in
:mod:`sparsegnn_jax.sparsity.distributions` and :func:`layer_sparsity`.

Every function here is pure and jit-able; keep counts may be traced values so that masks can
be built inside ``jax.vmap`` over sparsity levels. Selection is exact (:func:`topk_mask`).
"""
from __future__ import annotations

import functools
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax.sparsity import distributions
from sparsegnn_jax.sparsity import structure as structure_lib
from sparsegnn_jax.sparsity.topk import drop, grow, keep_count, topk_mask
from sparsegnn_jax.sparsity.trees import (
    FilterFn,
    PyTree,
    align_to,
    as_pure,
    check_same_structure,
    default_filter,
    flatten_with_paths,
    path_str,
    prunable,
    prunable_flags,
)
from sparsegnn_jax.sparsity.validation import check_sparsity, is_concrete, warn_if

__all__ = [
    "path_str",
    "default_filter",
    "prunable",
    "as_pure",
    "check_sparsity",
    "init",
    "apply",
    "apply_norm_preserving",
    "sparsity",
    "layer_sparsity",
    "ParamSparsity",
    "param_sparsity",
    "keep_count",
    "topk_mask",
    "drop",
    "grow",
    "magnitude_masks",
    "all_true",
    "random_scores",
    "select_top",
    "top_magnitude",
    "initial_masks",
]

SCORES = ("random", "magnitude")


# --------------------------------------------------------------------------------------------
# Masks from scores (pytree level; the methods' rules build on these)
# --------------------------------------------------------------------------------------------


def all_true(tree: PyTree) -> PyTree:
    """All-True bool masks with the structure and leaf shapes of ``tree``."""
    return jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), tree)


def random_scores(key, tree: PyTree) -> PyTree:
    """Independent uniform scores in ``[0, 1)`` with the structure and shapes of ``tree``.

    Leaf ``i`` (in leaf order) draws from ``jax.random.split(key, n_leaves)[i]``.
    """
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree.unflatten(
        treedef, [jax.random.uniform(k, jnp.shape(x)) for k, x in zip(keys, leaves)])


def select_top(scores: PyTree, counts: PyTree, prunable_tree: PyTree,
               structure=None) -> PyTree:
    """Per prunable leaf the mask of its ``count`` highest scores; all True elsewhere.

    Args:
      scores: score arrays with the params' structure (matched by layer path: NNX Variable
        boxes or an ``nnx.to_pure_dict`` form do not matter).
      counts: keep counts (ints, possibly traced) with the params' structure.
      prunable_tree: Python bools with the params' structure (:func:`prunable`).
      structure: None, or an :class:`~sparsegnn_jax.sparsity.structure.NM`: the weight
        matrices then keep the ``n`` highest scores of every ``m`` consecutive inputs
        (:func:`~sparsegnn_jax.sparsity.structure.nm_mask`; ``counts`` must be the structure's,
        :func:`~sparsegnn_jax.sparsity.structure.keep_counts`) and other prunable leaves
        their top ``count``.

    Returns:
      A bool mask pytree with the structure of ``prunable_tree``.

    Warns:
      UserWarning: when every score of a prunable leaf that keeps some but not all of its
        entries is equal (e.g. SNIP's ``|g * w|`` from zero gradients): the mask then keeps
        the first ``count`` entries in index order, which is not a choice by score. Inside
        ``jit`` the warning comes from a host callback when it happens.
    """
    scores = align_to(scores, prunable_tree, "scores")
    _warn_if_tied(scores, counts, prunable_tree)
    return _select_top(scores, counts, prunable_tree, structure)


def _select_top(scores, counts, prunable_tree, structure=None):
    return jax.tree.map(
        lambda s, k, p: (structure_lib.select(s, k, structure) if p
                         else jnp.ones(jnp.shape(s), bool)),
        scores, counts, prunable_tree)


def _warn_if_tied(scores, counts, prunable_tree) -> None:
    """Warns naming the prunable leaves whose scores are all equal where the count chooses."""
    paths, leaves, _ = flatten_with_paths(scores)
    rows = [(path, s, k) for path, s, k, p in zip(paths, leaves, jax.tree.leaves(counts),
                                                   jax.tree.leaves(prunable_tree))
            if p and jnp.size(s) > 1]
    if not rows:
        return
    tied = jnp.stack([(jnp.max(s) == jnp.min(s)) & (k > 0) & (k < jnp.size(s))
                      for _, s, k in rows])

    def message(flags) -> str:
        names = [path for (path, _, _), t in zip(rows, np.asarray(flags).reshape(-1, len(rows))
                                                  .any(0)) if t]
        return (f"select_top: every score of {names} is equal, so the masks keep the first "
                f"weights in index order, not the best by score (a rule reading ctx.grads in "
                f"init_masks sees zeros unless the method is built with "
                f"sg.sparse_method(..., init_from_grads=True))")

    warn_if(tied, message)


def top_magnitude(params: PyTree, counts: PyTree, prunable_tree: PyTree,
                  structure=None) -> PyTree:
    """Per prunable leaf the mask of its ``count`` largest ``|w|``; all True elsewhere.

    Arguments as in :func:`select_top`, with ``params`` in place of ``scores``. Unlike
    :func:`select_top` it does not warn about ties: the built-in methods call it on trained
    weights at every projection, where it adds no host callback.
    """
    return _select_top(align_to(jax.tree.map(jnp.abs, params), prunable_tree, "scores"),
                       counts, prunable_tree, structure)


def initial_masks(key, params: PyTree, counts: PyTree, prunable_tree: PyTree,
                  scores="random", structure=None) -> PyTree:
    """Masks keeping exactly ``counts`` entries per prunable leaf, chosen by ``scores``.

    Args:
      key: a JAX PRNG key (typed or raw), used by ``scores="random"``.
      params: any parameter pytree.
      counts: keep counts with the params' structure (may be traced).
      prunable_tree: Python bools with the params' structure (:func:`prunable`).
      scores: ``"random"`` (top-k of :func:`random_scores`), ``"magnitude"`` (top-k of
        ``|w|``) or a pytree of score arrays with the params' structure.
      structure: None or an N:M structure (see :func:`select_top`).

    Returns:
      A bool mask pytree with the structure of ``params``; non-prunable leaves all True.
    """
    if isinstance(scores, str):
        if scores == "magnitude":
            return top_magnitude(params, counts, prunable_tree, structure)
        scores = random_scores(key, params)
    return select_top(scores, counts, prunable_tree, structure)


def magnitude_masks(params: PyTree, counts, filter_fn: FilterFn | None = None) -> PyTree:
    """Per-leaf masks keeping the ``count`` largest-magnitude entries of each prunable leaf.

    Args:
      params: any parameter pytree.
      counts: keep counts, either a pytree with the structure of ``params`` (as returned by
        :func:`sparsegnn_jax.sparsity.distributions.keep_counts`) or a dict
        ``{path: count}`` (unlisted leaves keep everything). Counts may be traced.
      filter_fn: chooses prunable leaves (default :func:`default_filter`); non-prunable
        leaves get all-True masks whatever their count.

    Returns:
      A bool mask pytree with the structure of ``params``.

    Raises:
      ValueError: when ``counts`` has another structure or names unknown layers.
    """
    paths, leaves, treedef = flatten_with_paths(params)
    flags = prunable_flags(paths, leaves, filter_fn)
    sizes = [int(np.size(leaf)) for leaf in leaves]
    ks = _counts_leaves(counts, paths, treedef, flags, sizes)
    return top_magnitude(params, jax.tree.unflatten(treedef, ks),
                         jax.tree.unflatten(treedef, flags))


def _counts_leaves(counts, paths, treedef, flags, sizes):
    """Per-leaf keep counts from a params-shaped pytree or a ``{path: count}`` dict."""
    if jax.tree.structure(counts) == treedef:
        return jax.tree.leaves(counts)
    if isinstance(counts, Mapping) and all(isinstance(k, str) for k in counts):
        valid = [p for p, f in zip(paths, flags) if f]
        unknown = sorted(set(counts) - set(paths))
        if unknown:
            raise ValueError(
                f"counts names unknown layers {unknown}; valid layer paths: {valid}"
            )
        return [counts.get(p, n) for p, n in zip(paths, sizes)]
    raise ValueError(
        "counts must have the tree structure of params or be a {path: count} dict;\n"
        f"  params structure: {treedef}\n  counts structure: {jax.tree.structure(counts)}"
    )


# --------------------------------------------------------------------------------------------
# Mask pytrees
# --------------------------------------------------------------------------------------------


def init(
    key=None,
    params: PyTree = None,
    sparsity=0.9,
    distribution="uniform",
    scores="random",
    filter_fn: FilterFn | None = None,
    structure=None,
) -> PyTree:
    """Initial masks with exact per-layer keep counts.

    Per-layer densities come from :func:`sparsegnn_jax.sparsity.distributions.layer_densities`
    and each prunable layer keeps exactly ``keep_count(size, density)`` weights (at least one).

    Args:
      key: a JAX PRNG key (typed or raw, or an int seed); only ``scores="random"`` uses it, so
        it may be None otherwise (``init(params=..., scores=...)``).
      params: any parameter pytree.
      sparsity: target fraction of zeros in ``[0, 1)``; may be traced for the ``"uniform"``
        and ``"uniform_dense_first"`` distributions (e.g. ``jax.vmap`` over a sparsity grid).
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a dict
        ``{path: sparsity}``.
      scores: ``"random"`` (a uniformly random subset per layer: leaf ``i`` in flattening
        order keeps the top-k of ``jax.random.uniform(jax.random.split(key, n_leaves)[i])``),
        ``"magnitude"`` (keep the largest ``|w|``), or a pytree of score arrays with the
        structure of ``params`` (matched by layer path: an ``nnx.State``, its
        ``nnx.as_pure`` or ``nnx.to_pure_dict`` form are interchangeable).
      filter_fn: chooses prunable leaves (default :func:`default_filter`).
      structure: None (unstructured), or N:M structured masks (an
        :class:`~sparsegnn_jax.sparsity.structure.NM`, ``(n, m)`` or ``"nm:N:M"``): every
        weight matrix keeps the ``n`` best scores of every ``m`` consecutive inputs (axis -2),
        other prunable leaves their top-k; ``sparsity`` must then be ``1 - n/m`` (see
        :mod:`~sparsegnn_jax.sparsity.structure`).

    Returns:
      A bool mask pytree with the structure of ``params``; non-prunable leaves all True.

    Raises:
      ValueError: on missing ``params``, ``scores="random"`` without a key, an invalid
        sparsity or distribution (see ``distributions``), an unknown ``scores`` name, a
        scores pytree whose structure differs from ``params``, or a structure the sparsity
        or distribution contradicts.
    """
    if params is None:
        raise ValueError("masks.init: `params` is required")
    structure = structure_lib.check_structure(structure, sparsity, distribution, "masks.init")
    counts = structure_lib.keep_counts(params, sparsity, distribution, filter_fn, structure)
    flags = tuple(jax.tree.leaves(prunable(params, filter_fn)))
    if isinstance(scores, str):
        if scores not in SCORES:
            raise ValueError(
                f"scores must be 'random', 'magnitude' or a pytree of arrays, got {scores!r}"
            )
        if scores == "random" and key is None:
            raise ValueError("masks.init: scores='random' needs a `key` (a PRNG key or an int "
                             "seed); pass scores='magnitude' or a scores pytree to go without")
        return _initial_masks(_as_key(key), params, counts, None, flags=flags, mode=scores,
                              structure=structure)
    scores = align_to(scores, params, "scores")
    return _initial_masks(None, params, counts, scores, flags=flags, mode="given",
                          structure=structure)


def _as_key(key):
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


# One compiled function for all leaves (counts stay traced) instead of one per primitive.
@functools.partial(jax.jit, static_argnames=("flags", "mode", "structure"))
def _initial_masks(key, params, counts, given_scores, *, flags, mode, structure):
    prunable_tree = jax.tree.unflatten(jax.tree.structure(params), flags)
    scores = given_scores if mode == "given" else mode
    return initial_masks(key, params, counts, prunable_tree, scores, structure)


def apply(params: PyTree, masks: PyTree) -> PyTree:
    """Zeros the parameters where the mask is False.

    Args:
      params: any parameter pytree.
      masks: bool pytree with the same tree structure (NNX Variable boxes on either side are
        ignored: masks of an ``nnx.State`` may be its pure dict form).

    Returns:
      Params of the same structure and dtypes, exactly zero where masked out.

    Raises:
      ValueError: naming both tree structures when they differ, or the leaf whose mask shape
        differs from the parameter's.
    """
    check_same_structure(params, masks)
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, _apply(leaves, jax.tree.leaves(masks)))


@jax.jit
def _apply(leaves, mask_leaves):
    return [jnp.where(m, p, jnp.zeros_like(p)) for p, m in zip(leaves, mask_leaves)]


def apply_norm_preserving(params: PyTree, masks: PyTree) -> PyTree:
    """:func:`apply`, with every weight matrix the mask thins scaled back to its dense norm.

    A layer keeping a share ``d`` of its freshly initialised weights at random has about
    ``sqrt(d)`` of the dense layer's output scale, and the shrinkage compounds over layers
    (and squares through a product of two embeddings): at 90% sparsity a 2-layer GCN with a
    Hadamard MLP decoder starts with pair logits ~300x smaller than dense, whose gradients are
    as small, and spends its first steps at the constant prediction. Each leaf with
    ``ndim >= 2`` and at least one masked-out entry is multiplied by
    ``||p|| / ||p * mask||``: its kept entries carry the dense layer's norm (a per-layer form
    of the sparsity-aware initialisation of Evci et al., "Gradient Flow in Sparse Neural
    Networks and How Lottery Tickets Win", AAAI 2022), for any initial mask (random,
    magnitude, ERK). Leaves
    whose mask is all True (dense methods, biases, tables), 1-D leaves (an edge-weight gate)
    and leaves with nothing kept equal :func:`apply` bit for bit.

    For freshly initialised params: a trained model's weights are already at their scale.

    Args / Raises: as :func:`apply`.
    """
    check_same_structure(params, masks)
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, _apply_norm_preserving(leaves, jax.tree.leaves(masks)))


@jax.jit
def _apply_norm_preserving(leaves, mask_leaves):
    out = []
    for p, m in zip(leaves, mask_leaves):
        kept = jnp.where(m, p, jnp.zeros_like(p))
        if jnp.ndim(p) >= 2:
            full = jnp.sum(jnp.square(p.astype(jnp.float32)))
            part = jnp.sum(jnp.square(kept.astype(jnp.float32)))
            thinned = jnp.logical_not(jnp.all(m)) & (part > 0)
            scale = jnp.sqrt(full / jnp.where(thinned, part, 1.0))
            kept = jnp.where(thinned, kept * scale.astype(p.dtype), kept)
        out.append(kept)
    return out


def _maybe_float(x):
    return float(x) if is_concrete(x) else x


def _prunable_mask_leaves(masks: PyTree, filter_fn, caller: str):
    """``(path, leaf)`` of the prunable leaves of a mask pytree, all of them checked to be bool.

    Raises:
      TypeError: naming the first non-bool leaf (a parameter pytree passed as masks).
    """
    paths, leaves, _ = flatten_with_paths(as_pure(masks))
    flags = prunable_flags(paths, leaves, filter_fn)
    chosen = [(p, m) for p, m, f in zip(paths, leaves, flags) if f]
    for path, m in chosen:
        dtype = jnp.result_type(m)
        if dtype != jnp.bool_:
            raise TypeError(
                f"masks.{caller}: expects a bool mask pytree, but leaf {path!r} has dtype "
                f"{dtype}; to count the zeros of parameters use "
                f"sparsegnn_jax.masks.param_sparsity(params)")
    return chosen


def sparsity(masks: PyTree, filter_fn: FilterFn | None = None):
    """Global sparsity (fraction of False) over the prunable leaves of a mask pytree.

    Also exported as ``sparsegnn_jax.mask_sparsity``.

    Args:
      masks: bool mask pytree (NNX Variable boxes are ignored).
      filter_fn: chooses prunable leaves; it sees the mask leaves (same paths and shapes as
        the params). Default :func:`default_filter`.

    Returns:
      A Python float (a jnp scalar when traced); 0.0 when nothing is prunable.

    Raises:
      TypeError: when a prunable leaf is not bool (e.g. parameters: use :func:`param_sparsity`).
    """
    chosen = [m for _, m in _prunable_mask_leaves(masks, filter_fn, "sparsity")]
    total = sum(int(np.size(m)) for m in chosen)
    if total == 0:
        return 0.0
    nnz = sum(jnp.sum(jnp.asarray(m), dtype=jnp.int32) for m in chosen)
    return _maybe_float(1.0 - nnz / total)


def layer_sparsity(masks: PyTree, filter_fn: FilterFn | None = None) -> dict:
    """Sparsity of every prunable leaf.

    Args:
      masks: bool mask pytree.
      filter_fn: chooses prunable leaves (see :func:`sparsity`).

    Returns:
      ``{path: sparsity}`` as Python floats (jnp scalars when traced), in flattening order.

    Raises:
      TypeError: when a prunable leaf is not bool (e.g. parameters: use :func:`param_sparsity`).
    """
    out = {}
    for p, m in _prunable_mask_leaves(masks, filter_fn, "layer_sparsity"):
        n = int(np.size(m))
        nnz = jnp.sum(jnp.asarray(m), dtype=jnp.int32)
        out[p] = _maybe_float(1.0 - nnz / n) if n else 0.0
    return out


class ParamSparsity(NamedTuple):
    """Zeros counted in parameters (see :func:`param_sparsity`).

    Attributes:
      total: fraction of exact zeros over the prunable leaves (0.0 when there are none).
      per_layer: ``{path: fraction of exact zeros}`` per prunable leaf, in flattening order.
      nonzero: ``{path: number of non-zero entries}`` per prunable leaf.
      size: total number of entries of the prunable leaves.
    """

    total: float
    per_layer: dict
    nonzero: dict
    size: int


def param_sparsity(params: PyTree, filter_fn: FilterFn | None = None) -> ParamSparsity:
    """Counts the exact zeros of the prunable leaves of a parameter pytree.

    Unlike :func:`sparsity`, which reads masks, this reads the weights themselves: it tells
    whether trained parameters really are sparse.

    Args:
      params: any parameter pytree (NNX ``State``, Linen dict, plain dict); concrete values.
      filter_fn: chooses prunable leaves (default :func:`default_filter`).

    Returns:
      A :class:`ParamSparsity` of Python numbers.
    """
    paths, leaves, _ = flatten_with_paths(as_pure(params))
    flags = prunable_flags(paths, leaves, filter_fn)
    nonzero = {p: int(np.count_nonzero(np.asarray(x))) for p, x, f in zip(paths, leaves, flags)
               if f}
    sizes = {p: int(np.size(x)) for p, x, f in zip(paths, leaves, flags) if f}
    size = sum(sizes.values())
    per_layer = {p: (1.0 - nonzero[p] / sizes[p]) if sizes[p] else 0.0 for p in sizes}
    total = 1.0 - sum(nonzero.values()) / size if size else 0.0
    return ParamSparsity(total, per_layer, nonzero, size)
