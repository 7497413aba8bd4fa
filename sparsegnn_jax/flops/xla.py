"""XLA's own FLOP count of a forward pass, to check the analytic count against.

XLA's ``cost_analysis()`` of the compiled forward pass counts every arithmetic operation the
program runs, the ones the analytic convention leaves out included: activations (one or two
FLOPs per element), the index arithmetic of gathers and scatters (a few FLOPs per edge) and
normalisation constants a layer recomputes on every call. So XLA's count is a little above a
right analytic count, by more when the graph has many edges per feature and most with attention
(five gathers, three segment reductions and a LeakyReLU per edge and head); an operation a
counter misses shows up as a larger gap. :data:`TOLERANCE` and :data:`ATTENTION_TOLERANCE` are
the gaps :func:`check` accepts (README, "FLOPs").
"""
from __future__ import annotations

import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import nnx

from sparsegnn_jax import models

__all__ = ["ATTENTION_TOLERANCE", "FlopsMismatchWarning", "TOLERANCE", "call_args", "check",
           "default_tolerance", "xla_forward"]

#: Largest relative gap between the dense analytic count and XLA's that :func:`check` accepts
#: for a model without attention. Measured for GCN, SAGE and GIN (hidden 32, 4 to 64 input
#: features, 5 to 29 stored edges per node): 0.7% to 9.3%, the largest at 4 features and 29
#: edges per node; the MLPs, decoders and node heads: below 1% beyond their ReLUs.
TOLERANCE = 0.10
#: The same for a model with GAT layers: 3.5% to 18.6% measured on the same graphs (1 head at 4
#: features and 29 edges per node the largest).
ATTENTION_TOLERANCE = 0.20


class FlopsMismatchWarning(UserWarning):
    """The analytic forward FLOPs and XLA's differ by more than the tolerance."""


def xla_forward(model, *args, **kwargs) -> Optional[float]:
    """FLOPs XLA counts in the compiled forward pass ``model(*args, **kwargs)``.

    The model's state is an argument of the compiled function, so XLA cannot fold weight
    products into constants. Compiles once per call (seconds for a large model).

    Args:
      model: a Flax NNX module.
      *args, **kwargs: what the model is called with (e.g. a graph; a graph and ``[P, 2]``
        pairs for a link predictor; an array batch for an MLP).

    Returns:
      XLA's ``cost_analysis()["flops"]`` as a float; None when the backend reports no cost
      analysis.
    """
    graphdef, state = nnx.split(model)

    def apply(state, *a, **kw):
        return nnx.merge(graphdef, state)(*a, **kw)

    cost = jax.jit(apply).lower(state, *args, **kwargs).compile().cost_analysis()
    # Older jax returns a list with one dict per computation, newer a dict.
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def call_args(graph_or_batch) -> tuple:
    """The arguments a model is called with for ``flops.forward``'s ``graph_or_batch``.

    A graph: ``(graph,)``; ``(graph, pairs)``: ``(graph, pairs)``, an int ``P`` becoming ``P``
    pairs of node 0 (the pairs' values do not change the count); an array: ``(array,)``.

    Raises:
      ValueError: an int batch size (there is nothing to run a model on).
    """
    data = graph_or_batch
    if isinstance(data, tuple) and not isinstance(data, jraph.GraphsTuple):
        graph, pairs = data
        if isinstance(pairs, (int, np.integer)):
            pairs = jnp.zeros((int(pairs), 2), jnp.int32)
        return (graph, pairs)
    if isinstance(data, (int, np.integer)):
        raise ValueError("forward: check=True runs the model and needs an input array; pass "
                         "an array [batch, features] instead of the batch size")
    return (data,)


def default_tolerance(model) -> float:
    """:data:`ATTENTION_TOLERANCE` when ``model`` has a GAT layer, else :data:`TOLERANCE`."""
    attention = any(isinstance(m, models.GATConv) for _, m in nnx.iter_modules(model))
    return ATTENTION_TOLERANCE if attention else TOLERANCE


def check(model, graph_or_batch, analytic: float, tolerance: Optional[float] = None,
          suspects=()) -> Optional[float]:
    """Compares the dense analytic count with XLA's; warns when they differ by more than the
    tolerance.

    Args:
      model, graph_or_batch: as for ``flops.forward``.
      analytic: the dense analytic FLOPs of that pass.
      tolerance: the largest relative gap ``|analytic / xla - 1|`` accepted; None:
        :func:`default_tolerance`.
      suspects: ``"path (type)"`` strings of the modules to name first when they differ: those
        without a counter or counted by a counter registered outside the library.

    Returns:
      XLA's count, or None when the backend reports none (then it warns that nothing was
      checked).

    Warns:
      FlopsMismatchWarning: the gap is larger than ``tolerance``, or XLA gives no count.
    """
    tolerance = default_tolerance(model) if tolerance is None else float(tolerance)
    xla = xla_forward(model, *call_args(graph_or_batch))
    name = type(model).__name__
    if xla is None:
        warnings.warn(f"forward(check=True): XLA reports no cost analysis on the "
                      f"{jax.default_backend()} backend; the count of {name} is not checked",
                      FlopsMismatchWarning, stacklevel=3)
        return None
    gap = analytic / xla - 1 if xla else float("inf")
    if abs(gap) > tolerance:
        where = (f"modules without a library counter: {', '.join(suspects)}" if suspects else
                 "every module is counted by the library's counters: a counter misses an "
                 "operation, or the graph has so many edges per feature that XLA's index "
                 "arithmetic outweighs the tolerance")
        warnings.warn(
            f"forward: the analytic dense FLOPs of {name} ({analytic:,.0f}) differ from XLA's "
            f"cost_analysis of the same forward pass ({xla:,.0f}) by {gap:+.1%}, more than the "
            f"tolerance {tolerance:.0%}; {where}. XLA also counts activations and gather / "
            "scatter index arithmetic, which the analytic convention leaves out. Register a "
            "counter with sg.flops.register_counter(type, counter).",
            FlopsMismatchWarning, stacklevel=3)
    return xla
