"""Sparsity: pure mask functions, sparsity distributions, schedules, and every prune / regrow
method as an optax transformation wrapping an inner optimizer.

Methods: :func:`dense`, :func:`static_sparse`, :func:`one_shot`, :func:`gradual_magnitude`,
:func:`admm`, :func:`slr`, :func:`sparse_evolutionary` (SET; also ``set_``), :func:`rigl`,
:func:`snip`, and the lottery methods :func:`imp` and :func:`ugs` (one round each; the
rounds are ``sparsegnn_jax.rounds``); by
name with :func:`sparsifier` (registry names or factory names). The masks and the run's
:class:`SparsityTrace` are read back with :func:`get_masks` / :func:`get_trace`.
:func:`mask_sparsity` and :func:`param_sparsity` measure masks and parameters.

The package itself is not callable: ``sparsity(masks)`` raises a ``TypeError`` naming
:func:`mask_sparsity`.

Modules: ``masks`` (mask pytrees), ``distributions`` (per-layer sparsities), ``schedules``,
``structure`` (N:M structured masks: :class:`NM`, :func:`nm_mask`),
``topk`` (exact top-k, drop and grow on one array), ``trees`` (layer paths, prunable filters,
pure views, structure checks), ``validation`` (argument checks), ``transform`` (the optax
transformation every method is built from), ``custom`` (:func:`sparse_method`, the public way to
write a new method from two rules on pytrees, see its contract), ``checks`` (where a method
may stand, keep counts; :func:`method_errors` unwraps a failed check under ``jit``), and one
module per method family: ``pruning``, ``dst`` (with :func:`drop_grow`, RigL's and SET's update
on pytrees), ``admm``, ``snip``, ``lottery`` (IMP's rounds: next masks, rewinding) and ``ugs``.
"""
import sys
import types

from sparsegnn_jax.sparsity import distributions, masks, schedules, structure
from sparsegnn_jax.sparsity.admm import AdmmState, SlrState, admm, slr
from sparsegnn_jax.sparsity.custom import MaskContext, sparse_method
from sparsegnn_jax.sparsity.dst import drop_grow, rigl, set_, sparse_evolutionary
from sparsegnn_jax.sparsity.lottery import imp
from sparsegnn_jax.sparsity.masks import ParamSparsity, param_sparsity
from sparsegnn_jax.sparsity.masks import sparsity as mask_sparsity
from sparsegnn_jax.sparsity.pruning import (
    GmpState,
    dense,
    gradual_magnitude,
    one_shot,
    static_sparse,
)
from sparsegnn_jax.sparsity.registry import METHODS, sparsifier
from sparsegnn_jax.sparsity.snip import snip
from sparsegnn_jax.sparsity.structure import NM, nm_mask
from sparsegnn_jax.sparsity.ugs import ugs
from sparsegnn_jax.sparsity.transform import (
    SparsityState,
    SparsityTrace,
    find_state,
    get_masks,
    get_trace,
)
from sparsegnn_jax.sparsity.validation import MethodError, method_errors

__all__ = [
    "AdmmState", "GmpState", "METHODS", "MaskContext", "MethodError", "NM", "ParamSparsity", "SlrState",
    "SparsityState", "SparsityTrace", "admm", "dense", "distributions", "drop_grow",
    "find_state", "get_masks", "get_trace", "gradual_magnitude", "imp", "mask_sparsity", "masks",
    "method_errors", "nm_mask", "one_shot", "param_sparsity", "rigl", "schedules", "set_", "slr",
    "snip", "sparse_evolutionary", "sparse_method", "sparsifier", "static_sparse", "structure",
    "ugs",
]


class _SparsityPackage(types.ModuleType):
    """This package's module type: calling it explains which function was meant."""

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "sparsegnn_jax.sparsity is a package, not a function: for the fraction of pruned "
            "weights of a mask pytree call sparsegnn_jax.mask_sparsity(masks) (the same as "
            "sparsegnn_jax.masks.sparsity), and to count the zeros of parameters "
            "sparsegnn_jax.param_sparsity(params)")


sys.modules[__name__].__class__ = _SparsityPackage
