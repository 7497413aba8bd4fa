"""Pair and node history: what the link heuristics know, as inputs of a link decoder.

On graphs where the same pairs interact again and again (e-mail, messages, contacts), "who
interacted recently interacts again" is most of the signal: EdgeBank (has the pair met?) and
degree counts (how active are the two nodes?) read it directly. A message-passing encoder does
not: its graph holds each pair once, with neither counts nor times, so it has to rediscover
from node embeddings what one lookup answers. These features give the decoder, for every
scored pair ``(u, v)``, the history known at prediction time:

- has ``u -> v`` / ``v -> u`` happened, and how often (``log1p`` counts, scaled);
- how long ago the pair last interacted, in either direction;
- how active ``u`` and ``v`` are (events touching them) and how long ago they last were;
- how many neighbours they share (common neighbours, Jaccard, Adamic-Adar).

History is always a prefix of the time-ordered event stream: the training history for the
training targets, the training (and validation) events for evaluation, and in streaming
evaluation every event before the scored batch. :func:`build` aggregates a prefix on the host
(padded to a fixed size, so every prefix of a stream shares one compiled lookup) and
:func:`pair_features` looks pairs up on device (training steps draw their negatives there).

Neighbour sets are rows of at most ``max_neighbours`` ids per node: a node with more keeps
the neighbours it interacted with most, so the overlap features of hubs are a lower bound.

Times are ages ``(t_now - t_last) / t_scale`` with ``t_now`` the last known event's time and
``t_scale`` a hundredth of the training period (as :mod:`sparsegnn_jax.features`); a recency is
``log1p(age) / log1p(200)`` capped at 1, which is also the value of "never". Counts are
``log1p(count)`` divided by ``log1p`` of the training history's largest count, so every column
lies in ``[0, 1]`` at training time (a later history may exceed 1 a little).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax.data.splits import find_pairs

#: Columns of :func:`pair_features` / :func:`stream_pair_features`, in order.
PAIR_FEATURE_COLUMNS = ("met_uv", "met_vu", "count_uv", "count_vu", "pair_recency",
                        "events_u", "events_v", "recency_u", "recency_v",
                        "common_neighbours", "jaccard", "adamic_adar")
#: Neighbours kept per node for the overlap features.
MAX_NEIGHBOURS = 128
NUM_PAIR_FEATURES = len(PAIR_FEATURE_COLUMNS)
# "Long ago": twice the training period, in hundredths of it (features.py's cold recency).
_COLD_AGE = 200.0


class PairHistory(NamedTuple):
    """A history of events, aggregated for device lookups (a pytree: jit and vmap take it).

    Attributes:
      keys: ``[U, 2]`` int32 sorted distinct directed pairs (``data.edge_keys`` order).
      counts: ``[U]`` float32 events of each pair.
      ages: ``[U]`` float32 age of each pair's last event, in ``t_scale`` units.
      node_events: ``[N]`` float32 events touching each node (a self loop counts twice).
      node_ages: ``[N]`` float32 age of each node's last event (``inf``: none).
      neighbours: ``[N, D]`` int32 each node's distinct neighbours (either direction, self
        loops aside), sorted, padded with ``N``.
      degrees: ``[N]`` float32 each node's distinct neighbours, all of them.
      count_scale, event_scale: float32 scalars dividing ``log1p`` of pair and node counts.
    """

    keys: jax.Array
    counts: jax.Array
    ages: jax.Array
    node_events: jax.Array
    node_ages: jax.Array
    neighbours: jax.Array
    degrees: jax.Array
    count_scale: jax.Array
    event_scale: jax.Array


def _recency(age):
    return jnp.minimum(jnp.log1p(jnp.maximum(age, 0.0)) / np.log1p(_COLD_AGE), 1.0)


def _scale(max_count) -> np.float32:
    return np.float32(max(np.log1p(float(max_count)), 1.0))


def scales_of(history: PairHistory) -> tuple[np.float32, np.float32]:
    """``(count_scale, event_scale)`` of ``history``, to describe later histories alike."""
    return np.float32(history.count_scale), np.float32(history.event_scale)


def _neighbour_table(src, dst, num_nodes: int, width: int):
    """``[N, width]`` sorted distinct neighbours (most frequent first when cut), ``[N]`` degrees."""
    real = src != dst
    a, b = np.minimum(src[real], dst[real]), np.maximum(src[real], dst[real])
    pairs, counts = np.unique(a * num_nodes + b, return_counts=True)
    node = np.concatenate([pairs // num_nodes, pairs % num_nodes])
    other = np.concatenate([pairs % num_nodes, pairs // num_nodes])
    counts = np.concatenate([counts, counts])
    order = np.lexsort((other, -counts, node))  # by node, then most events, then id
    node, other = node[order], other[order]
    degrees = np.bincount(node, minlength=num_nodes)
    rank = np.arange(node.size) - np.repeat(np.cumsum(degrees) - degrees, degrees)
    keep = rank < width
    table = np.full((num_nodes, width), num_nodes, np.int64)
    table[node[keep], rank[keep]] = other[keep]
    return np.sort(table, axis=1), degrees


def build(senders, receivers, times, num_nodes: int, t_scale: float,
          scales: tuple[float, float] | None = None, num_pairs: int | None = None,
          max_neighbours: int = MAX_NEIGHBOURS) -> PairHistory:
    """Aggregates a time-ordered event list into a :class:`PairHistory`.

    Args:
      senders, receivers: ``[E]`` events (repeats are repeated interactions), in time order.
      times: ``[E]`` event times, or None (a static graph: every age is 0).
      num_nodes: N.
      t_scale: the time unit of ages (> 0).
      scales: ``(count_scale, event_scale)`` of the training history (:func:`scales_of`), so
        an evaluation history is described in the training units; None takes these events'.
      num_pairs: pad the pair table to this many rows (at least the distinct pairs), so that
        histories of one stream share shapes; None: no padding.
      max_neighbours: neighbours kept per node for the overlap features.

    Returns:
      the history as seen just after its last event (``t_now`` = the largest time).
    """
    src = np.asarray(senders, np.int64)
    dst = np.asarray(receivers, np.int64)
    t = np.zeros(src.size) if times is None else np.asarray(times, np.float64)
    t_now = float(t.max()) if t.size else 0.0
    codes = src * num_nodes + dst
    uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    last = np.full(uniq.size, -np.inf)
    np.maximum.at(last, inverse, t)
    nodes = np.concatenate([src, dst])
    node_events = np.bincount(nodes, minlength=num_nodes).astype(np.float64)
    node_last = np.full(num_nodes, -np.inf)
    np.maximum.at(node_last, nodes, np.concatenate([t, t]))
    if scales is None:
        scales = (_scale(counts.max() if counts.size else 0), _scale(node_events.max(initial=0)))
    keys = np.stack([uniq // num_nodes, uniq % num_nodes], axis=1)
    ages = (t_now - last) / t_scale
    pad = 0 if num_pairs is None else num_pairs - uniq.size
    if pad < 0:
        raise ValueError(f"history.build: {uniq.size} distinct pairs exceed num_pairs={num_pairs}")
    if pad:
        # Rows past every real key (the search order is lexicographic), counted as no event.
        keys = np.concatenate([keys, np.full((pad, 2), np.iinfo(np.int32).max)])
        counts, ages = np.concatenate([counts, np.zeros(pad)]), np.concatenate([ages, np.zeros(pad)])
    table, degrees = _neighbour_table(src, dst, num_nodes, max(1, min(
        max_neighbours, num_nodes)))
    return PairHistory(
        keys=jnp.asarray(keys, jnp.int32),
        counts=jnp.asarray(counts, jnp.float32),
        ages=jnp.asarray(ages, jnp.float32),
        node_events=jnp.asarray(node_events, jnp.float32),
        node_ages=jnp.asarray((t_now - node_last) / t_scale, jnp.float32),
        neighbours=jnp.asarray(table, jnp.int32),
        degrees=jnp.asarray(degrees, jnp.float32),
        count_scale=jnp.float32(scales[0]), event_scale=jnp.float32(scales[1]))


def _overlap(history: PairHistory, u, v):
    """Common neighbours and Adamic-Adar of each pair from the neighbour rows: every entry of
    ``u``'s row is searched in ``v``'s (sorted) row."""
    row_u, row_v = history.neighbours[u], history.neighbours[v]
    at = jax.vmap(jnp.searchsorted)(row_v, row_u)
    found = jnp.take_along_axis(row_v, jnp.minimum(at, row_v.shape[1] - 1), axis=1) == row_u
    common = found & (row_u < history.degrees.shape[0])  # padding is N
    weight = 1.0 / jnp.log(jnp.maximum(history.degrees, 2.0))
    inv_log = jnp.where(common, weight[jnp.minimum(row_u, history.degrees.shape[0] - 1)], 0.0)
    return common.sum(axis=1).astype(jnp.float32), inv_log.sum(axis=1)


def pair_features(history: PairHistory, pairs: jax.Array) -> jax.Array:
    """``[P, NUM_PAIR_FEATURES]`` float32 features of ``pairs [P, 2]`` (jit-able).

    Two binary searches per pair (``data.splits.find_pairs``), node gathers, and the overlap
    of two neighbour rows (``D`` binary searches of ``log D`` steps).
    """
    u = pairs[:, 0].astype(jnp.int32)
    v = pairs[:, 1].astype(jnp.int32)
    i, found_uv = find_pairs(history.keys, u, v)
    j, found_vu = find_pairs(history.keys, v, u)
    if history.counts.shape[0] == 0:
        counts = ages = jnp.zeros((1,), jnp.float32)  # nothing found; gathers need a row
    else:
        counts, ages = history.counts, history.ages
    count_uv = jnp.where(found_uv, counts[i], 0.0)
    count_vu = jnp.where(found_vu, counts[j], 0.0)
    inf = jnp.float32(np.inf)
    pair_age = jnp.minimum(jnp.where(count_uv > 0, ages[i], inf),
                           jnp.where(count_vu > 0, ages[j], inf))
    events_u, events_v = history.node_events[u], history.node_events[v]
    common, adamic_adar = _overlap(history, u, v)
    union = history.degrees[u] + history.degrees[v] - common
    cols = [count_uv > 0, count_vu > 0,
            jnp.log1p(count_uv) / history.count_scale, jnp.log1p(count_vu) / history.count_scale,
            _recency(pair_age),
            jnp.log1p(events_u) / history.event_scale, jnp.log1p(events_v) / history.event_scale,
            _recency(jnp.where(events_u > 0, history.node_ages[u], inf)),
            _recency(jnp.where(events_v > 0, history.node_ages[v], inf)),
            jnp.log1p(common) / np.log1p(history.neighbours.shape[1]),
            common / jnp.maximum(union, 1.0),
            jnp.log1p(adamic_adar) / np.log1p(history.neighbours.shape[1])]
    return jnp.stack([c.astype(jnp.float32) for c in cols], axis=-1)
