"""N:M structured sparsity: in every group of ``m`` consecutive weights along a weight
matrix's input axis, exactly ``n`` are kept.

**The axis.** A layer here computes ``x @ W`` with ``W`` of shape ``(in, out)`` (Flax NNX
``Linear`` kernels, every built-in GNN layer), so the input axis is axis ``-2``: for every output
unit, its ``in`` incoming weights are cut into groups of ``m`` consecutive inputs and each group
keeps ``n``. That is the reduction (K) dimension of the matrix product, the axis NVIDIA's 2:4
sparse tensor cores group along (a PyTorch ``Linear`` weight is ``(out, in)`` and is grouped along
its last axis, the same inputs). jaxpruner's ``NByM`` groups along ``axis=-1`` by default, which
for a Flax kernel is the output axis; :func:`nm_mask` takes ``axis`` for that layout too.

**Partial groups.** When ``in`` is not a multiple of ``m`` the last group of each output unit
holds ``r = in % m`` inputs and keeps ``min(n, r)`` of them: the pattern of the matrix
zero-padded to a multiple of ``m`` (how a 2:4 kernel runs such a layer; the padded zeros take
no kept slot). So a layer keeps exactly :meth:`NM.keep_count` weights, and its density is ``n/m``
exactly when ``in`` is a multiple of ``m``.

**Which leaves.** The structure covers the prunable leaves with ``ndim >= 2`` (weight
matrices; a leading batch of matrices is grouped per matrix). Biases are never pruned, and a
1-D prunable leaf (the encoder's edge-weight leaf) keeps its unstructured top-k mask at its own
sparsity.

**Sparsity.** A structure fixes each covered layer's density at ``n/m``: a method given one
takes ``sparsity = 1 - n/m`` with the ``"uniform"`` distribution (or a ``{path: sparsity}``
dict giving the covered layers ``1 - n/m``, so other leaves can have their own); anything else
is a ``ValueError``. The keep counts of covered layers are then :meth:`NM.keep_count`.

Methods that take ``structure=``: ``static_sparse``, ``one_shot``, ``snip``, ``rigl``,
``sparse_evolutionary`` (SET; drop and grow within each group, :func:`nm_swap`), ``admm`` and
``slr`` (their projections), and ``masks.init``. Gradual magnitude pruning does not: its
sparsity ramps up over training while N:M fixes the density from the start.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax.sparsity import distributions
from sparsegnn_jax.sparsity.topk import topk_mask
from sparsegnn_jax.sparsity.trees import flatten_with_paths, prunable_flags
from sparsegnn_jax.sparsity.validation import is_concrete

__all__ = ["NM", "as_structure", "parse", "nm_mask", "group_counts", "nm_swap", "select",
           "keep_counts", "check_structure"]

# Densities are compared with this slack: 1 - (1 - n/m) differs from n/m in the last bits.
_DENSITY_TOLERANCE = 1e-6


class NM(NamedTuple):
    """N:M structured sparsity: ``n`` kept in every ``m`` consecutive inputs (``0 < n <= m``).

    Hashable, so it can be a static argument of ``jax.jit``. ``str(NM(2, 4))`` is
    ``"nm:2:4"``, the spelling of ``--structure``.
    """

    n: int
    m: int

    def __str__(self) -> str:
        return f"nm:{self.n}:{self.m}"

    @property
    def density(self) -> float:
        """``n / m``, the density of a layer whose input size is a multiple of ``m``."""
        return self.n / self.m

    @property
    def sparsity(self) -> float:
        """``1 - n / m``: the sparsity a method given this structure must be given."""
        return 1.0 - self.n / self.m

    def covers(self, leaf) -> bool:
        """Whether the structure applies to a prunable leaf: weight matrices (``ndim >= 2``)."""
        return np.ndim(leaf) >= 2

    def keep_count(self, shape) -> int:
        """Weights a matrix of ``shape`` keeps: ``n`` per full group along axis -2 and
        ``min(n, in % m)`` in a partial last group, for every other index."""
        shape = tuple(shape)
        size_in = shape[-2]
        per_column = self.n * (size_in // self.m) + min(self.n, size_in % self.m)
        return int(per_column * (int(np.prod(shape)) // max(size_in, 1)))


def _check_nm(n, m) -> NM:
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"N:M structure: {name} must be an int, got {value!r}")
    if not 0 < n <= m:
        raise ValueError(f"N:M structure needs 0 < n <= m, got n={n}, m={m}")
    return NM(int(n), int(m))


_PATTERN = re.compile(r"^\s*nm\s*:\s*(\d+)\s*:\s*(\d+)\s*$", re.IGNORECASE)


def parse(text: str, flag: str = "structure") -> NM | None:
    """An ``"nm:N:M"`` string as :class:`NM`; ``None`` for ``None``, ``""`` or ``"none"``.

    Raises:
      ValueError: naming ``flag``, for anything else or an invalid ``n``, ``m``.
    """
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(f"{flag} must be nm:N:M (e.g. nm:2:4) or none, got {text!r}")
    try:
        return _check_nm(int(match.group(1)), int(match.group(2)))
    except ValueError as err:
        raise ValueError(f"{flag}={text}: {err}") from None


def as_structure(structure) -> NM | None:
    """``structure`` as :class:`NM` or None: accepts an ``NM``, an ``(n, m)`` pair, an
    ``"nm:N:M"`` string or None.

    Raises:
      ValueError: for anything else.
    """
    if structure is None or isinstance(structure, str):
        return parse(structure)
    if isinstance(structure, tuple) and len(structure) == 2:
        return _check_nm(*structure)
    raise ValueError(f"structure must be sg.structure.NM(n, m), an (n, m) pair, 'nm:N:M' or "
                     f"None, got {structure!r}")


# --------------------------------------------------------------------------------------------
# Masks on one array.


def _finite_scores(scores, eligible=True):
    """Float scores, ``-0.0`` as ``0.0``; eligible entries finite (NaN and -inf lowest among
    them), ineligible ones ``-inf``: every eligible entry outranks every ineligible one."""
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.float32)
    info = jnp.finfo(scores.dtype)
    finite = jnp.nan_to_num(scores, nan=info.min, posinf=info.max, neginf=info.min)
    finite = jnp.where(finite == 0, jnp.zeros_like(finite), finite)
    return jnp.where(eligible, finite, jnp.full_like(finite, -jnp.inf))


def _grouped(x, m, axis, fill):
    """``x`` with ``axis`` moved last, padded with ``fill`` to a multiple of ``m`` and split
    into groups: shape ``(..., groups, m)``; also the function that undoes it."""
    moved = jnp.moveaxis(x, axis, -1)
    length = moved.shape[-1]
    pad = -length % m
    padded = jnp.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)], constant_values=fill)
    groups = padded.reshape(*moved.shape[:-1], -1, m)

    def ungroup(y):
        flat = y.reshape(*moved.shape[:-1], length + pad)[..., :length]
        return jnp.moveaxis(flat, -1, axis)

    return groups, ungroup


def _group_ranks(scores, m, axis):
    """Rank of each entry within its group (0 = highest score; ties: lower index first)."""
    groups, ungroup = _grouped(scores, m, axis, -jnp.inf)
    order = jnp.argsort(groups, axis=-1, descending=True, stable=True)
    return ungroup(jnp.argsort(order, axis=-1))


def group_counts(mask, m: int, axis: int = -2):
    """Number of True entries in each group of ``m`` consecutive entries along ``axis``.

    Args:
      mask: bool array.
      m: group size.
      axis: the grouped axis (``-2``: the input axis of an ``(in, out)`` kernel).

    Returns:
      int32 array of shape ``mask.shape`` with ``axis`` moved last and replaced by the number
      of groups ``ceil(size / m)``.
    """
    groups, _ = _grouped(jnp.asarray(mask, jnp.int32), m, axis, 0)
    return jnp.sum(groups, axis=-1)


def _per_entry(group_values, mask_shape, m, axis):
    """Broadcasts per-group values back to every entry of the group."""
    moved = jnp.moveaxis(jnp.zeros(mask_shape, bool), axis, -1)
    length = moved.shape[-1]
    spread = jnp.repeat(group_values, m, axis=-1)[..., :length]
    return jnp.moveaxis(spread, -1, axis)


def nm_mask(scores, n: int, m: int, axis: int = -2):
    """Bool mask keeping the ``n`` highest scores of every ``m`` consecutive entries along
    ``axis``.

    Exact: every full group has exactly ``n`` True; a partial last group of ``r < m``
    entries has ``min(n, r)`` (the pattern of the array zero-padded to a multiple of ``m``).
    Ties go to the lower index in the group (as :func:`~sparsegnn_jax.sparsity.topk.topk_mask`);
    NaN and ``-inf`` rank lowest and ``-0.0`` ties with ``0.0``. Works under ``jax.jit`` and
    ``jax.vmap`` (``n``, ``m``, ``axis`` are static Python ints).

    Args:
      scores: array with ``ndim >= 1``; higher is kept first.
      n: kept per group, ``0 < n <= m``.
      m: group size.
      axis: the grouped axis; ``-2`` is the input axis of an ``(in, out)`` kernel.

    Returns:
      A bool array with the shape of ``scores``.

    Raises:
      ValueError: for ``n``, ``m`` that are not ints with ``0 < n <= m``, or an ``axis``
        outside the array.
    """
    n, m = _check_nm(n, m)
    scores = jnp.asarray(scores)
    if not -scores.ndim <= axis < scores.ndim:
        raise ValueError(f"nm_mask: axis={axis} is outside scores of shape {scores.shape}")
    return _group_ranks(_finite_scores(scores), m, axis) < n


# --------------------------------------------------------------------------------------------
# RigL's and SET's update within groups.


def nm_swap(mask, weights, scores, n_swap, m: int, axis: int = -2):
    """Drop-and-grow inside N:M groups: every group keeps its number of active weights.

    The layer drops up to ``n_swap`` active weights - the smallest ``|w|`` of the layer among
    those a group can give up (a group with ``a`` active of ``g`` entries swaps at most
    ``min(a, g - a)``, its smallest ``|w|`` first) - and each group grows as many as it dropped:
    the highest ``scores`` among its entries inactive before the update. Dropped and grown sets
    are disjoint. Ties: the lower flat index is dropped first, the lower index in the group is
    grown first.

    Args:
      mask: bool array, the layer's mask (an N:M pattern along ``axis``).
      weights: the layer's weights; magnitudes rank the active entries.
      scores: grow scores (``|grad|`` for RigL, random for SET).
      n_swap: number of weights to swap in the layer (int or traced int).
      m: group size.
      axis: the grouped axis.

    Returns:
      The new bool mask, with the same number of True in every group as ``mask``.
    """
    mask = jnp.asarray(mask, bool)
    magnitude = jnp.abs(weights)
    active = group_counts(mask, m, axis)
    sizes = group_counts(jnp.ones(mask.shape, bool), m, axis)
    capacity = _per_entry(jnp.minimum(active, sizes - active), mask.shape, m, axis)
    active_per_entry = _per_entry(active, mask.shape, m, axis)
    # A group may give up its `capacity` smallest active weights: rank by |w| descending among
    # the active, the last `capacity` ranks.
    keep_rank = _group_ranks(_finite_scores(magnitude, mask), m, axis)
    droppable = mask & (keep_rank >= active_per_entry - capacity)
    n_drop = jnp.minimum(jnp.maximum(jnp.asarray(n_swap, jnp.int32), 0),
                         jnp.sum(droppable, dtype=jnp.int32))
    dropped = topk_mask(_finite_scores(-magnitude, droppable), n_drop)
    per_group = _per_entry(group_counts(dropped, m, axis), mask.shape, m, axis)
    grow_rank = _group_ranks(_finite_scores(scores, ~mask), m, axis)
    grown = ~mask & (grow_rank < per_group)
    return (mask & ~dropped) | grown


# --------------------------------------------------------------------------------------------
# Pytree level.


def select(scores, k, structure: NM | None):
    """One leaf's mask: the N:M pattern of ``scores`` when ``structure`` covers the leaf, else
    the top-``k`` (:func:`~sparsegnn_jax.sparsity.topk.topk_mask`)."""
    if structure is not None and structure.covers(scores):
        return nm_mask(scores, structure.n, structure.m)
    return topk_mask(scores, k)


def check_structure(structure, sparsity, distribution, method: str) -> NM | None:
    """``structure`` as :class:`NM` (or None), checked against a method's sparsity.

    Raises:
      ValueError: naming ``method``, for an invalid structure, a named distribution other
        than ``"uniform"``, or a concrete ``sparsity`` other than ``1 - n/m`` with it (a
        ``{path: sparsity}`` dict is checked per layer when the method is initialised).
    """
    structure = as_structure(structure)
    if structure is None:
        return None
    if isinstance(distribution, str):
        if distribution.lower() != "uniform":
            raise ValueError(f"{method}: structure {structure} fixes every weight matrix at "
                             f"density {structure.n}/{structure.m}, so distribution must be "
                             f"'uniform' (or a {{path: sparsity}} dict), got {distribution!r}")
        if is_concrete(sparsity) and np.ndim(sparsity) == 0 and (
                abs(float(sparsity) - structure.sparsity) > _DENSITY_TOLERANCE):
            raise ValueError(f"{method}: structure {structure} keeps {structure.n} of every "
                             f"{structure.m} weights, sparsity {structure.sparsity:g}; got "
                             f"sparsity={float(sparsity):g}")
    return structure


def keep_counts(params, sparsity, distribution="uniform", filter_fn=None,
                structure: NM | None = None):
    """:func:`~sparsegnn_jax.sparsity.distributions.keep_counts`, with :meth:`NM.keep_count`
    for the prunable leaves ``structure`` covers.

    Raises:
      ValueError: naming the layer and its shape, when the distribution gives a covered layer
        a density other than ``n/m`` (checked for concrete densities only: a traced sparsity,
        e.g. ``jax.vmap`` over a grid, is the caller's to keep at ``1 - n/m``).
    """
    counts = distributions.keep_counts(params, sparsity, distribution, filter_fn)
    if structure is None:
        return counts
    densities = distributions.layer_densities(params, sparsity, distribution, filter_fn)
    paths, leaves, treedef = flatten_with_paths(params)
    flags = prunable_flags(paths, leaves, filter_fn)
    out = []
    for path, leaf, flag, count in zip(paths, leaves, flags, jax.tree.leaves(counts)):
        if not (flag and structure.covers(leaf)):
            out.append(count)
            continue
        density = densities[path]
        if is_concrete(density) and abs(float(density) - structure.density) > _DENSITY_TOLERANCE:
            raise ValueError(f"structure {structure}: layer {path!r} of shape "
                             f"{tuple(np.shape(leaf))} is given density {float(density):g}, but "
                             f"N:M keeps {structure.n}/{structure.m} (sparsity "
                             f"{structure.sparsity:g})")
        out.append(np.int32(structure.keep_count(np.shape(leaf))))
    return jax.tree.unflatten(treedef, out)
