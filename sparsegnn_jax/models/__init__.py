"""Flax NNX models on ``jraph.GraphsTuple``: GNN encoders, MLPs, link decoders, task wrappers.

``build(kind, ...)`` makes an ``Encoder`` ("gcn", "sage", "gat", "gin") or an ``MLP`` ("mlp").
Every module takes ``dropout_key=None``; dropout is active iff a key is given (no RNG state lives
in the modules, so they are pure and vmap-friendly).
"""
from __future__ import annotations

from typing import Sequence, Union

from flax import nnx

from .encoders import (EDGE_WEIGHT, LAYER_KINDS, NUM_STRUCTURAL_FEATURES, ColdStartDropout,
                       CompactEdges, Encoder, Identity, has_edges, is_edge_weight, structural_features)
from . import sparse_inputs
from .heads import DotDecoder, LinkPredictor, MLPDecoder, NodeClassifier, pair_representation
from .layers import (
    MESSAGE_CHUNK_BYTES,
    MESSAGE_PASSING_LAYERS,
    GATConv,
    GCNConv,
    GINConv,
    Linear,
    SAGEConv,
    dropout,
    gat_conv,
    gated_segment_softmax,
    gcn_conv,
    gin_aggregate,
    sage_conv,
)
from .mlp import MLP, paper_link_mlp, paper_node_mlp, torch_uniform

__all__ = [
    "ColdStartDropout",
    "CompactEdges",
    "DotDecoder",
    "EDGE_WEIGHT",
    "Encoder",
    "GATConv",
    "GCNConv",
    "GINConv",
    "Identity",
    "KINDS",
    "LAYER_KINDS",
    "Linear",
    "LinkPredictor",
    "MESSAGE_CHUNK_BYTES",
    "MESSAGE_PASSING_LAYERS",
    "MLP",
    "MLPDecoder",
    "NUM_STRUCTURAL_FEATURES",
    "NodeClassifier",
    "SAGEConv",
    "build",
    "dropout",
    "gat_conv",
    "gated_segment_softmax",
    "gcn_conv",
    "gin_aggregate",
    "paper_link_mlp",
    "paper_node_mlp",
    "pair_representation",
    "sage_conv",
    "sparse_inputs",
    "structural_features",
    "has_edges",
    "is_edge_weight",
    "torch_uniform",
]

KINDS = tuple(LAYER_KINDS) + ("mlp",)

_ENCODER_OPTS = {
    # heads=1 is accepted by every GNN kind so configs can sweep kinds with one option set.
    "gcn": {"num_edges", "num_nodes", "structural", "cold_start", "node_features", "use_bias", "heads", "input_dropout", "add_self_loops"},
    "sage": {"num_edges", "num_nodes", "structural", "cold_start", "node_features", "use_bias", "heads", "input_dropout"},
    "gat": {"num_edges", "num_nodes", "structural", "cold_start", "node_features", "use_bias", "heads", "input_dropout", "negative_slope"},
    "gin": {"num_edges", "num_nodes", "structural", "cold_start", "node_features", "use_bias", "heads", "input_dropout", "eps", "train_eps"},
    "mlp": {"use_bias", "init"},
}


def build(kind: str, in_dim: int, hidden: Union[int, Sequence[int]], out_dim: int,
          num_layers: int = 2, *, rngs: nnx.Rngs, dropout: float = 0.0, **opts):
    """Builds a model by name.

    Args:
      kind: "gcn", "sage", "gat", "gin" (an ``Encoder``: ``model(graph, dropout_key=None) ->
        [N, out_dim]``) or "mlp" (an ``MLP``: ``model(x, dropout_key=None) -> [B, out_dim]``).
      in_dim: input width (embedding width with ``num_nodes``).
      hidden: hidden width; for "mlp" also a sequence of hidden widths.
      out_dim: output width.
      num_layers: number of layers (for "mlp" with an int ``hidden``: number of Linear layers).
      rngs: ``nnx.Rngs``.
      dropout: dropout rate between layers (active only with a ``dropout_key``).
      **opts: per kind - all GNNs: ``num_nodes`` (learnable embedding table), ``structural``
        (append structural features), ``num_edges`` (a learnable per-edge weight leaf, see
        ``Encoder``), ``node_features`` (extra feature columns beside a table),
        ``cold_start`` (a shared learnt row for nodes without history), ``use_bias``; gcn: ``add_self_loops``; gat: ``heads``,
        ``negative_slope``; gin: ``eps``, ``train_eps``; mlp: ``use_bias``, ``init``.

    Returns:
      The model.
    """
    if kind not in KINDS:
        raise ValueError(f"build: kind must be one of {KINDS}, got {kind!r}")
    unknown = set(opts) - _ENCODER_OPTS[kind]
    if unknown:
        raise ValueError(f"build: unknown options {sorted(unknown)} for kind={kind!r}; "
                         f"allowed: {sorted(_ENCODER_OPTS[kind])}")
    if kind == "mlp":
        return MLP(in_dim, hidden, out_dim, num_layers, dropout=dropout, rngs=rngs, **opts)
    if not isinstance(hidden, int):
        raise ValueError(f"build: hidden must be an int for kind={kind!r}, got {hidden!r}")
    return Encoder(kind, in_dim, hidden, out_dim, num_layers, dropout=dropout, rngs=rngs, **opts)
