"""Node inputs for temporal link prediction that generalise to nodes without history.

A learnt row per node id says nothing about a node that had no edge while the model trained;
structural features of the message-passing graph do: they are computed the same way for every
node, from the edges (and times) a model may see, so a node that joins later is described like
any other. ``history`` is the message-passing graph at training time; at evaluation the same
features are recomputed on every training edge.
"""
from __future__ import annotations

import numpy as np

#: Columns of :func:`temporal_structure`.
STRUCTURE_COLUMNS = ("log_out_degree", "log_in_degree", "log_events", "log_degree",
                     "log_recency", "no_history")
# A node never seen is "long ago": as old as 200 hundredths of the time scale.
_COLD_RECENCY = 200.0


def temporal_structure(senders, receivers, times, num_nodes: int, t_ref: float,
                       t_scale: float) -> np.ndarray:
    """[N, 6] float32 structural features of a (temporal) edge list, one row per node.

    Columns (:data:`STRUCTURE_COLUMNS`): ``log1p`` of the distinct out- and in-neighbours, of
    the events touching the node and of its distinct undirected neighbours; ``log1p`` of the
    time since its last event, ``(t_ref - t_last) / t_scale``; and 1.0 for a node with no
    event (its recency is then ``log1p(200)``). Self-loops count as events, not neighbours.

    Args:
      senders, receivers: [E] edges (repeats allowed: they count as events).
      times: [E] event times, or None for a static graph (recency is then 0 for every node
        with an event).
      num_nodes: N.
      t_ref: the "now" of the features (the end of the period the edges cover).
      t_scale: time unit of the recency (e.g. a hundredth of the training period).
    """
    src = np.asarray(senders, np.int64)
    dst = np.asarray(receivers, np.int64)
    events = np.bincount(src, minlength=num_nodes) + np.bincount(dst, minlength=num_nodes)
    real = src != dst
    keys = np.unique(src[real] * num_nodes + dst[real])
    u, v = keys // num_nodes, keys % num_nodes
    out_deg = np.bincount(u, minlength=num_nodes)
    in_deg = np.bincount(v, minlength=num_nodes)
    undirected = np.unique(np.minimum(u, v) * num_nodes + np.maximum(u, v))
    a, b = undirected // num_nodes, undirected % num_nodes
    degree = np.bincount(a, minlength=num_nodes) + np.bincount(b, minlength=num_nodes)
    cold = events == 0
    if times is None:
        recency = np.zeros(num_nodes)
    else:
        last = np.full(num_nodes, -np.inf)
        t = np.asarray(times, np.float64)
        np.maximum.at(last, src, t)
        np.maximum.at(last, dst, t)
        recency = np.log1p(np.maximum(t_ref - np.where(cold, t_ref, last), 0.0)
                           / max(t_scale, 1e-12))
    recency = np.where(cold, np.log1p(_COLD_RECENCY), recency)
    return np.stack([np.log1p(out_deg), np.log1p(in_deg), np.log1p(events), np.log1p(degree),
                     recency, cold.astype(np.float64)], axis=1).astype(np.float32)
