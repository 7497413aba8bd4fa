"""Which edges a method that starts sparse keeps: ``--edge-scores`` and the resistance score."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsegnn_jax.sparsity as sp
from sparsegnn_jax import checkpoint, cli, config, graphs, runs, tasks, train
from sparsegnn_jax.sparsity import registry
from sparsegnn_jax.sparsity.trees import flatten_with_paths

EDGE = "encoder/edge_weight"



def test_resistance_scores_by_hand():
    # Path 0 - 1 - 2 stored both ways, a self loop on 1 and an isolated node 3:
    # each node's count of edge ends between distinct nodes is 2, 4, 2, 0.
    senders = [0, 1, 1, 2, 1]
    receivers = [1, 0, 2, 1, 1]
    np.testing.assert_array_equal(graphs.degrees(senders, receivers, 4), [2, 4, 2, 0])
    got = graphs.resistance_scores(senders, receivers, num_nodes=4)
    np.testing.assert_array_equal(got, [1 / 2 + 1 / 4] * 4 + [0.0])
    # A leaf edge outranks an edge between two hubs: star 0-{1,2,3} plus the edge 1-2.
    s = np.array([0, 0, 0, 1])
    r = np.array([1, 2, 3, 2])
    got = graphs.resistance_scores(s, r, 4)
    np.testing.assert_allclose(got, [1 / 3 + 1 / 2, 1 / 3 + 1 / 2, 1 / 3 + 1, 1 / 2 + 1 / 2])
    assert np.argmax(got) == 2 and np.argmin(got) == 0


def _leaf(tree, path):
    paths, leaves, _ = flatten_with_paths(tree)
    return leaves[paths.index(path)]


def test_a_scores_callable_gets_the_methods_key_and_chooses_the_initial_mask():
    params = {"a": {"kernel": jnp.ones((4, 5))}, "b": {"kernel": jnp.ones((6, 3))}}
    seen = []

    def scores(key, p):
        seen.append(key)
        return jax.tree.map(lambda x: jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape), p)

    key = jax.random.key(3)
    for method in ("static", "rigl", "set"):
        seen.clear()
        tx = sp.sparsifier(method, optax.sgd(0.1), sparsity=0.5, scores=scores, key=key)
        state = tx.init(params)
        assert len(seen) == 1
        for name, size in (("a", 20), ("b", 18)):
            m = np.asarray(sp.get_masks(state)[name]["kernel"]).ravel()
            # Exactly the keep-count highest scores: the last half of each leaf.
            np.testing.assert_array_equal(m, np.arange(size) >= size // 2)
    # ``random`` through a callable is the method's own random mask.
    own = sp.get_masks(sp.sparsifier("static", optax.sgd(0.1), sparsity=0.5, key=key)
                       .init(params))
    via = sp.get_masks(sp.sparsifier("static", optax.sgd(0.1), sparsity=0.5, key=key,
                                     scores=sp.masks.random_scores).init(params))
    jax.tree.map(np.testing.assert_array_equal, own, via)


def _problem(method, edge_scores=None, sparsity=0.8):
    cfg = config.resolve(config.RunConfig(task="node", dataset="synthetic-sbm", method=method,
                                          sparsity=sparsity, edge_sparsity=0.5,
                                          edge_scores=edge_scores, epochs=1))
    return tasks.get("node").prepare(cfg)


def _initial_masks(problem):
    model = tasks.get("node").build_model(problem, 0)
    _, params = runs.train.split_model(model)
    return sp.get_masks(runs.build_optimizer(problem).init(params))


@pytest.mark.parametrize("method", ["static", "rigl"])
def test_resistance_keeps_the_edges_at_low_degree_nodes_and_leaves_the_weights_alone(method):
    problem = _problem(method)
    assert problem.cfg.edge_scores == "resistance"
    g = problem.graph
    size = tasks.edge_leaf_size(problem.cfg, g)
    score = graphs.resistance_scores(np.asarray(g.senders)[:size],
                                     np.asarray(g.receivers)[:size], problem.num_nodes)
    by_resistance = _initial_masks(problem)
    kept = np.asarray(_leaf(by_resistance, EDGE))
    assert kept.sum() == size - size // 2
    # Every kept edge scores at least as high as every pruned one.
    assert score[kept].min() >= score[~kept].max()
    at_random = _initial_masks(_problem(method, "random"))
    assert not np.array_equal(np.asarray(_leaf(at_random, EDGE)), kept)
    # The weights' masks are the random ones either way.
    for path in flatten_with_paths(by_resistance)[0]:
        if path != EDGE:
            np.testing.assert_array_equal(_leaf(by_resistance, path), _leaf(at_random, path))


def test_ties_in_resistance_go_at_random_per_seed():
    problem = _problem("static", sparsity=0.0)
    g = problem.graph
    size = tasks.edge_leaf_size(problem.cfg, g)
    score = graphs.resistance_scores(np.asarray(g.senders)[:size],
                                     np.asarray(g.receivers)[:size], problem.num_nodes)
    model = tasks.get("node").build_model(problem, 0)
    _, params = runs.train.split_model(model)
    masks = [np.asarray(_leaf(sp.get_masks(runs.build_optimizer(problem, key=jax.random.key(k))
                                           .init(params)), EDGE)) for k in (0, 1)]
    # The boundary score is shared by kept and pruned edges (a tie), and the seeds split it
    # differently; away from the boundary both keep the same edges.
    boundary = score[masks[0]].min()
    assert np.any(~masks[0] & (score == boundary))
    assert not np.array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0][score != boundary], masks[1][score != boundary])


@pytest.mark.parametrize("method, want", [("static", "resistance"), ("set", "resistance"),
                                          ("rigl", "resistance"), ("gmp", None),
                                          ("slr", None), ("one_shot", None)])
def test_edge_scores_default_to_resistance_where_a_method_starts_sparse(method, want):
    cfg = config.resolve(config.RunConfig(task="node", method=method, edge_sparsity=0.5))
    assert cfg.edge_scores == want
    assert config.resolve(config.RunConfig(task="node", method=method)).edge_scores is None
    assert registry.get(method).takes_initial_scores() == (want is not None)


def _node_problem(**fields):
    cfg = config.resolve(config.RunConfig(**{"task": "node", "dataset": "synthetic-sbm",
                                             "epochs": 1, "hidden": 4, **fields}))
    return tasks.get("node").prepare(cfg)


def test_edge_saliency_is_minus_the_loss_gradient_of_the_edge_weights():
    # With edges: the gate path (edge leaf, straight-through). Without: the same kernels on the
    # graph whose stored edge weights are variables - an independent path to dL/d(edge).
    gated = _node_problem(method="static", sparsity=0.0, edge_sparsity=0.5)
    bound, params = train.split_model(tasks.get("node").build_model(gated, 0))
    labels, train_index = gated.labels, gated.split.train
    got = np.asarray(tasks.edge_saliency(bound, params, gated.graph, labels, train_index))
    plain = _node_problem(method="dense")
    plain_bound, _ = train.split_model(tasks.get("node").build_model(plain, 0))
    kernels = dict(params, encoder={k: v for k, v in params["encoder"].items()
                                    if k != "edge_weight"})
    graph = gated.graph
    weights = jnp.ones(graph.senders.shape, jnp.float32)
    own = jnp.argmax(plain_bound(kernels, graph._replace(edges=weights)), axis=-1)
    targets = own.at[train_index].set(jnp.asarray(labels)[train_index])

    def loss(w):
        logp = jax.nn.log_softmax(plain_bound(kernels, graph._replace(edges=w)))
        return -jnp.mean(logp[jnp.arange(targets.shape[0]), targets])

    want = -np.asarray(jax.grad(loss)(weights))[:got.shape[0]]
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_saliency_keeps_the_edges_whose_removal_costs_a_dense_checkpoint_most(tmp_path):
    dense_dir = tmp_path / "dense.ckpt"
    # The dense run has no edge weights: the warm start keeps the leaf at 1.
    assert cli.main("node", ["--method=dense", "--epochs=2", "--hidden=4", "--no-progress",
                             f"--checkpoint-dir={dense_dir}", "--checkpoint-every=2",
                             f"--out={tmp_path}"]) == 0
    problem = _node_problem(method="static", sparsity=0.0, edge_sparsity=0.5,
                            edge_scores="saliency", init_from=str(dense_dir), epochs=2)
    bound, fresh = train.split_model(tasks.get("node").build_model(problem, 0))
    warm = runs.dense_warm_start(problem, fresh)
    np.testing.assert_array_equal(warm["encoder"]["edge_weight"], fresh["encoder"]["edge_weight"])
    plain = _node_problem(method="dense", epochs=2)
    _, plain_params = train.split_model(tasks.get("node").build_model(plain, 0))
    template = train.init_state(plain_params, runs.build_optimizer(plain), jax.random.key(0))
    saved, _ = checkpoint.restore(dense_dir, template)
    rest = {k: v for k, v in warm["encoder"].items() if k != "edge_weight"}
    jax.tree.map(np.testing.assert_array_equal, dict(warm, encoder=rest), saved.params)
    kept = np.asarray(_leaf(sp.get_masks(runs.build_optimizer(problem).init(warm)), EDGE))
    score = np.asarray(tasks.edge_saliency(bound, warm, problem.graph, problem.labels,
                                           problem.split.train))
    assert kept.sum() == kept.size - kept.size // 2
    assert score[kept].min() >= score[~kept].max()


@pytest.mark.parametrize("flags, fragment", [
    (["--edge-scores=saliency", "--edge-sparsity=0.5", "--method=static"],
     r"--edge-scores=saliency .* needs --task=node \(node_class.py\) and --init-from"),
    (["--edge-scores=random"], r"--edge-scores has no effect without --edge-sparsity"),
    (["--edge-scores=random", "--edge-sparsity=0.5", "--method=gmp"],
     r"--edge-scores has no effect with --method=gmp: .* \(static, set, rigl\)|"
     r"--edge-scores has no effect with --method=gmp: .*rigl.*"),
])
def test_run_cli_rejects_edge_scores_that_choose_nothing(flags, fragment, tmp_path, capsys,
                                                         no_data_loading):
    assert cli.main("node", flags + [f"--out={tmp_path}", "--no-progress"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and re.search(fragment, line), line
    assert list(tmp_path.iterdir()) == []
