"""Forward FLOPs of a Flax NNX model, counted from its weight shapes and mask densities.

A table maps module types to *counters*; :func:`count` looks a module's type up along its MRO
(so subclasses inherit their base's counter). Built-in layers are listed in ``_COUNTERS`` below,
with the library's containers (``MLP``, ``NodeClassifier``, ``nnx.List``, ...) counted by
:func:`count_children`: a container's own code does no arithmetic, its children's FLOPs are its
FLOPs. :func:`register_counter` adds a module type of your own.

A module type with no counter is reported, not guessed at: its children are still counted, but
whatever its own code computes (an aggregation written inline in ``__call__``) is not, so
``flops.forward`` warns (:class:`UncountedModuleWarning`), or raises with ``strict=True``
(:class:`UncountedModuleError`), naming its path and type.

A counter is ``counter(module, path, inputs, tally) -> None``: it adds the module's FLOPs for
inputs of sizes ``inputs`` (:class:`InputSizes`; sizes only, never the graph or the arrays) to
``tally`` (:class:`FlopsTally`) under the module path ``path``, and calls :func:`count` (or
:func:`count_children`) on any children it wants counted.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np
from flax import nnx

from sparsegnn_jax import models
from sparsegnn_jax.flops.formulas import (
    gat_layer_flops,
    gcn_layer_flops,
    gin_layer_flops,
    linear_flops,
    sage_layer_flops,
)

__all__ = [
    "InputSizes",
    "FlopsTally",
    "LayerCounter",
    "UncountedModuleError",
    "UncountedModuleWarning",
    "join_path",
    "register_counter",
    "counter_for",
    "count",
    "count_children",
]


class InputSizes(NamedTuple):
    """The sizes a counter sees: what a forward pass's FLOPs depend on, not the inputs.

    ``flops.forward`` reads them from its ``graph_or_batch`` once; a counter passes them (or a
    ``_replace``-d copy, e.g. other ``rows`` for a decoder's layers) down to its children.

    Attributes:
      rows: rows seen by dense layers at this point: the graph's nodes, the batch rows, or the
        scored pairs inside a link predictor's decoder.
      num_nodes: ``N``, nodes of the graph (0 without a graph).
      num_edges: ``E``, stored edges of the graph (``len(graph.senders)``: padding and self
        loops included).
      num_pairs: ``P``, pairs scored by a link decoder (0 when none).
      width: feature width of the graph's nodes or of the batch (0 if unknown); inside a link
        predictor's decoder, the encoder's output width.
      edge_leaf: path of the encoder's edge-weight leaf gating the edges ("" when none).
      gated_edges: how many of the ``E`` edges that leaf gates (its first entries).
    """

    rows: int
    num_nodes: int
    num_edges: int
    num_pairs: int
    width: int
    edge_leaf: str = ""
    gated_edges: int = 0


class FlopsTally:
    """Collects per-layer FLOPs and per-weight dense FLOPs while a model is counted.

    Attributes:
      densities: ``{weight path: density}``; weights without an entry are dense.
      per_layer: ``{module path: FLOPs}`` at those densities.
      weight_flops: ``{weight path: dense FLOPs}``.
      uncounted: ``"path (type)"`` of the modules no counter knows (:func:`count` lists them).
      counted_outside: ``"path (type)"`` of the modules counted by a counter registered with
        :func:`register_counter` (named first when the count disagrees with XLA's).
    """

    def __init__(self, densities: Mapping[str, float]):
        self.densities = densities
        self.per_layer: dict[str, float] = {}
        self.weight_flops: dict[str, float] = {}
        self.uncounted: list[str] = []
        self.counted_outside: list[str] = []

    def density(self, path: str) -> float:
        """Density of the weight at ``path`` (1.0 when it has no entry)."""
        return float(self.densities.get(path, 1.0))

    def add(self, layer: str, fixed: float, weights: Mapping[str, float] = ()) -> None:
        """Adds ``fixed`` FLOPs plus, per weight path, its dense FLOPs times its density.

        Args:
          layer: the module path the FLOPs belong to.
          fixed: FLOPs that do not scale with any density (biases, aggregation).
          weights: ``{weight path: FLOPs of its products when dense}``.
        """
        weights = dict(weights)
        total = float(fixed)
        for path, dense in weights.items():
            self.weight_flops[path] = self.weight_flops.get(path, 0.0) + float(dense)
            total += self.density(path) * float(dense)
        self.per_layer[layer] = self.per_layer.get(layer, 0.0) + total


LayerCounter = Callable[[nnx.Module, str, InputSizes, FlopsTally], None]


class UncountedModuleWarning(UserWarning):
    """A module type with no FLOP counter: its own operations are missing from the count."""


class UncountedModuleError(TypeError):
    """``flops.forward`` with ``strict=True`` met a module type with no FLOP counter."""


def join_path(*parts) -> str:
    """``"/"``-joined path of the non-empty ``parts`` (the top-level module's path is ``""``).

    ``join_path(path, "kernel")`` names a counter's weight as the masks name it
    (``"layers/0/kernel"``); ``join_path("", "lin1")`` is ``"lin1"``.
    """
    return "/".join(str(p) for p in parts if p != "")


def _kernel_dims(param) -> tuple[int, int]:
    shape = np.shape(param[...]) if hasattr(param, "__getitem__") else np.shape(param)
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D kernel, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _has_bias(module) -> bool:
    return getattr(module, "bias", None) is not None


# ---------------------------------------------------------------------------------------------
# Counters of the library's layers.


def _count_linear(module, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    f_in, f_out = _kernel_dims(module.kernel)
    tally.add(path, inp.rows * f_out if _has_bias(module) else 0.0,
              {join_path(path, "kernel"): linear_flops(inp.rows, f_in, f_out)})


def _add_message_passing(tally: FlopsTally, path: str, inp: InputSizes, layer_flops,
                         edges: int, weights: Mapping[str, float]) -> None:
    """Adds a message-passing layer whose fixed FLOPs on ``e`` edges are ``layer_flops(e)``.

    The per-edge part (``layer_flops(edges) - layer_flops(0)``, linear in the edges) of the
    edges the encoder's edge-weight leaf gates is that leaf's dense cost, so it scales with the
    leaf's density like a weight's products; the rest stays fixed.
    """
    fixed = layer_flops(edges)
    weights = dict(weights)
    gated = min(inp.gated_edges, edges) if inp.edge_leaf else 0
    if gated:
        per_edge = (fixed - layer_flops(0)) / edges
        fixed -= per_edge * gated
        weights[inp.edge_leaf] = per_edge * gated
    tally.add(path, fixed, weights)


def _count_gcn(layer, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    f_in, f_out = _kernel_dims(layer.kernel)
    n = inp.num_nodes
    edges = inp.num_edges + (n if getattr(layer, "add_self_loops", False) else 0)
    _add_message_passing(
        tally, path, inp,
        lambda e: gcn_layer_flops(n, e, f_in, f_out, density=0.0, bias=_has_bias(layer)),
        edges, {join_path(path, "kernel"): linear_flops(n, f_in, f_out)})


def _count_sage(layer, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    f_in, f_out = _kernel_dims(layer.lin_self.kernel)
    n = inp.num_nodes
    bias = _has_bias(layer.lin_neigh) or _has_bias(layer.lin_self)
    _add_message_passing(
        tally, path, inp, lambda e: sage_layer_flops(n, e, f_in, f_out, 0.0, 0.0, bias=bias),
        inp.num_edges,
        {join_path(path, "lin_self", "kernel"): linear_flops(n, f_in, f_out),
         join_path(path, "lin_neigh", "kernel"): linear_flops(n, f_in, f_out)})


def _count_gat(layer, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    f_in, width = _kernel_dims(layer.kernel)
    heads = int(layer.heads)
    n = inp.num_nodes
    _add_message_passing(
        tally, path, inp,
        lambda e: gat_layer_flops(n, e, f_in, width // heads, heads, density=0.0,
                                  bias=_has_bias(layer), concat=bool(layer.concat)),
        inp.num_edges, {join_path(path, "kernel"): linear_flops(n, f_in, width)})


def _count_gin(layer, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    f_in, f_hidden = _kernel_dims(layer.lin1.kernel)
    _, f_out = _kernel_dims(layer.lin2.kernel)
    n = inp.num_nodes
    biases = (n * f_hidden if _has_bias(layer.lin1) else 0.0) + (
        n * f_out if _has_bias(layer.lin2) else 0.0)
    _add_message_passing(
        tally, path, inp,
        lambda e: gin_layer_flops(n, e, (f_in, f_hidden, f_out), densities=0.0,
                                  bias=False) + biases,
        inp.num_edges,
        {join_path(path, "lin1", "kernel"): linear_flops(n, f_in, f_hidden),
         join_path(path, "lin2", "kernel"): linear_flops(n, f_hidden, f_out)})


def _count_encoder(encoder, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    # Its layers see the edges its edge-weight leaf gates (if it has one).
    if getattr(encoder, "edge_weight", None) is not None:
        inp = inp._replace(edge_leaf=join_path(path, models.EDGE_WEIGHT),
                           gated_edges=int(encoder.num_edges))
    count_children(encoder, path, inp, tally)


def _output_width(encoder, inp: InputSizes) -> int:
    """Width of the node embeddings an encoder produces (for the link decoders)."""
    for attr in ("out_dim", "out_features"):
        if isinstance(getattr(encoder, attr, None), int):
            return int(getattr(encoder, attr))
    return inp.width  # Identity: the graph's own node features


def _count_link_predictor(model, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    if inp.num_pairs <= 0:
        raise ValueError("forward: a LinkPredictor needs the scored pairs: pass "
                         "graph_or_batch=(graph, pairs) with pairs [P, 2] or an int P")
    count(model.encoder, join_path(path, "encoder"), inp, tally)
    # The decoder's dense layers see one row per scored pair, of the encoder's output width.
    pair_inp = inp._replace(rows=inp.num_pairs, width=_output_width(model.encoder, inp))
    count(model.decoder, join_path(path, "decoder"), pair_inp, tally)


def _count_dot_decoder(decoder, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    # One multiply and one add per pair and feature.
    tally.add(path, 2.0 * inp.rows * inp.width)


def _count_mlp_decoder(decoder, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    # Hadamard: one multiply per pair and feature; "pair" adds a subtraction (abs is an
    # activation, not counted); concatenation is memory traffic only.
    if decoder.mode == "hadamard":
        tally.add(path, float(inp.rows * inp.width))
    elif decoder.mode == "pair":
        tally.add(path, 2.0 * inp.rows * inp.width)
    count_children(decoder, path, inp, tally)


def count_children(module, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    """Counts every child module of ``module`` on the same inputs.

    As a counter (``register_counter(T, count_children)``) it declares ``T`` a module whose own
    code does no arithmetic: a container of counted modules, a lookup, a dropout.
    """
    for key, child in nnx.iter_children(module):
        if isinstance(child, nnx.Module):
            count(child, join_path(path, key), inp, tally)


# The one place that says how each module type is counted. Containers and modules whose own code
# does no arithmetic by the convention (identity, lookups, dropout) are walked into with
# count_children: their children see the same rows. A type with no entry is reported
# (UncountedModuleWarning), its children still counted.
_COUNTERS: dict[type, LayerCounter] = {
    models.Encoder: _count_encoder,
    models.GCNConv: _count_gcn,
    models.SAGEConv: _count_sage,
    models.GATConv: _count_gat,
    models.GINConv: _count_gin,
    models.Linear: _count_linear,
    nnx.Linear: _count_linear,
    models.LinkPredictor: _count_link_predictor,
    models.DotDecoder: _count_dot_decoder,
    models.MLPDecoder: _count_mlp_decoder,
    models.MLP: count_children,
    models.NodeClassifier: count_children,
    models.Identity: count_children,
    models.ColdStartDropout: count_children,
    nnx.List: count_children,
    nnx.Dict: count_children,
    nnx.Sequential: count_children,
    nnx.Dropout: count_children,
    nnx.Embed: count_children,
}
# The library's own entries, to tell them from counters registered by users.
_LIBRARY_COUNTERS = dict(_COUNTERS)


def register_counter(layer_type: type, counter: LayerCounter) -> None:
    """Counts modules of ``layer_type`` (and its subclasses) with ``counter`` from now on.

    Replaces any counter registered for exactly that type, the library's included. Without one,
    ``flops.forward`` warns about (or, ``strict=True``, refuses) a module of a type it does not
    know, since whatever that module's own code computes would be missing from the count.

    The counter is called as ``counter(module, path, inputs, tally)`` with

    - ``module``: the module instance (read its weight shapes, e.g.
      ``module.lin1.kernel.shape``, and its settings);
    - ``path``: its module path in the model, ``"/"``-joined (``""`` for the top level);
    - ``inputs``: an :class:`InputSizes` - sizes, not the graph: ``inputs.num_nodes``,
      ``inputs.num_edges``, ``inputs.rows``, ``inputs.num_pairs``, ``inputs.width``;
    - ``tally``: the :class:`FlopsTally` to add to.

    It adds the module's own FLOPs with ``tally.add(name, fixed_flops, {weight path: dense
    flops})``, where ``name`` is the per-layer entry (``path``, or ``join_path(path, "agg")``
    for a part of it), ``fixed_flops`` what does not shrink with sparsity (aggregation, biases)
    and each weight path (``join_path(path, "kernel")``, as :func:`mask_densities` names it)
    maps to the FLOPs of its products when dense; and it counts the children it wants counted
    with :func:`count_children` (all of them) or :func:`count` (one, possibly with other
    ``inputs``). ``register_counter(T, count_children)`` declares ``T`` a container whose own
    code does no arithmetic. Example (a model whose ``__call__`` sums neighbour messages between
    two ``nnx.Linear``)::

        def count_sum_gnn(module, path, inputs, tally):
            hidden = module.lin1.out_features
            tally.add(join_path(path, "aggregate"), inputs.num_edges * hidden)  # an add per edge
            count_children(module, path, inputs, tally)  # lin1, lin2: the library's counter

        register_counter(SumGNN, count_sum_gnn)

    Raises:
      TypeError: ``layer_type`` is not a class or ``counter`` is not callable.
    """
    if not isinstance(layer_type, type):
        raise TypeError(f"register_counter: `layer_type` must be a class, got {layer_type!r}")
    if not callable(counter):
        raise TypeError(f"register_counter: `counter` must be callable, got {counter!r}")
    _COUNTERS[layer_type] = counter


def _registered(module_type: type) -> tuple[Optional[type], Optional[LayerCounter]]:
    """The nearest class in ``module_type``'s MRO with a counter, and that counter."""
    for cls in module_type.__mro__:
        if cls in _COUNTERS:
            return cls, _COUNTERS[cls]
    return None, None


def counter_for(module_type: type) -> Optional[LayerCounter]:
    """The counter of the nearest class in ``module_type``'s MRO that has one, else None."""
    return _registered(module_type)[1]


def _describe(module, path: str) -> str:
    return f"{path or '<top level>'} ({type(module).__module__}.{type(module).__qualname__})"


def count(module, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    """Adds the FLOPs of ``module`` applied to inputs of sizes ``inp`` to ``tally``.

    A module whose type has no counter is listed in ``tally.uncounted`` and its children are
    counted (``flops.forward`` then warns or raises).

    Raises:
      ValueError: a message-passing layer is given inputs without a graph.
    """
    if isinstance(module, models.MESSAGE_PASSING_LAYERS) and inp.num_nodes == 0:
        raise ValueError(f"forward: the message-passing layer {type(module).__name__} at "
                         f"{path or 'the top level'!r} needs a jraph.GraphsTuple input, got a "
                         "batch without a graph")
    cls, counter = _registered(type(module))
    if counter is None:
        tally.uncounted.append(_describe(module, path))
        count_children(module, path, inp, tally)
        return
    if _LIBRARY_COUNTERS.get(cls) is not counter:
        tally.counted_outside.append(_describe(module, path))
    counter(module, path, inp, tally)
