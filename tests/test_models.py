"""Tests for the GNN layers, encoders, MLPs and task wrappers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsegnn_jax import graphs, models

N, F = 12, 5
GNN_KINDS = ("gcn", "sage", "gat", "gin")


def _random_graph(seed=0, n=N, m=30, features=F, symmetric=False, self_loops=False, weights=False):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n - 1, size=m)  # node n-1 stays isolated
    r = rng.integers(0, n - 1, size=m)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=m).astype(np.float32) if weights else None
    return graphs.from_edges(s, r, n, node_features=x, symmetric=symmetric,
                             self_loops=self_loops, edge_weights=w)


def _adjacency(g, n=N, weighted=True):
    """Dense A[receiver, sender]."""
    a = np.zeros((n, n))
    vals = np.ones(g.senders.shape) if (g.edges is None or not weighted) else np.asarray(g.edges)
    np.add.at(a, (np.asarray(g.receivers), np.asarray(g.senders)), vals)
    return a


def _np(x):
    return np.asarray(x, dtype=np.float64)


def _randomise_biases(module, seed=7):
    """Biases start at zero; give them values so the references check them too."""
    _, params = nnx.split(module, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed), 64))
    params = jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape) if p.ndim == 1 else p, params)
    nnx.update(module, params)
    return module


# ------------------------------------------------------------------ layers vs dense references


@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_matches_dense(weighted):
    g = _random_graph(self_loops=True, weights=weighted)
    layer = _randomise_biases(models.GCNConv(F, 4, rngs=nnx.Rngs(0)))
    a = _adjacency(g)
    d = a.sum(1)
    a_norm = a / np.sqrt(np.outer(d, d))
    expected = a_norm @ _np(g.nodes) @ _np(layer.kernel[...]) + _np(layer.bias[...])
    np.testing.assert_allclose(layer(g), expected, rtol=1e-5, atol=1e-5)


def test_gcn_implicit_self_loops_match_dense():
    g = _random_graph(self_loops=False)
    layer = models.GCNConv(F, 3, add_self_loops=True, rngs=nnx.Rngs(1))
    a = _adjacency(g) + np.eye(N)
    d = a.sum(1)
    expected = (a / np.sqrt(np.outer(d, d))) @ _np(g.nodes) @ _np(layer.kernel[...])
    np.testing.assert_allclose(layer(g), expected, rtol=1e-5, atol=1e-5)


def test_sage_matches_dense():
    g = _random_graph(self_loops=False)
    layer = _randomise_biases(models.SAGEConv(F, 4, rngs=nnx.Rngs(0)))
    a = _adjacency(g, weighted=False)
    mean = a @ _np(g.nodes) / np.maximum(a.sum(1, keepdims=True), 1)
    x = _np(g.nodes)
    expected = (x @ _np(layer.lin_self.kernel[...]) + mean @ _np(layer.lin_neigh.kernel[...])
                + _np(layer.lin_neigh.bias[...]))
    np.testing.assert_allclose(layer(g), expected, rtol=1e-5, atol=1e-5)
    # The isolated node sees only its root term plus bias.
    np.testing.assert_allclose(layer(g)[-1], expected[-1], rtol=1e-5, atol=1e-5)


def _gat_reference(layer, g):
    heads, c = layer.heads, layer.head_features
    x = _np(g.nodes)
    h = (x @ _np(layer.kernel[...])).reshape(N, heads, c)
    att_src = _np(layer.att_src[...]).reshape(heads, c)
    att_dst = _np(layer.att_dst[...]).reshape(heads, c)
    adj = _adjacency(g, weighted=False) > 0
    out = np.zeros((N, heads, c))
    for k in range(heads):
        src = h[:, k] @ att_src[k]
        dst = h[:, k] @ att_dst[k]
        e = dst[:, None] + src[None, :]  # e[i, j] for edge j -> i
        e = np.where(e > 0, e, 0.2 * e)
        e = np.where(adj, e, -np.inf)
        for i in range(N):
            if adj[i].any():
                alpha = np.exp(e[i] - e[i].max())
                alpha /= alpha.sum()
                out[i, k] = alpha @ h[:, k]
    out = out.reshape(N, -1) if layer.concat else out.mean(1)
    return out + _np(layer.bias[...])


@pytest.mark.parametrize("concat", [True, False])
def test_gat_two_heads_matches_dense(concat):
    g = _random_graph(self_loops=True)
    layer = _randomise_biases(models.GATConv(F, 6, heads=2, concat=concat, rngs=nnx.Rngs(0)))
    assert layer.kernel.shape == ((F, 6) if concat else (F, 12))
    got = layer(g)
    assert got.shape == (N, 6)
    np.testing.assert_allclose(got, _gat_reference(layer, g), rtol=1e-5, atol=1e-5)


def test_gin_matches_dense():
    g = _random_graph(self_loops=False)
    layer = _randomise_biases(models.GINConv(F, 4, train_eps=True, rngs=nnx.Rngs(0)))
    layer.eps[...] = jnp.asarray(0.3)
    a = _adjacency(g, weighted=False)
    x = _np(g.nodes)
    h = 1.3 * x + a @ x
    h = np.maximum(h @ _np(layer.lin1.kernel[...]) + _np(layer.lin1.bias[...]), 0)
    expected = h @ _np(layer.lin2.kernel[...]) + _np(layer.lin2.bias[...])
    np.testing.assert_allclose(layer(g), expected, rtol=1e-4, atol=1e-4)


def test_layers_expose_dims_for_walkers():
    rngs = nnx.Rngs(0)
    for layer, heads in [(models.GCNConv(3, 4, rngs=rngs), 1), (models.SAGEConv(3, 4, rngs=rngs), 1),
                         (models.GATConv(3, 4, heads=2, rngs=rngs), 2), (models.GINConv(3, 4, rngs=rngs), 1)]:
        assert isinstance(layer, models.MESSAGE_PASSING_LAYERS)
        assert (layer.in_features, layer.out_features, layer.heads) == (3, 4, heads)


# ------------------------------------------------------------------ encoders


def _build(kind, **opts):
    if kind == "gat":
        opts.setdefault("heads", 2)
    return models.build(kind, F, 8, 3, num_layers=2, rngs=nnx.Rngs(0), **opts)


def test_encoder_composes_layers_with_relu():
    g = _random_graph(self_loops=True)
    enc = models.build("gcn", F, 8, 3, num_layers=3, rngs=nnx.Rngs(0))
    x = g.nodes
    for i, layer in enumerate(enc.layers):
        x = layer(g, x)
        if i < 2:
            x = jax.nn.relu(x)
    np.testing.assert_allclose(enc(g), x, rtol=1e-6)
    assert [(l.in_features, l.out_features) for l in enc.layers] == [(F, 8), (8, 8), (8, 3)]


def test_gcn_param_paths():
    enc = models.build("gcn", F, 8, 3, rngs=nnx.Rngs(0))
    _, params, rest = nnx.split(enc, nnx.Param, ...)
    flat = {jax.tree_util.keystr(p): leaf.shape for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert flat == {
        "['layers'][0]['bias'].value": (8,), "['layers'][0]['kernel'].value": (F, 8),
        "['layers'][1]['bias'].value": (3,), "['layers'][1]['kernel'].value": (8, 3),
    }
    assert jax.tree.leaves(rest) == []


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_weight_matrices_are_2d_kernels(kind):
    enc = _build(kind)
    _, params = nnx.split(enc, nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        assert (leaf.ndim == 2) == (name == "kernel"), (path, leaf.shape)
        assert leaf.ndim <= 2


@pytest.mark.parametrize("kind", GNN_KINDS)
@pytest.mark.parametrize("variant", ["features", "embedding+structural"])
def test_padding_leaves_real_outputs_unchanged(kind, variant):
    g = _random_graph(symmetric=True, self_loops=True, weights=True)
    opts = dict(num_nodes=N, structural=True) if variant != "features" else {}
    enc = _build(kind, **opts)
    p = graphs.pad_to_bucket(g, node_bucket=32, edge_bucket=256)
    # Put garbage in the padding node features: it must not leak into real nodes.
    nodes = p.graph.nodes.at[N:].set(100.0)
    out_padded = enc(p.graph._replace(nodes=nodes))
    assert out_padded.shape == (32, 3)
    np.testing.assert_allclose(out_padded[:N], enc(g), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(out_padded)))


def test_padded_graphs_in_one_bucket_share_one_compilation():
    enc = _build("gat")
    graphdef, state = nnx.split(enc)
    traces = []

    @jax.jit
    def forward(state, graph):
        traces.append(1)  # runs only while tracing
        return nnx.merge(graphdef, state)(graph)

    small = _random_graph(seed=1, n=9, m=20)  # 19 edges
    large = _random_graph(seed=2, n=12, m=28)  # 26 edges
    ps, pl = graphs.pad_to_bucket(small), graphs.pad_to_bucket(large)
    assert ps.graph.senders.shape == pl.graph.senders.shape and ps.node_mask.shape == pl.node_mask.shape
    assert small.senders.shape != large.senders.shape
    out_s, out_l = forward(state, ps.graph), forward(state, pl.graph)
    assert len(traces) == 1
    np.testing.assert_allclose(out_s[:9], enc(small), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_l[:12], enc(large), rtol=1e-5, atol=1e-5)
    forward(state, graphs.pad_to_bucket(large, node_bucket=64).graph)  # a new bucket retraces
    assert len(traces) == 2


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_jit_matches_eager(kind):
    g = _random_graph(self_loops=True)
    enc = _build(kind, dropout=0.3)
    graphdef, state = nnx.split(enc)
    key = jax.random.key(3)

    @jax.jit
    def forward(state, graph, key):
        return nnx.merge(graphdef, state)(graph, dropout_key=key)

    np.testing.assert_allclose(forward(state, g, key), enc(g, dropout_key=key), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nnx.jit(lambda m, g: m(g))(enc, g), enc(g), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gcn", "gat"])  # the dropout path is shared by all kinds
def test_encoder_dropout_only_with_key(kind):
    g = _random_graph(self_loops=True)
    enc = _build(kind, dropout=0.5)
    no_key = enc(g)
    np.testing.assert_array_equal(no_key, enc(g))  # off and deterministic without a key
    np.testing.assert_array_equal(no_key, _build(kind, dropout=0.0)(g))  # same init, no dropout
    k1, k2 = jax.random.key(0), jax.random.key(1)
    np.testing.assert_array_equal(enc(g, dropout_key=k1), enc(g, dropout_key=k1))
    assert not np.allclose(enc(g, dropout_key=k1), no_key)
    assert not np.allclose(enc(g, dropout_key=k1), enc(g, dropout_key=k2))


def test_encoder_is_vmappable_over_dropout_keys():
    g = _random_graph(self_loops=True)
    enc = _build("sage", dropout=0.5)
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.vmap(lambda k: enc(g, dropout_key=k))(keys)
    for i in range(3):
        np.testing.assert_allclose(batched[i], enc(g, dropout_key=keys[i]), rtol=1e-5, atol=1e-6)


def test_structural_features():
    g = graphs.from_edges([0, 0, 1], [1, 2, 2], 4, symmetric=False, self_loops=False,
                          edge_weights=[2.0, 1.0, 3.0])
    feats = models.structural_features(g)
    assert feats.shape == (4, models.NUM_STRUCTURAL_FEATURES)
    np.testing.assert_allclose(np.expm1(feats), [[0, 2, 0], [1, 1, 2], [2, 0, 4], [0, 0, 0]], rtol=1e-6)
    enc = models.build("gcn", 0, 8, 2, structural=True, rngs=nnx.Rngs(0))
    assert enc.layers[0].in_features == models.NUM_STRUCTURAL_FEATURES
    assert enc(g).shape == (4, 2)


def test_embedding_table_used_instead_of_nodes():
    g = _random_graph(self_loops=True)
    enc = models.build("gcn", 6, 8, 3, num_nodes=N, rngs=nnx.Rngs(0))
    assert enc.embedding.shape == (N, 6)
    out = enc(g)  # graph.nodes (width F=5) are ignored
    np.testing.assert_allclose(out, enc(g._replace(nodes=None)), rtol=1e-6)


def test_build_errors():
    with pytest.raises(ValueError, match="kind"):
        models.build("gcnn", 3, 4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown options"):
        models.build("gcn", 3, 4, 2, rngs=nnx.Rngs(0), head=2)
    with pytest.raises(ValueError, match="heads"):
        models.build("gcn", 3, 4, 2, rngs=nnx.Rngs(0), heads=2)
    with pytest.raises(ValueError, match="divisible"):
        models.build("gat", 3, 5, 2, rngs=nnx.Rngs(0), heads=2)
    with pytest.raises(ValueError, match="in_dim"):
        _build("sage")(_random_graph(features=4))


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
    g = _random_graph(self_loops=True)
    lp = models.LinkPredictor(_build("sage", dropout=0.2), models.MLPDecoder(3, 16, rngs=nnx.Rngs(1)))
    pairs = jnp.array([[0, 1], [2, 3]])
    z = lp.encoder(g)
    expected = lp.decoder.mlp(z[pairs[:, 0]] * z[pairs[:, 1]])[:, 0]
    np.testing.assert_allclose(lp(g, pairs), expected, rtol=1e-5, atol=1e-6)
    k = jax.random.key(0)
    np.testing.assert_array_equal(lp(g, pairs, dropout_key=k), lp(g, pairs, dropout_key=k))

    clf = models.NodeClassifier(_build("gcn"), models.build("mlp", 3, 16, 4, rngs=nnx.Rngs(2)))
    assert clf(g).shape == (N, 4)
    graphdef, state = nnx.split(clf)
    jitted = jax.jit(lambda s, g: nnx.merge(graphdef, s)(g))
    np.testing.assert_allclose(jitted(state, g), clf(g), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(models.NodeClassifier(clf.encoder)(g), clf.encoder(g), rtol=1e-6)
