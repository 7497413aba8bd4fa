"""Analytic FLOPs of forward passes and whole training runs, from weight shapes and mask densities.

Convention
----------
* A matrix product ``[B, n] @ [n, m]`` costs ``2 * B * n * m`` FLOPs: one multiply and one add per
  multiply-accumulate (MAC). FLOPs = 2 x MACs.
* A sparse weight matrix costs its density times the dense cost (``density * 2 * B * n * m``): only
  the kept weights are multiplied. Density is the fraction of True entries of the layer's mask.
* A bias add costs one FLOP per output element; it never scales with density (biases are not
  pruned).
* Message aggregation costs one FLOP per edge per feature for each elementwise step, counted per
  layer type: GCN one normalisation multiply and one sum add per edge and output feature; SAGE
  one sum add per edge and input feature plus one division per node and feature for the mean;
  GAT, per head, the attention logits (two dot products per node, one add per edge), the
  softmax (max, subtract, sum and divide per edge; the exponential is a transcendental and is
  left out, as XLA reports it apart) and the weighting (multiply + add per edge and feature);
  GIN one sum add per edge and input feature, ``(1 + eps) * x + sum`` per node and feature, then
  its MLP. The exact counts are in the ``*_layer_flops`` functions below.
* Link decoders cost per pair: the dot decoder ``2 * d``; the MLP decoder its combine step
  (``d`` multiplies for the Hadamard mode, nothing for concatenation) and its MLP.
* Left out: activations (ReLU, LeakyReLU, sigmoid, log-softmax), dropout, the exponentials of the
  softmax, gather / scatter / embedding look-ups (memory traffic, not arithmetic), and graph
  normalisation constants such as GCN's ``D^-1/2 A D^-1/2`` coefficients, computed once per graph.
* Training (Evci et al. 2020, "Rigging the Lottery", appendix H): one step costs ``3 f`` - the
  forward pass ``f`` plus a backward pass of ``2 f`` (gradients w.r.t. activations and w.r.t.
  weights). A dense step costs ``3 f_D``, a sparse one ``3 f_S``. A RigL mask update step needs
  the dense weight gradient, so it costs ``2 f_S + f_D``; with an update every ``dT`` steps this
  averages ``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` per step. SET regrows at random and costs
  ``3 f_S``. ADMM / SLR train dense during their dense and penalty phases (``3 f_D``) and sparse
  during retraining (``3 f_S``). Gradual magnitude pruning sums ``3 f(density_t)`` over its steps.

Every forward pass cost is affine in the layer densities:
``f(d) = fixed + sum_p d_p * weight_flops[p]`` where ``p`` runs over weight paths (the same path
strings as ``sparsegnn_jax.masks.layer_sparsity``, e.g. ``"encoder/layers/0/kernel"``) and
``fixed`` collects everything that does not shrink with sparsity (biases, aggregation,
softmax). :class:`FlopsReport` stores both parts, so one dense report gives the cost at any
density (:func:`at_densities`), which is what :func:`training` integrates over a run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np

__all__ = [
    "FlopsReport",
    "linear_flops",
    "mlp_flops",
    "gcn_layer_flops",
    "sage_layer_flops",
    "gat_layer_flops",
    "gin_layer_flops",
    "forward",
    "inference",
    "at_densities",
    "mask_densities",
    "rigl_step_flops",
    "training",
    "training_from_trace",
    "METHODS",
]


# ---------------------------------------------------------------------------------------------
# Reports.


@dataclasses.dataclass(frozen=True)
class FlopsReport:
    """Forward FLOPs of one pass, per layer and in total.

    Attributes:
      per_layer: ``{module path: FLOPs}`` at the densities the report was made with, e.g.
        ``{"layers/0": 4224.0, "layers/1": 258.0}``; the values sum to ``total``.
      total: FLOPs of the whole forward pass.
      weight_flops: ``{weight path: dense FLOPs}``: the FLOPs of the products with that weight
        matrix when it is dense (density 1). These are the terms that scale with density.
      densities: ``{weight path: density}`` used for this report (1.0 everywhere when dense).
    """

    per_layer: Mapping[str, float]
    total: float
    weight_flops: Mapping[str, float] = dataclasses.field(default_factory=dict)
    densities: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def fixed(self) -> float:
        """FLOPs that do not depend on any weight density (biases, aggregation, softmax)."""
        return self.total - sum(self.densities.get(p, 1.0) * f for p, f in self.weight_flops.items())

    @property
    def dense_total(self) -> float:
        """Total FLOPs of the same pass with every weight matrix dense."""
        return self.fixed + sum(self.weight_flops.values())


def at_densities(report: FlopsReport | Mapping[str, float] | float,
                 densities: Mapping[str, float] | float | None = None) -> float:
    """Forward FLOPs of the pass described by ``report`` when the weights have ``densities``.

    Args:
      report: a :class:`FlopsReport` (its ``fixed`` part stays, its ``weight_flops`` scale); or a
        dict ``{weight path: dense FLOPs}`` whose entries all scale with their path's density; or
        a float: dense FLOPs that all scale with one density.
      densities: ``{weight path: density}``, a single density for every weight, or None for the
        report's own densities (dense for a dict or a float).

    Returns:
      FLOPs as a float (a NumPy array when densities are arrays, e.g. from a vmapped sweep).
    """
    fixed, weights = _affine_parts(report)
    if densities is None:
        densities = report.densities if isinstance(report, FlopsReport) else 1.0
    if isinstance(report, (int, float)) and isinstance(densities, Mapping):
        raise ValueError("at_densities: `densities` must be a single number when `report` is a "
                         "float (a dict of densities needs per-weight FLOPs to weight them)")
    dens = _density_map(weights, densities, "densities")
    total = fixed
    for path, flops in weights.items():
        total = total + dens[path] * flops
    return total


def _affine_parts(report) -> tuple[float, dict[str, float]]:
    """(fixed FLOPs, {path: dense FLOPs scaling with that path's density})."""
    if isinstance(report, FlopsReport):
        return report.fixed, dict(report.weight_flops)
    if isinstance(report, Mapping):
        return 0.0, {str(k): float(v) for k, v in report.items()}
    if isinstance(report, (int, float, np.floating, np.integer)):
        return 0.0, {"": float(report)}
    raise ValueError(f"expected a FlopsReport, a dict {{path: FLOPs}} or a number, got "
                     f"{type(report).__name__}")


def _density_map(weights: Mapping[str, float], densities, name: str) -> dict[str, Any]:
    """Per-weight densities; a number applies to every weight. Unknown paths are an error."""
    if not isinstance(densities, Mapping):
        return {p: densities for p in weights}
    unknown = sorted(set(densities) - set(weights))
    if unknown:
        raise ValueError(f"`{name}` names weights the model does not have: {unknown}; known "
                         f"weights: {sorted(weights)}")
    # Weights without an entry were not pruned (excluded by the filter): dense.
    return {p: densities.get(p, 1.0) for p in weights}


# ---------------------------------------------------------------------------------------------
# Layer arithmetic: closed-form counts, also usable without a model (e.g. for planning).


def linear_flops(rows: int, in_dim: int, out_dim: int, density: float = 1.0,
                 bias: bool = False) -> float:
    """FLOPs of ``x @ W (+ b)`` for ``x`` of shape ``[rows, in_dim]``.

    Args:
      rows: number of input rows (batch size, nodes, pairs).
      in_dim: input width.
      out_dim: output width.
      density: fraction of nonzero entries of ``W``.
      bias: whether a bias is added (``rows * out_dim`` FLOPs, independent of density).

    Returns:
      ``density * 2 * rows * in_dim * out_dim + (rows * out_dim if bias else 0)``.
    """
    return density * 2.0 * rows * in_dim * out_dim + (float(rows * out_dim) if bias else 0.0)


def mlp_flops(rows: int, dims, densities=None, bias: bool = True) -> float:
    """FLOPs of an MLP ``dims[0] -> dims[1] -> ... -> dims[-1]`` on ``rows`` inputs.

    Args:
      rows: number of inputs.
      dims: layer widths including input and output, e.g. ``(16, 128, 1)``.
      densities: None (dense), one density for every layer, or one per weight matrix.
      bias: whether every layer adds a bias.

    Returns:
      Sum of :func:`linear_flops` over the layers (activations are not counted).
    """
    dims = list(dims)
    n = len(dims) - 1
    if n < 1:
        raise ValueError(f"mlp_flops: `dims` needs at least two widths, got {dims}")
    if densities is None:
        densities = [1.0] * n
    elif isinstance(densities, (int, float)):
        densities = [float(densities)] * n
    densities = list(densities)
    if len(densities) != n:
        raise ValueError(f"mlp_flops: `densities` has {len(densities)} entries for {n} layers")
    return sum(linear_flops(rows, dims[i], dims[i + 1], densities[i], bias) for i in range(n))


def gcn_layer_flops(num_nodes: int, num_edges: int, in_dim: int, out_dim: int,
                    density: float = 1.0, bias: bool = True) -> float:
    """FLOPs of one GCN layer ``A_hat (X W) + b`` on a graph with ``num_edges`` edges.

    ``num_edges`` counts every stored edge, self loops included. Per edge and output feature: one
    multiply by the normalisation coefficient and one add into the receiver's sum.

    Returns:
      ``density * 2 N F_in F_out + 2 E F_out + (N F_out if bias)``.
    """
    return (linear_flops(num_nodes, in_dim, out_dim, density, bias)
            + 2.0 * num_edges * out_dim)


def sage_layer_flops(num_nodes: int, num_edges: int, in_dim: int, out_dim: int,
                     density_self: float = 1.0, density_neigh: float = 1.0,
                     bias: bool = True) -> float:
    """FLOPs of one GraphSAGE-mean layer ``X W_self + mean_{j in N(i)} x_j W_neigh + b``.

    The mean: one add per edge and input feature into the receiver's sum, one division per node
    and input feature. Then two products and the add combining them.

    Returns:
      ``E F_in + N F_in + (d_s + d_n) 2 N F_in F_out + N F_out + (N F_out if bias)``.
    """
    return (float(num_edges * in_dim + num_nodes * in_dim)
            + linear_flops(num_nodes, in_dim, out_dim, density_self)
            + linear_flops(num_nodes, in_dim, out_dim, density_neigh)
            + float(num_nodes * out_dim) + (float(num_nodes * out_dim) if bias else 0.0))


def gat_layer_flops(num_nodes: int, num_edges: int, in_dim: int, out_dim: int, heads: int = 1,
                    density: float = 1.0, bias: bool = True, concat: bool = True) -> float:
    """FLOPs of one GAT layer with ``heads`` heads of width ``out_dim`` each.

    Terms: the projection ``X W`` to ``heads * out_dim``; per node and head the two attention
    dot products ``a_src . h`` and ``a_dst . h`` (2 out_dim each); per edge and head the logit sum
    (1), the softmax's max, subtract, sum and divide (4; the exponential is a transcendental, left
    out); per edge, head and feature the weighting multiply and the sum add (2); when heads are
    averaged (``concat=False``) one add per node, head and feature plus a divide per node and
    feature.

    Returns:
      The sum of those terms plus a bias add per output element.
    """
    hf = heads * out_dim
    proj = linear_flops(num_nodes, in_dim, hf, density)
    attn = 2.0 * 2.0 * num_nodes * hf  # attention vectors are 1-D, never pruned
    edge = float(num_edges * heads * 5 + num_edges * hf * 2)
    out_width = hf if concat else out_dim
    merge = 0.0 if concat else float(num_nodes * hf)
    return proj + attn + edge + merge + (float(num_nodes * out_width) if bias else 0.0)


def gin_layer_flops(num_nodes: int, num_edges: int, dims, densities=None,
                    bias: bool = True) -> float:
    """FLOPs of one GIN layer ``MLP((1 + eps) x + sum_{j in N(i)} x_j)``.

    The sum: one add per edge and input feature; the combine: a multiply and an add per node and
    input feature; then the MLP of widths ``dims`` on every node.

    Returns:
      ``E F_in + 2 N F_in + mlp_flops(N, dims, densities, bias)``.
    """
    f_in = dims[0]
    return (float(num_edges * f_in + 2 * num_nodes * f_in)
            + mlp_flops(num_nodes, dims, densities, bias))


# ---------------------------------------------------------------------------------------------
# Masks -> densities.


def _key_str(entry) -> str | None:
    """One path component as a string; None for the `.value` of an nnx Variable."""
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return None if entry.name == "value" else str(entry.name)
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def mask_densities(masks) -> dict[str, float]:
    """``{weight path: density}`` of every mask leaf with ndim >= 2.

    Args:
      masks: a masks pytree (same structure as the params of ``nnx.split(model, nnx.Param,
        ...)``, bool leaves), an nnx State, a Linen dict or a plain dict of arrays.

    Returns:
      Path strings joined by ``/`` (``"layers/0/kernel"``, as ``masks.layer_sparsity`` names
      them) mapped to the fraction of True entries.
    """
    out = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(masks)[0]:
        arr = np.asarray(leaf)
        if arr.ndim < 2:
            continue
        path = "/".join(s for s in (_key_str(k) for k in keypath) if s is not None)
        out[path] = float(arr.astype(bool).mean())
    return out


# ---------------------------------------------------------------------------------------------
# Walking a model.


class _Inputs(NamedTuple):
    """Sizes a forward pass depends on: rows of dense layers, graph sizes, pairs scored."""

    rows: int          # rows seen by dense layers at this point (nodes, batch, or pairs)
    num_nodes: int     # N of the graph (0 without a graph)
    num_edges: int     # stored edges E of the graph, padding and self loops included
    num_pairs: int     # P pairs scored by a link decoder (0 when none)
    width: int         # feature width of the graph's nodes / the batch (0 if unknown)


class _Counter:
    """Collects per-layer FLOPs and per-weight dense FLOPs while walking a model."""

    def __init__(self, densities: Mapping[str, float]):
        self.densities = densities
        self.per_layer: dict[str, float] = {}
        self.weight_flops: dict[str, float] = {}

    def density(self, path: str) -> float:
        return float(self.densities.get(path, 1.0))

    def add(self, layer: str, fixed: float, weights: Mapping[str, float] = ()) -> None:
        """Adds ``fixed`` FLOPs plus, per weight path, its dense FLOPs times its density."""
        weights = dict(weights)
        total = float(fixed)
        for path, dense in weights.items():
            self.weight_flops[path] = self.weight_flops.get(path, 0.0) + float(dense)
            total += self.density(path) * float(dense)
        self.per_layer[layer] = self.per_layer.get(layer, 0.0) + total


def _join(*parts) -> str:
    return "/".join(str(p) for p in parts if p != "")


def _kernel_dims(param) -> tuple[int, int]:
    shape = np.shape(param[...]) if hasattr(param, "__getitem__") else np.shape(param)
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D kernel, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _has_bias(module) -> bool:
    return getattr(module, "bias", None) is not None


def _is_linear(module) -> bool:
    """A dense layer ``x @ kernel (+ bias)``: the library's Linear or ``nnx.Linear``."""
    from flax import nnx

    from sparsegnn_jax import models

    return isinstance(module, (models.Linear, nnx.Linear))


def _count_linear(module, path: str, inp: _Inputs, counter: _Counter) -> None:
    f_in, f_out = _kernel_dims(module.kernel)
    counter.add(path, inp.rows * f_out if _has_bias(module) else 0.0,
                {_join(path, "kernel"): linear_flops(inp.rows, f_in, f_out)})


def _count_gcn(layer, path, inp: _Inputs, counter: _Counter) -> None:
    f_in, f_out = _kernel_dims(layer.kernel)
    n = inp.num_nodes
    edges = inp.num_edges + (n if getattr(layer, "add_self_loops", False) else 0)
    fixed = gcn_layer_flops(n, edges, f_in, f_out, density=0.0, bias=_has_bias(layer))
    counter.add(path, fixed, {_join(path, "kernel"): linear_flops(n, f_in, f_out)})


def _count_sage(layer, path, inp: _Inputs, counter: _Counter) -> None:
    f_in, f_out = _kernel_dims(layer.lin_self.kernel)
    n = inp.num_nodes
    fixed = sage_layer_flops(n, inp.num_edges, f_in, f_out, 0.0, 0.0,
                             bias=_has_bias(layer.lin_neigh) or _has_bias(layer.lin_self))
    counter.add(path, fixed, {_join(path, "lin_self", "kernel"): linear_flops(n, f_in, f_out),
                              _join(path, "lin_neigh", "kernel"): linear_flops(n, f_in, f_out)})


def _count_gat(layer, path, inp: _Inputs, counter: _Counter) -> None:
    f_in, width = _kernel_dims(layer.kernel)
    heads = int(layer.heads)
    n = inp.num_nodes
    fixed = gat_layer_flops(n, inp.num_edges, f_in, width // heads, heads, density=0.0,
                            bias=_has_bias(layer), concat=bool(layer.concat))
    counter.add(path, fixed, {_join(path, "kernel"): linear_flops(n, f_in, width)})


def _count_gin(layer, path, inp: _Inputs, counter: _Counter) -> None:
    f_in, f_hidden = _kernel_dims(layer.lin1.kernel)
    _, f_out = _kernel_dims(layer.lin2.kernel)
    n = inp.num_nodes
    fixed = gin_layer_flops(n, inp.num_edges, (f_in, f_hidden, f_out), densities=0.0,
                            bias=False)
    fixed += (n * f_hidden if _has_bias(layer.lin1) else 0.0) + (
        n * f_out if _has_bias(layer.lin2) else 0.0)
    counter.add(path, fixed, {_join(path, "lin1", "kernel"): linear_flops(n, f_in, f_hidden),
                              _join(path, "lin2", "kernel"): linear_flops(n, f_hidden, f_out)})


def _output_width(encoder, inp: _Inputs) -> int:
    """Width of the node embeddings an encoder produces (for the link decoders)."""
    for attr in ("out_dim", "out_features"):
        if isinstance(getattr(encoder, attr, None), int):
            return int(getattr(encoder, attr))
    return inp.width  # Identity: the graph's own node features


def _count_link_predictor(model, path, inp: _Inputs, counter: _Counter) -> None:
    if inp.num_pairs <= 0:
        raise ValueError("forward: a LinkPredictor needs the scored pairs: pass "
                         "graph_or_batch=(graph, pairs) with pairs [P, 2] or an int P")
    _count(model.encoder, _join(path, "encoder"), inp, counter)
    width = _output_width(model.encoder, inp)
    pair_inp = inp._replace(rows=inp.num_pairs, width=width)
    _count_decoder(model.decoder, _join(path, "decoder"), pair_inp, counter)


def _count_decoder(decoder, path, inp: _Inputs, counter: _Counter) -> None:
    from sparsegnn_jax import models

    p, d = inp.rows, inp.width
    if isinstance(decoder, models.DotDecoder):
        # One multiply and one add per pair and feature.
        counter.add(path, 2.0 * p * d)
        return
    if isinstance(decoder, models.MLPDecoder):
        # Hadamard: one multiply per pair and feature; concatenation is memory traffic only.
        if decoder.mode == "hadamard":
            counter.add(path, float(p * d))
    _count_children(decoder, path, inp, counter)


def _count_children(module, path: str, inp: _Inputs, counter: _Counter) -> None:
    from flax import nnx

    for key, child in nnx.iter_children(module):
        if isinstance(child, nnx.Module):
            _count(child, _join(path, key), inp, counter)


def _count(module, path: str, inp: _Inputs, counter: _Counter) -> None:
    """Adds the FLOPs of ``module`` applied to inputs of sizes ``inp``."""
    from sparsegnn_jax import models

    if isinstance(module, models.MESSAGE_PASSING_LAYERS) and inp.num_nodes == 0:
        raise ValueError(f"forward: the message-passing layer {type(module).__name__} at "
                         f"{path or 'the top level'!r} needs a jraph.GraphsTuple input, got a "
                         "batch without a graph")
    if isinstance(module, models.GCNConv):
        _count_gcn(module, path, inp, counter)
    elif isinstance(module, models.SAGEConv):
        _count_sage(module, path, inp, counter)
    elif isinstance(module, models.GATConv):
        _count_gat(module, path, inp, counter)
    elif isinstance(module, models.GINConv):
        _count_gin(module, path, inp, counter)
    elif _is_linear(module):
        _count_linear(module, path, inp, counter)
    elif isinstance(module, models.LinkPredictor):
        _count_link_predictor(module, path, inp, counter)
    elif isinstance(module, (models.DotDecoder, models.MLPDecoder)):
        _count_decoder(module, path, inp, counter)
    else:
        # Containers (Encoder, NodeClassifier, MLP, nnx.List, Identity, ...): their children see
        # the same rows; embedding tables and other leaves cost no arithmetic.
        _count_children(module, path, inp, counter)


def _parse_inputs(graph_or_batch) -> _Inputs:
    """Sizes of ``graph_or_batch``: a GraphsTuple, (graph, pairs), an array batch or an int."""
    import jraph

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
            nodes = jax.tree.leaves(data.nodes)[0]
            n, width = int(nodes.shape[0]), int(nodes.shape[-1]) if nodes.ndim > 1 else 1
        else:
            n, width = int(np.sum(np.asarray(data.n_node))), 0
        e = int(np.shape(data.senders)[0])
        return _Inputs(rows=n, num_nodes=n, num_edges=e, num_pairs=pairs, width=width)
    if isinstance(data, (int, np.integer)):
        return _Inputs(rows=int(data), num_nodes=0, num_edges=0, num_pairs=pairs, width=0)
    shape = np.shape(data)
    if len(shape) < 1:
        raise ValueError(f"forward: `graph_or_batch` must be a GraphsTuple, (graph, pairs), an "
                         f"array [batch, features] or an int batch size; got {type(data).__name__}")
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return _Inputs(rows=rows, num_nodes=0, num_edges=0, num_pairs=pairs, width=int(shape[-1]))


def _param_paths(model) -> list[str]:
    """Paths of every >= 2-D ``nnx.Param`` of ``model`` (the prunable weights by default)."""
    from flax import nnx

    _, params, _ = nnx.split(model, nnx.Param, ...)
    return list(mask_densities(jax.tree.map(lambda x: np.ones(np.shape(x), bool), params)))


def forward(model, graph_or_batch, masks=None, *, densities=None) -> FlopsReport:
    """Forward FLOPs of ``model`` on ``graph_or_batch``, per layer and in total.

    Walks the NNX module tree: GCN / SAGE / GAT / GIN layers count their products and message
    aggregation on the graph's ``N`` nodes and ``E`` stored edges; ``Linear`` layers (of MLPs,
    node heads and link decoders) count ``rows`` products plus bias adds, where rows are the
    graph's nodes, the batch rows, or the scored pairs inside a ``LinkPredictor``'s decoder. See
    the module docstring for the convention.

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
    counter = _Counter(dens)
    _count(model, "", _parse_inputs(graph_or_batch), counter)
    weight_flops = {p: counter.weight_flops.get(p, 0.0) for p in known}
    weight_flops.update(counter.weight_flops)
    used = {p: counter.density(p) for p in weight_flops}
    per_layer = {name or type(model).__name__: f for name, f in counter.per_layer.items()}
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


# ---------------------------------------------------------------------------------------------
# Training runs.

METHODS = ("dense", "static", "one_shot", "gmp", "admm", "slr", "set", "rigl")
_ALIASES = {"static_sparse": "static", "set_": "set", "gradual_magnitude": "gmp",
            "oneshot": "one_shot"}


def rigl_step_flops(f_sparse, f_dense, update_every: int):
    """Average FLOPs of one RigL training step while mask updates run.

    Every ``update_every`` (dT) steps the update step computes the dense weight gradient, costing
    ``2 f_S + f_D`` instead of ``3 f_S`` (Evci et al. 2020, appendix H).

    Args:
      f_sparse: forward FLOPs of the sparse network.
      f_dense: forward FLOPs of the dense network.
      update_every: dT, steps between mask updates (>= 1).

    Returns:
      ``(3 f_S dT + 2 f_S + f_D) / (dT + 1)``.
    """
    if update_every < 1:
        raise ValueError(f"rigl_step_flops: `update_every` must be >= 1, got {update_every}")
    return (3.0 * f_sparse * update_every + 2.0 * f_sparse + f_dense) / (update_every + 1.0)


def _gmp_sparsity(step, final, begin_step, end_step, every, initial, power):
    """Zhu & Gupta (2017) sparsity in force during `step` (NumPy, vectorised over steps).

    The mask changes at steps ``begin_step + k * every`` (up to ``end_step``); between changes the
    sparsity of the latest change holds; before ``begin_step`` the network is dense.
    """
    step = np.asarray(step)
    last = begin_step + np.floor((step - begin_step) / every) * every
    last = np.minimum(last, end_step)
    if end_step == begin_step:
        progress = np.where(last >= end_step, 1.0, 0.0)
    else:
        progress = np.clip((last - begin_step) / (end_step - begin_step), 0.0, 1.0)
    s = final + (initial - final) * (1.0 - progress) ** power
    return np.where(step < begin_step, 0.0, s)


def training(method: str, steps: int, dense_forward, density=1.0, *, trace=None,
             update_every: int | None = None, end_step: int | None = None,
             dense_steps: int = 0, penalty_steps: int = 0, prune_step: int | None = None,
             begin_step: int = 0, every: int = 1, initial_sparsity: float = 0.0,
             power: float = 3.0,
             schedule: Callable[[Any], Any] | None = None) -> float:
    """Total training FLOPs of a run of ``steps`` steps with a sparsity method.

    Args:
      method: one of ``dense``, ``static``, ``one_shot``, ``gmp``, ``admm``, ``slr``, ``set``,
        ``rigl`` (the CLI's ``--method`` names; ``static_sparse``, ``set_`` and
        ``gradual_magnitude`` are accepted too).
      steps: number of training steps (batches) in the run.
      dense_forward: forward FLOPs of one step's batch with dense weights: a dense
        :class:`FlopsReport` from :func:`forward`; a dict ``{weight path: FLOPs}`` (every entry
        scales with its density); or a float (all of it scales with ``density``).
      density: the target density (1 - sparsity) of the sparse phases: a float, or
        ``{weight path: density}``.
      trace: a ``SparsityTrace`` recorded by the method (``sparsegnn_jax.get_trace(state)``); when
        given the run's recorded densities are used (:func:`training_from_trace`) and the config
        arguments below are ignored.
      update_every: RigL's dT (required for ``rigl``).
      end_step: ``rigl``: no mask updates from this step on (None: updates for the whole run);
        ``gmp``: step at which the final sparsity is reached (required).
      dense_steps: ``admm`` / ``slr``: steps of the dense phase.
      penalty_steps: ``admm`` / ``slr``: steps of the penalty phase (dense weights too);
        retraining, sparse, takes the remaining ``steps - dense_steps - penalty_steps``.
      prune_step: ``one_shot``: the step at which the dense network is pruned (required).
      begin_step: ``gmp``: first pruning step.
      every: ``gmp``: steps between pruning steps.
      initial_sparsity: ``gmp``: sparsity at ``begin_step``.
      power: ``gmp``: exponent of the polynomial schedule (3 in Zhu & Gupta 2017).
      schedule: ``gmp``: optional callable ``step -> sparsity in force during that step``
        (vectorised over an array of steps, e.g. a ``sparsegnn_jax.schedules`` schedule)
        replacing the polynomial one; every weight then follows it (``density``, ``begin_step``,
        ``every`` and ``end_step`` are unused).

    Returns:
      Total FLOPs of the run (forward and backward passes of every step; RigL's dense-gradient
      steps included).

    Raises:
      ValueError: unknown method, missing method argument, or inconsistent phase lengths.
    """
    if trace is not None:
        return training_from_trace(dense_forward, trace)
    name = _ALIASES.get(method, method)
    if name not in METHODS:
        raise ValueError(f"training: unknown `method` {method!r}; expected one of {METHODS}")
    if steps < 0:
        raise ValueError(f"training: `steps` must be >= 0, got {steps}")
    f_dense = at_densities(dense_forward, 1.0)
    f_sparse = at_densities(dense_forward, density)

    if name == "dense":
        return 3.0 * f_dense * steps
    if name in ("static", "set"):
        return 3.0 * f_sparse * steps
    if name == "rigl":
        if update_every is None:
            raise ValueError("training: method 'rigl' needs `update_every` (dT)")
        updating = steps if end_step is None else min(max(end_step, 0), steps)
        return (updating * rigl_step_flops(f_sparse, f_dense, update_every)
                + 3.0 * f_sparse * (steps - updating))
    if name in ("admm", "slr"):
        dense_phase = dense_steps + penalty_steps
        if dense_steps < 0 or penalty_steps < 0 or dense_phase > steps:
            raise ValueError(f"training: {name} phases dense_steps={dense_steps} + penalty_steps="
                             f"{penalty_steps} must be >= 0 and fit in steps={steps}")
        return 3.0 * f_dense * dense_phase + 3.0 * f_sparse * (steps - dense_phase)
    if name == "one_shot":
        if prune_step is None:
            raise ValueError("training: method 'one_shot' needs `prune_step`")
        before = min(max(prune_step, 0), steps)
        return 3.0 * f_dense * before + 3.0 * f_sparse * (steps - before)
    # gmp
    t = np.arange(steps)
    fixed, weights = _affine_parts(dense_forward)
    if schedule is not None:
        s = np.asarray(schedule(t), dtype=np.float64)
        return float(3.0 * np.sum(fixed + (1.0 - s) * sum(weights.values())))
    if end_step is None:
        raise ValueError("training: method 'gmp' needs `end_step` (or a `schedule`)")
    if every < 1:
        raise ValueError(f"training: `every` must be >= 1, got {every}")
    dens = _density_map(weights, density, "density")
    total = 3.0 * fixed * steps
    for path, flops in weights.items():
        s = _gmp_sparsity(t, 1.0 - dens[path], begin_step, end_step, every, initial_sparsity,
                          power)
        total += 3.0 * flops * float(np.sum(1.0 - s))
    return float(total)


def training_from_trace(dense_forward, *args, densities=None):
    """Total training FLOPs of a run from the density trace its sparsity method recorded.

    Call as ``training_from_trace(dense_forward, trace)`` or, to count the model's dense forward
    pass on the fly, ``training_from_trace(model, graph_or_batch, trace)``.

    ``sum_p 3 weight_flops[p] * density_steps[p] + 3 fixed * steps
    + mask_updates * (f_D - f_S)``: every step costs three forward passes at that step's
    densities, and each RigL mask update step adds the dense weight gradient in place of the
    sparse one. The trace keeps only the sum of densities over steps, not the density at each
    update, so ``f_S`` of the update steps is approximated by ``densities`` (the final masks'
    densities, e.g. ``mask_densities(get_masks(state))``) or, when None, by the run's mean density
    per weight (``density_steps / steps``). RigL keeps densities constant, so for it the result
    is exact either way.

    Args:
      dense_forward: a dense :class:`FlopsReport`, a dict ``{weight path: dense FLOPs}``, or a
        float (a single weight path ``""``: only usable with a trace of one weight); or an NNX
        model, followed by its ``graph_or_batch`` (as for :func:`forward`).
      *args: ``trace``, or ``graph_or_batch, trace`` after a model. ``trace`` is a
        ``SparsityTrace`` (``steps``, ``density_steps`` ``{path: float}``, ``mask_updates``);
        fields may be JAX or NumPy arrays, batched (vmapped) ones included.
      densities: densities for the mask-update correction, see above.

    Returns:
      Total FLOPs (a float, or a NumPy array for a batched trace). Weights the trace does not
      list (excluded from pruning) count as dense on every step.
    """
    from flax import nnx

    if isinstance(dense_forward, nnx.Module):
        if len(args) != 2:
            raise ValueError("training_from_trace: with a model, pass (model, graph_or_batch, "
                             f"trace); got {1 + len(args)} positional arguments")
        dense_forward = forward(dense_forward, args[0])
        args = args[1:]
    if len(args) != 1:
        raise ValueError("training_from_trace: pass (dense_forward, trace); got "
                         f"{1 + len(args)} positional arguments")
    trace = args[0]
    fixed, weights = _affine_parts(dense_forward)
    steps = np.asarray(trace.steps, dtype=np.float64)
    updates = np.asarray(trace.mask_updates, dtype=np.float64)
    recorded = {str(p): np.asarray(v, dtype=np.float64) for p, v in trace.density_steps.items()}
    if list(weights) == [""] and len(recorded) == 1:
        weights = {next(iter(recorded)): weights[""]}
    unknown = sorted(set(recorded) - set(weights))
    if unknown:
        raise ValueError(f"training_from_trace: the trace records weights that `dense_forward` "
                         f"does not have: {unknown}; known weights: {sorted(weights)}")
    safe_steps = np.maximum(steps, 1.0)
    if densities is None:
        dens = {p: recorded[p] / safe_steps if p in recorded else 1.0 for p in weights}
    else:
        dens = _density_map(weights, densities, "densities")
    total = 3.0 * fixed * steps
    correction = 0.0
    for path, flops in weights.items():
        total = total + 3.0 * flops * recorded.get(path, steps)
        correction = correction + (1.0 - dens[path]) * flops
    total = total + updates * correction
    return float(total) if np.ndim(total) == 0 else total
