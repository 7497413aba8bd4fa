"""How a global sparsity is split across layers.

Distributions (the ``distribution`` argument everywhere in the library):

``"uniform"``
    Every prunable layer, first and last included, gets the same sparsity. This is the setting
    of Peng et al. (2022). Works with a traced sparsity (``jax.vmap`` over a sparsity grid).
``"uniform_dense_first"``
    RigL's uniform variant: the first prunable layer (in pytree flattening order) stays dense,
    every other prunable layer gets the given sparsity. Also works with a traced sparsity.
``"erk"``
    Erdos-Renyi-Kernel (Evci et al. 2020): density proportional to
    ``sum(shape) / prod(shape)``, scaled so that the number of non-zeros matches uniform
    sparsity; layers whose density would exceed 1 are made dense and the rest re-scaled,
    until none exceeds 1 (as RigL's ``sparse_utils.get_sparsities_erdos_renyi``).
``"er"``
    Erdos-Renyi (Mocanu et al. 2018): as ERK but using only the last two (matrix) dimensions,
    ``(n_in + n_out) / (n_in * n_out)``. For 2-D weight matrices it coincides with ERK.
``{path: sparsity}``
    Explicit per-layer sparsities; prunable layers not listed stay dense.

References:
  Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
  Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science", Nature Communications 2018.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax.sparsity.topk import keep_count
from sparsegnn_jax.sparsity.trees import flatten_with_paths, prunable_flags
from sparsegnn_jax.sparsity.validation import check_sparsity, is_concrete

PyTree = Any

__all__ = ["DISTRIBUTIONS", "ALIASES", "check_distribution", "layer_densities", "keep_counts",
           "erdos_renyi_densities", "erdos_renyi_densities_traced", "with_fixed_layers"]

DISTRIBUTIONS = ("uniform", "uniform_dense_first", "erk", "er")

# Accepted names (case-insensitive) and the distribution each one means.
ALIASES = {
    "uniform": "uniform",
    "uniform_dense_first": "uniform_dense_first",
    "erk": "erk",
    "erdos_renyi_kernel": "erk",
    "er": "er",
    "erdos_renyi": "er",
}


def _prunable_shapes(params: PyTree, filter_fn) -> dict:
    """``{path: shape}`` of prunable leaves in flattening order."""
    paths, leaves, _ = flatten_with_paths(params)
    flags = prunable_flags(paths, leaves, filter_fn)
    return {p: tuple(np.shape(leaf)) for p, leaf, f in zip(paths, leaves, flags) if f}


def erdos_renyi_densities(shapes: Mapping[str, tuple], sparsity: float,
                          include_kernel: bool = True, power_scale: float = 1.0) -> dict:
    """Erdos-Renyi(-Kernel) per-layer densities for concrete shapes and sparsity.

    Mirrors RigL's ``get_sparsities_erdos_renyi``: with ``n_zeros_l = floor(S * N_l)``, find
    ``eps`` with ``sum_l eps * p_l * N_l = sum_l (N_l - n_zeros_l)`` over the non-dense layers
    minus the extra non-zeros of dense ones; while ``eps * max p_l > 1`` make the layers with
    the largest raw probability dense and solve again.

    Args:
      shapes: ``{path: shape}`` of the layers to distribute over.
      sparsity: concrete float in ``[0, 1)``.
      include_kernel: True for ERK (``p = sum(shape) / prod(shape)``), False for ER
        (``p = (n_in + n_out) / (n_in * n_out)`` from the last two dimensions).
      power_scale: exponent applied to the ERK raw probability (RigL's ``erk_power_scale``).

    Returns:
      ``{path: density}`` as Python floats.
    """
    sizes = {p: int(np.prod(s)) for p, s in shapes.items()}
    raw = {}
    for p, s in shapes.items():
        if sizes[p] == 0:
            continue  # Empty leaves carry no weights; they stay "dense".
        raw[p] = _raw_probability(s, sizes[p], include_kernel, power_scale)

    dense: set[str] = set()
    eps = 0.0
    while True:
        divisor = 0.0
        rhs = 0.0
        for p, n in sizes.items():
            if p not in raw:
                continue
            n_zeros = int(np.floor(sparsity * n))
            if p in dense:
                rhs -= n_zeros
            else:
                rhs += n - n_zeros
                divisor += raw[p] * n
        live = [raw[p] for p in raw if p not in dense]
        if not live:
            break
        eps = rhs / divisor
        max_prob = max(live)
        if max_prob * eps > 1.0:
            dense.update(p for p in raw if p not in dense and raw[p] == max_prob)
        else:
            break
    return {
        p: (1.0 if (p in dense or p not in raw) else eps * raw[p]) for p in shapes
    }


def _raw_probability(shape, size: int, include_kernel: bool, power_scale: float) -> float:
    """The unscaled Erdos-Renyi(-Kernel) density of one non-empty layer."""
    if include_kernel or len(shape) < 2:
        return (float(np.sum(shape)) / size) ** power_scale
    n_in, n_out = shape[-2:]
    return (n_in + n_out) / (n_in * n_out)


def erdos_renyi_densities_traced(shapes: Mapping[str, tuple], sparsity,
                                 include_kernel: bool = True) -> dict:
    """:func:`erdos_renyi_densities` for a traced sparsity (``jit`` / ``vmap`` over a grid).

    The solve's dense sets are nested - each round adds the layers with the largest raw
    probability - so every candidate set is known from the static shapes; ``eps`` is computed
    for each and the first candidate whose largest live density is <= 1 is kept, as the
    concrete loop does.

    Args:
      shapes: ``{path: shape}`` of the layers to distribute over.
      sparsity: a scalar in ``[0, 1)``, possibly traced.
      include_kernel: True for ERK, False for ER.

    Returns:
      ``{path: density}`` as float32 jnp scalars.
    """
    sizes = {p: int(np.prod(s)) for p, s in shapes.items()}
    raw = {p: _raw_probability(s, sizes[p], include_kernel, 1.0)
           for p, s in shapes.items() if sizes[p] > 0}
    sparsity = jnp.asarray(sparsity, jnp.float32)
    zeros = {p: jnp.floor(sparsity * sizes[p]) for p in raw}
    # Start from "every layer dense" (the concrete loop's end when no layer stays live) and
    # let earlier candidates override later ones, so the first valid candidate wins.
    chosen = {p: jnp.ones((), jnp.float32) for p in shapes}
    levels = sorted(set(raw.values()), reverse=True)
    for k in reversed(range(len(levels))):
        live = [p for p in raw if raw[p] <= levels[k]]
        dense = [p for p in raw if raw[p] > levels[k]]
        rhs = (sum(sizes[p] - zeros[p] for p in live)
               - sum((zeros[p] for p in dense), jnp.zeros((), jnp.float32)))
        eps = rhs / sum(raw[p] * sizes[p] for p in live)
        valid = eps * levels[k] <= 1.0
        chosen = {p: jnp.where(valid, eps * raw[p] if p in live else 1.0, chosen[p])
                  if p in raw else chosen[p] for p in shapes}
    return chosen


def check_distribution(distribution):
    """Validates a ``distribution`` argument.

    Args:
      distribution: a name of :data:`ALIASES` (any case) or a ``{path: sparsity}`` dict.

    Returns:
      The canonical name (one of :data:`DISTRIBUTIONS`), or the dict unchanged.

    Raises:
      ValueError: for an unknown name, or a dict entry outside ``[0, 1)`` (named
        ``distribution[path]``).
    """
    if isinstance(distribution, Mapping):
        return check_sparsity(distribution, "distribution")
    if not isinstance(distribution, str) or distribution.lower() not in ALIASES:
        raise ValueError(
            f"distribution must be one of {list(DISTRIBUTIONS)} or a {{path: sparsity}} "
            f"dict, got {distribution!r}"
        )
    return ALIASES[distribution.lower()]


def layer_densities(params: PyTree, sparsity, distribution="uniform", filter_fn=None) -> dict:
    """Density (fraction kept) of every prunable layer.

    Args:
      params: any parameter pytree (NNX ``State``, Linen dict, plain dict).
      sparsity: global target sparsity in ``[0, 1)``, concrete or traced (a traced ERK / ER
        solve is float32, see :func:`erdos_renyi_densities_traced`). Ignored when
        ``distribution`` is a dict.
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a dict
        ``{path: sparsity}`` (unlisted prunable layers stay dense).
      filter_fn: chooses prunable leaves (default ``masks.default_filter``).

    Returns:
      ``{path: density}`` over prunable layers in flattening order; Python floats for
      concrete inputs, jnp scalars when traced.

    Raises:
      ValueError: on a sparsity outside ``[0, 1)``, an unknown distribution, or a dict key
        that names no prunable layer.
    """
    shapes = _prunable_shapes(params, filter_fn)

    if isinstance(distribution, Mapping):
        unknown = sorted(k for k in distribution if k not in shapes)
        if unknown:
            raise ValueError(
                f"distribution names no prunable layer for {unknown}; valid paths: "
                f"{list(shapes)}"
            )
        out = {}
        for p in shapes:
            if p in distribution:
                s = check_sparsity(distribution[p], f"distribution[{p!r}]")
                out[p] = 1.0 - float(s) if is_concrete(s) else 1.0 - jnp.asarray(s)
            else:
                out[p] = 1.0
        return out

    name = check_distribution(distribution)
    check_sparsity(sparsity, "sparsity")

    if name in ("uniform", "uniform_dense_first"):
        if is_concrete(sparsity) and np.ndim(sparsity) == 0:
            density = 1.0 - float(sparsity)
        else:
            density = 1.0 - jnp.asarray(sparsity)
        out = {p: density for p in shapes}
        if name == "uniform_dense_first" and out:
            out[next(iter(out))] = 1.0
        return out

    if not is_concrete(sparsity):
        return erdos_renyi_densities_traced(shapes, sparsity, include_kernel=(name == "erk"))
    return erdos_renyi_densities(shapes, float(sparsity), include_kernel=(name == "erk"))


def keep_counts(params: PyTree, sparsity, distribution="uniform", filter_fn=None) -> PyTree:
    """Exact number of weights each leaf keeps.

    ``keep_count(size, density)`` per prunable leaf (at least one weight per non-empty
    layer), the full size for non-prunable leaves.

    Args:
      params: any parameter pytree.
      sparsity: global target sparsity (see :func:`layer_densities`).
      distribution: see :func:`layer_densities`.
      filter_fn: chooses prunable leaves (default ``masks.default_filter``).

    Returns:
      A pytree with the structure of ``params`` holding int32 scalars (NumPy for concrete
      inputs, jnp when traced).
    """
    densities = layer_densities(params, sparsity, distribution, filter_fn)
    paths, leaves, treedef = flatten_with_paths(params)
    counts = []
    for p, leaf in zip(paths, leaves):
        size = int(np.size(leaf))
        if p in densities:
            k = keep_count(size, densities[p])
            counts.append(np.int32(k) if isinstance(k, int) else k)
        else:
            counts.append(np.int32(size))
    return jax.tree_util.tree_unflatten(treedef, counts)


def with_fixed_layers(shapes: Mapping[str, tuple], sparsity, distribution,
                      fixed: Mapping[str, Any]) -> dict:
    """A ``{path: sparsity}`` distribution in which the ``fixed`` layers keep their sparsity
    and ``distribution`` splits ``sparsity`` over the other layers alone.

    So a fixed layer (an explicit per-layer sparsity, the edge-weight leaf at its edge
    sparsity) is never redistributed: ERK does not scale it, ``uniform_dense_first`` does not
    count it as the first layer.

    Args:
      shapes: ``{path: shape}`` of every prunable layer, in flattening order.
      sparsity: the global sparsity of the other layers (may be traced).
      distribution: how it is split over them (a name of :data:`DISTRIBUTIONS`).
      fixed: ``{path: sparsity}`` of the fixed layers (values may be traced).

    Returns:
      ``{path: sparsity}`` over ``shapes``, in its order.

    Raises:
      ValueError: a ``fixed`` path that is not in ``shapes``.
    """
    unknown = [p for p in fixed if p not in shapes]
    if unknown:
        raise ValueError(f"with_fixed_layers: {', '.join(unknown)} not among the prunable "
                         f"layers {', '.join(shapes)}")
    rest = {p: jax.ShapeDtypeStruct(shape, jnp.float32) for p, shape in shapes.items()
            if p not in fixed}
    densities = layer_densities(rest, sparsity, distribution, filter_fn=lambda path, leaf: True)
    return {p: fixed[p] if p in fixed else 1.0 - densities[p] for p in shapes}
