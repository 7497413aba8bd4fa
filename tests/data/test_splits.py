"""sparsegnn_jax.data splits: chronological link splits, negatives, node splits."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ring_of_communities

from sparsegnn_jax import data

# ----------------------------------------------------------------------------- splits


def _toy_temporal(times, n=6):
    k = len(times)
    rng = np.random.default_rng(1)
    src = rng.integers(0, n, k).astype(np.int32)
    dst = ((src + 1 + rng.integers(0, n - 1, k)) % n).astype(np.int32)
    return data.Dataset("toy", n, src, dst, times=np.asarray(times, np.int64))


def test_temporal_link_split_chronological():
    rng = np.random.default_rng(0)
    ds = _toy_temporal(rng.permutation(1000) // 3, n=40)  # shuffled, with ties
    split = data.temporal_link_split(ds)
    assert split.train_times.max() <= split.val_times.min()
    assert split.val_times.max() <= split.test_times.min()
    assert split.train_times.max() <= split.test_times.min()
    np.testing.assert_array_equal(split.graph_senders, split.train_edges[:, 0])
    np.testing.assert_array_equal(split.graph_receivers, split.train_edges[:, 1])
    # Reference: stable sort then cut at 70% / 80%, then dedupe keeping the first occurrence.
    order = np.argsort(ds.times, kind="stable")
    e = np.stack([ds.senders[order], ds.receivers[order]], 1)
    for part, (lo, hi) in zip((split.train_edges, split.val_edges, split.test_edges),
                              ((0, 700), (700, 800), (800, 1000))):
        seen, ref = set(), []
        for s, d in e[lo:hi].tolist():
            if (s, d) not in seen:
                seen.add((s, d))
                ref.append((s, d))
        np.testing.assert_array_equal(part, np.array(ref, dtype=np.int32).reshape(-1, 2))


def test_temporal_link_split_exact_counts_no_dupes():
    ds = data.Dataset("toy", 4, np.array([0, 1, 0, 2, 3, 1, 2, 0, 1, 3], np.int32),
                      np.array([1, 2, 1, 3, 0, 2, 0, 1, 3, 2], np.int32),
                      times=np.arange(10, dtype=np.int64)[::-1].copy())
    split = data.temporal_link_split(ds)
    # Reversed times: chronological order is the reverse of file order.
    np.testing.assert_array_equal(split.test_edges, [[1, 2], [0, 1]])
    np.testing.assert_array_equal(split.val_edges, [[0, 1]])
    np.testing.assert_array_equal(split.train_edges,
                                  [[3, 2], [1, 3], [0, 1], [2, 0], [1, 2], [3, 0], [2, 3]])
    np.testing.assert_array_equal(split.test_times, [8, 9])


def test_temporal_link_split_errors():
    ds = _toy_temporal(range(10))
    with pytest.raises(ValueError, match="train"):
        data.temporal_link_split(ds, train=0.9, val=0.2)
    with pytest.raises(ValueError, match="too few"):
        data.temporal_link_split(_toy_temporal(range(2)))


def test_edge_keys():
    keys = data.edge_keys(np.array([[2, 1], [0, 3], [2, 1]]), 4)
    np.testing.assert_array_equal(keys, [[0, 3], [2, 1]])
    assert keys.dtype == np.int32
    with pytest.raises(ValueError, match="num_nodes"):
        data.edge_keys(np.array([[0, 4]]), 4)


def test_sample_negatives_are_non_edges_and_deterministic():
    n = 30
    rng = np.random.default_rng(0)
    # A dense-ish graph (40% of pairs) so rejection really happens.
    pairs = np.stack([rng.integers(0, n, 500), rng.integers(0, n, 500)], 1)
    keys = data.edge_keys(pairs, n)
    key = jax.random.key(7)
    neg = np.asarray(data.sample_negatives(key, n, 2000, keys))
    assert neg.shape == (2000, 2) and neg.dtype == np.int32
    assert np.all(neg[:, 0] != neg[:, 1])
    assert neg.min() >= 0 and neg.max() < n
    assert not np.isin(data.pair_codes(neg[:, 0], neg[:, 1], n),
                       data.pair_codes(keys[:, 0], keys[:, 1], n)).any()
    again = np.asarray(data.sample_negatives(key, n, 2000, keys))
    np.testing.assert_array_equal(neg, again)
    other = np.asarray(data.sample_negatives(jax.random.key(8), n, 2000, keys))
    assert not np.array_equal(neg, other)
    jitted = jax.jit(functools.partial(data.sample_negatives, num_nodes=n, num=2000))
    np.testing.assert_array_equal(np.asarray(jitted(key, edge_keys=keys)), neg)
    # Covers all non-edges roughly uniformly (every node appears as a source).
    assert np.unique(neg[:, 0]).size == n


@functools.partial(jax.jit, static_argnums=(3, 4))
def _full_round_negatives(key, keys, nodes, num, rounds):
    """The sampler without early exit: every one of ``rounds`` rounds runs."""
    round_keys = jax.random.split(key, rounds + 1)

    def one_round(r, pair):
        src, dst = pair
        bad = data.known_pairs(keys, src, dst)
        new_src, new_dst = data.random_pairs(round_keys[r + 1], nodes, num)
        return jnp.where(bad, new_src, src), jnp.where(bad, new_dst, dst)

    pair = jax.lax.fori_loop(0, rounds, one_round, data.random_pairs(round_keys[0], nodes, num))
    return jnp.stack(pair, axis=1)


def test_sample_negatives_early_exit_equals_every_round():
    # 600 random pairs over 30 nodes: about half of all pairs are edges, so slots need many
    # rounds; 256 slots are all clean after about 8, before 16 (the early exit is taken), and
    # 2 rounds stop with edges left (the cap is taken).
    n = 30
    keys = jnp.asarray(data.edge_keys(np.random.default_rng(0).integers(0, n, (600, 2)), n))
    every_node, some = jnp.arange(n, dtype=jnp.int32), jnp.asarray([1, 4, 7, 9, 12], jnp.int32)
    for nodes, seed, rounds in ((every_node, 0, 16), (every_node, 1, 16), (every_node, 0, 2),
                                (some, 0, 16)):
        key = jax.random.key(seed)
        got = data.sample_negatives(key, n, 256, keys, rounds=rounds, nodes=nodes)
        np.testing.assert_array_equal(
            np.asarray(got), np.asarray(_full_round_negatives(key, keys, nodes, 256, rounds)))
    capped = np.asarray(data.sample_negatives(jax.random.key(0), n, 256, keys, rounds=2))
    assert np.isin(data.pair_codes(capped[:, 0], capped[:, 1], n),
                   data.pair_codes(keys[:, 0], keys[:, 1], n)).any()


def test_pair_keys_above_46340_nodes():
    # 100k nodes: src * N + dst passes 2**31 from node 21,475 on; the two-column keys do not.
    n = 100_000
    top = np.arange(n - 6, n)
    edges = np.array([(a, b) for a in top for b in top if a != b and (a + b) % 3 == 0])
    edges = np.concatenate([edges, [[0, n - 1], [n - 1, 0], [46_341, 46_340]]])
    keys = data.edge_keys(edges, n)
    assert keys.dtype == np.int32 and keys.shape == (len(edges), 2)
    np.testing.assert_array_equal(data.pair_codes(keys[:, 0], keys[:, 1], n),
                                  np.sort(data.pair_codes(edges[:, 0], edges[:, 1], n)))
    # Every ordered pair of the top 6 ids, reversed pairs and the two near 46,340.
    queries = np.array([(a, b) for a in top for b in top] + [[n - 1, 0], [0, n - 1], [0, n - 2],
                                                                [46_340, 46_341], [46_341, 46_340]])
    got = np.asarray(data.known_pairs(jnp.asarray(keys), jnp.asarray(queries[:, 0]),
                                      jnp.asarray(queries[:, 1])))
    expected = np.isin(data.pair_codes(queries[:, 0], queries[:, 1], n),
                       data.pair_codes(edges[:, 0], edges[:, 1], n))
    np.testing.assert_array_equal(got, expected)
    assert expected.sum() == len(edges)  # every edge is among the queries, and 18 non-edges
    # Negatives drawn among the top ids (a third of their pairs are edges) avoid every edge.
    neg = np.asarray(data.sample_negatives(jax.random.key(0), n, 500, keys,
                                           nodes=jnp.asarray(top, jnp.int32)))
    assert not np.isin(data.pair_codes(neg[:, 0], neg[:, 1], n),
                       data.pair_codes(edges[:, 0], edges[:, 1], n)).any()
    assert neg.min() >= n - 6 and np.all(neg[:, 0] != neg[:, 1])
    # More nodes than int32 ids can name: refused before any work.
    with pytest.raises(ValueError, match="int32"):
        data.edge_keys(edges, 2**31)
    with pytest.raises(ValueError, match="int32"):
        data.sample_negatives(jax.random.key(0), 2**31, 4, keys)


def test_sample_negatives_without_edges_and_errors():
    neg = np.asarray(data.sample_negatives(jax.random.key(0), 5, 100, np.zeros(0, np.int64)))
    assert neg.shape == (100, 2) and np.all(neg[:, 0] != neg[:, 1])
    with pytest.raises(ValueError, match="num_nodes"):
        data.sample_negatives(jax.random.key(0), 1, 3, np.zeros(0, np.int64))


def test_node_split_stratified_and_reproducible():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    labels = np.random.default_rng(0).permutation(labels)
    s = data.node_split(labels, seed=5)
    t = data.node_split(labels, seed=5)
    u = data.node_split(labels, seed=6)
    for a, b in zip((s.train, s.val, s.test), (t.train, t.val, t.test)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(s.train, u.train)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert np.unique(allidx).size == labels.size == allidx.size  # disjoint and complete
    np.testing.assert_array_equal(np.bincount(labels[s.train]), [60, 30, 18, 12])
    np.testing.assert_array_equal(np.bincount(labels[s.val]), [20, 10, 6, 4])
    np.testing.assert_array_equal(np.bincount(labels[s.test]), [20, 10, 6, 4])


def test_node_split_ignores_unlabelled():
    s = data.node_split(np.array([0, 0, -1, 1, 1, -1]), seed=0, train=0.5, val=0.0)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert 2 not in allidx and 5 not in allidx and allidx.size == 4


# ----------------------------------------------------------------------------------------------
# Edge cases: the smallest graphs, an empty part, a negative seed.


def _edges(pairs, times=None, num_nodes=None):
    pairs = np.asarray(pairs, np.int32).reshape(-1, 2)
    n = int(pairs.max()) + 1 if num_nodes is None else num_nodes
    t = None if times is None else np.asarray(times, np.int64)
    return data.Dataset("toy", n, pairs[:, 0].copy(), pairs[:, 1].copy(), times=t)


def test_link_split_with_an_empty_part_is_a_clear_error():
    # 3 edges: floor(0.7 * 3) = 2 train, floor(0.8 * 3) - 2 = 0 val, 1 test.
    with pytest.raises(ValueError, match=r"3 edges: too few .*the val part would be empty.*"
                                         r"need at least 4 edges"):
        data.temporal_link_split(_edges([[0, 1], [1, 2], [2, 0]], times=[3, 1, 2]))
    with pytest.raises(ValueError, match="train and val and test parts would be empty"):
        data.temporal_link_split(_edges(np.zeros((0, 2)), num_nodes=3))
    with pytest.raises(ValueError, match="1 node: link prediction needs at least 2 nodes"):
        data.temporal_link_split(_edges([[0, 0]] * 5, times=range(5)))


def test_link_split_of_the_smallest_graphs():
    # 4 edges: the smallest stream with the default fractions: 2 / 1 / 1.
    split = data.temporal_link_split(_edges([[0, 1], [1, 2], [2, 0], [0, 2]], times=range(4)))
    assert [len(split.train_edges), len(split.val_edges), len(split.test_edges)] == [2, 1, 1]
    # A zero fraction asks for an empty part: 3 edges then split fine.
    split = data.temporal_link_split(_edges([[0, 1], [1, 2], [2, 0]]), train=0.7, val=0.0)
    assert [len(split.train_edges), len(split.val_edges), len(split.test_edges)] == [2, 0, 1]
    # Repeats of one pair dedupe within a part but the part is never empty.
    split = data.temporal_link_split(_edges([[0, 1]] * 10, times=range(10)))
    assert [len(split.train_edges), len(split.val_edges), len(split.test_edges)] == [1, 1, 1]


def test_negative_seed_is_a_clear_error():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        data.load("synthetic-sbm", seed=-1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        data.node_split(np.array([0, 1, 0, 1]), seed=-2)


# ----------------------------------------------------------------------------- random split


def _ring_of_communities():
    """A static graph stored sorted by node id: a cut in edge order puts every late edge (the
    highest node ids) into the test part."""
    src, dst, n = ring_of_communities()
    return data.Dataset("ring", n, src, dst)


def _share_touching_untrained(split):
    trained = np.zeros(split.num_nodes, bool)
    trained[split.train_edges.ravel()] = True
    return float(np.mean(~trained[split.test_edges].all(axis=1)))


def test_random_link_split_spreads_the_test_edges_over_the_graph():
    ds = _ring_of_communities()
    in_order = data.temporal_link_split(ds)
    shuffled = data.random_link_split(ds, seed=0)
    # In edge order the test edges are all among the last communities, and most of their
    # nodes have no training edge; a random split leaves almost none.
    assert _share_touching_untrained(in_order) > 0.5
    assert _share_touching_untrained(shuffled) < 0.02
    assert np.unique(shuffled.test_edges // 50).size == 8  # every community holds test edges
    # The same cut sizes as the chronological split: 70 / 10 / 20 of the edges.
    for part in ("train_edges", "val_edges", "test_edges"):
        assert len(getattr(shuffled, part)) == len(getattr(in_order, part))
    every = np.concatenate([shuffled.train_index, shuffled.val_index, shuffled.test_index])
    np.testing.assert_array_equal(np.sort(every), np.arange(ds.num_edges))


def test_random_link_split_is_seeded():
    ds = _ring_of_communities()
    a, b = data.random_link_split(ds, seed=3), data.random_link_split(ds, seed=3)
    for part in ("train_edges", "val_edges", "test_edges", "target_edges"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    other = data.random_link_split(ds, seed=4)
    assert not np.array_equal(a.test_edges, other.test_edges)


def test_random_link_split_keeps_a_pairs_events_in_one_part():
    # Both directions and repeats of a pair: in two parts, the test link would be in the
    # training graph (the tasks make it symmetric) and trivially predicted.
    rng = np.random.default_rng(0)
    n = 60
    u = rng.integers(0, n, 400)
    v = (u + 1 + rng.integers(0, n - 1, 400)) % n
    src = np.concatenate([u, v, u]).astype(np.int32)
    dst = np.concatenate([v, u, v]).astype(np.int32)
    split = data.random_link_split(data.Dataset("both-ways", n, src, dst), seed=1)

    def pairs(edges):
        return {(min(a, b), max(a, b)) for a, b in edges.tolist()}

    train, val, test = (pairs(split.train_edges), pairs(split.val_edges),
                        pairs(split.test_edges))
    assert not (train & test) and not (train & val) and not (val & test)


def test_random_link_split_targets_are_spread_too():
    # The training targets (the last target_fraction of the training events) are random
    # pairs as well, not the highest node ids.
    ds = _ring_of_communities()
    split = data.random_link_split(ds, seed=0, target_fraction=0.2)
    assert np.unique(split.target_edges // 50).size == 8
    assert len(split.target_edges) + len(split.history_senders) >= len(split.train_edges)


def test_random_link_split_errors_name_the_argument():
    ds = _ring_of_communities()
    with pytest.raises(ValueError, match="seed"):
        data.random_link_split(ds, seed=-1)
    with pytest.raises(ValueError, match="target-fraction"):
        data.random_link_split(ds, target_fraction=1.0)
    tiny = data.Dataset("tiny", 4, np.array([0, 1, 2], np.int32), np.array([1, 2, 3], np.int32))
    with pytest.raises(ValueError, match="too few"):
        data.random_link_split(tiny)


def test_choose_split_defaults_by_timestamps():
    static = _ring_of_communities()
    timed = _toy_temporal(range(10))
    assert data.choose_split(static, None) == "random"
    assert data.choose_split(timed, None) == "temporal"
    assert data.choose_split(timed, "random") == "random"
    # Asked for explicitly, a graph without times is cut in its stored order, with a warning.
    with pytest.warns(UserWarning, match="no timestamps"):
        assert data.choose_split(static, "temporal") == "temporal"
    with pytest.raises(ValueError, match="--split"):
        data.choose_split(static, "chronological")
