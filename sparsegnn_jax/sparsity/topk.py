"""Exact top-k selection on single arrays, and RigL's drop / grow built on it.

Selection is exact: :func:`topk_mask` returns exactly ``k`` True entries, ties going to the lower
flat index. Counts may be traced, so every function works under ``jax.jit`` and ``jax.vmap``
(e.g. over sparsity levels).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsegnn_jax.sparsity.validation import is_concrete

__all__ = ["SORT_MAX_SIZE", "keep_count", "topk_mask", "topk_mask_by_search", "drop", "grow"]


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
    if is_concrete(size) and is_concrete(density) and np.ndim(density) == 0:
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
    """Number of True entries of each bool array, all in one pass over the data."""
    # A single variadic reduce: XLA CPU emits it as one vectorised loop, measured several times
    # faster than separate ``jnp.sum`` calls (even than one ``jnp.sum`` of a single array).
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
# Above it the search wins: a few dozen vectorised counting passes were measured tens of times
# faster than an XLA sort on CPU.
SORT_MAX_SIZE = 4096


def _flat_and_k(scores, k):
    """``scores`` flattened and ``k`` as an int32 count in ``[0, size]``."""
    flat = jnp.asarray(scores).reshape(-1)
    k = jnp.asarray(k)
    if jnp.issubdtype(k.dtype, jnp.floating):
        # Same count as comparing integer ranks with a fractional k: ceil(k), NaN selects none.
        k = jnp.where(jnp.isnan(k), 0, jnp.ceil(k))
    return flat, jnp.clip(k, 0, flat.size).astype(jnp.int32)


# Jitted as a whole: one compilation per shape instead of one per primitive when called
# eagerly; inside an outer jit/vmap it simply inlines.
@jax.jit
def topk_mask(scores, k):
    """Bool mask of the ``k`` highest scores, exactly ``k`` True.

    Ties are broken deterministically: the lower flat (row-major) index wins. NaN scores
    rank lowest, and ``-0.0`` ties with ``0.0``. ``k`` is clipped to ``[0, scores.size]``; a
    fractional ``k`` selects ``ceil(k)`` entries and NaN none. ``k`` may be a traced integer, so
    the function works under ``jax.jit`` and under ``jax.vmap`` with ``k`` varying along the
    mapped axis. Arrays of at most :data:`SORT_MAX_SIZE` entries (and dtypes without
    order-preserving integer keys, e.g. complex) are ranked by one stable sort, larger ones by
    :func:`topk_mask_by_search`; both give the same mask.

    Args:
      scores: array of any shape; higher is better.
      k: number of entries to select (int or traced int scalar).

    Returns:
      A bool array with the shape of ``scores``.
    """
    shape = jnp.shape(scores)
    flat, k = _flat_and_k(scores, k)
    keyed = _order_keys(flat) if flat.size > SORT_MAX_SIZE else None
    if keyed is None:
        return _topk_mask_sorted(flat, k).reshape(shape)
    return _topk_mask_search(flat, k, keyed).reshape(shape)


def topk_mask_by_search(scores, k):
    """:func:`topk_mask` without sorting, on any size: the path it takes above
    :data:`SORT_MAX_SIZE` entries.

    The k-th largest score is found by a bitwise search over order-preserving integer keys.

    Args:
      scores: non-empty array of any shape with a float, integer or bool dtype.
      k: number of entries to select (int or traced int scalar).

    Returns:
      The same bool array as ``topk_mask(scores, k)``.

    Raises:
      ValueError: for a dtype without order keys (e.g. complex).
    """
    shape = jnp.shape(scores)
    flat, k = _flat_and_k(scores, k)
    keyed = _order_keys(flat)
    if keyed is None:
        raise ValueError(f"topk_mask_by_search: no order keys for dtype {flat.dtype}")
    return _topk_mask_search(flat, k, keyed).reshape(shape)


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
