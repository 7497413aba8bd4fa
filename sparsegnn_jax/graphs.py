"""Graph construction, GCN normalisation, padding to size buckets and edge-mask compaction;
``from_networkx``, ``from_scipy``, ``from_arrays`` and ``from_pyg`` turn your own graph into a
``data.Dataset`` (see ``data.convert``).

Graphs are built on the host with NumPy (edge lists are small, and deduplication is a sort) and
handed to models as a single ``jraph.GraphsTuple`` holding ``jnp`` arrays. Padding to power-of-two
buckets lets a series of graphs of different sizes reuse one compiled program: padding edges
connect padding nodes only, and every layer computes degrees from edges, so real-node outputs are
unchanged by padding. ``compact_edges`` turns a pruned graph's edge mask into a fixed-size list
of its kept edges inside ``jit``, so that aggregation costs only the kept edges.
"""
from __future__ import annotations

import sys
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np

# Your own graph as a Dataset (the tasks' input), here beside the other constructors.
from sparsegnn_jax.data.convert import from_arrays, from_networkx, from_pyg, from_scipy

__all__ = [
    "PaddedGraph",
    "compact_edges",
    "degrees",
    "edge_weights_of",
    "from_arrays",
    "from_edges",
    "from_networkx",
    "from_pyg",
    "from_scipy",
    "gcn_norm_weights",
    "next_power_of_two",
    "node_features_shape",
    "num_nodes_of",
    "pad_to_bucket",
    "resistance_scores",
    "sym_norm_coefficients",
    "self_loops_last",
    "with_edges_first",
]

_DUPLICATE_MODES = ("first", "sum")


class PaddedGraph(NamedTuple):
    """A graph padded to bucket sizes, with masks telling real entries from padding.

    Attributes:
      graph: the padded ``jraph.GraphsTuple``; ``n_node``/``n_edge`` hold the real graph's counts
        followed by one padding graph's counts (jraph's convention).
      node_mask: bool ``[node_bucket]``, True for real nodes.
      edge_mask: bool ``[edge_bucket]``, True for real edges.
    """

    graph: jraph.GraphsTuple
    node_mask: jax.Array
    edge_mask: jax.Array


def next_power_of_two(n: int) -> int:
    """Smallest power of two that is >= ``n`` (1 for ``n <= 1``).

    Args:
      n: a non-negative integer.

    Returns:
      The power of two as a Python int.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"next_power_of_two: n must be >= 0, got {n}")
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _as_index_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"from_edges: {name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"from_edges: {name} must hold integer node ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def from_edges(
    senders,
    receivers,
    num_nodes: int,
    node_features=None,
    symmetric: bool = True,
    self_loops: bool = True,
    edge_weights=None,
    *,
    duplicates: str = "first",
) -> jraph.GraphsTuple:
    """Builds a single-graph ``GraphsTuple`` from an edge list.

    Edges are made symmetric (each ``s -> r`` also gives ``r -> s`` with the same weight) when
    ``symmetric``, self loops ``i -> i`` are added for every node when ``self_loops`` (weight 1 for
    nodes that had none), then duplicates are removed. Edges come out sorted by receiver, then
    sender, which makes the result deterministic and segment reductions cache-friendly.

    Args:
      senders: ``[E]`` integer source node ids in ``[0, num_nodes)``.
      receivers: ``[E]`` integer destination node ids in ``[0, num_nodes)``.
      num_nodes: number of nodes ``N`` (nodes without edges are allowed).
      node_features: optional ``[N, F]`` array stored in ``graph.nodes`` (None leaves it None).
      symmetric: add the reverse of every edge.
      self_loops: add a self loop to every node. They are stored edges; ``self_loops_last``
        moves them behind the others, out of reach of an encoder's edge-weight leaf
        (``models.Encoder(num_edges=...)`` gates the first ``num_edges`` edges), as the tasks do.
      edge_weights: optional ``[E]`` weights stored in ``graph.edges`` as float32; None gives
        ``graph.edges = None`` (layers treat that as unit weights).
      duplicates: how weights of repeated edges combine: ``"first"`` keeps the first occurrence
        (input edges, then reversed edges, then added self loops), ``"sum"`` adds them (a
        multigraph's interaction counts). Ignored without ``edge_weights``.

    Returns:
      ``jraph.GraphsTuple`` with ``n_node=[N]``, ``n_edge=[E']``, int32 senders/receivers,
      ``globals=None``.
    """
    if duplicates not in _DUPLICATE_MODES:
        raise ValueError(f"from_edges: duplicates must be one of {_DUPLICATE_MODES}, got {duplicates!r}")
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"from_edges: num_nodes must be >= 0, got {num_nodes}")
    s = _as_index_array(senders, "senders")
    r = _as_index_array(receivers, "receivers")
    if s.shape != r.shape:
        raise ValueError(f"from_edges: senders {s.shape} and receivers {r.shape} differ in length")
    for name, arr in (("senders", s), ("receivers", r)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_nodes):
            raise ValueError(
                f"from_edges: {name} hold ids in [{arr.min()}, {arr.max()}], outside [0, {num_nodes})"
            )
    w = None
    if edge_weights is not None:
        w = np.asarray(edge_weights, dtype=np.float32)
        if w.shape != s.shape:
            raise ValueError(f"from_edges: edge_weights shape {w.shape} != senders shape {s.shape}")

    if symmetric:
        s, r = np.concatenate([s, r]), np.concatenate([r, s])
        if w is not None:
            w = np.concatenate([w, w])
    if self_loops:
        loops = np.arange(num_nodes, dtype=np.int64)
        if w is not None and duplicates == "sum":
            # Only nodes without an explicit self loop get one, so "sum" does not add 1 to theirs.
            has_loop = np.zeros(num_nodes, dtype=bool)
            has_loop[s[s == r]] = True
            loops = loops[~has_loop]
        s, r = np.concatenate([s, loops]), np.concatenate([r, loops])
        if w is not None:
            w = np.concatenate([w, np.ones(loops.shape, np.float32)])

    # Key by (receiver, sender): np.unique sorts by it and gives first occurrences.
    keys = r * max(num_nodes, 1) + s
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    s_out, r_out = s[first], r[first]
    w_out = None
    if w is not None:
        if duplicates == "sum":
            w_out = np.zeros(uniq.shape, np.float32)
            np.add.at(w_out, inverse.reshape(-1), w)
        else:
            w_out = w[first]

    nodes = None
    if node_features is not None:
        nodes = jnp.asarray(node_features)
        if nodes.ndim < 1 or nodes.shape[0] != num_nodes:
            raise ValueError(
                f"from_edges: node_features has shape {nodes.shape}; expected first dimension {num_nodes}"
            )
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=None if w_out is None else jnp.asarray(w_out, jnp.float32),
        senders=jnp.asarray(s_out, jnp.int32),
        receivers=jnp.asarray(r_out, jnp.int32),
        n_node=jnp.asarray([num_nodes], jnp.int32),
        n_edge=jnp.asarray([s_out.shape[0]], jnp.int32),
        globals=None,
    )


def node_features_shape(graph: jraph.GraphsTuple) -> tuple[int, ...]:
    """Shape of ``graph.nodes``: the array's, a sparse (BCOO) matrix's dense shape, or that of
    the first leaf of a pytree of node arrays.

    Raises:
      ValueError: ``graph.nodes`` is None.
    """
    if graph.nodes is None:
        raise ValueError("graph.nodes is None: the graph has no node features")
    shape = getattr(graph.nodes, "shape", None)
    return tuple(shape) if shape is not None else tuple(jax.tree.leaves(graph.nodes)[0].shape)


NODE_IDS = "node_ids"
"""Key of ``graph.globals`` (a dict) holding the ``[N]`` global id of each node of a block
(``sampling.sample_block``): a subgraph whose nodes are renumbered, seeds first."""


def node_ids_of(graph: jraph.GraphsTuple):
    """The ``[N]`` global node ids of a sampled block, or None for a whole graph."""
    if isinstance(graph.globals, dict):
        return graph.globals.get(NODE_IDS)
    return None


def num_nodes_of(graph: jraph.GraphsTuple) -> int:
    """Static number of nodes of a graph, for ``num_segments`` in segment reductions.

    Args:
      graph: a ``GraphsTuple``.

    Returns:
      ``graph.nodes.shape[0]`` when nodes are present, else ``sum(n_node)`` (needs a concrete
      ``n_node``, so pass ``num_nodes`` explicitly when calling under ``jit`` without nodes).
    """
    if graph.nodes is not None:
        return int(node_features_shape(graph)[0])
    try:
        return int(np.sum(np.asarray(graph.n_node)))
    except jax.errors.ConcretizationTypeError as err:
        raise ValueError(
            "graph.nodes is None and graph.n_node is traced: pass num_nodes explicitly"
        ) from err


def gcn_norm_weights(graph: jraph.GraphsTuple, num_nodes: Optional[int] = None) -> jax.Array:
    """Symmetric GCN coefficients ``w_sr / sqrt(d_s d_r)`` for every edge of ``graph``.

    Degrees are weighted in-degrees at receivers over the graph's own edges, so self loops count
    only when the graph has them (``from_edges`` adds them by default, giving Kipf & Welling's
    ``D^-1/2 (A + I) D^-1/2``). Nodes of zero degree give coefficient 0, never NaN. Padding edges
    only touch padding nodes, so real-node coefficients do not change with padding.

    Args:
      graph: ``GraphsTuple``; ``graph.edges`` (``[E]``) are edge weights, None means 1.
      num_nodes: static node count; defaults to ``num_nodes_of(graph)``.

    Returns:
      float32 ``[E]`` coefficients.
    """
    n = num_nodes_of(graph) if num_nodes is None else int(num_nodes)
    weights = edge_weights_of(graph)
    return sym_norm_coefficients(weights, graph.senders, graph.receivers, n)


def edge_weights_of(graph: jraph.GraphsTuple) -> jax.Array:
    """The ``[E]`` float32 edge weights stored in ``graph.edges``; ones when it is None.

    Raises:
      ValueError: ``graph.edges`` is not one weight per edge.
    """
    if graph.edges is None:
        return jnp.ones(graph.senders.shape, jnp.float32)
    weights = jnp.asarray(graph.edges, jnp.float32)
    if weights.ndim != 1:
        raise ValueError(f"graph.edges must be [E] edge weights for GCN normalisation, got shape {weights.shape}")
    return weights


def sym_norm_coefficients(weights, senders, receivers, num_nodes: int) -> jax.Array:
    """Coefficients ``w_sr / sqrt(d_s d_r)`` with ``d`` the weighted in-degree at receivers.

    Args:
      weights: ``[E]`` edge weights.
      senders, receivers: ``[E]`` node indices.
      num_nodes: static node count.

    Returns:
      ``[E]`` coefficients; 0 (never NaN) at nodes of zero degree.
    """
    deg = jax.ops.segment_sum(weights, receivers, num_segments=num_nodes)
    # Double where: keeps both the value and its gradient finite at zero degree.
    positive = deg > 0
    inv_sqrt = jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, deg, 1.0)), 0.0)
    return inv_sqrt[senders] * weights * inv_sqrt[receivers]


def _reorder_edges(graph: jraph.GraphsTuple, order: np.ndarray) -> jraph.GraphsTuple:
    """``graph`` with its edges (endpoints and weights) taken in ``order``."""
    index = jnp.asarray(np.asarray(order).astype(np.int32))
    return graph._replace(
        senders=jnp.asarray(graph.senders)[index], receivers=jnp.asarray(graph.receivers)[index],
        edges=None if graph.edges is None else jnp.asarray(graph.edges)[index])


def self_loops_last(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """``graph`` with its self loops moved after every other edge (both in their order).

    An ``Encoder`` edge-weight leaf gates the first ``num_edges`` stored edges and keeps the
    rest: with the self loops last, a leaf over the other edges leaves every node its own input.

    Args:
      graph: a graph with host-readable ``senders`` / ``receivers``.

    Returns:
      The reordered ``jraph.GraphsTuple`` (nodes, weights and counts unchanged).
    """
    loops = np.asarray(graph.senders) == np.asarray(graph.receivers)
    return _reorder_edges(graph, np.argsort(loops, kind="stable"))


def with_edges_first(first: jraph.GraphsTuple, graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """``graph`` with its edges reordered: those of ``first`` first, in ``first``'s order, then
    the others in ``graph``'s order.

    An ``Encoder`` edge-weight leaf learnt on ``first`` (it gates the first ``E`` edges) then
    gates the same edges of ``graph``, and the edges ``graph`` adds come after it. Nodes,
    weights (those of ``graph``) and counts are unchanged.

    Args:
      first: a graph whose every edge is also an edge of ``graph`` (host arrays; read with
        NumPy), e.g. link prediction's training-time graph inside its evaluation graph.
      graph: the graph to reorder.

    Returns:
      The reordered ``jraph.GraphsTuple``.

    Raises:
      ValueError: an edge of ``first`` that ``graph`` lacks, or a repeated edge in ``graph``.
    """
    n = max(num_nodes_of(graph), 1)
    keys = np.asarray(graph.receivers, np.int64) * n + np.asarray(graph.senders, np.int64)
    wanted = np.asarray(first.receivers, np.int64) * n + np.asarray(first.senders, np.int64)
    if np.unique(keys).size != keys.size:
        raise ValueError("with_edges_first: `graph` repeats an edge")
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys, wanted, sorter=order)
    found = order[np.minimum(pos, keys.size - 1)] if keys.size else pos
    if wanted.size and (keys.size == 0 or np.any(keys[found] != wanted)):
        raise ValueError(f"with_edges_first: {int(np.sum(~np.isin(wanted, keys)))} edges of "
                         "`first` are not edges of `graph`")
    rest = np.setdiff1d(np.arange(keys.size), found, assume_unique=False)
    return _reorder_edges(graph, np.concatenate([found, rest]))


def degrees(senders, receivers, num_nodes: int) -> np.ndarray:
    """``[N]`` number of stored edge ends between distinct nodes at each node (as sender or
    receiver; self loops aside), on the host."""
    senders = np.asarray(senders, np.int64)
    receivers = np.asarray(receivers, np.int64)
    between = senders != receivers
    return (np.bincount(senders[between], minlength=num_nodes)
            + np.bincount(receivers[between], minlength=num_nodes))


def resistance_scores(senders, receivers, num_nodes: int) -> np.ndarray:
    """``1/d_u + 1/d_v`` for every edge ``u -> v``: a structural score of how much an edge matters.

    ``d`` is :func:`degrees`: the edges between distinct nodes touching a node (as sender or
    receiver; a graph stored in both directions thus counts each neighbour twice, which scales
    every score alike). The sum bounds the edge's effective resistance, the quantity spectral sparsification
    keeps edges by (Spielman & Srivastava, "Graph sparsification by effective resistances",
    STOC 2008): an edge to a node with few others carries much of that node's information and
    scores high; an edge between two hubs scores low. Self loops score 0.

    Args:
      senders, receivers: ``[E]`` integer node ids (host arrays).
      num_nodes: number of nodes ``N`` (ids in ``[0, N)``).

    Returns:
      float64 ``[E]`` scores.
    """
    senders = np.asarray(senders, np.int64)
    receivers = np.asarray(receivers, np.int64)
    degree = degrees(senders, receivers, num_nodes).astype(np.float64)
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return np.where(senders != receivers, inverse[senders] + inverse[receivers], 0.0)


def compact_edges(senders, receivers, edge_weights, keep, size: int, *, fill_node: int = 0):
    """The kept edges of an edge mask as fixed-size arrays, so aggregation costs ``size`` edges.

    A pruned graph's keep count is known when its mask is made, so the compacted edge list has a
    static length and works inside ``jit`` and under ``vmap`` (batch ``keep`` and, if they differ
    per run, the edge arrays). Kept edges stay in their original order and keep their weights
    (gradients reach ``edge_weights`` at the kept positions).

    Fewer than ``size`` kept edges: the remaining slots are padding edges ``fill_node ->
    fill_node`` of weight 0. They change nothing in a layer that weights its messages and degrees
    (``gcn_conv`` with the returned weights). Layers without edge weights (``sage_conv``,
    ``gat_conv``, ``gin_aggregate``) do see them, so pass a node whose output is ignored as
    ``fill_node`` (``pad_to_bucket``'s first padding node) or a ``size`` equal to the keep count.

    More than ``size`` kept edges: a concrete ``keep`` raises ``ValueError``. A traced ``keep``
    (inside ``jit``/``vmap``) cannot be checked; only the first ``size`` kept edges (in edge
    order) are returned and the rest are dropped silently, so check the count where the mask is
    made.

    Args:
      senders, receivers: ``[E]`` int edge endpoints.
      edge_weights: ``[E]`` weights, or None for 1.
      keep: ``[E]`` bool or 0/1 mask; nonzero entries are kept.
      size: static number of edges to return.
      fill_node: node id of padding edges; must be a valid node.

    Returns:
      ``(senders, receivers, weights)``, each ``[size]``: int edge endpoints (dtype of
      ``senders``) and float32 weights (0 on padding edges).

    Raises:
      ValueError: mismatched shapes, negative ``size``, or a concrete ``keep`` with more than
        ``size`` nonzero entries.
    """
    size = int(size)
    if size < 0:
        raise ValueError(f"compact_edges: size must be >= 0, got {size}")
    num_edges = senders.shape[0] if senders.ndim == 1 else -1
    shapes = {"senders": senders.shape, "receivers": receivers.shape, "keep": keep.shape}
    if edge_weights is not None:
        shapes["edge_weights"] = jnp.shape(edge_weights)
    if any(shape != (num_edges,) for shape in shapes.values()):
        raise ValueError(f"compact_edges: edge arrays must be 1-D of one length, got {shapes}")
    try:
        kept = int(np.count_nonzero(np.asarray(keep)))
    except jax.errors.TracerArrayConversionError:
        kept = None
    if kept is not None and kept > size:
        raise ValueError(f"compact_edges: keep holds {kept} edges, more than size={size}")
    fill = jnp.asarray(fill_node, senders.dtype)
    if num_edges == 0:
        return jnp.full((size,), fill), jnp.full((size,), fill), jnp.zeros((size,), jnp.float32)
    # Hand-written instead of jnp.nonzero(keep, size=size): on 10M edges (1M kept, 2-core CPU,
    # jitted, median of 7 interleaved runs) this scatter of positions from a lax.associative_scan
    # took 179 ms, jnp.nonzero 244 ms and a jnp.cumsum + scatter 255 ms; both of the latter spend
    # their time in XLA's cumsum. Same indices as jnp.nonzero.
    flags = jnp.asarray(keep) != 0
    position = jax.lax.associative_scan(jnp.add, flags.astype(jnp.int32)) - 1
    target = jnp.where(flags, position, size)  # out of range: dropped
    index = jnp.zeros((size,), jnp.int32).at[target].set(
        jnp.arange(num_edges, dtype=jnp.int32), mode="drop")
    real = jnp.arange(size) <= position[-1]
    weights = jnp.ones((num_edges,), jnp.float32) if edge_weights is None else edge_weights
    return (jnp.where(real, senders[index], fill),
            jnp.where(real, receivers[index], fill),
            jnp.where(real, jnp.asarray(weights, jnp.float32)[index], 0.0))


# Not jraph.pad_with_graphs: for one graph it returns int64 indices, raises on a graph that
# already fills its bucket exactly, keeps ``nodes=None`` (our models expect an [N, 0] array)
# and reports bad sizes generically; wrapping it would keep every check below.
def pad_to_bucket(
    graph: jraph.GraphsTuple,
    node_bucket: Optional[int] = None,
    edge_bucket: Optional[int] = None,
) -> PaddedGraph:
    """Pads a graph to bucket sizes so graphs of similar size share one compiled program.

    Padding nodes get zero features; padding edges all point from and to the first padding node
    (weight 0 when the graph has edge weights), so they never reach a real node. ``n_node`` and
    ``n_edge`` get one extra entry for the padding graph.

    Args:
      graph: the graph to pad (host side; its arrays are read with NumPy).
      node_bucket: total node count after padding; default ``next_power_of_two(n + 1)`` (at least
        one padding node, which padding edges need).
      edge_bucket: total edge count after padding; default ``next_power_of_two(e)``.

    Returns:
      ``PaddedGraph(graph, node_mask, edge_mask)``. Graphs without node features get
      ``nodes = zeros([node_bucket, 0])`` so the node count stays static under ``jit``.

    Raises:
      ValueError: buckets smaller than the graph, or sparse (BCOO) node features (pad them
        dense first).
    """
    # A BCOO exists only once jax.experimental.sparse is imported (on first use, by
    # models.sparse_inputs: the import costs about 0.2 s), so a dense run never imports it here.
    sparse = sys.modules.get("jax.experimental.sparse")
    if sparse is not None and isinstance(graph.nodes, sparse.BCOO):
        raise ValueError("pad_to_bucket: graph.nodes is a sparse BCOO matrix; pass dense features")
    n = num_nodes_of(graph)
    e = int(np.asarray(graph.senders).shape[0])
    node_bucket = next_power_of_two(n + 1) if node_bucket is None else int(node_bucket)
    edge_bucket = next_power_of_two(e) if edge_bucket is None else int(edge_bucket)
    if edge_bucket < e:
        raise ValueError(f"pad_to_bucket: edge_bucket={edge_bucket} is smaller than the graph's {e} edges")
    needs_pad_node = edge_bucket > e
    if node_bucket < n + int(needs_pad_node):
        raise ValueError(
            f"pad_to_bucket: node_bucket={node_bucket} is too small for {n} nodes"
            + (" plus the padding node that padding edges need" if needs_pad_node else "")
        )
    pad_n, pad_e = node_bucket - n, edge_bucket - e

    def pad_rows(x, rows, fill=0):
        x = np.asarray(x)
        pad = np.full((rows,) + x.shape[1:], fill, dtype=x.dtype)
        return jnp.asarray(np.concatenate([x, pad], axis=0))

    if graph.nodes is None:
        nodes = jnp.zeros((node_bucket, 0), jnp.float32)
    else:
        nodes = jax.tree.map(lambda x: pad_rows(x, pad_n), graph.nodes)
    edges = None if graph.edges is None else jax.tree.map(lambda x: pad_rows(x, pad_e), graph.edges)
    padded = jraph.GraphsTuple(
        nodes=nodes,
        edges=edges,
        senders=pad_rows(np.asarray(graph.senders, np.int32), pad_e, fill=n),
        receivers=pad_rows(np.asarray(graph.receivers, np.int32), pad_e, fill=n),
        n_node=jnp.asarray(np.append(np.asarray(graph.n_node), pad_n), jnp.int32),
        n_edge=jnp.asarray(np.append(np.asarray(graph.n_edge), pad_e), jnp.int32),
        # The padding graph gets a zero globals row, as in jraph's padding utilities.
        globals=None if graph.globals is None else jax.tree.map(lambda x: pad_rows(x, 1), graph.globals),
    )
    node_mask = jnp.arange(node_bucket) < n
    edge_mask = jnp.arange(edge_bucket) < e
    return PaddedGraph(padded, node_mask, edge_mask)
