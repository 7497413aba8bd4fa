"""Sparsity: pure mask functions, sparsity distributions, schedules, and every prune / regrow
method as an optax transformation wrapping an inner optimizer.

Methods: :func:`dense`, :func:`static_sparse`, :func:`one_shot`, :func:`gradual_magnitude`,
:func:`admm`, :func:`slr`, :func:`set_`, :func:`rigl`; by name with :func:`sparsifier`. The masks
and the run's :class:`SparsityTrace` are read back with :func:`get_masks` / :func:`get_trace`.

Modules: ``masks`` (mask pytrees), ``distributions`` (per-layer sparsities), ``schedules``,
``topk`` (exact top-k, drop and grow on one array), ``trees`` (layer paths, prunable filters,
pure views, structure checks), ``validation`` (argument checks), ``transform`` (the optax
transformation every method is built from, with its extension point ``transform.Rule``), and one
module per method family: ``pruning``, ``dst``, ``admm``.
"""
from sparsegnn_jax.sparsity import distributions, masks, schedules
from sparsegnn_jax.sparsity.admm import AdmmState, SlrState, admm, slr
from sparsegnn_jax.sparsity.dst import rigl, set_
from sparsegnn_jax.sparsity.pruning import (
    GmpState,
    dense,
    gradual_magnitude,
    one_shot,
    static_sparse,
)
from sparsegnn_jax.sparsity.registry import METHODS, sparsifier
from sparsegnn_jax.sparsity.transform import (
    SparsityState,
    SparsityTrace,
    find_state,
    get_masks,
    get_trace,
)

__all__ = [
    "AdmmState", "GmpState", "METHODS", "SlrState", "SparsityState", "SparsityTrace", "admm",
    "dense", "distributions", "find_state", "get_masks", "get_trace", "gradual_magnitude", "masks",
    "one_shot", "rigl", "schedules", "set_", "slr", "sparsifier", "static_sparse",
]
