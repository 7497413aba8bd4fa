"""Sparse (BCOO) node features against the same features dense: same logits and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import N, random_graph

from sparsegnn_jax import config, graphs, models, tasks
from sparsegnn_jax.config import RunConfig
from sparsegnn_jax import flops
from sparsegnn_jax.models import sparse_inputs

WIDTH = 20


def _sparse_graph(seed=0):
    """A random graph with ``[N, WIDTH]`` features of which ~15% are nonzero (some rows empty)."""
    g = random_graph(seed, features=WIDTH, symmetric=True, self_loops=True)
    rng = np.random.default_rng(seed)
    x = np.asarray(g.nodes) * (rng.random(g.nodes.shape) < 0.15)
    x[3] = 0.0
    dense = g._replace(nodes=jnp.asarray(x, jnp.float32))
    return dense, dense._replace(nodes=sparse_inputs.from_dense(x))


def _model(kind):
    opts = {"heads": 2} if kind == "gat" else {}
    return models.build(kind, WIDTH, 8, 3, rngs=nnx.Rngs(0), dropout=0.5, input_dropout=0.5,
                        **opts)


def _masked(params, seed):
    """``params`` with ~half of every weight matrix zeroed, as a sparsity method feeds them."""
    keys = iter(jax.random.split(jax.random.key(seed), 64))
    return jax.tree.map(
        lambda p: p * jax.random.bernoulli(next(keys), 0.5, p.shape) if p.ndim == 2 else p, params)


@pytest.mark.parametrize("kind", ["gcn", "gat", "sage", "gin"])
def test_sparse_features_give_dense_logits_and_gradients_under_jit_and_vmap(kind):
    dense, sparse = _sparse_graph()
    graphdef, params = nnx.split(_model(kind))
    stacked = jax.tree.map(lambda *p: jnp.stack(p), params, _masked(params, 1), _masked(params, 2))

    def loss(p, graph):
        logits = nnx.merge(graphdef, p)(graph)
        return jnp.sum(jnp.tanh(logits) * jnp.arange(1.0, 4.0)), logits

    step = jax.jit(jax.vmap(jax.value_and_grad(loss, has_aux=True), in_axes=(0, None)))
    (_, logits_d), grads_d = step(stacked, dense)
    (_, logits_s), grads_s = step(stacked, sparse)
    np.testing.assert_allclose(logits_s, logits_d, atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(logits_d).max()) > 1e-3  # the graph's features reach the output
    for gs, gd in zip(jax.tree.leaves(grads_s), jax.tree.leaves(grads_d)):
        np.testing.assert_allclose(gs, gd, atol=1e-5, rtol=1e-5)
    # Unbatched, under jit only: the masked parameters of the second run.
    one = jax.tree.map(lambda p: p[1], stacked)
    single = jax.jit(jax.grad(lambda p, g: loss(p, g)[0]))
    for gs, gd in zip(jax.tree.leaves(single(one, sparse)), jax.tree.leaves(single(one, dense))):
        np.testing.assert_allclose(gs, gd, atol=1e-5, rtol=1e-5)


def test_matmul_gradient_reaches_the_stored_values():
    dense, sparse = _sparse_graph()
    kernel = jax.random.normal(jax.random.key(0), (WIDTH, 4))
    x = sparse.nodes
    grad_values = jax.grad(lambda v: jnp.sum(jnp.sin(sparse_inputs.matmul(
        x.__class__((v, x.indices), shape=x.shape), kernel))))(x.data)
    grad_dense = jax.grad(lambda d: jnp.sum(jnp.sin(d @ kernel)))(dense.nodes)
    rows, cols = np.asarray(x.indices).T
    np.testing.assert_allclose(grad_values, np.asarray(grad_dense)[rows, cols], atol=1e-5)


def test_dropout_drops_stored_entries_like_dense_dropout():
    x = sparse_inputs.from_dense(np.where(np.eye(400, 50, dtype=bool), 2.0, 0.0))
    dropped = sparse_inputs.to_dense(sparse_inputs.dropout_entries(x, 0.25, jax.random.key(3)))
    kept = np.asarray(dropped)[np.eye(400, 50, dtype=bool)]
    # Every stored entry is dropped (0) or kept and scaled by 1 / (1 - rate); zeros stay zero.
    assert set(np.unique(kept).tolist()) <= {0.0, float(np.float32(2.0) / np.float32(0.75))}
    assert float(np.abs(np.asarray(dropped)[~np.eye(400, 50, dtype=bool)]).max()) == 0.0
    assert 25 <= int(np.sum(kept > 0)) <= 50  # 37.5 kept on average of 50
    assert sparse_inputs.dropout_entries(x, 0.25, None) is x


def test_only_features_below_the_density_bound_become_sparse():
    width = 200
    rows = np.zeros((10, width), np.float32)
    rows[:, : int(sparse_inputs.MAX_DENSITY * width)] = 1.0
    assert sparse_inputs.should_be_sparse(rows)
    rows[0, -1] = 1.0
    assert not sparse_inputs.should_be_sparse(rows)
    assert not sparse_inputs.should_be_sparse(None)


def test_sparse_nodes_keep_the_dense_shape_for_node_counts_and_flops():
    dense, sparse = _sparse_graph()
    assert graphs.num_nodes_of(sparse) == N
    assert graphs.node_features_shape(sparse) == (N, WIDTH)
    model = _model("gcn")
    assert flops.forward(model, sparse).total == flops.forward(model, dense).total
    with pytest.raises(ValueError, match="sparse BCOO"):
        graphs.pad_to_bucket(sparse)


def test_node_task_carries_bag_of_words_features_sparse(data_root):
    problem = tasks.get("node").prepare(config.resolve(RunConfig(
        task="node", dataset="cora", model="gcn", data_root=str(data_root))))
    nodes = problem.graph.nodes
    assert sparse_inputs.is_sparse(nodes)
    assert nodes.shape == (2708, 1433)
    assert int(nodes.nse) == int(np.count_nonzero(problem.features))
