"""Encoders: layer stacks, padding, jit, dropout, structural features, build errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import GNN_KINDS, F, N, build_encoder, random_graph

from sparsegnn_jax import graphs, models, train

# ------------------------------------------------------------------ encoders


def test_encoder_composes_layers_with_relu():
    g = random_graph(self_loops=True)
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
    enc = build_encoder(kind)
    _, params = nnx.split(enc, nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        assert (leaf.ndim == 2) == (name == "kernel"), (path, leaf.shape)
        assert leaf.ndim <= 2


@pytest.mark.parametrize("kind", GNN_KINDS)
@pytest.mark.parametrize("variant", ["features", "embedding+structural"])
def test_padding_leaves_real_outputs_unchanged(kind, variant):
    g = random_graph(symmetric=True, self_loops=True, weights=True)
    opts = dict(num_nodes=N, structural=True) if variant != "features" else {}
    enc = build_encoder(kind, **opts)
    p = graphs.pad_to_bucket(g, node_bucket=32, edge_bucket=256)
    # Put garbage in the padding node features: it must not leak into real nodes.
    nodes = p.graph.nodes.at[N:].set(100.0)
    out_padded = enc(p.graph._replace(nodes=nodes))
    assert out_padded.shape == (32, 3)
    np.testing.assert_allclose(out_padded[:N], enc(g), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(out_padded)))


def test_padded_graphs_in_one_bucket_share_one_compilation():
    enc = build_encoder("gat")
    graphdef, state = nnx.split(enc)
    traces = []

    @jax.jit
    def forward(state, graph):
        traces.append(1)  # runs only while tracing
        return nnx.merge(graphdef, state)(graph)

    small = random_graph(seed=1, n=9, m=20)  # 19 edges
    large = random_graph(seed=2, n=12, m=28)  # 26 edges
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
    g = random_graph(self_loops=True)
    enc = build_encoder(kind, dropout=0.3)
    graphdef, state = nnx.split(enc)
    key = jax.random.key(3)

    @jax.jit
    def forward(state, graph, key):
        return nnx.merge(graphdef, state)(graph, dropout_key=key)

    np.testing.assert_allclose(forward(state, g, key), enc(g, dropout_key=key), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nnx.jit(lambda m, g: m(g))(enc, g), enc(g), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gcn", "gat"])  # the dropout path is shared by all kinds
def test_encoder_dropout_only_with_key(kind):
    g = random_graph(self_loops=True)
    enc = build_encoder(kind, dropout=0.5)
    no_key = enc(g)
    np.testing.assert_array_equal(no_key, enc(g))  # off and deterministic without a key
    np.testing.assert_array_equal(no_key, build_encoder(kind, dropout=0.0)(g))  # same init, no dropout
    k1, k2 = jax.random.key(0), jax.random.key(1)
    np.testing.assert_array_equal(enc(g, dropout_key=k1), enc(g, dropout_key=k1))
    assert not np.allclose(enc(g, dropout_key=k1), no_key)
    assert not np.allclose(enc(g, dropout_key=k1), enc(g, dropout_key=k2))


def test_encoder_is_vmappable_over_dropout_keys():
    g = random_graph(self_loops=True)
    enc = build_encoder("sage", dropout=0.5)
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
    g = random_graph(self_loops=True)
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
        build_encoder("sage")(random_graph(features=4))


# ----------------------------------------------------------------------------------------------
# Edge cases: isolated nodes, a graph without edges.


def test_isolated_nodes_give_finite_outputs_and_gradients():
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    # Nodes 3, 4 and 5 have no edge; without self-loops no message reaches them at all.
    for self_loops in (True, False):
        graph = graphs.from_edges(np.array([0, 1]), np.array([1, 2]), 6, node_features=x,
                                  symmetric=True, self_loops=self_loops)
        weights = np.asarray(graphs.gcn_norm_weights(graph))
        assert np.isfinite(weights).all() and (weights > 0).all()
    # The harder case for the models: the graph without self-loops.
    for kind in ("gcn", "sage", "gat", "gin"):
        bound, params = train.split_model(models.build(kind, 5, 8, 3, rngs=nnx.Rngs(0)))
        out, grads = _forward_and_grads(bound, params, graph)
        assert out.shape == (6, 3) and bool(jnp.isfinite(out).all()), kind
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads)), kind


def _forward_and_grads(bound, params, graph):
    """Outputs and the gradient of their sum, in one compiled call."""
    @jax.jit
    def f(p):
        out = bound(p, graph)
        return out, jax.grad(lambda q: bound(q, graph).sum())(p)
    return f(params)


def test_graph_without_edges_gives_finite_outputs():
    x = np.ones((4, 3), np.float32)
    graph = graphs.from_edges(np.zeros(0, np.int32), np.zeros(0, np.int32), 4, node_features=x,
                              symmetric=True, self_loops=False)
    for kind in ("gcn", "gat"):
        out = models.build(kind, 3, 4, 2, rngs=nnx.Rngs(0))(graph)
        assert bool(jnp.isfinite(out).all()), kind
