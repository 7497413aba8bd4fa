"""Embedded synthetic graphs: deterministic per seed, generated in NumPy in milliseconds.

``temporal_sbm`` is the default dataset (no files needed): a timestamped edge stream over a
stochastic block model where a set of persistent pairs keeps interacting, so that future
links are predictable from past ones. ``sbm`` is a static node-classification graph whose
labels are the communities.
"""
from __future__ import annotations

import numpy as np

from .dataset import Dataset
from .splits import node_split

__all__ = ["temporal_sbm", "sbm"]


def _communities(num_nodes: int, num_communities: int, rng) -> np.ndarray:
    """Balanced community assignment in random node order."""
    return rng.permutation(np.arange(num_nodes) % num_communities).astype(np.int32)


def _random_pairs(n: int, num_nodes: int, rng):
    """n uniform (src, dst) pairs with src != dst."""
    src = rng.integers(0, num_nodes, n)
    dst = rng.integers(0, num_nodes - 1, n)
    return src, dst + (dst >= src)


def _community_partners(src: np.ndarray, comm: np.ndarray, members: list, rng) -> np.ndarray:
    """For each source, a uniform partner (not itself) from the source's community."""
    dst = np.empty(src.size, dtype=np.int64)
    for c, m in enumerate(members):
        sel = np.flatnonzero(comm[src] == c)
        if sel.size == 0:
            continue
        pick = rng.integers(0, m.size - 1, sel.size)
        # Skip the source's own slot in its (sorted) community, so src != dst.
        own = np.searchsorted(m, src[sel])
        dst[sel] = m[pick + (pick >= own)]
    return dst


def temporal_sbm(seed: int = 0, num_nodes: int = 500, num_communities: int = 5,
                 num_edges: int = 25_000, partners: int = 4, p_persistent: float = 0.7,
                 p_community: float = 0.2, p_in_partner: float = 0.85,
                 time_span: int = 10_000_000, new_node_fraction: float = 0.0,
                 name: str = "synthetic-temporal") -> Dataset:
    """A temporal stochastic-block-model edge stream (link prediction).

    Each node gets ``partners`` persistent partners (mostly in its own community) with a
    heavy-tailed popularity; every event is, with probability ``p_persistent``, a draw from
    these persistent pairs, with ``p_community`` a random pair inside one community, and
    otherwise a uniform random pair. Times are uniform in ``[0, time_span)``. No self-loops.

    With ``new_node_fraction`` > 0 that share of the nodes arrives during the stream (arrival
    times uniform over it) and takes part in no event before arriving: an event's time is
    uniform between the later arrival of its two nodes and the end, as on real interaction
    graphs where users keep joining.

    Args:
      seed: random seed (same seed, identical dataset).
      num_nodes: N.
      num_communities: number of communities (also the node labels).
      num_edges: number of timestamped events.
      partners: persistent partners per node.
      p_persistent: fraction of events on persistent pairs.
      p_community: fraction of events between random members of one community.
      p_in_partner: probability that a persistent partner is in the node's community.
      time_span: timestamps lie in [0, time_span).
      new_node_fraction: share of nodes arriving during the stream (0: all present at 0).
      name: the dataset's name.

    Returns:
      Dataset with times, community labels and a stratified node split.
    """
    if num_nodes < 2 * num_communities or num_communities < 1:
        raise ValueError(f"need num_nodes >= 2 * num_communities >= 2, got num_nodes={num_nodes}, "
                         f"num_communities={num_communities}")
    if not (0 <= p_persistent and 0 <= p_community and p_persistent + p_community <= 1):
        raise ValueError("need p_persistent, p_community >= 0 with p_persistent + p_community <= 1")
    rng = np.random.default_rng(seed)
    comm = _communities(num_nodes, num_communities, rng)
    members = [np.flatnonzero(comm == c) for c in range(num_communities)]

    # Persistent pairs: in-community with probability p_in_partner, else anywhere.
    p_src = np.repeat(np.arange(num_nodes), partners)
    in_comm = rng.random(p_src.size) < p_in_partner
    dst_in = _community_partners(p_src, comm, members, rng)
    _, dst_any = _random_pairs(p_src.size, num_nodes, rng)
    dst_any = np.where(dst_any == p_src, (p_src + 1) % num_nodes, dst_any)
    p_dst = np.where(in_comm, dst_in, dst_any)
    weights = rng.pareto(1.5, p_src.size) + 1.0  # heavy tail: a few very active pairs
    weights /= weights.sum()

    kind = rng.choice(3, size=num_edges, p=[p_persistent, p_community,
                                            1.0 - p_persistent - p_community])
    src = np.empty(num_edges, np.int64)
    dst = np.empty(num_edges, np.int64)
    sel = np.flatnonzero(kind == 0)
    pick = rng.choice(p_src.size, size=sel.size, p=weights)
    src[sel], dst[sel] = p_src[pick], p_dst[pick]
    sel = np.flatnonzero(kind == 1)
    s = rng.integers(0, num_nodes, sel.size)
    src[sel], dst[sel] = s, _community_partners(s, comm, members, rng)
    sel = np.flatnonzero(kind == 2)
    src[sel], dst[sel] = _random_pairs(sel.size, num_nodes, rng)

    if not 0.0 <= new_node_fraction < 1.0:
        raise ValueError(f"need 0 <= new_node_fraction < 1, got {new_node_fraction}")
    if new_node_fraction > 0:
        arrival = np.where(rng.random(num_nodes) < new_node_fraction,
                           rng.integers(0, time_span, num_nodes), 0)
        start = np.maximum(arrival[src], arrival[dst])
        times = (start + rng.random(num_edges) * (time_span - start)).astype(np.int64)
        order = np.argsort(times, kind="stable")
        src, dst, times = src[order], dst[order], times[order]
    else:
        times = np.sort(rng.integers(0, time_span, num_edges)).astype(np.int64)
    return Dataset(
        name=name,
        num_nodes=num_nodes,
        senders=src.astype(np.int32),
        receivers=dst.astype(np.int32),
        times=times,
        labels=comm,
        num_classes=num_communities,
        split=node_split(comm, seed),
        node_ids=np.arange(num_nodes, dtype=np.int64),
    )


def sbm(seed: int = 0, num_nodes: int = 600, num_communities: int = 6, p_in: float = 0.05,
        p_out: float = 0.005, feature_dim: int = 16, feature_noise: float = 2.0) -> Dataset:
    """A static stochastic block model for node classification (labels = communities).

    Args:
      seed: random seed (same seed, identical dataset).
      num_nodes: N.
      num_communities: number of classes.
      p_in: edge probability inside a community.
      p_out: edge probability between communities.
      feature_dim: features are a community centroid plus Gaussian noise; 0 for no features.
      feature_noise: standard deviation of that noise (centroids have unit-variance entries).

    Returns:
      Dataset named ``"synthetic-sbm"``: each undirected edge stored once (src < dst), labels,
      features (or None) and a stratified node split.
    """
    if num_nodes < num_communities or num_communities < 1:
        raise ValueError(f"need num_nodes >= num_communities >= 1, got {num_nodes}, "
                         f"{num_communities}")
    rng = np.random.default_rng(seed)
    comm = _communities(num_nodes, num_communities, rng)
    iu, ju = np.triu_indices(num_nodes, k=1)
    prob = np.where(comm[iu] == comm[ju], p_in, p_out)
    keep = rng.random(iu.size) < prob
    features = None
    if feature_dim:
        centroids = rng.normal(size=(num_communities, feature_dim))
        noise = rng.normal(scale=feature_noise, size=(num_nodes, feature_dim))
        features = (centroids[comm] + noise).astype(np.float32)
    return Dataset(
        name="synthetic-sbm",
        num_nodes=num_nodes,
        senders=iu[keep].astype(np.int32),
        receivers=ju[keep].astype(np.int32),
        features=features,
        labels=comm,
        num_classes=num_communities,
        split=node_split(comm, seed),
        node_ids=np.arange(num_nodes, dtype=np.int64),
    )
