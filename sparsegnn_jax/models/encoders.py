"""Node encoders: a stack of message-passing layers, and the identity for precomputed embeddings."""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import jraph
from flax import nnx

from .. import graphs as _graphs
from . import sparse_inputs
from .layers import GATConv, GCNConv, GINConv, SAGEConv, dropout

__all__ = ["EDGE_WEIGHT", "LAYER_KINDS", "NUM_STRUCTURAL_FEATURES", "ColdStartDropout",
           "CompactEdges", "Encoder", "Identity", "has_edges", "is_edge_weight",
           "structural_features"]

EDGE_WEIGHT = "edge_weight"
"""Name of the ``Encoder``'s learnable per-edge weight leaf (its path ends with it)."""


def is_edge_weight(path: str) -> bool:
    """Whether the parameter at ``path`` (``"/"``-joined) is an ``Encoder``'s edge-weight leaf."""
    return path.rsplit("/", 1)[-1] == EDGE_WEIGHT

NUM_STRUCTURAL_FEATURES = 3


class CompactEdges(NamedTuple):
    """The edges an ``Encoder`` passes messages over instead of a graph's stored ones.

    Built by ``compaction.compact`` from an edge mask: the first ``S`` edges are the kept edges
    of the ``edge_weight`` leaf (in leaf order), padded to a fixed ``S``; the rest are the
    graph's edges past the leaf (self loops), always kept. The encoder gates slot ``i < S`` by
    the leaf entry ``leaf_index[i]`` (0 on padding slots), so the layers compute what they
    compute on the stored edges with the pruned ones gated off, at the cost of ``S`` edges.

    Attributes:
      senders, receivers: ``[S + R]`` int edge endpoints.
      weights: ``[S + R]`` the graph's edge weights at those edges, or None when it has none.
      leaf_index: ``[S]`` int32 position of each slot's edge in the ``edge_weight`` leaf.
      leaf_valid: ``[S]`` bool, False on padding slots.
    """

    senders: jax.Array
    receivers: jax.Array
    weights: Optional[jax.Array]
    leaf_index: jax.Array
    leaf_valid: jax.Array

LAYER_KINDS = {"gcn": GCNConv, "sage": SAGEConv, "gat": GATConv, "gin": GINConv}


def structural_features(graph: jraph.GraphsTuple, num_nodes: Optional[int] = None) -> jax.Array:
    """Fixed structural node features: ``log1p`` of in-degree, out-degree and weighted in-degree.

    Computed from edges, so padding edges (between padding nodes) leave real nodes unchanged.

    Args:
      graph: ``GraphsTuple``; ``graph.edges`` are edge weights (None means 1).
      num_nodes: static node count; defaults to ``graphs.num_nodes_of(graph)``.

    Returns:
      float32 ``[N, NUM_STRUCTURAL_FEATURES]``.
    """
    n = _graphs.num_nodes_of(graph) if num_nodes is None else int(num_nodes)
    ones = jnp.ones(graph.senders.shape, jnp.float32)
    weights = _graphs.edge_weights_of(graph)
    in_deg = jax.ops.segment_sum(ones, graph.receivers, num_segments=n)
    out_deg = jax.ops.segment_sum(ones, graph.senders, num_segments=n)
    strength = jax.ops.segment_sum(weights, graph.receivers, num_segments=n)
    # log1p tames heavy-tailed degree distributions; abs keeps negative weights finite.
    return jnp.log1p(jnp.stack([in_deg, out_deg, jnp.abs(strength)], axis=-1))


def has_edges(graph: jraph.GraphsTuple, num_nodes: int) -> jax.Array:
    """[N] bool: whether a node has an edge other than a self-loop in ``graph``."""
    real = (graph.senders != graph.receivers).astype(jnp.int32)
    count = (jax.ops.segment_sum(real, graph.receivers, num_segments=num_nodes)
             + jax.ops.segment_sum(real, graph.senders, num_segments=num_nodes))
    return count > 0


class Identity(nnx.Module):
    """Encoder that returns ``graph.nodes`` unchanged: precomputed embeddings (the paper's pipeline)."""

    def __call__(self, graph: jraph.GraphsTuple, dropout_key=None) -> jax.Array:
        del dropout_key  # No parameters, nothing to drop.
        if graph.nodes is None:
            raise ValueError("Identity encoder: graph.nodes is None; it must hold the node embeddings")
        return graph.nodes


class ColdStartDropout(nnx.Module):
    """Returns ``graph.nodes``; while training, each node's row is replaced with probability
    ``rate`` by ``cold_row`` (the input of a node without history).

    Precomputed inputs of a node that joins later are one fixed row, and held-out training
    targets show few links of such nodes (on email-eu-temporal 2% of the targets); replacing
    random nodes by that row shows the model many more, so it learns how such a node links
    (to whom, by the other end's inputs) instead of fitting a few hundred pairs.

    Args:
      cold_row: ``[F]`` the input row of a node without history.
      rate: probability of the replacement per node and step, in [0, 1); active only when a
        ``dropout_key`` is passed (training).

    Raises:
      ValueError: ``rate`` outside [0, 1) or ``cold_row`` not 1-D.
    """

    def __init__(self, cold_row, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"ColdStartDropout: rate must be in [0, 1), got {rate}")
        cold_row = jnp.asarray(cold_row, jnp.float32)
        if cold_row.ndim != 1:
            raise ValueError(f"ColdStartDropout: cold_row must be 1-D, got shape {cold_row.shape}")
        self.rate = float(rate)
        self.cold_row = nnx.Variable(cold_row)  # a constant: not a Param, never trained or pruned

    def __call__(self, graph: jraph.GraphsTuple, dropout_key=None) -> jax.Array:
        if graph.nodes is None:
            raise ValueError("ColdStartDropout: graph.nodes is None; it must hold the node inputs")
        nodes = graph.nodes
        if dropout_key is None or self.rate == 0.0:
            return nodes
        cold = jax.random.bernoulli(dropout_key, self.rate, nodes.shape[:1])
        return jnp.where(cold[:, None], self.cold_row[...][None, :], nodes)


class Encoder(nnx.Module):
    """``num_layers`` message-passing layers with ReLU and dropout between them (none after the last).

    Input features are ``graph.nodes`` (``[N, in_dim]``, dense or a BCOO matrix, see
    ``sparse_inputs``), or a learnable embedding table when
    ``num_nodes`` is given, optionally followed by ``structural_features`` columns. On a
    sampled block (``sampling.sample_block``: ``graphs.node_ids_of`` gives its nodes' global
    ids) the table's rows of those ids are read; ``structural_features`` are then the block's.

    Params: ``layers/<i>/...`` per layer, ``embedding [num_nodes, in_dim]`` with a table, and
    ``edge_weight [num_edges]`` with ``num_edges``.

    Edge weights: with ``num_edges=E`` the encoder holds a learnable per-edge leaf
    ``edge_weight`` (initialised to 1) that gates the first ``E`` stored edges of every graph it
    is called on, in every layer (GCN multiplies ``graph.edges`` by the gate and normalises by
    the degrees of the gated edges; SAGE averages the gated messages over the kept edges; GAT
    weighs its softmax by it; GIN sums gated messages). The gate is binary: 1 where the leaf is
    non-zero, 0 where a method pruned it, with the leaf's gradient passed straight through
    (``edge_gate``). The leaf is thus a learnt score of each edge - the magnitude that
    magnitude-based methods rank, the gradient RigL grows by - while every layer sees the plain
    graph minus the pruned edges: a learnt continuous weight would enter GCN's degree
    normalisation and, drifting to 0 or below under weight decay, wreck it. Sparsity methods
    prune the leaf like any weight (``tasks.prunable_params`` selects it); an edge whose leaf
    is 0 carries no message. Edges past the first ``E`` (an evaluation
    graph that appends edges to the training graph's, padding) get weight 1: always kept. The
    leaf is aligned with the stored edge list; the tasks store self loops after every other
    edge (``graphs.self_loops_last``) and size the leaf to the others, so no node loses its own
    input. The
    structural input columns and the cold-start test read the graph as given, not the gates.

    Args:
      kind: "gcn", "sage", "gat" or "gin".
      in_dim: input feature width (embedding width with a table; 0 allowed with ``structural``).
      hidden: width of hidden layers (total width over heads for GAT).
      out_dim: output width.
      num_layers: number of layers (>= 1).
      dropout: dropout rate between layers, active only when a ``dropout_key`` is passed.
      input_dropout: dropout rate on the input features (Kipf & Welling use the layer rate).
      num_nodes: if given, use a learnable ``[num_nodes, in_dim]`` table instead of graph.nodes;
        graphs with more nodes (padding) get zero rows for the extra nodes.
      structural: append ``NUM_STRUCTURAL_FEATURES`` structural columns to the input.
      node_features: with ``num_nodes``, the width F of extra node features read from
        ``graph.nodes`` and appended to the table rows.
      num_edges: if given, the number of edges ``E`` of the learnable ``edge_weight`` leaf
        (see above); None (default) leaves the graph's edges fixed and adds no parameter.
      cold_start: with ``num_nodes``, a learnable row ``cold_start [in_dim]`` replaces the table
        row of every node without history, so such nodes share what is learnt about them
        instead of an untrained random row. ``graph.nodes`` then ends with a 0/1 "has history"
        column (after the F feature columns); when ``graph.nodes`` is None, a node has history
        when it has an edge (self-loops aside) in the graph.
      heads: attention heads (GAT only).
      use_bias: biases in every layer.
      rngs: ``nnx.Rngs``.
      **layer_opts: extra keyword arguments for every layer (e.g. ``add_self_loops`` for GCN,
        ``train_eps`` for GIN, ``negative_slope`` for GAT).
    """

    def __init__(self, kind: str, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, *,
                 dropout: float = 0.0, input_dropout: float = 0.0,
                 num_nodes: Optional[int] = None, num_edges: int | None = None,
                 structural: bool = False, node_features: int = 0, cold_start: bool = False, heads: int = 1, use_bias: bool = True, rngs: nnx.Rngs, **layer_opts):
        if kind not in LAYER_KINDS:
            raise ValueError(f"Encoder: kind must be one of {sorted(LAYER_KINDS)}, got {kind!r}")
        if int(num_layers) < 1:
            raise ValueError(f"Encoder: num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"Encoder: dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= float(input_dropout) < 1.0:
            raise ValueError(f"Encoder: input_dropout must be in [0, 1), got {input_dropout}")
        if kind != "gat" and heads != 1:
            raise ValueError(f"Encoder: heads={heads} is only supported for kind='gat', got kind={kind!r}")
        self.kind = kind
        self.in_dim = int(in_dim)
        self.hidden = int(hidden)
        self.out_dim = int(out_dim)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.structural = bool(structural)
        self.num_nodes = None if num_nodes is None else int(num_nodes)
        if self.num_nodes is not None:
            self.embedding = nnx.Param(
                nnx.initializers.normal(1.0)(rngs.params(), (self.num_nodes, self.in_dim), jnp.float32))
        else:
            self.embedding = None
        if (cold_start or node_features) and self.num_nodes is None:
            raise ValueError("Encoder: cold_start and node_features need an embedding table "
                             "(num_nodes)")
        self.node_features = int(node_features)
        if num_edges is not None and int(num_edges) < 0:
            raise ValueError(f"Encoder: num_edges must be >= 0, got {num_edges}")
        self.num_edges = None if num_edges is None else int(num_edges)
        self.edge_weight = (None if num_edges is None
                            else nnx.Param(jnp.ones((self.num_edges,), jnp.float32)))
        self.cold_start = (nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (self.in_dim,),
                                                                  jnp.float32))
                           if cold_start else None)

        first = (self.in_dim + self.node_features
                 + (NUM_STRUCTURAL_FEATURES if self.structural else 0))
        if first < 1:
            raise ValueError("Encoder: in_dim is 0 and structural=False: the layers would have no input")
        dims = [first] + [self.hidden] * (self.num_layers - 1) + [self.out_dim]
        layer_cls = LAYER_KINDS[kind]
        layers = []
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            opts = dict(layer_opts, use_bias=use_bias, rngs=rngs)
            if kind == "gat":
                opts.update(heads=heads, concat=not last)
            layers.append(layer_cls(dims[i], dims[i + 1], **opts))
        self.layers = nnx.List(layers)

    def input_features(self, graph: jraph.GraphsTuple) -> jax.Array:
        """The first layer's input ``[N, in]``: features or embedding table, plus structure columns."""
        parts = []
        if self.embedding is not None:
            table = self.embedding[...]
            ids = _graphs.node_ids_of(graph)
            if ids is not None:  # a sampled block: the rows of its nodes' global ids
                table = table[ids]
                rows = int(ids.shape[0])
            else:
                rows = self.num_nodes if graph.nodes is None else _graphs.num_nodes_of(graph)
                if rows < self.num_nodes:
                    raise ValueError(f"Encoder: graph has {rows} nodes but the embedding table has {self.num_nodes}")
                table = jnp.pad(table, ((0, rows - self.num_nodes), (0, 0)))
            if self.cold_start is not None:
                history = (has_edges(graph, rows) if graph.nodes is None
                           else graph.nodes[:, self.node_features] > 0)
                table = jnp.where(history[:, None], table, self.cold_start[...][None, :])
            parts.append(table)
            if self.node_features:
                parts.append(graph.nodes[:, : self.node_features].astype(jnp.float32))
        elif self.in_dim > 0:
            if graph.nodes is None:
                raise ValueError("Encoder: graph.nodes is None; pass node features or build with num_nodes=N")
            if graph.nodes.shape[-1] != self.in_dim:
                raise ValueError(f"Encoder: graph.nodes has width {graph.nodes.shape[-1]}, expected in_dim={self.in_dim}")
            parts.append(graph.nodes.astype(jnp.float32))
        if self.structural:
            n = parts[0].shape[0] if parts else None
            parts.append(structural_features(graph, n))
        if len(parts) == 1:
            return parts[0]  # sparse (BCOO) features stay sparse only when alone
        return jnp.concatenate([sparse_inputs.to_dense(p) for p in parts], axis=-1)

    def edge_gate(self, graph: jraph.GraphsTuple) -> jax.Array | None:
        """The ``[E]`` gate of ``graph``'s stored edges: on the first ``num_edges`` edges 1 where
        the ``edge_weight`` leaf is non-zero and 0 where it is pruned, with the leaf's gradient
        (d gate / d leaf = 1, straight through); 1 on the rest; None without the leaf.

        Raises:
          ValueError: the graph has fewer edges than the leaf.
        """
        if self.edge_weight is None:
            return None
        stored = int(graph.senders.shape[0])
        if stored < self.num_edges:
            raise ValueError(f"Encoder: the graph has {stored} edges but the edge_weight leaf "
                             f"has {self.num_edges}; it gates the first num_edges edges")
        leaf = self.edge_weight[...]
        kept = (leaf != 0).astype(leaf.dtype)
        gate = leaf + jax.lax.stop_gradient(kept - leaf)  # value: kept; gradient: the leaf's
        return jnp.concatenate([gate, jnp.ones((stored - self.num_edges,), leaf.dtype)])

    def compact_gate(self, edges: CompactEdges) -> jax.Array:
        """The gate of ``edges``' slots: :meth:`edge_gate`'s value and gradient at the leaf
        entries the slots name, 0 (and no gradient) on padding slots, 1 past the leaf's slots.

        Raises:
          ValueError: the encoder has no ``edge_weight`` leaf.
        """
        if self.edge_weight is None:
            raise ValueError("Encoder: compacted edges need the edge_weight leaf (num_edges)")
        leaf = self.edge_weight[...][edges.leaf_index]
        kept = (leaf != 0).astype(leaf.dtype)
        gate = leaf + jax.lax.stop_gradient(kept - leaf)
        # A constant 0, not the leaf times 0: a padding slot must send no gradient to the
        # entry it happens to name.
        gate = jnp.where(edges.leaf_valid, gate, jnp.zeros_like(gate))
        rest = edges.senders.shape[0] - edges.leaf_index.shape[0]
        return jnp.concatenate([gate, jnp.ones((rest,), leaf.dtype)])

    def __call__(self, graph: jraph.GraphsTuple, dropout_key=None,
                 edges: CompactEdges | None = None) -> jax.Array:
        """Encodes every node.

        Args:
          graph: ``GraphsTuple``.
          dropout_key: PRNG key; dropout is active iff it is given.
          edges: the graph's edges compacted to the kept ones (:class:`CompactEdges`): the
            layers pass messages over them; the input features still read ``graph``. The
            output equals the output on ``graph`` with the same leaf.

        Returns:
          ``[N, out_dim]``.
        """
        x = self.input_features(graph)
        if self.input_dropout:
            # Kipf & Welling also drop the input features; the fold index is past the layers'.
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, self.num_layers)
            drop = sparse_inputs.dropout_entries if sparse_inputs.is_sparse(x) else dropout
            x = drop(x, self.input_dropout, key)
        if edges is None:
            gate = self.edge_gate(graph)
        else:
            gate = self.compact_gate(edges)
            graph = graph._replace(senders=edges.senders, receivers=edges.receivers,
                                   edges=edges.weights)
        for i, layer in enumerate(self.layers):
            x = layer(graph, x) if gate is None else layer(graph, x, edge_gate=gate)
            if i < self.num_layers - 1:
                x = jax.nn.relu(x)
                key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
                x = dropout(x, self.dropout, key)
        return x
