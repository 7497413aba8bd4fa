"""The encoder's learnable edge-weight leaf: a pruned edge carries no message, in every layer."""
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from flax import nnx
from helpers import GNN_KINDS, build_encoder, random_graph, random_keep

from sparsegnn_jax import models


def _with_leaf(enc, values):
    """``enc`` with its edge_weight leaf set to ``values``."""
    enc.edge_weight[...] = jnp.asarray(values, jnp.float32)
    return enc


def _subgraph(g, keep):
    """``g`` with only the edges where ``keep`` is True (same node set and features)."""
    keep = np.asarray(keep)
    edges = None if g.edges is None else g.edges[keep]
    return g._replace(senders=g.senders[keep], receivers=g.receivers[keep], edges=edges,
                      n_edge=jnp.asarray([int(keep.sum())]))


def test_leaf_is_a_param_of_ones_and_only_with_num_edges():
    g = random_graph(symmetric=True, self_loops=True)
    e = int(g.senders.shape[0])
    enc = build_encoder("gcn", num_edges=e)
    _, params = nnx.split(enc, nnx.Param)
    leaf = params["edge_weight"][...]
    assert leaf.shape == (e,) and np.all(np.asarray(leaf) == 1.0)
    assert models.is_edge_weight("encoder/edge_weight")
    assert not models.is_edge_weight("encoder/layers/0/kernel")
    _, plain = nnx.split(build_encoder("gcn"), nnx.Param)
    assert "edge_weight" not in plain


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_all_ones_leaf_is_the_plain_graph(kind):
    g = random_graph(symmetric=True, self_loops=True, weights=True)
    enc = build_encoder(kind, num_edges=int(g.senders.shape[0]))
    # Same seed, same kernels: the leaf draws no random numbers.
    np.testing.assert_allclose(enc(g), build_encoder(kind)(g), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", GNN_KINDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_pruned_edges_contribute_nothing(kind, weighted):
    g = random_graph(symmetric=True, self_loops=True, weights=weighted)
    e = int(g.senders.shape[0])
    keep = random_keep(e)
    assert 0 < keep.sum() < e
    enc = _with_leaf(build_encoder(kind, num_edges=e), keep.astype(np.float32))
    removed = build_encoder(kind)(_subgraph(g, keep))
    np.testing.assert_allclose(enc(g), removed, rtol=1e-6, atol=1e-6)


def test_gcn_normalises_by_the_degrees_of_the_kept_weighted_edges():
    # 0 <-> 1, 0 <-> 2, self loops; the leaf keeps 1 -> 0 at weight 2 and drops 2 -> 0.
    g = jraph.GraphsTuple(nodes=jnp.eye(3, dtype=jnp.float32), edges=None,
                          senders=jnp.asarray([0, 1, 2, 0, 0, 1, 2]),
                          receivers=jnp.asarray([0, 0, 0, 1, 2, 1, 2]),
                          n_node=jnp.asarray([3]), n_edge=jnp.asarray([7]), globals=None)
    layer = models.GCNConv(3, 3, use_bias=False, rngs=nnx.Rngs(0))
    layer.kernel[...] = jnp.eye(3)
    gate = jnp.asarray([1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    out = np.asarray(layer(g, edge_gate=gate))
    # Node 0: weighted in-degree 1 + 2 = 3; node 1: 1 + 1 = 2 (its loop and 0 -> 1).
    d0, d1, d2 = 3.0, 2.0, 2.0
    np.testing.assert_allclose(out[0], [1 / d0, 2 / np.sqrt(d0 * d1), 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[2], [1 / np.sqrt(d0 * d2), 0.0, 1 / d2], rtol=1e-6)


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_edges_past_the_leaf_are_always_kept(kind):
    g = random_graph(symmetric=True, self_loops=True)
    e = int(g.senders.shape[0])
    first = e - 7
    enc = _with_leaf(build_encoder(kind, num_edges=first), np.zeros(first))
    # Only the last 7 edges are left: the same as the graph of those edges alone.
    keep = np.arange(e) >= first
    np.testing.assert_allclose(enc(g), build_encoder(kind)(_subgraph(g, keep)),
                               rtol=1e-6, atol=1e-6)
    gate = enc.edge_gate(g)
    assert gate.shape == (e,) and np.all(np.asarray(gate[first:]) == 1.0)


def test_graph_with_fewer_edges_than_the_leaf_is_refused():
    g = random_graph(symmetric=True, self_loops=True)
    e = int(g.senders.shape[0])
    enc = build_encoder("gcn", num_edges=e + 1)
    with pytest.raises(ValueError,
                       match=f"the graph has {e} edges but the edge_weight leaf has {e + 1}"):
        enc(g)


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_a_pruned_edge_still_has_a_gradient(kind):
    # RigL ranks pruned edges by the dense gradient: it must be finite and not all zero.
    g = random_graph(symmetric=True, self_loops=True)
    e = int(g.senders.shape[0])
    keep = random_keep(e)
    enc = _with_leaf(build_encoder(kind, num_edges=e), keep.astype(np.float32))
    graphdef, params = nnx.split(enc, nnx.Param)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(g) ** 2)

    grad = np.asarray(jax.grad(loss)(params)["edge_weight"][...])
    assert np.all(np.isfinite(grad))
    assert np.count_nonzero(grad[~keep]) > 0


def test_gated_softmax_of_zero_gates_in_a_segment_is_zero_not_nan():
    logits = jnp.asarray([[1.0], [2.0], [3.0]])
    alpha = models.gated_segment_softmax(logits, jnp.asarray([0.0, 0.0, 1.0]),
                                         jnp.asarray([0, 0, 1]), 2)
    np.testing.assert_array_equal(np.asarray(alpha), [[0.0], [0.0], [1.0]])


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_the_gate_is_binary_and_passes_the_leaf_gradient_straight_through(kind):
    # Kept edges with learnt scores (0.3, -2, ...) are the plain graph's edges; the leaf's
    # gradient is the loss's gradient with respect to a gate held at the kept / pruned value.
    g = random_graph(symmetric=True, self_loops=True)
    e = int(g.senders.shape[0])
    keep = random_keep(e)
    scores = np.where(keep, np.linspace(-2.0, 3.0, e), 0.0).astype(np.float32)
    enc = _with_leaf(build_encoder(kind, num_edges=e), scores)
    np.testing.assert_allclose(enc(g), build_encoder(kind)(_subgraph(g, keep)),
                               rtol=1e-6, atol=1e-6)
    graphdef, params = nnx.split(enc, nnx.Param)
    plain = build_encoder(kind)

    def loss_of_leaf(p):
        return jnp.sum(nnx.merge(graphdef, p)(g) ** 2)

    def loss_of_gate(gate):
        x = g.nodes
        for i, layer in enumerate(plain.layers):
            x = layer(g, x, edge_gate=gate)
            x = jax.nn.relu(x) if i < plain.num_layers - 1 else x
        return jnp.sum(x ** 2)

    via_leaf = np.asarray(jax.grad(loss_of_leaf)(params)["edge_weight"][...])
    via_gate = np.asarray(jax.grad(loss_of_gate)(jnp.asarray(keep, jnp.float32)))
    np.testing.assert_allclose(via_leaf, via_gate, rtol=1e-5, atol=1e-6)
