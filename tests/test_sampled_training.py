"""Training on sampled blocks (``--fanout``): with fan-outs covering every degree it trains as
the full graph does; runs record the mode; bad flags are refused, naming the flag."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparsegnn_jax import (config, data, graphs, history, models, runs, sampled, sampling, tasks,
                           train)
from sparsegnn_jax.tasks import link_decoder


def small_graph(n=50, e=160, seed=0):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    keep = src != dst
    return src[keep], dst[keep], graphs.from_edges(src[keep], dst[keep], n)


def max_degree(graph):
    return int(np.bincount(np.asarray(graph.receivers)).max())


def assert_trees_close(a, b, tol=2e-4):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("batch_size", [None, 8])
def test_node_epochs_equal_full_graph_when_fanout_covers_degrees(batch_size):
    n = 50
    _, _, g = small_graph(n)
    feats = np.random.default_rng(1).normal(size=(n, 5)).astype(np.float32)
    g = g._replace(nodes=jnp.asarray(feats))
    labels = jnp.asarray(np.random.default_rng(2).integers(0, 3, n))
    inputs = train.NodeInputs(g, labels, jnp.arange(0, n, 2))
    bound, params = train.split_model(models.NodeClassifier(
        models.build("gcn", 5, 8, 3, num_layers=2, rngs=nnx.Rngs(0))))
    tx = optax.adam(0.05)
    fan = max_degree(g)
    blocks = sampled.BlockSource(g, (fan, fan), batch_size or 25, feats)
    full_epoch = jax.jit(train.make_node_epoch(bound, tx, batch_size))
    sampled_epoch = sampled.compiled(sampled.make_sampled_node_epoch(bound, tx, batch_size,
                                                                     blocks))
    s_full = s_sampled = train.init_state(params, tx, jax.random.key(0))
    for _ in range(3):
        s_full, loss_full = full_epoch(s_full, inputs)
        s_sampled, loss_sampled = sampled_epoch(s_sampled, inputs)
        np.testing.assert_allclose(float(loss_sampled), float(loss_full), rtol=1e-4)
    assert_trees_close(s_sampled.params, s_full.params)
    np.testing.assert_array_equal(jax.random.key_data(s_sampled.key),
                                  jax.random.key_data(s_full.key))


def test_link_epochs_equal_full_graph_when_fanout_covers_degrees():
    n = 50
    src, dst, g = small_graph(n)
    train_edges = np.stack([src, dst], axis=1)[:64].astype(np.int32)
    cfg = config.resolve(config.RunConfig(task="link", hidden=8))
    enc = models.build("gcn", 8, 8, 8, num_layers=2, rngs=nnx.Rngs(0), num_nodes=n)
    bound, params = train.split_model(models.LinkPredictor(enc, link_decoder(cfg, 8,
                                                                             nnx.Rngs(1))))
    inputs = train.LinkInputs(g, jnp.asarray(train_edges),
                              jnp.asarray(data.edge_keys(train_edges, n)),
                              jnp.arange(n, dtype=jnp.int32),
                              history.build(src, dst, None, n, 1.0))  # read by global ids
    tx = optax.adam(0.01)
    fan = max_degree(g)
    blocks = sampled.BlockSource(g, (fan, fan), 4 * 16)
    full_epoch = jax.jit(train.make_link_epoch(bound, tx, 16, n))
    sampled_epoch = sampled.make_sampled_link_epoch(bound, tx, 16, n, blocks)
    s_full = s_sampled = train.init_state(params, tx, jax.random.key(3))
    for _ in range(2):
        s_full, loss_full = full_epoch(s_full, inputs)
        s_sampled, loss_sampled = sampled_epoch(s_sampled, inputs)
        np.testing.assert_allclose(float(loss_sampled), float(loss_full), rtol=1e-4)
    assert_trees_close(s_sampled.params, s_full.params)


def test_small_fanout_is_reproducible_and_differs_from_full_graph():
    n = 50
    _, _, g = small_graph(n, e=400)
    feats = np.random.default_rng(1).normal(size=(n, 5)).astype(np.float32)
    g = g._replace(nodes=jnp.asarray(feats))
    inputs = train.NodeInputs(g, jnp.asarray(np.arange(n) % 3), jnp.arange(n))
    bound, params = train.split_model(models.NodeClassifier(
        models.build("sage", 5, 8, 3, num_layers=2, rngs=nnx.Rngs(0))))
    tx = optax.sgd(0.1)
    epoch = sampled.make_sampled_node_epoch(bound, tx, 10,
                                            sampled.BlockSource(g, (2, 2), 10, feats))
    state = train.init_state(params, tx, jax.random.key(0))
    a, _ = epoch(state, inputs)
    b, _ = epoch(state, inputs)
    full, _ = jax.jit(train.make_node_epoch(bound, tx, 10))(state, inputs)
    assert_trees_close(a.params, b.params, tol=0)
    assert not np.allclose(a.params["encoder"]["layers"][0]["lin_neigh"]["kernel"],
                           full.params["encoder"]["layers"][0]["lin_neigh"]["kernel"])


def test_node_run_records_sampled_mode_and_block_flops():
    cfg = config.RunConfig(task="node", method="dense", epochs=2, batch_size=32,
                           fanout="4, 3", progress=False)
    rec = runs.run(cfg)
    assert rec["config"]["fanout"] == "4,3"
    assert rec["training_mode"] == "sampled" and rec["data"]["fanout"] == [4, 3]
    problem = tasks.get("node").prepare(config.resolve(cfg))
    step_graph, _ = tasks.get("node").flops_inputs(problem)
    assert step_graph.senders.shape == (rec["data"]["block_edges"],)
    full = runs.run(dataclasses.replace(cfg, fanout=None))
    assert full["training_mode"] == "full_graph"
    assert rec["flops"]["forward_step_dense"] != full["flops"]["forward_step_dense"]


@pytest.mark.slow
def test_link_run_trains_on_blocks():
    rec = runs.run(config.RunConfig(task="link", method="rigl", epochs=1, fanout="5,5",
                                    progress=False))
    assert rec["training_mode"] == "sampled"
    assert np.isfinite(rec["final_train_loss"]) and rec["test"]["roc_auc"] > 0.5


@pytest.mark.parametrize("fields, match", [
    (dict(fanout="15"), "one fan-out per layer"),
    (dict(fanout="15,a"), "--fanout"),
    (dict(fanout="15,10", model="mlp"), "--fanout has no effect with --model=mlp"),
    (dict(fanout="15,10", edge_sparsity=0.5, method="static"), "--fanout cannot be combined"),
])
def test_bad_fanout_flags_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        config.resolve(config.RunConfig(task="node", **fields))


def test_block_source_pads_to_trial_sizes_and_grows_when_a_block_does_not_fit():
    _, _, g = small_graph(200, e=1500)
    blocks = sampled.BlockSource(g, (5, 5), 8)
    assert blocks.sizes.nodes <= blocks.bound.nodes and blocks.sizes.edges <= blocks.bound.edges
    blocks.sizes = sampling.BlockSizes(4, 4)  # too small for any block of 8 seeds
    block = blocks.block(np.arange(8), [1, 2])
    assert blocks.sizes.nodes > 4 and block.graph.senders.shape == (blocks.sizes.edges,)
    again = sampled.BlockSource(g, (5, 5), 8).block(np.arange(8), [1, 2])
    np.testing.assert_array_equal(block.graph.globals[graphs.NODE_IDS][: block.num_nodes],
                                  again.graph.globals[graphs.NODE_IDS][: again.num_nodes])
