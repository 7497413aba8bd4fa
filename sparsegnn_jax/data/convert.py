"""Your own graph as a :class:`Dataset`: from NumPy edge arrays, a SciPy (or dense) adjacency
matrix, a networkx graph or a PyTorch Geometric ``Data`` / ``TemporalData`` object.

A Dataset is what the tasks train on: ``data.register(name, ds)`` makes it a ``--dataset``
name for ``runs.run`` and the experiment scripts. Node features, labels, edge times and edge
weights are all optional: without features, models learn a row per node; without times,
link prediction splits the graph at random (``data.choose_split``).

networkx and torch_geometric are not dependencies: ``from_networkx`` and ``from_pyg`` read the
objects they are given (and never import torch).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .dataset import Dataset
from .splits import NodeSplit, check_num_nodes

__all__ = ["from_arrays", "from_scipy", "from_networkx", "from_pyg"]


def _int_ids(values, arg: str) -> np.ndarray:
    """``values`` as a 1-D int64 array of non-negative whole numbers, else a ValueError."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{arg} must be a 1-D array of node ids, got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)) \
                or not np.array_equal(a, np.round(a)):
            raise ValueError(f"{arg} must hold integer node ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{arg} holds a negative node id ({a.min()})")
    return a


def _times(times, num_edges: int) -> np.ndarray | None:
    if times is None:
        return None
    t = np.asarray(times)
    if t.shape != (num_edges,):
        raise ValueError(f"times must have one entry per edge ({num_edges}), got shape {t.shape}")
    if not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise ValueError(f"times must be numbers, got dtype {t.dtype}")
    # The splits, walks and history features compare times as int64; a fraction would be cut.
    if np.issubdtype(t.dtype, np.floating) and (not np.all(np.isfinite(t))
                                                or not np.array_equal(t, np.round(t))):
        raise ValueError("times must be whole numbers (scale fractional times to a finer unit, "
                         "e.g. milliseconds)")
    return t.astype(np.int64)


def _edge_weights(weights, num_edges: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_edges,):
        raise ValueError(f"edge_weights must have one entry per edge ({num_edges}), got shape "
                         f"{w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("edge_weights must be finite")
    return w.astype(np.float32)


def _features(features, num_nodes: int) -> np.ndarray | None:
    if features is None:
        return None
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != num_nodes:
        raise ValueError(f"features must be [num_nodes={num_nodes}, F], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    return x.astype(np.float32)


def _labels(labels, num_nodes: int) -> tuple[np.ndarray, tuple] | tuple[None, None]:
    """Class ids 0..C-1 in sorted order of the label values, -1 for a node without a label
    (None, or a negative integer), and the values by class id."""
    if labels is None:
        return None, None
    raw = np.asarray(labels, dtype=object if _has_none(labels) else None)
    if raw.shape != (num_nodes,):
        raise ValueError(f"labels must have one entry per node ({num_nodes}), got shape "
                         f"{raw.shape}")
    if raw.dtype == object:
        given = np.array([v is not None for v in raw], bool)
    elif np.issubdtype(raw.dtype, np.integer):
        given = raw >= 0
    elif np.issubdtype(raw.dtype, np.floating):
        given = ~np.isnan(raw)
    else:
        given = np.ones(num_nodes, bool)
    if not given.any():
        raise ValueError("labels: no node has a label")
    try:
        names, ids = np.unique(raw[given], return_inverse=True)
    except TypeError as err:
        raise ValueError(f"labels must be values of one sortable kind (numbers or strings): "
                         f"{err}") from None
    out = np.full(num_nodes, -1, np.int32)
    out[given] = ids.reshape(-1)
    return out, tuple(names.tolist())


def _has_none(values) -> bool:
    return not isinstance(values, np.ndarray) and any(v is None for v in values)


def _node_split(split, num_nodes: int) -> NodeSplit | None:
    """A NodeSplit from a NodeSplit, or three index arrays or boolean masks (train, val, test)."""
    if split is None or isinstance(split, NodeSplit):
        return split
    if len(split) != 3:
        raise ValueError("split must be a NodeSplit or (train, val, test) node indices or masks")
    parts = []
    for name, part in zip(("train", "val", "test"), split):
        a = np.asarray(part)
        if a.dtype == bool:
            if a.shape != (num_nodes,):
                raise ValueError(f"split: the {name} mask must have one entry per node "
                                 f"({num_nodes}), got shape {a.shape}")
            a = np.flatnonzero(a)
        a = _int_ids(a.reshape(-1), f"split ({name})")
        if a.size and a.max() >= num_nodes:
            raise ValueError(f"split: the {name} nodes hold id {a.max()}, outside "
                             f"[0, num_nodes={num_nodes})")
        parts.append(np.sort(a).astype(np.int32))
    return NodeSplit(*parts)


def from_arrays(senders, receivers, num_nodes: int | None = None, *, times=None,
                edge_weights=None, features=None, labels=None, split=None,
                name: str = "arrays") -> Dataset:
    """A :class:`Dataset` from NumPy edge arrays whose node ids are already ``0..N-1``.

    Edges are directed ``senders[i] -> receivers[i]`` and kept as given, in order (repeats
    are repeated events, e.g. messages); the tasks make the message-passing graph symmetric.
    Give an undirected graph's edges once each.

    Args:
      senders, receivers: ``[E]`` integer node ids.
      num_nodes: N; default ``max id + 1`` (pass it when the last nodes have no edge).
      times: ``[E]`` whole-number timestamps, or None (a static graph).
      edge_weights: ``[E]`` finite weights (GCN's normalised sum uses them), or None.
      features: ``[N, F]`` (or ``[N]``) node features, or None (models learn a row per node).
      labels: ``[N]`` class of each node, any sortable values (numbers, strings); None or a
        negative integer marks a node without a label. Class ids follow the sorted values
        (``Dataset.class_names``).
      split: the node classification split: a :class:`NodeSplit`, or (train, val, test) node
        indices or boolean masks; None lets each run draw a stratified split of its seed.
      name: the Dataset's name (``data.register`` replaces it with the registered one).

    Returns:
      Dataset.

    Raises:
      ValueError: naming the argument: mismatched lengths, ids that are negative, not
        integers or not below ``num_nodes``, times that are not whole numbers, non-finite
        weights or features, labels of the wrong length or with no labelled node.
    """
    src, dst = _int_ids(senders, "senders"), _int_ids(receivers, "receivers")
    if src.shape != dst.shape:
        raise ValueError(f"senders and receivers must have the same length, got {src.size} "
                         f"and {dst.size}")
    largest = int(max(src.max(), dst.max())) if src.size else -1
    if num_nodes is None:
        num_nodes = largest + 1
    num_nodes = int(num_nodes)
    if num_nodes < 1:
        raise ValueError("the graph has no nodes: give num_nodes, or at least one edge")
    if largest >= num_nodes:
        raise ValueError(f"senders / receivers hold node id {largest}, outside "
                         f"[0, num_nodes={num_nodes})")
    check_num_nodes(num_nodes)
    label_ids, class_names = _labels(labels, num_nodes)
    return Dataset(
        name=name, num_nodes=num_nodes,
        senders=src.astype(np.int32), receivers=dst.astype(np.int32),
        times=_times(times, src.size), edge_weights=_edge_weights(edge_weights, src.size),
        features=_features(features, num_nodes), labels=label_ids,
        num_classes=0 if class_names is None else len(class_names),
        split=_node_split(split, num_nodes),
        node_ids=np.arange(num_nodes, dtype=np.int64), class_names=class_names)


def _one_direction(src: np.ndarray, dst: np.ndarray, directed: bool | None, arg: str,
                   weights=None):
    """Each undirected edge once (``src <= dst``) when the edge set is symmetric.

    ``directed=None`` decides by symmetry, ``False`` requires it, ``True`` keeps every entry.
    Returns:
      ``keep``: [E] bool, the entries that stay.
    """
    if directed:
        return np.ones(src.size, bool)
    n = int(max(src.max(), dst.max())) + 1 if src.size else 1
    forward = src * n + dst
    backward = dst * n + src
    symmetric = np.array_equal(np.sort(forward), np.sort(backward))
    if symmetric and weights is not None:
        order_f, order_b = np.argsort(forward, kind="stable"), np.argsort(backward, kind="stable")
        symmetric = np.array_equal(np.asarray(weights)[order_f], np.asarray(weights)[order_b])
    if not symmetric:
        if directed is False:
            raise ValueError(f"{arg} is not symmetric, but directed=False: give each "
                             "undirected edge in both directions, or pass directed=True")
        return np.ones(src.size, bool)
    return src <= dst


def from_scipy(A, *, directed: bool | None = None, features=None, labels=None, split=None,
               name: str = "scipy") -> Dataset:
    """A :class:`Dataset` from an adjacency matrix: SciPy sparse (any format) or dense NumPy.

    Every nonzero ``A[i, j]`` is an edge ``i -> j`` (explicit zeros are dropped), listed in
    row-major order; node ``i`` is row ``i``. A symmetric ``A`` is read as an undirected graph
    with each edge once (``i <= j``), unless ``directed=True``. Values other than 1 become
    edge weights.

    Args:
      A: ``[N, N]`` ``scipy.sparse`` array or matrix, or a square NumPy array.
      directed: None reads a symmetric ``A`` as undirected and any other as directed; True
        keeps both stored directions of a symmetric ``A``; False requires symmetry.
      features, labels, split, name: as :func:`from_arrays`.

    Returns:
      Dataset (``edge_weights`` None when every nonzero is 1).

    Raises:
      ValueError: ``A`` is not a square matrix, holds negative or non-finite values, or is
        not symmetric with ``directed=False``; bad node data as in :func:`from_arrays`.
    """
    if hasattr(A, "tocoo") and hasattr(A, "shape"):
        coo = A.tocoo()
        coo.sum_duplicates()
        coo.eliminate_zeros()
        shape = coo.shape
        rows, cols, values = (np.asarray(coo.row, np.int64), np.asarray(coo.col, np.int64),
                              np.asarray(coo.data, np.float64))
        order = np.lexsort((cols, rows))
        rows, cols, values = rows[order], cols[order], values[order]
    elif isinstance(A, np.ndarray):
        shape = A.shape
        if A.ndim == 2:
            rows, cols = np.nonzero(A)
            values = np.asarray(A[rows, cols], np.float64)
    else:
        raise ValueError(f"A must be a scipy.sparse matrix or a NumPy array, got "
                         f"{type(A).__name__} (edge lists: use from_arrays)")
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"A must be a square [N, N] adjacency matrix, got shape {shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("A holds non-finite values")
    if values.size and values.min() < 0:
        raise ValueError(f"A holds negative values ({values.min()}); edge weights must be >= 0")
    keep = _one_direction(rows, cols, directed, "A", values)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    weights = None if np.all(values == 1) else values
    return from_arrays(rows, cols, shape[0], edge_weights=weights, features=features,
                       labels=labels, split=split, name=name)


def from_networkx(G, *, labels: str | None = None, features: str | Sequence[str] | None = None,
                  times: str | None = None, weight: str | None = None,
                  split=None, name: str = "networkx") -> Dataset:
    """A :class:`Dataset` from a networkx graph (``Graph``, ``DiGraph``, multigraphs).

    Node ``i`` is the ``i``-th node of ``G.nodes`` (insertion order); ``Dataset.node_ids[i]``
    is its networkx id (int64 when every id is an integer, else an object array). Edges are
    ``G.edges`` in networkx's order, each undirected edge once, every parallel edge of a
    multigraph.

    Args:
      G: the networkx graph.
      labels: name of the node attribute holding each node's class (a node without it is
        unlabelled); None: no labels.
      features: name of the node attribute holding each node's feature vector (or number),
        or a list of names of numeric attributes, one column each; None: no features.
      times: name of the edge attribute holding each edge's whole-number timestamp; None: a
        static graph.
      weight: name of the edge attribute holding each edge's weight (1 where missing, as
        networkx's algorithms read it); None: unweighted.
      split, name: as :func:`from_arrays`.

    Returns:
      Dataset.

    Raises:
      ValueError: ``G`` is not a networkx graph, an attribute is missing (naming the argument
        and a node or edge without it), or bad values as in :func:`from_arrays`.
    """
    if not (hasattr(G, "nodes") and hasattr(G, "edges") and hasattr(G, "is_directed")):
        raise ValueError(f"G must be a networkx graph, got {type(G).__name__}")
    nodes = list(G.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    edges = list(G.edges(data=True))
    src = np.fromiter((index[u] for u, _, _ in edges), np.int64, len(edges))
    dst = np.fromiter((index[v] for _, v, _ in edges), np.int64, len(edges))

    def edge_values(attr, arg, default=None):
        out = []
        for u, v, d in edges:
            if attr not in d and default is None:
                raise ValueError(f"{arg}={attr!r}: edge ({u!r}, {v!r}) has no attribute "
                                 f"{attr!r}")
            out.append(d.get(attr, default))
        return out

    def node_values(attr, arg, required):
        values = [G.nodes[node].get(attr) for node in nodes]
        missing = [node for node, value in zip(nodes, values) if value is None]
        if missing and (required or len(missing) == len(nodes)):
            raise ValueError(f"{arg}={attr!r}: node {missing[0]!r} has no attribute {attr!r}")
        return values

    x = None
    if features is not None:
        if isinstance(features, str):
            x = np.asarray(node_values(features, "features", True), np.float64)
        else:
            x = np.stack([np.asarray(node_values(f, "features", True), np.float64)
                          for f in features], axis=1)
    ds = from_arrays(
        src, dst, len(nodes),
        times=None if times is None else edge_values(times, "times"),
        edge_weights=None if weight is None else edge_values(weight, "weight", 1.0),
        features=x,
        labels=None if labels is None else node_values(labels, "labels", False),
        split=split, name=name)
    if all(isinstance(node, (int, np.integer)) and not isinstance(node, bool) for node in nodes):
        ids = np.asarray(nodes, np.int64)
    else:
        ids = np.empty(len(nodes), object)
        ids[:] = nodes
    return dataclasses.replace(ds, node_ids=ids)


def _numpy(value):
    """A torch tensor (on any device) or array-like as a NumPy array, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_pyg(data, *, directed: bool | None = None, name: str = "pyg") -> Dataset:
    """A :class:`Dataset` from a PyTorch Geometric ``Data`` or ``TemporalData`` object.

    Reads ``edge_index`` (``[2, E]``; or a ``TemporalData``'s ``src``, ``dst`` and ``t``
    events), ``num_nodes``, ``x`` (features), ``y`` (``[N]`` labels), ``edge_weight`` (or a
    1-D ``edge_attr``) and ``train_mask`` / ``val_mask`` / ``test_mask`` (the node split)
    when present. PyG stores an undirected graph as both directions: a symmetric
    ``edge_index`` becomes each edge once (``u <= v``) unless ``directed=True``. torch is not
    imported: tensors convert through their own ``.numpy()``, and any object with these
    attributes as arrays works.

    Args:
      data: the ``Data`` / ``TemporalData`` object.
      directed: as :func:`from_scipy`.
      name: the Dataset's name.

    Returns:
      Dataset.

    Raises:
      ValueError: no ``edge_index`` (nor ``src`` / ``dst``), ``y`` that is not one class per
        node, or bad values as in :func:`from_arrays`.
    """
    def attr(key):
        value = getattr(data, key, None)
        return None if value is None else _numpy(value)

    times = None
    if attr("edge_index") is not None:
        edge_index = attr("edge_index")
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"data.edge_index must be [2, E], got shape {edge_index.shape}")
        src, dst = edge_index
    elif attr("src") is not None and attr("dst") is not None:
        src, dst, times = attr("src"), attr("dst"), attr("t")
    else:
        raise ValueError(f"data ({type(data).__name__}) has no edge_index (nor src / dst "
                         "events): not a PyG graph")
    weights = attr("edge_weight")
    if weights is None and attr("edge_attr") is not None and attr("edge_attr").ndim == 1:
        weights = attr("edge_attr")
    x, y = attr("x"), attr("y")
    if y is not None and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y is not None and y.ndim != 1:
        raise ValueError(f"data.y must hold one class per node, got shape {y.shape} "
                         "(multi-label targets are not supported)")
    num_nodes = getattr(data, "num_nodes", None)
    if num_nodes is None:
        num_nodes = next((len(a) for a in (x, y) if a is not None), None)
    src, dst = _int_ids(src, "data.edge_index"), _int_ids(dst, "data.edge_index")
    keep = _one_direction(src, dst, directed or times is not None, "data.edge_index", weights)
    masks = [attr(k) for k in ("train_mask", "val_mask", "test_mask")]
    return from_arrays(src[keep], dst[keep], None if num_nodes is None else int(num_nodes),
                       times=None if times is None else times[keep],
                       edge_weights=None if weights is None else weights[keep], features=x,
                       labels=y, split=masks if all(m is not None for m in masks) else None,
                       name=name)
