"""Pure functions on sparsity masks for any parameter pytree.

A *mask* pytree has exactly the tree structure of the parameters it masks (a Flax NNX
``nnx.State``, a Linen-style nested dict, a plain dict of arrays, ...) with a bool array per
leaf. Leaves that are not prunable (biases and norms under the default filter) hold an
all-True mask - never ``None`` - so masks and params can always be zipped with
``jax.tree.map``.

Layers are named by a path string such as ``"layers/0/kernel"`` (see :func:`path_str`); the
same names are used by :mod:`sparsegnn_jax.sparsity.distributions` and by
:func:`layer_sparsity`.

Every function here is pure and jit-able; keep counts may be traced values so that masks can
be built inside ``jax.vmap`` over sparsity levels. Selection is exact: :func:`topk_mask`
returns exactly ``k`` True entries, ties going to the lower flat index.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any
FilterFn = Callable[[str, Any], bool]

__all__ = [
    "path_str",
    "default_filter",
    "prunable",
    "check_sparsity",
    "init",
    "apply",
    "sparsity",
    "layer_sparsity",
    "keep_count",
    "topk_mask",
    "drop",
    "grow",
    "magnitude_masks",
]


# --------------------------------------------------------------------------------------------
# Paths and filters
# --------------------------------------------------------------------------------------------


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


def _flatten(tree: PyTree):
    """(paths, leaves, treedef) of a pytree, paths as strings."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [path_str(kp) for kp, _ in with_path]
    leaves = [leaf for _, leaf in with_path]
    return paths, leaves, treedef


def _flags(paths, leaves, filter_fn: FilterFn | None) -> list[bool]:
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
    paths, leaves, treedef = _flatten(params)
    return jax.tree_util.tree_unflatten(treedef, _flags(paths, leaves, filter_fn))


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_sparsity(value, name: str = "sparsity"):
    """Raises ``ValueError`` unless a concrete ``value`` lies in ``[0, 1)``.

    Traced values (inside ``jit``/``vmap``) cannot be inspected and pass through unchecked.

    Args:
      value: the sparsity (fraction of zeros) to check.
      name: the argument's name, used in the error message.

    Returns:
      ``value`` unchanged.
    """
    if not _is_concrete(value):
        return value
    arr = np.asarray(value)
    if arr.ndim != 0:
        # A concrete batch of sparsities (e.g. a sweep grid) is checked element-wise.
        bad = arr[~((arr >= 0) & (arr < 1))]
        if bad.size:
            raise ValueError(f"{name} must be in [0, 1), got {bad.tolist()} in {arr.tolist()}")
        return value
    v = float(arr)
    if not 0.0 <= v < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Exact top-k selection and the RigL drop / grow primitives
# --------------------------------------------------------------------------------------------


def keep_count(size, density):
    """Number of weights a layer keeps: ``clip(round(size * density), 1, size)``.

    Rounding is half-to-even (Python ``round`` and ``jnp.round`` agree). A non-empty layer
    always keeps at least one weight.

    Args:
      size: number of entries of the layer (int).
      density: fraction of entries kept; a float or a traced scalar.

    Returns:
      A Python int when both arguments are concrete, else an int32 jnp scalar.
    """
    if _is_concrete(size) and _is_concrete(density) and np.ndim(density) == 0:
        size = int(size)
        if size <= 0:
            return 0
        return min(max(int(round(size * float(density))), 1), size)
    k = jnp.round(jnp.asarray(size) * jnp.asarray(density))
    # min(max(k, 1), size): an empty layer gets 0, any other layer at least one weight.
    return jnp.minimum(jnp.maximum(k, 1), size).astype(jnp.int32)


_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}
_SIGNED = {4: jnp.int32, 8: jnp.int64}


def _order_keys(flat):
    """Unsigned integer keys ranking like ``flat``, or ``None`` for dtypes without such keys.

    Floats map through their bit patterns (negatives reversed, positives above them) after
    NaN becomes ``-inf`` and ``-0.0`` becomes ``0.0``, so equal keys are exactly the ties of the
    ranking. Keys are widened to 32 (or 64) bits; only the low ``nbits`` can be non-zero.

    Returns:
      ``(keys, nbits)`` with ``nbits`` even, or ``None`` (e.g. complex scores).
    """
    dtype = flat.dtype
    if dtype == jnp.bool_:
        return flat.astype(jnp.uint32), 2
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        return None
    width = dtype.itemsize
    if width not in _UNSIGNED:
        return None
    top = 8 * width - 1
    if jnp.issubdtype(dtype, jnp.floating):
        flat = jnp.where(flat == 0, jnp.zeros_like(flat), flat)
        flat = jnp.where(jnp.isnan(flat), jnp.full_like(flat, -jnp.inf), flat)
        bits = lax.bitcast_convert_type(flat, _UNSIGNED[width])
        sign = jnp.array(1, bits.dtype) << top
        keys = jnp.where(bits >= sign, ~bits, bits | sign)
    elif jnp.issubdtype(dtype, jnp.signedinteger):
        bits = lax.bitcast_convert_type(flat, _UNSIGNED[width])
        keys = bits ^ (jnp.array(1, bits.dtype) << top)
    else:
        keys = flat
    return keys.astype(_UNSIGNED[8 if width == 8 else 4]), 8 * width


def _as_signed(keys):
    """Order-preserving map of unsigned keys to signed ints: signed compares vectorise better
    on CPU than unsigned ones."""
    bits = 8 * keys.dtype.itemsize
    flipped = keys ^ (jnp.array(1, keys.dtype) << (bits - 1))
    return lax.bitcast_convert_type(flipped, _SIGNED[bits // 8])


def _counts(preds):
    """Number of True entries of each bool array, all in one pass over the data.

    A single variadic reduce: XLA CPU emits it as one vectorised loop, measured several times
    faster than separate ``jnp.sum`` calls (even than one ``jnp.sum`` of a single array).
    """
    ops = tuple(p.astype(jnp.int32) for p in preds)
    return lax.reduce(ops, tuple(jnp.int32(0) for _ in ops),
                      lambda a, b: tuple(x + y for x, y in zip(a, b)),
                      tuple(range(ops[0].ndim)))


def _topk_mask_sorted(flat, k):
    """Top-k of a flat array by one stable sort (ranks compared with ``k``)."""
    if jnp.issubdtype(flat.dtype, jnp.inexact):
        # Canonicalise so every tie is a real tie and NaN cannot outrank real scores.
        flat = jnp.where(flat == 0, jnp.zeros_like(flat), flat)
        flat = jnp.where(jnp.isnan(flat), jnp.full_like(flat, -jnp.inf), flat)
    elif flat.dtype == jnp.bool_:
        flat = flat.astype(jnp.int32)
    order = jnp.argsort(flat, descending=True, stable=True)
    # rank[i] = position of entry i in the sorted order; scatter instead of a second sort.
    rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(
        jnp.arange(flat.size, dtype=jnp.int32)
    )
    return rank < k


def _topk_mask_search(flat, k, keyed):
    """Top-k of a non-empty flat array without sorting; ``keyed`` is ``_order_keys(flat)``.

    The k-th largest key ``t`` is found bit by bit (two bits per counting pass over the data);
    entries above ``t`` are selected, then entries equal to ``t`` in flat index order up to
    ``k`` - located by a second bitwise search over indices, run only when ties at ``t``
    straddle the cut.
    """
    n = flat.size
    ukeys, nbits = keyed
    keys = _as_signed(ukeys)

    def refine(i, t):
        # t = largest key with #(keys >= t) >= k, fixed two bits at a time from the top:
        # count the three candidates for the next two bits in one pass and keep the largest
        # that still has k entries at or above it (counts fall as candidates grow).
        lo = (nbits - 2 - 2 * i).astype(ukeys.dtype)
        cands = [t | (ukeys.dtype.type(j) << lo) for j in (1, 2, 3)]
        counts = _counts([keys >= _as_signed(c) for c in cands])
        steps = sum((c >= k).astype(ukeys.dtype) for c in counts)
        return t | (steps << lo)

    # For k = 0 every candidate passes: t ends at the maximum key, nothing lies above it and
    # need = 0 below selects no tie.
    t = _as_signed(lax.fori_loop(0, nbits // 2, refine, ukeys.dtype.type(0)))
    n_greater, n_ties = _counts([keys > t, keys == t])
    need = k - n_greater  # in [0, n_ties]: how many entries equal to t are selected
    idx = lax.iota(jnp.int32, n)
    ibits = n.bit_length() + n.bit_length() % 2

    def first_ties():
        # Smallest m with #(ties at flat index < m) == need, again two bits per pass:
        # m - 1 is the largest m' in [0, n) with fewer than `need` ties below it.
        ties = keys == t

        def refine_index(i, m):
            lo = (ibits - 2 - 2 * i).astype(jnp.int32)
            room = (n - m) >> lo  # candidates m + (j << lo) must not pass n (nor overflow)
            counts = _counts([ties & (idx < m + (j << lo)) for j in (1, 2, 3)])
            steps = sum(((j <= room) & (c < need)).astype(jnp.int32)
                        for j, c in zip((1, 2, 3), counts))
            return m + (steps << lo)

        m = lax.fori_loop(0, ibits // 2, refine_index, jnp.int32(0))
        return jnp.where(need > 0, m + 1, jnp.int32(0))

    # Ties straddle the cut only when some but not all of them are selected; otherwise
    # (the usual case for continuous scores) skip the index search.
    cut = lax.cond((need > 0) & (need < n_ties), first_ties,
                   lambda: jnp.where(need > 0, jnp.int32(n), jnp.int32(0)))
    return (keys > t) | ((keys == t) & (idx < cut))


# Up to this many entries topk_mask sorts: a sort of that size runs in well under a
# millisecond on CPU and compiles in about half the time of the search (two loops, a cond).
_SORT_MAX_SIZE = 4096


# Jitted as a whole: one compilation per shape instead of one per primitive when called
# eagerly; inside an outer jit/vmap it simply inlines.
@jax.jit
def topk_mask(scores, k):
    """Bool mask of the ``k`` highest scores, exactly ``k`` True.

    Ties are broken deterministically: the lower flat (row-major) index wins. NaN scores
    rank lowest, and ``-0.0`` ties with ``0.0``. ``k`` is clipped to ``[0, scores.size]`` by
    construction and may be a traced integer, so the function works under ``jax.jit`` and
    under ``jax.vmap`` with ``k`` varying along the mapped axis. Arrays of more than 4096
    entries are not sorted: the k-th largest score is found by a bitwise search over
    order-preserving integer keys (a few dozen vectorised counting passes, tens of times
    faster than an XLA sort on CPU); smaller arrays use one stable sort, which compiles
    faster. Both give the same mask.

    Args:
      scores: array of any shape; higher is better.
      k: number of entries to select (int or traced int scalar).

    Returns:
      A bool array with the shape of ``scores``.
    """
    scores = jnp.asarray(scores)
    flat = scores.reshape(-1)
    k = jnp.asarray(k)
    if jnp.issubdtype(k.dtype, jnp.floating):
        # Same count as comparing integer ranks with a fractional k: ceil(k), NaN selects none.
        k = jnp.where(jnp.isnan(k), 0, jnp.ceil(k))
    k = jnp.clip(k, 0, flat.size).astype(jnp.int32)
    keyed = _order_keys(flat) if flat.size > _SORT_MAX_SIZE else None
    if keyed is None:  # small, or a dtype without order keys (complex)
        return _topk_mask_sorted(flat, k).reshape(scores.shape)
    return _topk_mask_search(flat, k, keyed).reshape(scores.shape)


def _eligible_scores(scores, eligible):
    """Scores where eligible, ``-inf`` elsewhere, with eligible scores made finite.

    Clamping eligible scores to the finite range (NaN to the lowest finite value) makes every
    eligible entry strictly greater than every excluded one, so a top-k with
    ``k <= #eligible`` never selects an excluded entry, whatever the scores are.
    """
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.float32)
    info = jnp.finfo(scores.dtype)
    finite = jnp.nan_to_num(scores, nan=info.min, posinf=info.max, neginf=info.min)
    return jnp.where(eligible, finite, jnp.full_like(finite, -jnp.inf))


@jax.jit
def drop(mask, weights, n_drop):
    """Removes the ``n_drop`` smallest-magnitude active weights from a layer's mask.

    RigL's drop step. Exactly ``min(max(n_drop, 0), #active)`` entries are switched off; ties
    in ``|weights|`` drop the higher flat index first (the lower index is kept).

    Args:
      mask: bool array, the layer's current mask.
      weights: array of the mask's shape; magnitudes rank the active entries.
      n_drop: number of weights to drop (int or traced int).

    Returns:
      The new bool mask, a subset of ``mask``.
    """
    mask = jnp.asarray(mask, dtype=bool)
    n_active = jnp.sum(mask, dtype=jnp.int32)
    n_keep = n_active - jnp.clip(n_drop, 0, n_active)
    return topk_mask(_eligible_scores(jnp.abs(weights), mask), n_keep)


@jax.jit
def grow(mask, scores, n_grow):
    """Adds the ``n_grow`` highest-scoring inactive entries to a layer's mask.

    RigL's grow step (pass ``jnp.abs(grad)`` as ``scores``; SET passes random scores).
    Exactly ``min(max(n_grow, 0), #inactive)`` entries are switched on; ties go to the lower
    flat index.

    Args:
      mask: bool array, the layer's current mask.
      scores: array of the mask's shape; higher is grown first.
      n_grow: number of weights to grow (int or traced int).

    Returns:
      The new bool mask, a superset of ``mask``.
    """
    mask = jnp.asarray(mask, dtype=bool)
    inactive = ~mask
    n_inactive = jnp.sum(inactive, dtype=jnp.int32)
    n = jnp.clip(n_grow, 0, n_inactive)
    return mask | topk_mask(_eligible_scores(scores, inactive), n)


# --------------------------------------------------------------------------------------------
# Mask pytrees
# --------------------------------------------------------------------------------------------


def _as_key(key):
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


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
    """
    paths, leaves, treedef = _flatten(params)
    flags = _flags(paths, leaves, filter_fn)
    sizes = [int(np.size(leaf)) for leaf in leaves]
    ks = _counts_leaves(counts, paths, treedef, flags, sizes)
    out = [
        topk_mask(jnp.abs(leaf), k) if f else jnp.ones(jnp.shape(leaf), bool)
        for leaf, k, f in zip(leaves, ks, flags)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def init(
    key,
    params: PyTree,
    sparsity=0.9,
    distribution="uniform",
    scores="random",
    filter_fn: FilterFn | None = None,
) -> PyTree:
    """Initial masks with exact per-layer keep counts.

    Per-layer densities come from :func:`sparsegnn_jax.sparsity.distributions.layer_densities`
    and each prunable layer keeps exactly ``keep_count(size, density)`` weights (at least one).

    Args:
      key: a JAX PRNG key (or an int seed) for ``scores="random"``.
      params: any parameter pytree.
      sparsity: target fraction of zeros in ``[0, 1)``; may be traced for the ``"uniform"``
        and ``"uniform_dense_first"`` distributions (e.g. ``jax.vmap`` over a sparsity grid).
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a dict
        ``{path: sparsity}``.
      scores: ``"random"`` (a uniformly random subset per layer: leaf ``i`` in flattening
        order keeps the top-k of ``jax.random.uniform(jax.random.split(key, n_leaves)[i])``),
        ``"magnitude"`` (keep the largest ``|w|``), or a pytree of score arrays with the
        structure of ``params``.
      filter_fn: chooses prunable leaves (default :func:`default_filter`).

    Returns:
      A bool mask pytree with the structure of ``params``; non-prunable leaves all True.
    """
    # Imported here because distributions builds on this module's helpers.
    from sparsegnn_jax.sparsity import distributions

    counts = distributions.keep_counts(params, sparsity, distribution, filter_fn)
    paths, leaves, treedef = _flatten(params)
    flags = tuple(_flags(paths, leaves, filter_fn))
    ks = jax.tree.leaves(counts)

    if isinstance(scores, str):
        if scores not in ("random", "magnitude"):
            raise ValueError(
                f"scores must be 'random', 'magnitude' or a pytree of arrays, got {scores!r}"
            )
        mode, score_leaves = scores, leaves
    else:
        if jax.tree.structure(scores) != treedef:
            raise ValueError(
                "scores tree structure does not match params:\n"
                f"  params: {treedef}\n  scores: {jax.tree.structure(scores)}"
            )
        mode, score_leaves = "given", jax.tree.leaves(scores)
    out = _init_leaves(_as_key(key), score_leaves, ks, flags=flags, mode=mode)
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.partial(jax.jit, static_argnames=("flags", "mode"))
def _init_leaves(key, leaves, ks, *, flags, mode):
    """Masks for a list of leaves in one compiled function (counts stay traced)."""
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for i, (leaf, k, f) in enumerate(zip(leaves, ks, flags)):
        if not f:
            out.append(jnp.ones(jnp.shape(leaf), bool))
            continue
        if mode == "random":
            s = jax.random.uniform(keys[i], jnp.shape(leaf))
        elif mode == "magnitude":
            s = jnp.abs(leaf)
        else:
            s = leaf
        out.append(topk_mask(s, k))
    return out


def _is_variable(x) -> bool:
    try:
        from flax import nnx
    except ImportError:  # Flax is optional for the pure functions
        return False
    return isinstance(x, nnx.Variable)


def as_pure(tree: PyTree) -> PyTree:
    """The tree with Flax NNX Variables (``nnx.Param`` boxes) replaced by their values.

    An ``nnx.State`` of Params and its pure form flatten to the same leaves in the same order,
    so masks built for one fit the other.
    """
    return jax.tree.map(lambda x: x.get_value() if _is_variable(x) else x, tree,
                        is_leaf=_is_variable)


def _check_same_structure(params, masks):
    ps, ms = jax.tree.structure(as_pure(params)), jax.tree.structure(as_pure(masks))
    if ps != ms:
        raise ValueError(
            "masks tree structure does not match params:\n"
            f"  params: {ps}\n  masks:  {ms}"
        )
    # Same containers but another shape would broadcast silently (a [1, n] mask over an [m, n]
    # kernel), so shapes must agree exactly too.
    paths, leaves, _ = _flatten(as_pure(params))
    for path, p, m in zip(paths, leaves, jax.tree.leaves(as_pure(masks))):
        if jnp.shape(p) != jnp.shape(m):
            raise ValueError(f"mask of {path!r} has shape {tuple(jnp.shape(m))} but the "
                             f"parameter has shape {tuple(jnp.shape(p))}")


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
    _check_same_structure(params, masks)
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, _apply(leaves, jax.tree.leaves(masks)))


@jax.jit
def _apply(leaves, mask_leaves):
    return [jnp.where(m, p, jnp.zeros_like(p)) for p, m in zip(leaves, mask_leaves)]


def _maybe_float(x):
    return float(x) if _is_concrete(x) else x


def sparsity(masks: PyTree, filter_fn: FilterFn | None = None):
    """Global sparsity (fraction of False) over the prunable leaves of a mask pytree.

    Args:
      masks: bool mask pytree.
      filter_fn: chooses prunable leaves; it sees the mask leaves (same paths and shapes as
        the params). Default :func:`default_filter`.

    Returns:
      A Python float (a jnp scalar when traced); 0.0 when nothing is prunable.
    """
    paths, leaves, _ = _flatten(masks)
    flags = _flags(paths, leaves, filter_fn)
    chosen = [m for m, f in zip(leaves, flags) if f]
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
    """
    paths, leaves, _ = _flatten(masks)
    flags = _flags(paths, leaves, filter_fn)
    out = {}
    for p, m, f in zip(paths, leaves, flags):
        if f:
            n = int(np.size(m))
            nnz = jnp.sum(jnp.asarray(m), dtype=jnp.int32)
            out[p] = _maybe_float(1.0 - nnz / n) if n else 0.0
    return out
