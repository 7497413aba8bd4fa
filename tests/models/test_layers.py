"""The GNN layers against dense NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import F, N, random_graph

from sparsegnn_jax import models


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
    g = random_graph(self_loops=True, weights=weighted)
    layer = _randomise_biases(models.GCNConv(F, 4, rngs=nnx.Rngs(0)))
    a = _adjacency(g)
    d = a.sum(1)
    a_norm = a / np.sqrt(np.outer(d, d))
    expected = a_norm @ _np(g.nodes) @ _np(layer.kernel[...]) + _np(layer.bias[...])
    np.testing.assert_allclose(layer(g), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_edges", [1, 7])
def test_gcn_chunked_messages_match_dense_and_one_sum(chunk_edges):
    g = random_graph(self_loops=True, weights=True)
    assert g.senders.shape[0] % 7 != 0  # a tail after the full chunks is summed too
    rng = np.random.default_rng(3)
    kernel = jnp.asarray(rng.normal(size=(F, 4)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=4), jnp.float32)
    weights = jnp.asarray(g.edges)
    message_bytes = chunk_edges * 4 * 4  # chunk_edges messages of 4 float32

    def conv(kernel, message_bytes):
        return models.gcn_conv(g.nodes, kernel, bias, g.senders, g.receivers, weights,
                               message_bytes=message_bytes)

    a = _adjacency(g)
    d = a.sum(1)
    expected = a / np.sqrt(np.outer(d, d)) @ _np(g.nodes) @ _np(kernel) + _np(bias)
    np.testing.assert_allclose(conv(kernel, message_bytes), expected, rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda k, b: (conv(k, b) ** 2).sum(), argnums=0)
    np.testing.assert_allclose(grad(kernel, message_bytes), grad(kernel, None),
                               rtol=1e-5, atol=1e-5)


def test_gcn_implicit_self_loops_match_dense():
    g = random_graph(self_loops=False)
    layer = models.GCNConv(F, 3, add_self_loops=True, rngs=nnx.Rngs(1))
    a = _adjacency(g) + np.eye(N)
    d = a.sum(1)
    expected = (a / np.sqrt(np.outer(d, d))) @ _np(g.nodes) @ _np(layer.kernel[...])
    np.testing.assert_allclose(layer(g), expected, rtol=1e-5, atol=1e-5)


def test_sage_matches_dense():
    g = random_graph(self_loops=False)
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
    g = random_graph(self_loops=True)
    layer = _randomise_biases(models.GATConv(F, 6, heads=2, concat=concat, rngs=nnx.Rngs(0)))
    assert layer.kernel.shape == ((F, 6) if concat else (F, 12))
    got = layer(g)
    assert got.shape == (N, 6)
    np.testing.assert_allclose(got, _gat_reference(layer, g), rtol=1e-5, atol=1e-5)


def test_gin_matches_dense():
    g = random_graph(self_loops=False)
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
