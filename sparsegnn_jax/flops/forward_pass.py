"""Forward and inference FLOPs of a model on given inputs, at given weight densities.

:func:`forward` reads the sizes of its inputs once (:class:`~.counting.InputSizes`), walks the
model with the counters of :mod:`.counting`, and reports modules no counter knows; with
``check=True`` it compares the count with XLA's (:mod:`.xla`).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import jax
import jraph
import numpy as np
from flax import nnx

from sparsegnn_jax import graphs as _graphs
from sparsegnn_jax import models
from sparsegnn_jax.flops import xla
from sparsegnn_jax.flops.counting import (
    FlopsTally,
    InputSizes,
    UncountedModuleError,
    UncountedModuleWarning,
    count,
)
from sparsegnn_jax.flops.report import FlopsReport
from sparsegnn_jax.sparsity import masks as masks_lib

__all__ = ["forward", "inference", "mask_densities"]


# ---------------------------------------------------------------------------------------------
# Inputs and masks.


def _parse_inputs(graph_or_batch) -> InputSizes:
    """Sizes of ``graph_or_batch``: a GraphsTuple, (graph, pairs), an array batch or an int."""
    pairs = 0
    data = graph_or_batch
    if isinstance(data, tuple) and not isinstance(data, jraph.GraphsTuple):
        if len(data) != 2:
            raise ValueError(f"forward: `graph_or_batch` tuple must be (graph, pairs), got "
                             f"{len(data)} items")
        data, pair_arg = data
        pairs = int(pair_arg) if isinstance(pair_arg, (int, np.integer)) else int(
            np.shape(pair_arg)[0])
    if isinstance(data, jraph.GraphsTuple):
        if data.nodes is not None:
            # The dense shape also for sparse features: FLOPs are analytic over dense inputs.
            shape = _graphs.node_features_shape(data)
            n, width = int(shape[0]), int(shape[-1]) if len(shape) > 1 else 1
        else:
            n, width = int(np.sum(np.asarray(data.n_node))), 0
        e = int(np.shape(data.senders)[0])
        return InputSizes(rows=n, num_nodes=n, num_edges=e, num_pairs=pairs, width=width)
    if isinstance(data, (int, np.integer)):
        return InputSizes(rows=int(data), num_nodes=0, num_edges=0, num_pairs=pairs, width=0)
    shape = np.shape(data)
    if len(shape) < 1:
        raise ValueError(f"forward: `graph_or_batch` must be a GraphsTuple, (graph, pairs), an "
                         f"array [batch, features] or an int batch size; got {type(data).__name__}")
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return InputSizes(rows=rows, num_nodes=0, num_edges=0, num_pairs=pairs, width=int(shape[-1]))


def _prunable_leaves(tree) -> list[tuple[str, object]]:
    """``(path, leaf)`` of the leaves ``masks.layer_sparsity`` reports, named as it names them,
    and of encoders' edge-weight leaves."""
    out = []
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        path = masks_lib.path_str(keypath)
        if masks_lib.default_filter("", leaf) or models.is_edge_weight(path):
            out.append((path, leaf))
    return out


def mask_densities(masks) -> dict[str, float]:
    """``{weight path: density}`` of every mask leaf with ndim >= 2 and of every encoder's
    edge-weight leaf (its density scales the aggregation over the edges it gates).

    Args:
      masks: a masks pytree (same structure as the params of ``nnx.split(model, nnx.Param,
        ...)``, bool leaves), an nnx State, a Linen dict or a plain dict of arrays.

    Returns:
      Path strings joined by ``/`` (``"layers/0/kernel"``, as ``masks.layer_sparsity`` names
      them) mapped to the fraction of True entries.
    """
    # The exact float64 fraction, not 1 - masks.layer_sparsity(...): that sparsity is a float32
    # quotient, and 1 minus it differs from the fraction in the last bits for most layer sizes
    # (200 of 200 random masks measured), which would move every recorded FLOPs number.
    return {path: float(np.asarray(leaf).astype(bool).mean())
            for path, leaf in _prunable_leaves(masks)}


def _param_paths(model) -> list[str]:
    """Paths of every >= 2-D ``nnx.Param`` of ``model`` (the prunable weights by default) and
    of its edge-weight leaves."""
    _, params, _ = nnx.split(model, nnx.Param, ...)
    return [path for path, _ in _prunable_leaves(params)]


# ---------------------------------------------------------------------------------------------
# Forward and inference FLOPs.


def forward(model, graph_or_batch, masks=None, *, densities=None, strict: bool = False,
            check: bool = False, tolerance: Optional[float] = None) -> FlopsReport:
    """Forward FLOPs of ``model`` on ``graph_or_batch``, per layer and in total.

    Walks the NNX module tree: GCN / SAGE / GAT / GIN layers count their products and message
    aggregation on the graph's ``N`` nodes and ``E`` stored edges (an ``Encoder`` with an
    edge-weight leaf: the per-edge terms of the edges it gates scale with the leaf's density,
    in every layer, and are reported as that leaf's ``weight_flops``); ``Linear`` layers (the
    library's and ``nnx.Linear``, of MLPs, node heads and link decoders) count ``rows`` products
    plus bias adds, where rows are the graph's nodes, the batch rows, or the scored pairs inside a
    ``LinkPredictor``'s decoder. Module types of your own are counted by a
    :func:`register_counter` counter; a module type with none is named in a warning (or an
    error), never silently counted as free. See :mod:`sparsegnn_jax.flops` for the convention.

    Args:
      model: a Flax NNX module: one built from the library's layers (``sg.models.build(...)``,
        ``MLP``, ``LinkPredictor``, ``NodeClassifier``, a single layer, or any container of
        them), or your own with counters registered for its module types.
      graph_or_batch: a ``jraph.GraphsTuple`` (message passing, node classification); a tuple
        ``(graph, pairs)`` with ``pairs`` ``[P, 2]`` or an int ``P`` (link prediction); an array
        ``[batch, features]`` or an int batch size (MLPs).
      masks: a masks pytree with the structure of ``nnx.split(model, nnx.Param, ...)[1]``; each
        weight then costs its mask's density times its dense cost. None: dense.
      densities: alternatively ``{weight path: density}`` (e.g. ``masks.layer_sparsity``
        converted to densities); weights without an entry are dense.
      strict: raise :class:`UncountedModuleError` for a module type without a counter instead
        of warning.
      check: also compile the forward pass ``model(*inputs)`` and compare the dense count with
        XLA's ``cost_analysis`` (:func:`sparsegnn_jax.flops.xla_forward`), warning
        (``FlopsMismatchWarning``) when they differ by more than ``tolerance``; the report's
        ``xla_total`` holds XLA's count. Needs arrays to run on (not an int batch size).
      tolerance: the largest relative gap the check accepts; None: 10%, 20% for a model with GAT
        layers (``flops.xla.TOLERANCE``, ``ATTENTION_TOLERANCE``; README, "FLOPs").

    Returns:
      :class:`FlopsReport` with ``per_layer`` keyed by module path (``"encoder/layers/0"``,
      ``"layers/1"``, ``"decoder"``), ``total``, ``weight_flops``, ``densities``, ``uncounted``
      and ``xla_total``.

    Raises:
      ValueError: masks or densities name weights the model does not have, a LinkPredictor
        is given no pairs, or ``check`` is given an int batch size.
      UncountedModuleError: ``strict`` and a module type has no counter.

    Warns:
      UncountedModuleWarning: a module type has no counter (not ``strict``); the message names
        each such module's path and type and how to register a counter.
      FlopsMismatchWarning: with ``check``, the count and XLA's differ by more than
        ``tolerance``.
    """
    if masks is not None and densities is not None:
        raise ValueError("forward: pass `masks` or `densities`, not both")
    dens = {} if masks is None else mask_densities(masks)
    if densities is not None:
        dens = {str(k): float(v) for k, v in densities.items()}
    known = _param_paths(model)
    unknown = sorted(set(dens) - set(known))
    if unknown:
        arg = "masks" if masks is not None else "densities"
        raise ValueError(f"forward: `{arg}` names weights the model does not have: {unknown}; "
                         f"model weights: {known}")
    tally = FlopsTally(dens)
    count(model, "", _parse_inputs(graph_or_batch), tally)
    if tally.uncounted:
        _report_uncounted(tally.uncounted, strict)
    weight_flops = {p: tally.weight_flops.get(p, 0.0) for p in known}
    weight_flops.update(tally.weight_flops)
    used = {p: tally.density(p) for p in weight_flops}
    per_layer = {name or type(model).__name__: f for name, f in tally.per_layer.items()}
    report = FlopsReport(per_layer=per_layer, total=float(sum(per_layer.values())),
                         weight_flops=weight_flops, densities=used,
                         uncounted=tuple(tally.uncounted))
    if check:
        xla_total = xla.check(model, graph_or_batch, report.dense_total, tolerance,
                              suspects=tally.uncounted + tally.counted_outside)
        report = dataclasses.replace(report, xla_total=xla_total)
    return report


def _report_uncounted(uncounted: list[str], strict: bool) -> None:
    message = (
        f"forward: no FLOP counter for {', '.join(uncounted)}: the operations in "
        f"{'its' if len(uncounted) == 1 else 'their'} own code (an aggregation, a product "
        "written in __call__) are not counted, only the modules inside. Register a counter "
        "with sg.flops.register_counter(ModuleType, counter), or "
        "register_counter(ModuleType, sg.flops.count_children) for a module whose own code "
        "does no arithmetic (README, \"FLOPs\").")
    if strict:
        raise UncountedModuleError(message)
    # stacklevel 3: the caller of forward (or of inference, through forward, one more).
    warnings.warn(message, UncountedModuleWarning, stacklevel=3)


def inference(model, graph_or_batch, masks=None, *, densities=None,
              strict: bool = False) -> float:
    """Inference FLOPs: one forward pass of the (sparse) model on ``graph_or_batch``.

    Pass one example (``x`` of shape ``[1, features]``, a batch size of 1, one graph, or
    ``(graph, 1)`` for one scored pair on top of encoding the graph) for per-example FLOPs.

    Args:
      model, graph_or_batch, masks, densities, strict: as for :func:`forward`.

    Returns:
      ``forward(...).total``.
    """
    return forward(model, graph_or_batch, masks, densities=densities, strict=strict).total
