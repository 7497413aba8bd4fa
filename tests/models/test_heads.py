"""The paper's MLPs, the link decoders and the task wrappers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import N, build_encoder, random_graph

from sparsegnn_jax import graphs, models

# ------------------------------------------------------------------ MLPs, decoders, wrappers


def _param_shapes(module):
    _, params = nnx.split(module, nnx.Param)
    return {jax.tree_util.keystr(p): leaf.shape for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_paper_link_mlp():
    mlp = models.paper_link_mlp(nnx.Rngs(0))
    shapes = _param_shapes(mlp)
    assert shapes == {
        "['layers'][0]['bias'].value": (128,), "['layers'][0]['kernel'].value": (16, 128),
        "['layers'][1]['bias'].value": (1,), "['layers'][1]['kernel'].value": (128, 1),
    }
    assert sum(int(np.prod(s)) for s in shapes.values()) == 16 * 128 + 128 + 128 * 1 + 1 == 2305
    x = jax.random.normal(jax.random.key(0), (7, 16))
    expected = jax.nn.relu(x @ mlp.layers[0].kernel[...] + mlp.layers[0].bias[...]) @ mlp.layers[1].kernel[...]
    np.testing.assert_allclose(mlp(x), expected + mlp.layers[1].bias[...], rtol=1e-5, atol=1e-6)
    # PyTorch's nn.Linear init: |w| <= 1/sqrt(fan_in).
    assert float(jnp.abs(mlp.layers[0].kernel[...]).max()) <= 0.25


def test_pair_representation_holds_both_ends_in_order_and_their_interaction():
    a = jnp.array([[1.0, -2.0]])
    b = jnp.array([[3.0, 0.5]])
    np.testing.assert_array_equal(models.pair_representation(a, b, "pair"),
                                  [[1.0, -2.0, 3.0, 0.5, 3.0, -1.0, 2.0, 2.5]])
    np.testing.assert_array_equal(models.pair_representation(a, b, "concat"),
                                  [[1.0, -2.0, 3.0, 0.5]])
    # Swapping the ends swaps the first two blocks only: the interaction is symmetric.
    x, y = jax.random.normal(jax.random.key(0), (2, 6, 5))
    xy, yx = models.pair_representation(x, y, "pair"), models.pair_representation(y, x, "pair")
    np.testing.assert_array_equal(xy[:, 10:], yx[:, 10:])
    np.testing.assert_array_equal(xy[:, :5], yx[:, 5:10])
    dec = models.MLPDecoder(5, 16, mode="pair", rngs=nnx.Rngs(0))
    assert dec.mlp.layers[0].kernel[...].shape == (20, 16)
    with pytest.raises(ValueError, match="mode"):
        models.pair_representation(x, y, "sum")


def test_cold_start_dropout_replaces_whole_rows_only_in_training():
    nodes = jnp.arange(400 * 3, dtype=jnp.float32).reshape(400, 3) + 1.0
    g = graphs.from_edges(np.array([0]), np.array([1]), 400, node_features=nodes,
                          symmetric=False, self_loops=False)
    cold = np.array([-1.0, -2.0, -3.0], np.float32)
    enc = models.ColdStartDropout(cold, 0.25)
    np.testing.assert_array_equal(enc(g), nodes)  # evaluation: the inputs as they are
    out = np.asarray(enc(g, dropout_key=jax.random.key(0)))
    replaced = (out == cold).all(axis=1)
    np.testing.assert_array_equal(out[~replaced], np.asarray(nodes)[~replaced])
    assert 0.15 < replaced.mean() < 0.35
    np.testing.assert_array_equal(models.ColdStartDropout(cold, 0.0)(
        g, dropout_key=jax.random.key(0)), nodes)
    _, params, _ = nnx.split(enc, nnx.Param, ...)
    assert jax.tree.leaves(params) == []  # the cold row is a constant, never trained or pruned
    with pytest.raises(ValueError, match="rate"):
        models.ColdStartDropout(cold, 1.0)


def test_paper_node_mlp():
    mlp = models.paper_node_mlp(nnx.Rngs(0))
    shapes = _param_shapes(mlp)
    assert shapes == {"['layers'][0]['kernel'].value": (64, 256), "['layers'][1]['kernel'].value": (256, 128),
                      "['layers'][2]['kernel'].value": (128, 10)}
    assert sum(int(np.prod(s)) for s in shapes.values()) == 64 * 256 + 256 * 128 + 128 * 10 == 50432
    assert all(layer.bias is None for layer in mlp.layers) and mlp.dropout == 0.1
    x = jax.random.normal(jax.random.key(0), (4, 64))
    assert mlp(x).shape == (4, 10)
    # No bias: zero input gives zero logits.
    np.testing.assert_array_equal(mlp(jnp.zeros((2, 64))), 0.0)
    assert models.paper_node_mlp(nnx.Rngs(0), num_classes=3, in_dim=32)(jnp.ones((2, 32))).shape == (2, 3)


def test_mlp_dropout_and_jit():
    mlp = models.build("mlp", 6, (10, 7), 2, rngs=nnx.Rngs(0), dropout=0.5)
    assert [(l.in_features, l.out_features) for l in mlp.layers] == [(6, 10), (10, 7), (7, 2)]
    assert len(models.build("mlp", 6, 10, 2, num_layers=4, rngs=nnx.Rngs(0)).layers) == 4
    x = jax.random.normal(jax.random.key(1), (5, 6))
    k = jax.random.key(2)
    np.testing.assert_array_equal(mlp(x), mlp(x))
    np.testing.assert_array_equal(mlp(x, dropout_key=k), mlp(x, dropout_key=k))
    assert not np.allclose(mlp(x, dropout_key=k), mlp(x))
    graphdef, state = nnx.split(mlp)
    jitted = jax.jit(lambda s, x, k: nnx.merge(graphdef, s)(x, dropout_key=k))
    np.testing.assert_allclose(jitted(state, x, k), mlp(x, dropout_key=k), rtol=1e-5, atol=1e-6)


def test_link_predictor_identity_matches_paper_pipeline():
    emb = jax.random.normal(jax.random.key(0), (10, 8))
    g = graphs.from_edges([0, 1], [1, 2], 10, node_features=emb)
    pairs = jnp.array([[0, 1], [3, 4], [9, 2]])
    dec = models.MLPDecoder(8, 128, mode="concat", init="torch", rngs=nnx.Rngs(0))
    model = models.LinkPredictor(models.Identity(), dec)
    assert sum(int(np.prod(s)) for s in _param_shapes(model).values()) == 2305
    expected = dec.mlp(jnp.concatenate([emb[pairs[:, 0]], emb[pairs[:, 1]]], -1))[:, 0]
    np.testing.assert_allclose(model(g, pairs), expected, rtol=1e-5, atol=1e-6)
    dot = models.LinkPredictor(models.Identity(), models.DotDecoder())
    np.testing.assert_allclose(dot(g, pairs), jnp.sum(emb[pairs[:, 0]] * emb[pairs[:, 1]], -1), rtol=1e-5)
    with pytest.raises(ValueError, match="pairs"):
        model(g, jnp.array([0, 1]))


def test_link_predictor_gnn_hadamard_and_node_classifier():
    g = random_graph(self_loops=True)
    lp = models.LinkPredictor(build_encoder("sage", dropout=0.2), models.MLPDecoder(3, 16, rngs=nnx.Rngs(1)))
    pairs = jnp.array([[0, 1], [2, 3]])
    z = lp.encoder(g)
    expected = lp.decoder.mlp(z[pairs[:, 0]] * z[pairs[:, 1]])[:, 0]
    np.testing.assert_allclose(lp(g, pairs), expected, rtol=1e-5, atol=1e-6)
    k = jax.random.key(0)
    np.testing.assert_array_equal(lp(g, pairs, dropout_key=k), lp(g, pairs, dropout_key=k))

    clf = models.NodeClassifier(build_encoder("gcn"), models.build("mlp", 3, 16, 4, rngs=nnx.Rngs(2)))
    assert clf(g).shape == (N, 4)
    graphdef, state = nnx.split(clf)
    jitted = jax.jit(lambda s, g: nnx.merge(graphdef, s)(g))
    np.testing.assert_allclose(jitted(state, g), clf(g), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(models.NodeClassifier(clf.encoder)(g), clf.encoder(g), rtol=1e-6)
