"""Pair-history features: values against a hand count, jit equality, padding invariance, and
a decoder that reads them (pruned and counted like any weight)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sparsegnn_jax as sg
from sparsegnn_jax import history

# Events in time order: (0, 1) three times, (1, 0) once, (1, 2) once, (3, 3) a self loop.
SRC = np.array([0, 0, 1, 1, 0, 3])
DST = np.array([1, 1, 0, 2, 1, 3])
TIMES = np.array([0, 10, 20, 30, 40, 50])


def test_features_of_a_hand_counted_history():
    h = history.build(SRC, DST, TIMES, 5, t_scale=10.0)
    f = np.asarray(history.pair_features(h, jnp.asarray([[0, 1], [1, 0], [0, 2], [4, 0]])))
    cols = dict(zip(history.PAIR_FEATURE_COLUMNS, f.T))
    count_scale = math.log1p(3)  # the largest pair count
    event_scale = math.log1p(5)  # node 1: five events
    np.testing.assert_array_equal(cols["met_uv"], [1, 1, 0, 0])
    np.testing.assert_array_equal(cols["met_vu"], [1, 1, 0, 0])
    np.testing.assert_allclose(cols["count_uv"], [1.0, math.log1p(1) / count_scale, 0, 0],
                               rtol=1e-6)
    # (0, 1) last met at t=40, "now" is t=50: age 1 unit; never met: 1.
    np.testing.assert_allclose(cols["pair_recency"][[0, 2, 3]],
                               [math.log1p(1) / math.log1p(200), 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(cols["events_u"][:3], [math.log1p(4) / event_scale, 1.0,
                                                      math.log1p(4) / event_scale], rtol=1e-6)
    assert cols["events_u"][3] == 0.0 and cols["recency_u"][3] == 1.0  # node 4: no event
    # (0, 2) share neighbour 1, of degree 2 (neighbours 0 and 2); union {1} -> Jaccard 1.
    np.testing.assert_allclose(cols["common_neighbours"][2], math.log1p(1) / math.log1p(5),
                               rtol=1e-6)
    assert cols["jaccard"][2] == 1.0 and cols["jaccard"][0] == 0.0
    np.testing.assert_allclose(cols["adamic_adar"][2],
                               math.log1p(1 / math.log(2)) / math.log1p(5), rtol=1e-6)


def test_random_histories_against_sets_with_and_without_jit():
    rng = np.random.default_rng(0)
    n, e = 15, 300
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    times = np.sort(rng.integers(0, 10_000, e))
    pairs = rng.integers(0, n, (60, 2))
    h = history.build(src, dst, times, n, 100.0)
    eager = np.asarray(history.pair_features(h, jnp.asarray(pairs)))
    jitted = np.asarray(jax.jit(history.pair_features)(h, jnp.asarray(pairs)))
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)  # fused logs may differ by an ulp
    nbrs = {i: set() for i in range(n)}
    for a, b in zip(src, dst):
        if a != b:
            nbrs[a].add(b)
            nbrs[b].add(a)
    for (u, v), row in zip(pairs, eager):
        count = int(np.sum((src == u) & (dst == v)))
        assert row[0] == (count > 0)
        common = nbrs[u] & nbrs[v]
        np.testing.assert_allclose(row[10], len(common) / max(len(nbrs[u] | nbrs[v]), 1),
                                   rtol=1e-6)
        met = ((src == u) & (dst == v)) | ((src == v) & (dst == u))
        if met.any():
            age = (times.max() - times[met].max()) / 100.0
            np.testing.assert_allclose(row[4], min(math.log1p(age) / math.log1p(200), 1.0),
                                       rtol=1e-5)


def test_padding_and_a_capped_neighbour_row():
    h = history.build(SRC, DST, TIMES, 5, 10.0)
    padded = history.build(SRC, DST, TIMES, 5, 10.0, num_pairs=9)
    assert padded.keys.shape == (9, 2)
    pairs = jnp.asarray([[a, b] for a in range(5) for b in range(5)])
    np.testing.assert_array_equal(np.asarray(history.pair_features(h, pairs)),
                                  np.asarray(history.pair_features(padded, pairs)))
    with pytest.raises(ValueError, match="exceed num_pairs=2"):
        history.build(SRC, DST, TIMES, 5, 10.0, num_pairs=2)
    # Node 1 has two neighbours; a row of one keeps the one it met most: node 0 (4 events).
    capped = history.build(SRC, DST, TIMES, 5, 10.0, max_neighbours=1)
    np.testing.assert_array_equal(np.asarray(capped.neighbours[1]), [0])
    assert float(capped.degrees[1]) == 2.0


def test_decoder_reads_the_features_and_they_are_pruned_and_counted():
    rngs = nnx.Rngs(0)
    dec = sg.models.MLPDecoder(4, 8, mode="hadamard", pair_features=history.NUM_PAIR_FEATURES,
                               rngs=rngs)
    assert dec.mlp.layers[0].kernel[...].shape == (4 + history.NUM_PAIR_FEATURES, 8)
    z = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="built for 12 pair features, got none"):
        dec(z, z)
    feats = jnp.zeros((3, history.NUM_PAIR_FEATURES))
    base = dec(z, z, pair_features=feats)
    moved = dec(z, z, pair_features=feats.at[:, 0].set(1.0))
    assert not np.allclose(np.asarray(base), np.asarray(moved))
    # FLOPs: the first layer's products are (4 + 12) x 8 per pair.
    model = sg.models.LinkPredictor(sg.models.Identity(), dec)
    graph = sg.graphs.from_edges([0], [1], 3, node_features=np.ones((3, 4), np.float32))
    flops = sg.flops.forward(model, (graph, 5))
    assert flops.per_layer["decoder/mlp/layers/0"] == 5 * (2 * 16 * 8 + 8)
