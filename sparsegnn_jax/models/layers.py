"""Message-passing layers on ``jraph.GraphsTuple``: GCN, GraphSAGE, GAT, GIN, and a Linear.

Each layer is a pure function of arrays (``gcn_conv``, ``sage_conv``, ``gat_conv``,
``gin_aggregate``) plus a thin Flax NNX module that holds the parameters. Every weight matrix is a
2-D ``nnx.Param`` named ``kernel`` (prunable); biases and attention vectors are 1-D. Modules expose
``in_features``, ``out_features`` and ``heads`` so a FLOPs counter can walk a model by type.

Padding: all degrees and softmax normalisers are computed from edges at receivers, and padding
edges only connect padding nodes, so padding never changes real-node outputs.

Edge gates: every layer takes an optional ``edge_gate`` (``[E]``, one value per stored edge; the
``Encoder``'s learnable ``edge_weight`` leaf, pruned by the sparsity methods like any weight). An
edge whose gate is exactly 0 carries no message: the output equals the output on the graph
with that edge deleted (GCN's degrees, SAGE's mean and GAT's softmax are taken over the edges
with a non-zero gate only). Without a gate every layer computes exactly what it did before.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import jraph
from flax import nnx

from .. import graphs as _graphs
from . import sparse_inputs

__all__ = [
    "GATConv",
    "GCNConv",
    "GINConv",
    "Linear",
    "MESSAGE_CHUNK_BYTES",
    "MESSAGE_PASSING_LAYERS",
    "SAGEConv",
    "dropout",
    "gat_conv",
    "gcn_conv",
    "gated_segment_softmax",
    "gin_aggregate",
    "sage_conv",
]

Initializer = Callable[..., jax.Array]
# GCN messages are summed in chunks of edges whose [chunk, out] block takes at most this many
# bytes. The whole [E, out] block set the step's peak memory on large graphs (2.6 of 3.7 GiB
# of XLA temporaries for 11M edges x 64 on the 1M-node benchmark graph); chunks of 1M edges
# cut the temporaries to 1.6 GiB and the process's peak RSS from 4.70 to 2.88 GiB, and the
# step was not slower (16.3 s against 19.2 s, same loss, on a loaded machine).
MESSAGE_CHUNK_BYTES = 256 * 2**20
glorot = nnx.initializers.glorot_uniform()
zeros = nnx.initializers.zeros_init()


def dropout(x: jax.Array, rate: float, key: Optional[jax.Array]) -> jax.Array:
    """Inverted dropout; the identity when ``key`` is None or ``rate`` is 0.

    Args:
      x: activations.
      rate: drop probability in ``[0, 1)``.
      key: PRNG key, or None for evaluation.

    Returns:
      ``x`` with entries zeroed with probability ``rate`` and the rest scaled by ``1/(1-rate)``.
    """
    if key is None or rate == 0.0:
        return x
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _bias_param(use_bias: bool, size: int, rngs: nnx.Rngs) -> Optional[nnx.Param]:
    return nnx.Param(zeros(rngs.params(), (size,), jnp.float32)) if use_bias else None


def _add_bias(y: jax.Array, bias) -> jax.Array:
    return y if bias is None else y + bias


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` with ``kernel`` of shape ``[in_features, out_features]``.

    Args:
      in_features: input width.
      out_features: output width.
      use_bias: add a 1-D bias.
      kernel_init: initializer for the kernel (Glorot uniform by default).
      bias_init: initializer for the bias (zeros by default).
      rngs: ``nnx.Rngs`` for initialisation.
    """

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 kernel_init: Initializer = glorot, bias_init: Initializer = zeros, rngs: nnx.Rngs):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.use_bias = bool(use_bias)
        self.kernel = nnx.Param(kernel_init(rngs.params(), (self.in_features, self.out_features), jnp.float32))
        self.bias = (nnx.Param(bias_init(rngs.params(), (self.out_features,), jnp.float32))
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _add_bias(x @ self.kernel[...], None if self.bias is None else self.bias[...])


# ---------------------------------------------------------------------------------------------
# Pure layer functions.


def gcn_conv(x, kernel, bias, senders, receivers, edge_weights=None, add_self_loops=False,
             message_bytes: Optional[int] = MESSAGE_CHUNK_BYTES):
    """GCN layer (Kipf & Welling 2017): ``D^-1/2 A D^-1/2 (x @ kernel) + bias``.

    Transforms first, then aggregates (``E x out`` messages). Degrees are weighted in-degrees at
    receivers; with ``add_self_loops`` an implicit unit self loop is added to every node (use it
    for graphs built without self loops; ``from_edges`` adds them by default). Messages are
    summed in chunks of edges taking at most ``message_bytes`` each (a scan, so the peak memory
    holds one chunk, not ``E x out``); a graph whose messages fit in one chunk is summed in one
    ``segment_sum``. Chunked sums add in a different order, so they agree with one sum to
    float32 rounding, not bit for bit.

    Args:
      x: ``[N, in]`` node features, dense or BCOO (``sparse_inputs``: nonzeros only).
      kernel: ``[in, out]``.
      bias: ``[out]`` or None.
      senders, receivers: ``[E]`` int edge endpoints.
      edge_weights: ``[E]`` weights, or None for 1.
      add_self_loops: add ``I`` to the adjacency implicitly.
      message_bytes: bytes of messages summed at a time; None sums all edges at once.

    Returns:
      ``[N, out]``.
    """
    n = x.shape[0]
    h = sparse_inputs.matmul(x, kernel)
    w = jnp.ones(senders.shape, h.dtype) if edge_weights is None else edge_weights.astype(h.dtype)
    if add_self_loops:
        loops = jnp.arange(n, dtype=senders.dtype)
        senders = jnp.concatenate([senders, loops])
        receivers = jnp.concatenate([receivers, loops])
        w = jnp.concatenate([w, jnp.ones((n,), h.dtype)])
    coef = _graphs.sym_norm_coefficients(w, senders, receivers, n)
    out = _weighted_sum_at_receivers(h, senders, receivers, coef, message_bytes)
    return _add_bias(out, bias)


def _weighted_sum_at_receivers(h, senders, receivers, coef, message_bytes):
    """``segment_sum(h[senders] * coef, receivers)``, ``message_bytes`` of messages at a time."""
    n, width = h.shape
    chunk = senders.shape[0] if message_bytes is None else max(
        1, message_bytes // (width * h.dtype.itemsize))
    full = senders.shape[0] // chunk
    if full <= 1:
        return jax.ops.segment_sum(h[senders] * coef[:, None], receivers, num_segments=n)
    # The tail after the full chunks is added on its own rather than padded: a padding edge
    # would add h[0] * 0, which is NaN where h[0] is not finite.
    head = full * chunk

    def add_chunk(acc, edges):
        s, r, c = edges
        return acc.at[r].add(h[s] * c[:, None]), None

    out, _ = jax.lax.scan(add_chunk, jnp.zeros((n, width), h.dtype),
                          (senders[:head].reshape(full, chunk),
                           receivers[:head].reshape(full, chunk), coef[:head].reshape(full, chunk)))
    return out.at[receivers[head:]].add(h[senders[head:]] * coef[head:, None])


def _mean_neighbours(x, senders, receivers, edge_gate=None):
    n = x.shape[0]
    messages = x[senders]
    if edge_gate is None:
        present = jnp.ones(senders.shape, x.dtype)
    else:
        gate = edge_gate.astype(x.dtype)
        messages = messages * gate[:, None]
        # The count is of kept edges, not the sum of gates: a learnt gate scales its message
        # without a division by learnt values that could approach 0.
        present = (gate != 0).astype(x.dtype)
    total = jax.ops.segment_sum(messages, receivers, num_segments=n)
    count = jax.ops.segment_sum(present, receivers, num_segments=n)
    return total / jnp.maximum(count, 1.0)[:, None]


def sage_conv(x, kernel_self, kernel_neigh, bias, senders, receivers, edge_gate=None):
    """GraphSAGE layer with mean aggregation and root weight (Hamilton et al. 2017).

    ``x_i @ kernel_self + mean_{j -> i} x_j @ kernel_neigh + bias``; aggregates first, then
    transforms. Nodes without in-edges get a zero neighbour mean.

    Args:
      x: ``[N, in]``, dense or BCOO (densified: the mean aggregates input rows).
      kernel_self, kernel_neigh: ``[in, out]``.
      bias: ``[out]`` or None.
      senders, receivers: ``[E]`` int edge endpoints.
      edge_gate: ``[E]`` or None. Given, the mean is ``sum_j g_ji x_j / #{j: g_ji != 0}``: a
        weighted sum over the kept edges divided by their number.

    Returns:
      ``[N, out]``.
    """
    x = sparse_inputs.to_dense(x)
    mean = _mean_neighbours(x, senders, receivers, edge_gate)
    return _add_bias(x @ kernel_self + mean @ kernel_neigh, bias)


def gated_segment_softmax(logits, gate, segment_ids, num_segments: int):
    """Softmax over segments in which entry ``e`` counts with weight ``gate[e]``.

    ``alpha_e = g_e exp(l_e) / sum_{k in seg(e)} g_k exp(l_k)``: entries with ``g = 0`` get
    exactly 0 and leave the others as if they were absent (the maximum subtracted for
    stability is taken over the non-zero entries only); ``g = 1`` everywhere is the plain
    softmax. The gradient with respect to a zero gate is finite and non-zero, so a gradient
    criterion can rank absent entries.

    Args:
      logits: ``[E, ...]``.
      gate: ``[E]``.
      segment_ids: ``[E]`` int segment of each entry.
      num_segments: static number of segments.

    Returns:
      ``[E, ...]`` weights; segments without a kept entry give 0 (never NaN).
    """
    gate = gate.astype(logits.dtype).reshape(gate.shape + (1,) * (logits.ndim - 1))
    kept = jnp.broadcast_to(gate != 0, logits.shape)
    highest = jax.ops.segment_max(jnp.where(kept, logits, -jnp.inf), segment_ids,
                                  num_segments=num_segments)
    highest = jax.lax.stop_gradient(jnp.where(jnp.isfinite(highest), highest, 0.0))
    scores = gate * jnp.exp(jnp.where(kept, logits - highest[segment_ids], 0.0))
    total = jax.ops.segment_sum(scores, segment_ids, num_segments=num_segments)
    safe = jnp.where(total != 0, total, 1.0)
    return scores / safe[segment_ids]


def gat_conv(x, kernel, att_src, att_dst, bias, senders, receivers, heads, concat,
             negative_slope=0.2, edge_gate=None):
    """GAT layer (Velickovic et al. 2018), multi-head.

    ``h = x @ kernel`` split into ``heads`` heads; logits ``LeakyReLU(a_src . h_j + a_dst . h_i)``
    per edge ``j -> i``; softmax over each receiver's incoming edges; heads concatenated
    (``concat``) or averaged.

    Args:
      x: ``[N, in]``, dense or BCOO (``sparse_inputs``: nonzeros only).
      kernel: ``[in, heads * C]``.
      att_src, att_dst: ``[heads * C]`` attention vectors (head-major).
      bias: ``[heads * C]`` if ``concat`` else ``[C]``, or None.
      senders, receivers: ``[E]`` int edge endpoints.
      heads: number of heads.
      concat: concatenate heads (hidden layers) or average them (last layer).
      negative_slope: LeakyReLU slope of the attention logits.
      edge_gate: ``[E]`` or None. Given, the softmax weighs each edge by its gate
        (:func:`gated_segment_softmax`): an edge with gate 0 gets no attention at all.

    Returns:
      ``[N, heads * C]`` if ``concat`` else ``[N, C]``.
    """
    n = x.shape[0]
    h = sparse_inputs.matmul(x, kernel).reshape(n, heads, -1)
    a_src = jnp.sum(h * att_src.reshape(heads, -1), axis=-1)  # [N, H]
    a_dst = jnp.sum(h * att_dst.reshape(heads, -1), axis=-1)
    logits = jax.nn.leaky_relu(a_src[senders] + a_dst[receivers], negative_slope)  # [E, H]
    if edge_gate is None:
        alpha = jraph.segment_softmax(logits, receivers, num_segments=n)
    else:
        alpha = gated_segment_softmax(logits, edge_gate, receivers, n)
    out = jax.ops.segment_sum(h[senders] * alpha[..., None], receivers, num_segments=n)  # [N, H, C]
    out = out.reshape(n, -1) if concat else out.mean(axis=1)
    return _add_bias(out, bias)


def gin_aggregate(x, eps, senders, receivers, edge_gate=None):
    """GIN's input to its MLP (Xu et al. 2019): ``(1 + eps) x_i + sum_{j -> i} x_j``.

    Args:
      x: ``[N, in]``, dense or BCOO (densified: the sum aggregates input rows).
      eps: scalar.
      senders, receivers: ``[E]`` int edge endpoints.
      edge_gate: ``[E]`` or None; given, the sum is weighted: ``sum_j g_ji x_j``.

    Returns:
      ``[N, in]``.
    """
    x = sparse_inputs.to_dense(x)
    messages = x[senders]
    if edge_gate is not None:
        messages = messages * edge_gate.astype(x.dtype)[:, None]
    total = jax.ops.segment_sum(messages, receivers, num_segments=x.shape[0])
    return (1.0 + eps) * x + total


# ---------------------------------------------------------------------------------------------
# Modules. ``__call__(graph, x=None)``: x defaults to graph.nodes.


def _features(graph: jraph.GraphsTuple, x):
    if x is None:
        x = graph.nodes
    if x is None:
        raise ValueError("layer input: graph.nodes is None and no features x were passed")
    return x


def _value(param):
    return None if param is None else param[...]


class GCNConv(nnx.Module):
    """GCN layer module; see ``gcn_conv``. Uses ``graph.edges`` as edge weights when present,
    times ``edge_gate`` when one is passed (degrees are then those of the gated edges).

    Params: ``kernel [in, out]``, ``bias [out]``.

    Args:
      in_features, out_features: widths.
      use_bias: add a bias.
      add_self_loops: add implicit unit self loops (off: ``from_edges`` already adds them).
      rngs: ``nnx.Rngs``.
    """

    heads = 1

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 add_self_loops: bool = False, rngs: nnx.Rngs):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.add_self_loops = bool(add_self_loops)
        self.kernel = nnx.Param(glorot(rngs.params(), (self.in_features, self.out_features), jnp.float32))
        self.bias = _bias_param(use_bias, self.out_features, rngs)

    def __call__(self, graph: jraph.GraphsTuple, x=None, edge_gate=None) -> jax.Array:
        x = _features(graph, x)
        weights = None if graph.edges is None else _graphs.edge_weights_of(graph)
        if edge_gate is not None:
            weights = edge_gate if weights is None else weights * edge_gate
        return gcn_conv(x, self.kernel[...], _value(self.bias), graph.senders, graph.receivers,
                        weights, self.add_self_loops)


class SAGEConv(nnx.Module):
    """GraphSAGE-mean layer module with root weight; see ``sage_conv``.

    Params: ``lin_self/kernel [in, out]`` (no bias), ``lin_neigh/kernel [in, out]``,
    ``lin_neigh/bias [out]``.

    Args:
      in_features, out_features: widths.
      use_bias: add a bias.
      rngs: ``nnx.Rngs``.
    """

    heads = 1

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True, rngs: nnx.Rngs):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.lin_self = Linear(in_features, out_features, use_bias=False, rngs=rngs)
        self.lin_neigh = Linear(in_features, out_features, use_bias=use_bias, rngs=rngs)

    def __call__(self, graph: jraph.GraphsTuple, x=None, edge_gate=None) -> jax.Array:
        x = _features(graph, x)
        return sage_conv(x, self.lin_self.kernel[...], self.lin_neigh.kernel[...],
                         _value(self.lin_neigh.bias), graph.senders, graph.receivers, edge_gate)


class GATConv(nnx.Module):
    """Multi-head GAT layer module; see ``gat_conv``.

    With ``concat=True`` (hidden layers) ``out_features`` is the total width and each head has
    ``out_features // heads`` channels; with ``concat=False`` (last layer) each head has
    ``out_features`` channels and heads are averaged.

    Params: ``kernel [in, heads * head_features]``, ``att_src``/``att_dst [heads * head_features]``,
    ``bias [out_features]``.

    Args:
      in_features, out_features: widths.
      heads: number of attention heads.
      concat: concatenate (True) or average (False) heads.
      use_bias: add a bias.
      negative_slope: LeakyReLU slope of the attention logits.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_features: int, out_features: int, *, heads: int = 1, concat: bool = True,
                 use_bias: bool = True, negative_slope: float = 0.2, rngs: nnx.Rngs):
        heads = int(heads)
        if heads < 1:
            raise ValueError(f"GATConv: heads must be >= 1, got {heads}")
        if concat and out_features % heads:
            raise ValueError(
                f"GATConv: out_features={out_features} must be divisible by heads={heads} when concat=True"
            )
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.heads = heads
        self.concat = bool(concat)
        self.negative_slope = float(negative_slope)
        self.head_features = out_features // heads if concat else out_features
        width = heads * self.head_features
        self.kernel = nnx.Param(glorot(rngs.params(), (self.in_features, width), jnp.float32))
        # Glorot over one head's (C, 1) vector, stored flat so default filters keep it dense.
        att_init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=-1, out_axis=-2)
        self.att_src = nnx.Param(att_init(rngs.params(), (heads, self.head_features, 1)).reshape(width))
        self.att_dst = nnx.Param(att_init(rngs.params(), (heads, self.head_features, 1)).reshape(width))
        self.bias = _bias_param(use_bias, self.out_features, rngs)

    def __call__(self, graph: jraph.GraphsTuple, x=None, edge_gate=None) -> jax.Array:
        x = _features(graph, x)
        return gat_conv(x, self.kernel[...], self.att_src[...], self.att_dst[...], _value(self.bias),
                        graph.senders, graph.receivers, self.heads, self.concat, self.negative_slope,
                        edge_gate)


class GINConv(nnx.Module):
    """GIN layer module: ``MLP((1 + eps) x_i + sum_j x_j)`` with a 2-layer ReLU MLP.

    Params: ``lin1/kernel [in, out]``, ``lin1/bias``, ``lin2/kernel [out, out]``, ``lin2/bias``,
    and ``eps`` (scalar) when ``train_eps``.

    Args:
      in_features, out_features: widths (the MLP's hidden width is ``out_features``).
      eps: initial epsilon (GIN-0 by default).
      train_eps: make epsilon a learnable scalar.
      use_bias: biases in the MLP.
      rngs: ``nnx.Rngs``.
    """

    heads = 1

    def __init__(self, in_features: int, out_features: int, *, eps: float = 0.0,
                 train_eps: bool = False, use_bias: bool = True, rngs: nnx.Rngs):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.train_eps = bool(train_eps)
        self.eps = nnx.Param(jnp.asarray(eps, jnp.float32)) if train_eps else float(eps)
        self.lin1 = Linear(in_features, out_features, use_bias=use_bias, rngs=rngs)
        self.lin2 = Linear(out_features, out_features, use_bias=use_bias, rngs=rngs)

    def __call__(self, graph: jraph.GraphsTuple, x=None, edge_gate=None) -> jax.Array:
        x = _features(graph, x)
        eps = self.eps[...] if self.train_eps else self.eps
        h = gin_aggregate(x, eps, graph.senders, graph.receivers, edge_gate)
        return self.lin2(jax.nn.relu(self.lin1(h)))


MESSAGE_PASSING_LAYERS = (GCNConv, SAGEConv, GATConv, GINConv)
