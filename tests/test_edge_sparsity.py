"""Joint edge + weight sparsity: the encoder's edge-weight leaf pruned by every registered method.

A 2-layer GCN on a 12-node graph with ``num_edges=E``; each method prunes the edge leaf to
exactly ``EDGE_SPARSITY`` (ERK splits the weight sparsity over the kernels alone). After init
and after every update the edge mask holds the count the method's definition gives, pruned
entries of the leaf are exactly 0, the graph is untouched, and the model's output equals the
output of the same weights on the graph with the pruned edges deleted.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import METHOD_CONFIGS, build_encoder, random_graph

import sparsegnn_jax.sparsity as sp
from sparsegnn_jax import tasks
from sparsegnn_jax.sparsity import distributions, masks, registry, schedules
from sparsegnn_jax.sparsity.trees import flatten_with_paths, prunable_flags

EDGE_SPARSITY = 0.5
WEIGHT_SPARSITY = 0.8
STEPS = 4
EDGE = "edge_weight"


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    """These tests check counts and equalities, not speed: XLA's cheaper compile mode."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _problem():
    g = random_graph(symmetric=True, self_loops=True)
    enc = build_encoder("gcn", num_edges=int(g.senders.shape[0]))
    graphdef, params = nnx.split(enc, nnx.Param)
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 3, 12))

    def loss(p):
        logits = nnx.merge(graphdef, p)(g)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(12), labels])

    return g, graphdef, params, loss


def _distribution(params, name="erk"):
    paths, leaves, _ = flatten_with_paths(params)
    flags = prunable_flags(paths, leaves, tasks.prunable_params)
    shapes = {p: leaf.shape for p, leaf, f in zip(paths, leaves, flags) if f}
    return distributions.with_fixed_layers(shapes, WEIGHT_SPARSITY, name, {EDGE: EDGE_SPARSITY})


def _sparsifier(method, params):
    cfg = dict(METHOD_CONFIGS[method], filter_fn=tasks.prunable_params)
    if registry.get(method).sparse:
        cfg.update(sparsity=WEIGHT_SPARSITY, distribution=_distribution(params))
    return sp.sparsifier(method, optax.sgd(0.05, momentum=0.9), **cfg)


def _expected_edges(method, size, step):
    """Kept edges after update ``step`` (None: after init), from each method's definition."""
    cfg, final = METHOD_CONFIGS[method], masks.keep_count(size, 1.0 - EDGE_SPARSITY)
    if method == "dense":
        return size
    if method in ("static", "set", "rigl"):
        return final
    if method == "one_shot":
        return final if step is not None and step >= cfg["prune_step"] else size
    if method in ("admm", "slr"):
        prune = cfg["dense_steps"] + cfg["penalty_steps"]
        return final if step is not None and step >= prune else size
    assert method == "gmp", f"no expected count for the method {method!r}: add it here"
    sched = schedules.polynomial_sparsity(EDGE_SPARSITY, cfg["begin_step"], cfg["end_step"])
    count = size
    for t in range(cfg["begin_step"], (-1 if step is None else step) + 1):
        if t <= cfg["end_step"] and ((t - cfg["begin_step"]) % cfg["every"] == 0
                                     or t == cfg["end_step"]):
            count = min(count, masks.keep_count(size, 1.0 - float(sched(t))))
    return count


def _train(method, jit=True, steps=STEPS):
    g, graphdef, params, loss = _problem()
    tx = _sparsifier(method, params)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    history = [(params, state, None)]
    for _ in range(steps):
        value, grads = value_and_grad(params)
        updates, state = update(grads, state, params, value=value)
        params = optax.apply_updates(params, updates)
        history.append((params, state, grads))
    return g, graphdef, history


@pytest.mark.parametrize("method", registry.names())
def test_every_method_keeps_exact_edge_counts_and_pruned_edges_carry_nothing(method):
    g = random_graph(symmetric=True, self_loops=True)
    senders, receivers = np.asarray(g.senders), np.asarray(g.receivers)
    size = int(senders.shape[0])
    g, graphdef, history = _train(method)
    for step, (params, state, _) in enumerate(history):
        mask = np.asarray(sp.get_masks(state)[EDGE])
        leaf = np.asarray(params[EDGE][...])
        assert mask.shape == (size,)  # regrowth can only choose among the original edges
        want = _expected_edges(method, size, None if step == 0 else step - 1)
        assert int(mask.sum()) == want, (method, step, int(mask.sum()), want)
        if step:
            assert np.all(leaf[~mask] == 0.0)
    # The graph's edges are never changed: pruning lives in the leaf only.
    np.testing.assert_array_equal(np.asarray(g.senders), senders)
    np.testing.assert_array_equal(np.asarray(g.receivers), receivers)
    # The final model equals the same weights without the leaf on the graph of the kept edges
    # (scaled by their learnt weights, which a plain graph carries in graph.edges).
    params = history[-1][0]
    leaf = np.asarray(params[EDGE][...])
    keep = leaf != 0
    kept = g._replace(senders=g.senders[keep], receivers=g.receivers[keep],
                      edges=jnp.asarray(leaf[keep]), n_edge=jnp.asarray([int(keep.sum())]))
    plain = build_encoder("gcn")
    nnx.update(plain, nnx.State({k: v for k, v in params.items() if k != EDGE}))
    np.testing.assert_allclose(nnx.merge(graphdef, params)(g), plain(kept), rtol=1e-5, atol=1e-6)


def test_rigl_grows_the_pruned_edges_of_largest_gradient():
    _, _, history = _train("rigl", steps=3)
    grew = 0
    for (_, before, _), (_, after, grads) in zip(history, history[1:]):
        old = np.asarray(sp.get_masks(before)[EDGE])
        new = np.asarray(sp.get_masks(after)[EDGE])
        score = np.abs(np.asarray(grads[EDGE][...]))
        grown, never = new & ~old, ~new & ~old
        if grown.any() and never.any():
            grew += 1
            assert score[grown].min() >= score[never].max()
    assert grew >= 1


def test_jit_and_eager_rigl_on_edges_agree():
    # Three steps: RigL's first mask update is at step 2.
    _, _, jitted = _train("rigl", jit=True, steps=3)
    _, _, eager = _train("rigl", jit=False, steps=3)
    for (pa, sa, _), (pb, sb, _) in zip(jitted, eager):
        np.testing.assert_array_equal(np.asarray(sp.get_masks(sa)[EDGE]),
                                      np.asarray(sp.get_masks(sb)[EDGE]))
        for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", distributions.DISTRIBUTIONS)
def test_distributions_leave_the_edge_leaf_at_the_edge_sparsity(name):
    _, _, params, _ = _problem()
    dist = _distribution(params, name)
    assert dist[EDGE] == EDGE_SPARSITY
    kernels = {p: s for p, s in dist.items() if p != EDGE}
    if name == "uniform_dense_first":
        # The first *kernel* stays dense, not the edge leaf (which comes first in the tree).
        assert list(kernels.values()) == [0.0, WEIGHT_SPARSITY]
    elif name == "uniform":
        assert set(kernels.values()) == {WEIGHT_SPARSITY}
    else:
        # ERK / ER keep the kernels' total at the weight sparsity, the edges aside.
        paths, leaves, _ = flatten_with_paths(params)
        sizes = {p: int(np.size(leaf)) for p, leaf in zip(paths, leaves) if p in kernels}
        pruned = sum(sizes[p] * kernels[p] for p in kernels)
        want = sum(np.floor(WEIGHT_SPARSITY * n) for n in sizes.values())
        assert pruned == pytest.approx(want, rel=1e-6)


def test_prunable_params_adds_only_the_edge_leaf():
    _, _, params, _ = _problem()
    paths, leaves, _ = flatten_with_paths(params)
    chosen = [p for p, leaf in zip(paths, leaves) if tasks.prunable_params(p, leaf)]
    assert chosen == [EDGE, "layers/0/kernel", "layers/1/kernel"]
    assert [p for p, leaf in zip(paths, leaves) if tasks.weight_matrices(p, leaf)] == chosen[1:]
