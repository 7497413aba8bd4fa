"""Neighbour-sampled mini-batches: fixed-size, padded ``GraphsTuple`` blocks drawn on the host.

A block is the subgraph a mini-batch's seed nodes (link: both ends of its pairs; node: its
training nodes) reach through ``len(fanouts)`` hops of sampled in-edges: hop ``h`` takes, for
every node first reached at hop ``h - 1``, at most ``fanouts[h - 1]`` of its in-edges, uniformly
without replacement (all of them when it has fewer). Local node ids put the seeds first, in the
order of their first occurrence; ``graph.globals[graphs.NODE_IDS]`` holds each local node's
global id, so an encoder with an embedding table reads the rows of those nodes
(``models.Encoder``). Every block of one :class:`BlockSizes` has the same array shapes (the
padding edges join a padding node only), so a jitted step compiles once.

Normalisation: a GCN layer on a block sees the full graph's degrees. The sampled in-edges of a
node ``r`` with weighted degree ``d_r`` (its self loop ``l_r`` included) are scaled by
``(d_r - l_r) / (sum of the sampled weights)``, so their weights sum to what the node's
in-edges sum to in the full graph, and a node whose in-edges are not sampled (the last hop)
gets a self loop of weight ``d_r``. GCN's symmetric normalisation then uses ``d`` of the full
graph for every node; with fan-outs at least the largest degree the seeds' outputs equal the
full graph's. SAGE, GAT and GIN ignore edge weights: they average, attend over or sum the
sampled neighbours (the estimator of GraphSAGE, Hamilton et al. 2017). The outputs of nodes
reached at the last hop are not their full-graph outputs; only the seeds' are meant to be read.

Pruned edges: :func:`csr_of` takes an edge mask and keeps only those edges, so a block samples
among the kept edges.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import jraph
import numpy as np

from sparsegnn_jax import graphs

__all__ = ["Block", "BlockSizes", "BlockTooSmall", "NeighbourCSR", "Prefetcher", "block_sizes", "csr_of",
           "parse_fanouts", "sample_block", "sample_neighbours", "template_block"]


class NeighbourCSR(NamedTuple):
    """The in-edges of every node of a message-passing graph, grouped by receiver (host arrays).

    ``neighbours[indptr[r]:indptr[r + 1]]`` are the senders of node ``r``'s in-edges (self loops
    apart, in ``loop_weight``) and ``weights`` their weights.
    """

    indptr: np.ndarray       # [N + 1] int64
    neighbours: np.ndarray   # [M] int32
    weights: np.ndarray      # [M] float32
    loop_weight: np.ndarray  # [N] float32 weight of a node's self loop, 0 without one
    degree: np.ndarray       # [N] float32 weighted in-degree, self loop included (GCN's d)

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)


def csr_of(graph: jraph.GraphsTuple, edge_mask=None) -> NeighbourCSR:
    """The :class:`NeighbourCSR` of ``graph``'s stored edges (``graph.edges``: their weights).

    Args:
      graph: a single ``GraphsTuple`` (e.g. ``graphs.from_edges``), on device or host.
      edge_mask: optional ``[E]`` bool over the stored edges: only the True ones are kept
        (a pruned graph samples among its kept edges only).

    Returns:
      the CSR, with the node count of ``graph``.
    """
    senders = np.asarray(graph.senders)
    receivers = np.asarray(graph.receivers)
    n = int(np.sum(np.asarray(graph.n_node)))
    weights = (np.ones(senders.shape, np.float32) if graph.edges is None
               else np.asarray(graph.edges, np.float32))
    if edge_mask is not None:
        keep = np.asarray(edge_mask, bool)
        if keep.shape != senders.shape:
            raise ValueError(f"csr_of: edge_mask has shape {keep.shape}, the graph stores "
                             f"{senders.shape[0]} edges")
        senders, receivers, weights = senders[keep], receivers[keep], weights[keep]
    loop = senders == receivers
    loop_weight = np.zeros(n, np.float32)
    np.add.at(loop_weight, receivers[loop], weights[loop])
    degree = np.bincount(receivers, weights=weights, minlength=n).astype(np.float32)
    senders, receivers, weights = senders[~loop], receivers[~loop], weights[~loop]
    if receivers.size and np.any(receivers[1:] < receivers[:-1]):
        order = np.argsort(receivers, kind="stable")
        senders, receivers, weights = senders[order], receivers[order], weights[order]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(receivers, minlength=n), out=indptr[1:])
    return NeighbourCSR(indptr, senders.astype(np.int32), weights, loop_weight, degree)


def parse_fanouts(text: str | Sequence[int] | None, flag: str = "--fanout") -> tuple[int, ...] | None:
    """``"15,10"`` -> ``(15, 10)`` (hop 1 first); None or ``""`` -> None (full-graph training).

    Raises:
      ValueError: a part is not a positive integer (the message names ``flag``).
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        fanouts = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated positive integers (one per layer, "
                         f"hop 1 first, e.g. {flag}=15,10), got {text!r}") from None
    if not fanouts or min(fanouts) < 1:
        raise ValueError(f"{flag} values must be positive integers, got {text!r}")
    return fanouts


def sample_neighbours(csr: NeighbourCSR, nodes: np.ndarray, fanout: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``fanout`` in-edges of each of ``nodes``, uniform without replacement.

    A node with at most ``fanout`` in-edges keeps them all; the others get a uniform
    ``fanout``-subset by Floyd's algorithm, vectorised over the nodes, so the cost grows with
    ``len(nodes) * fanout**2``, not with the nodes' degrees or the graph's size.

    Returns:
      ``(edge, valid)``: ``[len(nodes), fanout]`` int64 positions in ``csr.neighbours`` and
      whether each slot holds an edge.
    """
    nodes = np.asarray(nodes, np.int64)
    start = csr.indptr[nodes]
    degree = csr.indptr[nodes + 1] - start
    slots = np.arange(fanout, dtype=np.int64)
    offset = np.broadcast_to(slots, (nodes.size, fanout)).copy()
    valid = slots[None, :] < degree[:, None]
    big = np.flatnonzero(degree > fanout)
    if big.size:
        d = degree[big]
        picks = np.empty((big.size, fanout), np.int64)
        u = rng.random((big.size, fanout))
        for i in range(fanout):
            # Floyd: j runs over d - fanout .. d - 1; t uniform in [0, j]; take j when t is taken.
            j = d - fanout + i
            t = np.minimum((u[:, i] * (j + 1)).astype(np.int64), j)
            taken = (picks[:, :i] == t[:, None]).any(axis=1)
            picks[:, i] = np.where(taken, j, t)
        offset[big] = picks
    return start[:, None] + offset, valid


class BlockSizes(NamedTuple):
    """The padded sizes of every block of a run: nodes (one padding node included) and edges."""

    nodes: int
    edges: int


def block_sizes(num_seeds: int, fanouts: Sequence[int], num_nodes: int) -> BlockSizes:
    """The sizes that hold any block of ``num_seeds`` seeds sampled with ``fanouts``.

    Hop ``h`` reaches at most ``min(N, frontier * fanouts[h-1])`` new nodes; every node has at
    most one self loop. One node more is the padding node the padding edges join.
    """
    frontier = min(int(num_seeds), num_nodes)
    total_nodes, total_edges = frontier, 0
    for f in fanouts:
        total_edges += frontier * int(f)
        frontier = min(frontier * int(f), num_nodes)
        total_nodes += frontier
    total_nodes = min(total_nodes, num_nodes)
    return BlockSizes(total_nodes + 1, total_edges + total_nodes + 1)


class BlockTooSmall(ValueError):
    """A sampled block needs more than the padded sizes: ``nodes`` / ``edges`` it needs."""

    def __init__(self, nodes: int, edges: int, sizes: BlockSizes):
        super().__init__(f"sample_block: the block needs {nodes} nodes (one is the padding "
                         f"node) and {edges} edges, more than the padded {sizes.nodes} / "
                         f"{sizes.edges}; size it with block_sizes")
        self.nodes, self.edges = nodes, edges


class Block(NamedTuple):
    """A sampled, padded block (host arrays); ``graph`` is what the models take."""

    graph: jraph.GraphsTuple  # local ids, seeds first; globals[graphs.NODE_IDS]: global ids
    seed_index: np.ndarray    # [S] int32 local id of each seed as given (duplicates allowed)
    num_nodes: int            # real nodes (the rest is padding)
    num_edges: int            # real edges


def sample_block(csr: NeighbourCSR, seeds, fanouts: Sequence[int], rng: np.random.Generator,
                 sizes: BlockSizes, node_rows: np.ndarray | None = None,
                 scratch: np.ndarray | None = None) -> Block:
    """The block of ``seeds`` (global ids) sampled with ``fanouts`` from ``rng``.

    Args:
      csr: the message-passing graph (:func:`csr_of`).
      seeds: ``[S]`` global node ids; repeated ids map to one local node.
      fanouts: in-edges sampled per node at each hop (hop 1 first).
      rng: the generator the block is drawn from (same state, same block).
      sizes: the padded sizes (:func:`block_sizes` of at least ``S`` seeds).
      node_rows: ``[N, F]`` node inputs; the block's ``nodes`` are their rows (zeros for the
        padding node). None leaves ``nodes`` None.
      scratch: optional ``[N]`` int32 array of -1, reused between calls to map global ids to
        local ones (left as it was found).

    Returns:
      the :class:`Block`.
    """
    seeds = np.asarray(seeds, np.int64).reshape(-1)
    n = csr.num_nodes
    local = np.full(n, -1, np.int32) if scratch is None else scratch
    unique_seeds = seeds[np.sort(np.unique(seeds, return_index=True)[1])]
    ids = [unique_seeds]
    local[unique_seeds] = np.arange(unique_seeds.size, dtype=np.int32)
    count = unique_seeds.size
    frontier = unique_seeds
    src_parts, dst_parts, w_parts = [], [], []
    expanded = np.zeros(0, np.int64)
    try:
        for fanout in fanouts:
            edge, valid = sample_neighbours(csr, frontier, int(fanout), rng)
            rows = np.broadcast_to(frontier[:, None], edge.shape)[valid]
            edge = edge[valid]
            senders = csr.neighbours[edge].astype(np.int64)
            weights = csr.weights[edge]
            # Scale the sampled in-edges of each node to its in-edges' weight in the full graph.
            sampled = np.zeros(frontier.size, np.float64)
            position = np.repeat(np.arange(frontier.size), valid.sum(axis=1))
            np.add.at(sampled, position, weights)
            wanted = csr.degree[frontier] - csr.loop_weight[frontier]
            scale = np.where(sampled != 0, wanted / np.where(sampled != 0, sampled, 1.0), 0.0)
            w_parts.append((weights * scale[position]).astype(np.float32))
            new = np.unique(senders[local[senders] < 0])
            local[new] = np.arange(count, count + new.size, dtype=np.int32)
            count += new.size
            ids.append(new)
            src_parts.append(local[senders])
            dst_parts.append(local[rows])
            expanded = np.concatenate([expanded, frontier])
            frontier = new
        all_ids = np.concatenate(ids)
        seed_index = local[seeds]
    finally:
        local[np.concatenate(ids)] = -1
    # Self loops: a sampled node keeps its own; a node of the last hop gets its degree, so
    # GCN's normalisation sees the full graph's degree there too. Expanded nodes are the
    # first local ids.
    loop_w = np.where(np.arange(count) < expanded.size, csr.loop_weight[all_ids],
                      csr.degree[all_ids])
    has_loop = loop_w != 0
    loops = np.flatnonzero(has_loop).astype(np.int32)
    num_edges = sum(p.size for p in src_parts) + loops.size
    if count + 1 > sizes.nodes or num_edges > sizes.edges:
        raise BlockTooSmall(count + 1, num_edges, sizes)
    src = np.concatenate(src_parts + [loops])
    dst = np.concatenate(dst_parts + [loops])
    w = np.concatenate(w_parts + [loop_w[has_loop].astype(np.float32)])
    pad = sizes.nodes - 1
    senders = np.full(sizes.edges, pad, np.int32)
    receivers = np.full(sizes.edges, pad, np.int32)
    edge_weights = np.zeros(sizes.edges, np.float32)
    senders[:num_edges], receivers[:num_edges], edge_weights[:num_edges] = src, dst, w
    node_ids = np.zeros(sizes.nodes, np.int32)
    node_ids[:count] = all_ids
    nodes = None
    if node_rows is not None:
        nodes = np.zeros((sizes.nodes,) + node_rows.shape[1:], node_rows.dtype)
        nodes[:count] = node_rows[all_ids]
    graph = jraph.GraphsTuple(
        nodes=nodes, edges=edge_weights, senders=senders, receivers=receivers,
        n_node=np.asarray([count, sizes.nodes - count], np.int32),
        n_edge=np.asarray([num_edges, sizes.edges - num_edges], np.int32),
        globals={graphs.NODE_IDS: node_ids})
    return Block(graph, seed_index.astype(np.int32), count, num_edges)


def template_block(sizes: BlockSizes, node_rows: np.ndarray | None = None) -> jraph.GraphsTuple:
    """A block of ``sizes`` with no real node: the shapes a sampled step computes on (FLOPs)."""
    width = None if node_rows is None else node_rows.shape[1:]
    return jraph.GraphsTuple(
        nodes=None if width is None else np.zeros((sizes.nodes,) + width, node_rows.dtype),
        edges=np.zeros(sizes.edges, np.float32),
        senders=np.zeros(sizes.edges, np.int32), receivers=np.zeros(sizes.edges, np.int32),
        n_node=np.asarray([0, sizes.nodes], np.int32), n_edge=np.asarray([0, sizes.edges], np.int32),
        globals={graphs.NODE_IDS: np.zeros(sizes.nodes, np.int32)})


class Prefetcher:
    """Iterates ``make(item)`` over ``items`` with up to ``depth`` results made ahead on a
    background thread, so host sampling overlaps the device steps (NumPy releases the GIL
    in its array work, and JAX's dispatch does too).

    An exception in ``make`` is raised by the iteration at the item that failed.
    """

    _DONE = object()

    def __init__(self, make: Callable, items: Iterable, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(make, items), daemon=True)
        self._thread.start()

    def _fill(self, make, items):
        try:
            for item in items:
                if self._stop.is_set():
                    return
                self._put((True, make(item)))
        except BaseException as err:  # handed to the consumer, raised there
            self._put((False, err))
            return
        self._put((True, self._DONE))

    def _put(self, entry):
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator:
        try:
            while True:
                ok, value = self._queue.get()
                if not ok:
                    raise value
                if value is self._DONE:
                    return
                yield value
        finally:
            self.close()

    def close(self) -> None:
        """Stops the background thread (results not yet read are dropped)."""
        self._stop.set()
        self._thread.join()
