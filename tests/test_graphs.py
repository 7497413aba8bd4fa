"""Tests for graph construction, GCN normalisation and bucket padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsegnn_jax import graphs


def _edge_set(g):
    return set(zip(np.asarray(g.senders).tolist(), np.asarray(g.receivers).tolist()))


def _dense(g, values, n):
    """Dense [N, N] matrix with values[e] at (receiver, sender)."""
    out = np.zeros((n, n))
    np.add.at(out, (np.asarray(g.receivers), np.asarray(g.senders)), np.asarray(values))
    return out


@pytest.mark.parametrize("n, expected", [(0, 1), (1, 1), (2, 2), (3, 4), (8, 8), (9, 16), (1000, 1024)])
def test_next_power_of_two(n, expected):
    assert graphs.next_power_of_two(n) == expected


def test_next_power_of_two_rejects_negative():
    with pytest.raises(ValueError, match="n must be >= 0"):
        graphs.next_power_of_two(-1)


def test_from_edges_symmetric_dedupe_and_self_loops():
    # 0->1 twice, 1->0 once (duplicate after symmetrising), 2->3; node 4 isolated.
    g = graphs.from_edges([0, 0, 1, 2], [1, 1, 0, 3], 5)
    expected = {(0, 1), (1, 0), (2, 3), (3, 2)} | {(i, i) for i in range(5)}
    assert _edge_set(g) == expected
    assert g.senders.shape == (9,)
    assert g.senders.dtype == jnp.int32 and g.receivers.dtype == jnp.int32
    assert np.asarray(g.n_node).tolist() == [5] and np.asarray(g.n_edge).tolist() == [9]
    assert g.nodes is None and g.edges is None and g.globals is None
    # Sorted by receiver, then sender.
    keys = np.asarray(g.receivers) * 5 + np.asarray(g.senders)
    assert np.all(np.diff(keys) > 0)


def test_from_edges_directed_without_loops():
    g = graphs.from_edges([0, 2, 2], [1, 3, 3], 4, symmetric=False, self_loops=False)
    assert _edge_set(g) == {(0, 1), (2, 3)}
    assert g.senders.shape == (2,)


def test_from_edges_weights_first_and_sum():
    s, r, w = [0, 1, 0], [1, 0, 1], [2.0, 5.0, 7.0]
    first = graphs.from_edges(s, r, 3, edge_weights=w)
    d = _dense(first, first.edges, 3)
    # (0->1) first seen with weight 2; (1->0) first seen with weight 5; self loops weight 1.
    np.testing.assert_allclose(d, [[1, 5, 0], [2, 1, 0], [0, 0, 1]])
    summed = graphs.from_edges(s, r, 3, edge_weights=w, duplicates="sum")
    d = _dense(summed, summed.edges, 3)
    # Each direction collects all three input weights (2 + 5 + 7).
    np.testing.assert_allclose(d, [[1, 14, 0], [14, 1, 0], [0, 0, 1]])
    assert summed.edges.dtype == jnp.float32


def test_from_edges_sum_keeps_explicit_self_loop_weight():
    g = graphs.from_edges([1], [1], 2, edge_weights=[3.0], symmetric=False, duplicates="sum")
    np.testing.assert_allclose(_dense(g, g.edges, 2), [[1, 0], [0, 3]])


def test_from_edges_node_features():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    g = graphs.from_edges([0], [1], 3, node_features=x)
    np.testing.assert_array_equal(np.asarray(g.nodes), x)
    with pytest.raises(ValueError, match="node_features"):
        graphs.from_edges([0], [1], 4, node_features=x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(senders=[0, 5], receivers=[1, 1], num_nodes=5), "senders"),
        (dict(senders=[0], receivers=[-1], num_nodes=5), "receivers"),
        (dict(senders=[0, 1], receivers=[1], num_nodes=5), "differ in length"),
        (dict(senders=[0], receivers=[1], num_nodes=5, edge_weights=[1.0, 2.0]), "edge_weights"),
        (dict(senders=[0], receivers=[1], num_nodes=5, duplicates="max"), "duplicates"),
    ],
)
def test_from_edges_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        graphs.from_edges(**kwargs)


def _random_undirected(rng, n, m, isolated):
    s = rng.integers(0, n, size=m)
    r = rng.integers(0, n, size=m)
    keep = (s != isolated) & (r != isolated) & (s != r)
    return s[keep], r[keep]


def test_gcn_norm_matches_dense_formula_with_isolated_node():
    rng = np.random.default_rng(0)
    n, isolated = 9, 4
    s, r = _random_undirected(rng, n, 20, isolated)
    a = np.zeros((n, n))
    a[r, s] = 1.0
    a[s, r] = 1.0
    a_hat = a + np.eye(n)
    d = a_hat.sum(1)
    expected = a_hat / np.sqrt(np.outer(d, d))
    g = graphs.from_edges(s, r, n)
    coef = graphs.gcn_norm_weights(g)
    assert coef.dtype == jnp.float32 and coef.shape == g.senders.shape
    got = _dense(g, coef, n)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # The isolated node keeps only its self loop: coefficient 1/sqrt(1*1).
    assert got[isolated, isolated] == pytest.approx(1.0)


def test_gcn_norm_weighted_matches_dense():
    rng = np.random.default_rng(1)
    n = 7
    s, r = _random_undirected(rng, n, 15, isolated=-1)
    w = rng.uniform(0.5, 2.0, size=s.shape).astype(np.float32)
    g = graphs.from_edges(s, r, n, edge_weights=w, duplicates="sum")
    a_hat = _dense(g, g.edges, n)
    d = a_hat.sum(1)  # weighted in-degree at receivers
    expected = a_hat / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(_dense(g, graphs.gcn_norm_weights(g), n), expected, rtol=1e-5)


def test_gcn_norm_zero_degree_gives_zero_not_nan():
    # Node 2 has an out-edge but no in-edges and no self loops: degree 0 at node 2.
    g = graphs.from_edges([2, 0], [0, 1], 3, symmetric=False, self_loops=False)
    coef = graphs.gcn_norm_weights(g)
    assert np.all(np.isfinite(np.asarray(coef)))
    got = _dense(g, coef, 3)
    assert got[0, 2] == 0.0  # sender 2 has degree 0
    # Gradients stay finite at zero degree too (double-where guard).
    grad = jax.grad(lambda w: graphs.gcn_norm_weights(g._replace(edges=w)).sum())(jnp.ones(2))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_gcn_norm_jit_matches_eager():
    g = graphs.from_edges([0, 1, 2], [1, 2, 3], 5, node_features=np.zeros((5, 1), np.float32))
    np.testing.assert_allclose(jax.jit(graphs.gcn_norm_weights)(g), graphs.gcn_norm_weights(g))


def test_pad_to_bucket_default_sizes_and_masks():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    g = graphs.from_edges([0, 1, 2], [1, 2, 3], 5, node_features=x, edge_weights=[1.0, 2.0, 3.0])
    e = int(g.senders.shape[0])  # 6 + 5 self loops = 11
    assert e == 11
    p = graphs.pad_to_bucket(g)
    pg = p.graph
    assert pg.nodes.shape == (8, 2) and pg.senders.shape == (16,) and pg.edges.shape == (16,)
    assert np.asarray(p.node_mask).tolist() == [True] * 5 + [False] * 3
    assert np.asarray(p.edge_mask).tolist() == [True] * 11 + [False] * 5
    assert p.node_mask.dtype == jnp.bool_ and p.edge_mask.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(pg.nodes[:5]), x)
    assert np.all(np.asarray(pg.nodes[5:]) == 0)
    # Padding edges connect the first padding node to itself only.
    assert np.all(np.asarray(pg.senders[11:]) == 5) and np.all(np.asarray(pg.receivers[11:]) == 5)
    np.testing.assert_array_equal(np.asarray(pg.senders[:11]), np.asarray(g.senders))
    assert np.all(np.asarray(pg.edges[11:]) == 0)
    assert np.asarray(pg.n_node).tolist() == [5, 3] and np.asarray(pg.n_edge).tolist() == [11, 5]


def test_pad_to_bucket_explicit_buckets_and_errors():
    g = graphs.from_edges([0, 1], [1, 2], 3)  # 4 + 3 = 7 edges
    p = graphs.pad_to_bucket(g, node_bucket=10, edge_bucket=20)
    assert p.graph.senders.shape == (20,) and p.node_mask.shape == (10,)
    # No padding graph content needed when the buckets are exact.
    exact = graphs.pad_to_bucket(g, node_bucket=3, edge_bucket=7)
    assert np.asarray(exact.graph.n_node).tolist() == [3, 0]
    # Without node features the padded graph carries a [N, 0] placeholder to keep N static.
    assert p.graph.nodes.shape == (10, 0)
    with pytest.raises(ValueError, match="edge_bucket"):
        graphs.pad_to_bucket(g, edge_bucket=6)
    with pytest.raises(ValueError, match="padding node"):
        graphs.pad_to_bucket(g, node_bucket=3, edge_bucket=8)


def test_padding_keeps_real_gcn_coefficients():
    rng = np.random.default_rng(2)
    s, r = _random_undirected(rng, 11, 25, isolated=3)
    g = graphs.from_edges(s, r, 11, node_features=np.ones((11, 1), np.float32))
    p = graphs.pad_to_bucket(g)
    coef = graphs.gcn_norm_weights(p.graph)
    e = g.senders.shape[0]
    np.testing.assert_allclose(coef[:e], graphs.gcn_norm_weights(g), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(coef)))


def test_self_loops_last_keeps_both_orders_and_the_weights():
    g = graphs.from_edges([0, 1, 2], [1, 2, 0], 3, symmetric=False, self_loops=True,
                          edge_weights=[1.0, 2.0, 3.0])
    out = graphs.self_loops_last(g)
    pairs = list(zip(np.asarray(out.senders).tolist(), np.asarray(out.receivers).tolist()))
    weights = dict(zip(zip(np.asarray(g.senders).tolist(), np.asarray(g.receivers).tolist()),
                       np.asarray(g.edges).tolist()))
    links = [p for p in zip(np.asarray(g.senders).tolist(), np.asarray(g.receivers).tolist())
             if p[0] != p[1]]
    assert pairs == links + [(0, 0), (1, 1), (2, 2)]
    assert np.asarray(out.edges).tolist() == [weights[p] for p in pairs]
