"""Non-learned link-prediction scores on a run's own evaluation pairs.

Every score is a pure function ``score(senders, receivers, num_nodes, pairs) -> [P] float64`` of
the "history" graph (the edges a model may see) and the pairs to score. ``senders`` and
``receivers`` are [E] integer node ids in [0, num_nodes) and ``pairs`` is [P, 2] integer (u, v);
anything else raises ValueError. The intersection scores (common neighbours, Adamic-Adar,
Jaccard) take ``max_entries``: about how many neighbour entries to gather at once, which bounds
their memory and does not change their result.

- ``preferential_attachment``: ``deg(u) * deg(v)``.
- ``common_neighbours``: ``|N(u) & N(v)|``.
- ``adamic_adar``: sum over common neighbours ``w`` of ``1 / log(deg(w))``.
- ``jaccard``: ``|N(u) & N(v)| / |N(u) | N(v)|``, 0 when the union is empty.
- ``degree_sum``: ``deg(u) + deg(v)``.
- ``edgebank``: 1 when the pair occurred in the history, in either direction, else 0 (EdgeBank
  with unlimited memory, Poursafaei et al., NeurIPS 2022).

The history is read as an undirected simple graph: an edge and its reverse are one edge, repeated
edges count once and self-loops count for nothing, so ``deg`` is the number of distinct other
nodes adjacent to a node and ``N(u)`` never contains ``u``. ``edgebank`` is the one exception: it
asks whether the pair itself occurred, so a pair ``(u, u)`` scores 1 when the self-loop ``(u, u)``
is in the history. Pairs with ``u == v`` are scored by the same formulas (``N(u) & N(u) = N(u)``).

Neighbourhoods are a ``scipy.sparse`` CSR adjacency (no N x N dense matrix); the intersection
scores gather the neighbour rows of a bounded number of pairs at a time, so memory grows with the
history and the pairs, not with N**2.

``evaluate`` scores positives and negatives with every baseline and reports ROC-AUC and AP with
:mod:`sparsegnn_jax.metrics`; ``ranking`` reports MRR and Hits@K of each positive against its own
negatives.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from sparsegnn_jax import metrics

# scipy.sparse and scipy.stats are imported on first use, inside the functions: together they
# take longer to import than the rest of the package (scipy.stats alone about 0.45 s), which
# every `import sparsegnn_jax` would pay whether or not it scores a baseline.

__all__ = [
    "adjacency",
    "preferential_attachment",
    "common_neighbours",
    "adamic_adar",
    "jaccard",
    "degree_sum",
    "edgebank",
    "BASELINES",
    "auc_ap",
    "evaluate",
    "ranking",
]

# Neighbour entries gathered at once by the intersection scores (about 2**24 entries: ~100 MB).
DEFAULT_MAX_ENTRIES = 1 << 24


def _check_edges(senders, receivers, num_nodes):
    senders = np.asarray(senders)
    receivers = np.asarray(receivers)
    if int(num_nodes) != num_nodes or num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative integer, got {num_nodes!r}")
    if senders.ndim != 1 or senders.shape != receivers.shape:
        raise ValueError("senders and receivers must be 1-D arrays of the same length, got "
                         f"{senders.shape} and {receivers.shape}")
    for name, ids in (("senders", senders), ("receivers", receivers)):
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} must hold integer node ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= num_nodes):
            raise ValueError(f"{name} must lie in [0, {num_nodes}), got ids in "
                             f"[{ids.min()}, {ids.max()}]")
    return senders.astype(np.int64), receivers.astype(np.int64), int(num_nodes)


def _check_pairs(pairs, num_nodes, ndim=2):
    pairs = np.asarray(pairs)
    if pairs.ndim != ndim or pairs.shape[-1] != 2:
        shape_name = "[P, 2]" if ndim == 2 else "[P, K, 2]"
        raise ValueError(f"pairs must have shape {shape_name}, got {pairs.shape}")
    if pairs.size and not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"pairs must hold integer node ids, got dtype {pairs.dtype}")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= num_nodes):
        raise ValueError(f"pairs must lie in [0, {num_nodes}), got ids in "
                         f"[{pairs.min()}, {pairs.max()}]")
    return pairs.astype(np.int64)


def adjacency(senders, receivers, num_nodes) -> "scipy.sparse.csr_matrix":
    """The history as a symmetric 0/1 adjacency without self-loops.

    Args:
      senders, receivers: [E] integer node ids of the history edges (direction is ignored).
      num_nodes: number of nodes N; every id must lie in [0, N).

    Returns:
      [N, N] boolean ``scipy.sparse.csr_matrix`` with sorted, distinct column indices per row;
      ``A[u, v]`` is True iff ``u != v`` and ``(u, v)`` or ``(v, u)`` is a history edge.

    Raises:
      ValueError: mismatched shapes, non-integer ids or ids outside [0, N).
    """
    senders, receivers, n = _check_edges(senders, receivers, num_nodes)
    keep = senders != receivers
    rows = np.concatenate([senders[keep], receivers[keep]])
    cols = np.concatenate([receivers[keep], senders[keep]])
    import scipy.sparse as sp  # first use: see the imports at the top

    # Boolean entries: summing duplicates is a logical or, so a repeated edge stays one True
    # (an integer count could wrap to 0 and be dropped).
    adj = sp.csr_matrix((np.ones(rows.shape[0], bool), (rows, cols)), shape=(n, n))
    adj.sum_duplicates()
    return adj


def _chunks(pairs: np.ndarray, degrees: np.ndarray, max_entries: int):
    """Slices of ``pairs`` whose endpoints' neighbour lists hold about ``max_entries`` entries.

    A chunk holds the pairs whose running cost starts below its bound, so it may exceed
    ``max_entries`` by one pair's cost; a single pair larger than the budget is a chunk alone.
    """
    if max_entries < 1:
        raise ValueError(f"max_entries must be >= 1, got {max_entries}")
    cost = degrees[pairs[:, 0]] + degrees[pairs[:, 1]] + 1.0
    start = np.cumsum(cost) - cost
    chunk_of = (start // max_entries).astype(np.int64)
    edges = np.concatenate([[0], np.flatnonzero(np.diff(chunk_of)) + 1, [pairs.shape[0]]])
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _history(senders, receivers, num_nodes, pairs):
    """The checked pairs, the adjacency of the history and its degrees (float64)."""
    adj = adjacency(senders, receivers, num_nodes)
    return _check_pairs(pairs, num_nodes), adj, np.diff(adj.indptr).astype(np.float64)


def _common_neighbour_stats(adj, degrees, pairs, weights, max_entries):
    """Per pair: the number of common neighbours and the sum of ``weights`` over them."""
    count = np.zeros(pairs.shape[0], np.float64)
    weighted = np.zeros(pairs.shape[0], np.float64)
    for part in _chunks(pairs, degrees, max_entries):
        common = adj[pairs[part, 0]].multiply(adj[pairs[part, 1]]).tocsr()
        common.eliminate_zeros()  # row i now lists N(u_i) & N(v_i)
        sizes = np.diff(common.indptr)
        count[part] = sizes
        owner = np.repeat(np.arange(sizes.shape[0]), sizes)
        weighted[part] = np.bincount(owner, weights=weights[common.indices],
                                     minlength=sizes.shape[0])
    return count, weighted


def preferential_attachment(senders, receivers, num_nodes, pairs) -> np.ndarray:
    """``deg(u) * deg(v)`` per pair, as a [P] float64 array."""
    pairs, _, deg = _history(senders, receivers, num_nodes, pairs)
    return deg[pairs[:, 0]] * deg[pairs[:, 1]]


def degree_sum(senders, receivers, num_nodes, pairs) -> np.ndarray:
    """``deg(u) + deg(v)`` per pair, as a [P] float64 array."""
    pairs, _, deg = _history(senders, receivers, num_nodes, pairs)
    return deg[pairs[:, 0]] + deg[pairs[:, 1]]


def common_neighbours(senders, receivers, num_nodes, pairs,
                      max_entries: int = DEFAULT_MAX_ENTRIES) -> np.ndarray:
    """``|N(u) & N(v)|`` per pair, as a [P] float64 array."""
    pairs, adj, deg = _history(senders, receivers, num_nodes, pairs)
    count, _ = _common_neighbour_stats(adj, deg, pairs, np.zeros_like(deg), max_entries)
    return count


def adamic_adar(senders, receivers, num_nodes, pairs,
                max_entries: int = DEFAULT_MAX_ENTRIES) -> np.ndarray:
    """Sum over common neighbours ``w`` of ``1 / log(deg(w))`` per pair, as [P] float64.

    A neighbour of degree 1 can only be common to a pair ``(u, u)``; its weight ``1 / log(1)``
    is taken as 0 rather than infinity.
    """
    pairs, adj, deg = _history(senders, receivers, num_nodes, pairs)
    weights = np.where(deg > 1, 1.0 / np.log(np.maximum(deg, 2.0)), 0.0)
    _, weighted = _common_neighbour_stats(adj, deg, pairs, weights, max_entries)
    return weighted


def jaccard(senders, receivers, num_nodes, pairs,
            max_entries: int = DEFAULT_MAX_ENTRIES) -> np.ndarray:
    """``|N(u) & N(v)| / |N(u) | N(v)|`` per pair, as [P] float64; 0 when the union is empty."""
    pairs, adj, deg = _history(senders, receivers, num_nodes, pairs)
    count, _ = _common_neighbour_stats(adj, deg, pairs, np.zeros_like(deg), max_entries)
    union = deg[pairs[:, 0]] + deg[pairs[:, 1]] - count
    return np.divide(count, union, out=np.zeros_like(count), where=union > 0)


def edgebank(senders, receivers, num_nodes, pairs) -> np.ndarray:
    """1.0 when ``(u, v)`` or ``(v, u)`` is a history edge, else 0.0, as a [P] float64 array.

    Unlike the other scores this looks at the pair itself, so ``(u, u)`` scores 1 when the
    self-loop ``(u, u)`` is a history edge.
    """
    senders, receivers, n = _check_edges(senders, receivers, num_nodes)
    pairs = _check_pairs(pairs, n)
    # One int64 key per unordered pair; N <= ~3e9 keeps N * N inside int64.
    seen = np.sort(np.minimum(senders, receivers) * n + np.maximum(senders, receivers))
    keys = np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])
    if seen.size == 0:
        return np.zeros(keys.shape[0], np.float64)
    # Sort + searchsorted rather than np.isin: 4 s instead of 22 s (np.unique + np.isin: 53 s)
    # for 1M pairs against 10M history edges.
    found = seen[np.minimum(np.searchsorted(seen, keys), seen.size - 1)] == keys
    return found.astype(np.float64)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "preferential_attachment": preferential_attachment,
    "common_neighbours": common_neighbours,
    "adamic_adar": adamic_adar,
    "jaccard": jaccard,
    "degree_sum": degree_sum,
    "edgebank": edgebank,
}


def _float32_safe(scores: np.ndarray) -> np.ndarray:
    """Dense ranks of ``scores``: same order and ties, but exact in float32.

    :mod:`sparsegnn_jax.metrics` casts scores to float32, which merges distinct float64 scores
    such as ``4097 * 4097`` and ``4096 * 4098`` into false ties; ROC-AUC, AP and ranks depend on
    the order only, and dense ranks stay exact in float32 up to 2**24 distinct values.
    """
    import scipy.stats  # first use: see the imports at the top

    return scipy.stats.rankdata(scores, method="dense").astype(np.float32)


def auc_ap(scores, labels) -> dict:
    """ROC-AUC and AP of ``scores`` against 0/1 ``labels`` (``evaluate``'s default metrics).

    The same definitions as :func:`sparsegnn_jax.metrics.roc_auc` (ties count one half: average
    ranks) and :func:`sparsegnn_jax.metrics.average_precision` (a block of tied scores is one
    threshold), computed on the host in float64. Baselines are scored once per split, on the
    pairs and on groups of them of every size, where the JAX metrics would compile each
    operation anew per shape (about 200 compilations, 8 s, per link problem).

    Returns:
      ``{"roc_auc": float, "ap": float}``; ROC-AUC NaN when one class is absent, AP 0 without
      positives (the JAX metrics' values).
    """
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(labels) > 0.5
    if scores.ndim != 1 or scores.shape != positive.shape:
        raise ValueError("auc_ap: scores and labels must be 1-D arrays of the same shape, got "
                         f"{scores.shape} and {positive.shape}")
    n, n_pos = scores.size, int(positive.sum())
    n_neg = n - n_pos
    import scipy.stats  # first use: see the imports at the top

    rank_sum = float(scipy.stats.rankdata(scores)[positive].sum())  # average ranks for ties
    auc = ((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
           if n_pos and n_neg else float("nan"))
    order = np.argsort(scores, kind="stable")
    # Positives strictly below each score: the threshold at a score selects every score >= it.
    pos_below = np.concatenate([[0], np.cumsum(positive[order])])
    first = np.searchsorted(scores[order], scores, side="left")
    precision = (n_pos - pos_below[first]) / (n - first)
    ap = float(precision[positive].sum() / n_pos) if n_pos else 0.0
    return {"roc_auc": float(auc), "ap": ap}


def evaluate(senders, receivers, num_nodes, pos_pairs, neg_pairs,
             metrics_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None) -> dict:
    """Every baseline's ROC-AUC and AP on the given positive and negative pairs.

    Args:
      senders, receivers: [E] history edges (the graph a model may see); num_nodes: N.
      pos_pairs: [P, 2] positive pairs (label 1).
      neg_pairs: [Q, 2] negative pairs (label 0).
      metrics_fn: ``(scores [P + Q] float64, labels [P + Q] int) -> dict``; defaults to
        :func:`auc_ap`.

    Returns:
      ``{baseline name: metrics_fn(scores, labels)}`` for every entry of :data:`BASELINES`.
    """
    metrics_fn = auc_ap if metrics_fn is None else metrics_fn
    pos_pairs = _check_pairs(pos_pairs, num_nodes)
    neg_pairs = _check_pairs(neg_pairs, num_nodes)
    pairs = np.concatenate([pos_pairs, neg_pairs])
    labels = np.concatenate([np.ones(len(pos_pairs), np.int32), np.zeros(len(neg_pairs), np.int32)])
    return {name: metrics_fn(score(senders, receivers, num_nodes, pairs), labels)
            for name, score in BASELINES.items()}


def ranking(senders, receivers, num_nodes, pos_pairs, neg_pairs, k: int = 10) -> dict:
    """Every baseline's MRR and Hits@k, each positive ranked against its own negatives.

    Ties count against the positive, as in :func:`sparsegnn_jax.metrics.mrr_hits`, so a score
    that cannot tell a positive from its negatives earns the worst rank ``K + 1``.

    Args:
      senders, receivers: [E] history edges; num_nodes: N.
      pos_pairs: [P, 2] positive pairs.
      neg_pairs: [P, K, 2] the K negatives of each positive.
      k: Hits@k cut-off.

    Returns:
      ``{baseline name: {"mrr": float, f"hits@{k}": float}}``.
    """
    pos_pairs = _check_pairs(pos_pairs, num_nodes)
    neg_pairs = _check_pairs(neg_pairs, num_nodes, ndim=3)
    if neg_pairs.shape[0] != pos_pairs.shape[0]:
        raise ValueError("ranking: expected pos_pairs [P, 2] and neg_pairs [P, K, 2], "
                         f"got {pos_pairs.shape} and {neg_pairs.shape}")
    num_pos, num_neg = neg_pairs.shape[:2]
    pairs = np.concatenate([pos_pairs, neg_pairs.reshape(-1, 2)])
    out = {}
    for name, score in BASELINES.items():
        scores = _float32_safe(score(senders, receivers, num_nodes, pairs))
        mrr, hits = metrics.mrr_hits(scores[:num_pos], scores[num_pos:].reshape(num_pos, num_neg),
                                     k=k)
        out[name] = {"mrr": float(mrr), f"hits@{k}": float(hits)}
    return out
