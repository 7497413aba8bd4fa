"""Tests for graphs.compact_edges: exact kept edges, padding, and layers on compacted graphs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsegnn_jax import graphs
from sparsegnn_jax.models import layers

N, E, KEPT, FEATURES, OUT = 10, 48, 20, 5, 4
TOL = dict(rtol=0, atol=1e-6)


def _keep_masks(rng, count, size=E, kept=KEPT):
    masks = np.zeros((count, size), bool)
    for mask in masks:
        mask[rng.choice(size, kept, replace=False)] = True
    return masks


@jax.jit
def _gcn(x, p, senders, receivers, weights):
    return layers.gcn_conv(x, p["kernel"], p["bias"], senders, receivers, edge_weights=weights)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    senders = rng.integers(0, N, E).astype(np.int32)
    receivers = rng.integers(0, N, E).astype(np.int32)
    weights = rng.uniform(0.5, 2.0, E).astype(np.float32)
    x = jnp.asarray(rng.normal(size=(N, FEATURES)), jnp.float32)
    params = dict(
        kernel=rng.normal(size=(FEATURES, OUT)).astype(np.float32),
        kernel_neigh=rng.normal(size=(FEATURES, OUT)).astype(np.float32),
        bias=rng.normal(size=(OUT,)).astype(np.float32),
        att_src=rng.normal(size=(OUT,)).astype(np.float32),
        att_dst=rng.normal(size=(OUT,)).astype(np.float32),
    )
    params = {name: jnp.asarray(value) for name, value in params.items()}
    return dict(senders=senders, receivers=receivers, weights=weights, x=x, params=params,
                keeps=_keep_masks(rng, 3))


@jax.jit
def _weight_free_layers(x, p, senders, receivers):
    """SAGE, GAT (2 heads) and GIN outputs: the layers whose edges carry no weight."""
    return (
        layers.sage_conv(x, p["kernel"], p["kernel_neigh"], p["bias"], senders, receivers),
        layers.gat_conv(x, p["kernel"], p["att_src"], p["att_dst"], p["bias"], senders, receivers,
                        heads=2, concat=True),
        layers.gin_aggregate(x, 0.25, senders, receivers),
    )


def test_compact_edges_returns_kept_edges_in_order(problem):
    s, r, w, keep = problem["senders"], problem["receivers"], problem["weights"], problem["keeps"][0]
    cs, cr, cw = graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), jnp.asarray(w), keep, KEPT)
    assert cs.shape == cr.shape == cw.shape == (KEPT,)
    assert cs.dtype == jnp.int32 and cw.dtype == jnp.float32
    np.testing.assert_array_equal(cs, s[keep])
    np.testing.assert_array_equal(cr, r[keep])
    np.testing.assert_array_equal(cw, w[keep])


def test_compact_edges_pads_with_zero_weight_fill_edges(problem):
    s, r, keep = problem["senders"], problem["receivers"], problem["keeps"][0]
    size = KEPT + 7
    cs, cr, cw = graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), None,
                                      keep.astype(np.float32), size, fill_node=3)
    assert cs.shape == cr.shape == cw.shape == (size,)
    np.testing.assert_array_equal(cs, np.concatenate([s[keep], np.full(7, 3)]))
    np.testing.assert_array_equal(cr, np.concatenate([r[keep], np.full(7, 3)]))
    np.testing.assert_array_equal(cw, np.concatenate([np.ones(KEPT), np.zeros(7)]))


def test_compact_edges_of_a_graph_without_edges_is_all_padding():
    none = jnp.zeros((0,), jnp.int32)
    cs, cr, cw = graphs.compact_edges(none, none, None, jnp.zeros((0,), bool), 2, fill_node=4)
    np.testing.assert_array_equal(cs, [4, 4])
    np.testing.assert_array_equal(cr, [4, 4])
    np.testing.assert_array_equal(cw, [0.0, 0.0])


def test_compact_edges_rejects_more_kept_edges_than_size(problem):
    s, r, keep = problem["senders"], problem["receivers"], problem["keeps"][0]
    with pytest.raises(ValueError, match=f"keep holds {KEPT} edges, more than size={KEPT - 1}"):
        graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), None, keep, KEPT - 1)
    with pytest.raises(ValueError, match="1-D of one length"):
        graphs.compact_edges(jnp.asarray(s), jnp.asarray(r[:-1]), None, keep, KEPT)
    with pytest.raises(ValueError, match="size must be >= 0"):
        graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), None, keep, -1)


def test_compact_edges_under_jit_keeps_the_first_size_edges(problem):
    # Documented: a traced mask cannot be checked, so surplus kept edges are dropped.
    s, r, keep = problem["senders"], problem["receivers"], problem["keeps"][0]
    compact = jax.jit(lambda k: graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), None, k, 5))
    cs, cr, cw = compact(keep)
    np.testing.assert_array_equal(cs, s[keep][:5])
    np.testing.assert_array_equal(cr, r[keep][:5])
    np.testing.assert_array_equal(cw, np.ones(5))


def test_gcn_compacted_with_padding_matches_masked_weights(problem):
    s, r, w, x, p = (problem[k] for k in ("senders", "receivers", "weights", "x", "params"))
    keep = problem["keeps"][1]
    masked = _gcn(x, p, s, r, w * keep)
    # Padding edges point at real node 0 with weight 0: they must add nothing to it.
    cs, cr, cw = graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), jnp.asarray(w), keep, KEPT + 9)
    compacted = _gcn(x, p, cs, cr, cw)
    assert compacted.shape == (N, OUT)
    np.testing.assert_allclose(compacted, masked, **TOL)


def test_weight_free_layers_compacted_match_graph_without_pruned_edges(problem):
    s, r, x, p = (problem[k] for k in ("senders", "receivers", "x", "params"))
    keep = problem["keeps"][2]
    deleted = _weight_free_layers(x, p, s[keep], r[keep])
    # Padding edges go to an extra (padding) node whose outputs are dropped.
    x_padded = jnp.concatenate([x, jnp.zeros((1, FEATURES), jnp.float32)])
    cs, cr, _ = graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), None, keep, KEPT + 9,
                                     fill_node=N)
    compacted = _weight_free_layers(x_padded, p, cs, cr)
    for got, want in zip(compacted, deleted):
        assert got.shape == (N + 1, want.shape[1])
        np.testing.assert_allclose(got[:N], want, **TOL)


def test_compacted_layers_under_jit_and_vmap(problem):
    s, r, w, x, p, keeps = (problem[k] for k in ("senders", "receivers", "weights", "x", "params",
                                                 "keeps"))

    @jax.jit
    @jax.vmap
    def compacted_outputs(keep):
        cs, cr, cw = graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), jnp.asarray(w), keep, KEPT)
        gcn = layers.gcn_conv(x, p["kernel"], p["bias"], cs, cr, edge_weights=cw)
        return (gcn,) + _weight_free_layers(x, p, cs, cr)

    outputs = compacted_outputs(jnp.asarray(keeps))
    assert [o.shape for o in outputs] == [(3, N, OUT), (3, N, OUT), (3, N, OUT), (3, N, FEATURES)]
    for i, keep in enumerate(keeps):
        want = (_gcn(x, p, s, r, w * keep),)
        want += _weight_free_layers(x, p, s[keep], r[keep])
        for got, expected in zip(outputs, want):
            np.testing.assert_allclose(got[i], expected, **TOL)


def test_gradients_reach_kept_edge_weights_only(problem):
    s, r, w, x, p = (problem[k] for k in ("senders", "receivers", "weights", "x", "params"))
    keep = problem["keeps"][0]

    def compacted(weights):
        cs, cr, cw = graphs.compact_edges(jnp.asarray(s), jnp.asarray(r), weights, keep, KEPT + 3)
        return jnp.sum(layers.gcn_conv(x, p["kernel"], p["bias"], cs, cr, edge_weights=cw) ** 2)

    def masked(weights):
        out = layers.gcn_conv(x, p["kernel"], p["bias"], s, r, edge_weights=weights * keep)
        return jnp.sum(out ** 2)

    got = jax.jit(jax.grad(compacted))(jnp.asarray(w))
    want = jax.jit(jax.grad(masked))(jnp.asarray(w))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(got)[~keep] == 0) and np.all(np.asarray(got)[keep] != 0)
