"""Forward FLOPs of a Flax NNX model, counted from its weight shapes and mask densities.

A table maps module types to *counters*; :func:`count` looks a module's type up along its MRO
(so subclasses inherit their base's counter) and walks into the children of modules it has no
counter for (containers: ``Encoder``, ``MLP``, ``nnx.List``, ...). Built-in layers are listed in
``_COUNTERS`` below; :func:`register_counter` adds a layer type of your own.

A counter is ``counter(module, path, inputs, tally) -> None``: it adds the module's FLOPs for
inputs of sizes ``inputs`` (:class:`InputSizes`) to ``tally`` (:class:`FlopsTally`) under the
module path ``path``, and calls :func:`count` on any children it wants counted.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax
import jraph
import numpy as np
from flax import nnx

from sparsegnn_jax import graphs as _graphs
from sparsegnn_jax import models
from sparsegnn_jax.flops.formulas import (
    gat_layer_flops,
    gcn_layer_flops,
    gin_layer_flops,
    linear_flops,
    sage_layer_flops,
)
from sparsegnn_jax.flops.report import FlopsReport
from sparsegnn_jax.sparsity import masks as masks_lib

__all__ = [
    "InputSizes",
    "FlopsTally",
    "LayerCounter",
    "join_path",
    "register_counter",
    "counter_for",
    "count",
    "count_children",
    "mask_densities",
    "forward",
    "inference",
]


class InputSizes(NamedTuple):
    """Sizes a forward pass depends on: rows of dense layers, graph sizes, pairs scored."""

    rows: int          # rows seen by dense layers at this point (nodes, batch, or pairs)
    num_nodes: int     # N of the graph (0 without a graph)
    num_edges: int     # stored edges E of the graph, padding and self loops included
    num_pairs: int     # P pairs scored by a link decoder (0 when none)
    width: int         # feature width of the graph's nodes / the batch (0 if unknown)
    edge_leaf: str = ""    # path of the encoder's edge-weight leaf gating the edges ("" none)
    gated_edges: int = 0   # how many of the E edges that leaf gates (its first entries)


class FlopsTally:
    """Collects per-layer FLOPs and per-weight dense FLOPs while a model is counted.

    Attributes:
      densities: ``{weight path: density}``; weights without an entry are dense.
      per_layer: ``{module path: FLOPs}`` at those densities.
      weight_flops: ``{weight path: dense FLOPs}``.
    """

    def __init__(self, densities: Mapping[str, float]):
        self.densities = densities
        self.per_layer: dict[str, float] = {}
        self.weight_flops: dict[str, float] = {}

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


def join_path(*parts) -> str:
    """``"/"``-joined path of the non-empty ``parts`` (the top-level module's path is ``""``)."""
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


# The one place that says how each layer type is counted. Types without an entry (containers:
# Encoder, NodeClassifier, MLP, nnx.List, Identity, ...) are walked into: their children see the
# same rows; embedding tables and other leaves cost no arithmetic.
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
}


def register_counter(layer_type: type, counter: LayerCounter) -> None:
    """Counts modules of ``layer_type`` (and its subclasses) with ``counter`` from now on.

    Replaces any counter registered for exactly that type, the library's included.

    Args:
      layer_type: an ``nnx.Module`` subclass.
      counter: ``counter(module, path, inputs, tally)``: adds the module's FLOPs with
        ``tally.add(path, fixed_flops, {weight path: dense flops})`` (weight paths as
        :func:`mask_densities` names them, e.g. ``join_path(path, "kernel")``), and calls
        :func:`count` on children it wants counted.

    Raises:
      TypeError: ``layer_type`` is not a class or ``counter`` is not callable.
    """
    if not isinstance(layer_type, type):
        raise TypeError(f"register_counter: `layer_type` must be a class, got {layer_type!r}")
    if not callable(counter):
        raise TypeError(f"register_counter: `counter` must be callable, got {counter!r}")
    _COUNTERS[layer_type] = counter


def counter_for(module_type: type) -> LayerCounter:
    """The counter of the nearest class in ``module_type``'s MRO that has one, else
    :func:`count_children`."""
    for cls in module_type.__mro__:
        if cls in _COUNTERS:
            return _COUNTERS[cls]
    return count_children


def count_children(module, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    """Counts every child module of ``module`` on the same inputs."""
    for key, child in nnx.iter_children(module):
        if isinstance(child, nnx.Module):
            count(child, join_path(path, key), inp, tally)


def count(module, path: str, inp: InputSizes, tally: FlopsTally) -> None:
    """Adds the FLOPs of ``module`` applied to inputs of sizes ``inp`` to ``tally``.

    Raises:
      ValueError: a message-passing layer is given inputs without a graph.
    """
    if isinstance(module, models.MESSAGE_PASSING_LAYERS) and inp.num_nodes == 0:
        raise ValueError(f"forward: the message-passing layer {type(module).__name__} at "
                         f"{path or 'the top level'!r} needs a jraph.GraphsTuple input, got a "
                         "batch without a graph")
    counter_for(type(module))(module, path, inp, tally)


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


def forward(model, graph_or_batch, masks=None, *, densities=None) -> FlopsReport:
    """Forward FLOPs of ``model`` on ``graph_or_batch``, per layer and in total.

    Walks the NNX module tree: GCN / SAGE / GAT / GIN layers count their products and message
    aggregation on the graph's ``N`` nodes and ``E`` stored edges (an ``Encoder`` with an
    edge-weight leaf: the per-edge terms of the edges it gates scale with the leaf's density,
    in every layer, and are reported as that leaf's ``weight_flops``); ``Linear`` layers (of MLPs,
    node heads and link decoders) count ``rows`` products plus bias adds, where rows are the
    graph's nodes, the batch rows, or the scored pairs inside a ``LinkPredictor``'s decoder.
    Layer types of your own are counted by a :func:`register_counter` counter. See
    :mod:`sparsegnn_jax.flops` for the convention.

    Args:
      model: a Flax NNX module built from the library's layers (``sg.models.build(...)``, ``MLP``,
        ``LinkPredictor``, ``NodeClassifier``, a single layer, or any container of them).
      graph_or_batch: a ``jraph.GraphsTuple`` (message passing, node classification); a tuple
        ``(graph, pairs)`` with ``pairs`` ``[P, 2]`` or an int ``P`` (link prediction); an array
        ``[batch, features]`` or an int batch size (MLPs).
      masks: a masks pytree with the structure of ``nnx.split(model, nnx.Param, ...)[1]``; each
        weight then costs its mask's density times its dense cost. None: dense.
      densities: alternatively ``{weight path: density}`` (e.g. ``masks.layer_sparsity``
        converted to densities); weights without an entry are dense.

    Returns:
      :class:`FlopsReport` with ``per_layer`` keyed by module path (``"encoder/layers/0"``,
      ``"layers/1"``, ``"decoder"``), ``total``, ``weight_flops`` and ``densities``.

    Raises:
      ValueError: masks or densities name weights the model does not have, or a LinkPredictor
        is given no pairs.
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
    weight_flops = {p: tally.weight_flops.get(p, 0.0) for p in known}
    weight_flops.update(tally.weight_flops)
    used = {p: tally.density(p) for p in weight_flops}
    per_layer = {name or type(model).__name__: f for name, f in tally.per_layer.items()}
    return FlopsReport(per_layer=per_layer, total=float(sum(per_layer.values())),
                       weight_flops=weight_flops, densities=used)


def inference(model, graph_or_batch, masks=None, *, densities=None) -> float:
    """Inference FLOPs: one forward pass of the (sparse) model on ``graph_or_batch``.

    Pass one example (``x`` of shape ``[1, features]``, a batch size of 1, one graph, or
    ``(graph, 1)`` for one scored pair on top of encoding the graph) for per-example FLOPs.

    Args:
      model, graph_or_batch, masks, densities: as for :func:`forward`.

    Returns:
      ``forward(...).total``.
    """
    return forward(model, graph_or_batch, masks, densities=densities).total
