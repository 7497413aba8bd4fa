"""Joint edge + weight sparsity: the encoder's edge-weight leaf pruned by every registered method.

A 2-layer GCN on a 12-node graph with ``num_edges=E``; each method prunes the edge leaf to
exactly ``EDGE_SPARSITY`` (ERK splits the weight sparsity over the kernels alone). After init
and after every update the edge mask holds the count the method's definition gives, pruned
entries of the leaf are exactly 0, the graph is untouched, and the model's output equals the
output of the same weights on the graph with the pruned edges deleted.
"""
import dataclasses
import itertools
import json
import re

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    METHOD_CONFIGS,
    build_encoder,
    random_graph,
    random_keep,
    sweep_script,
)

import sparsegnn_jax.sparsity as sp
from sparsegnn_jax import (
    cli,
    config,
    flops,
    graphs,
    models,
    report,
    runs,
    sweep_cli,
    sweeps,
    tasks,
)
from sparsegnn_jax.sparsity import distributions, masks, registry, schedules
from sparsegnn_jax.sparsity.trees import flatten_with_paths, prunable_flags

EDGE_SPARSITY = 0.5
WEIGHT_SPARSITY = 0.8
STEPS = 4
EDGE = "edge_weight"




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
    if method == "snip":  # all kept at init; its first update prunes by |g * w|
        return size if step is None else final
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


# Lottery rounds train at masks their round loop prunes between rounds; tests/test_rounds.py
# counts their edges round by round.
@pytest.mark.parametrize("method", [m for m in registry.names() if registry.get(m).rounds is None])
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
    # The final model equals the same weights without the leaf on the graph of the kept edges,
    # those edges as they were: the gate is binary, the leaf's learnt value only a score.
    params = history[-1][0]
    leaf = np.asarray(params[EDGE][...])
    keep = leaf != 0
    kept = g._replace(senders=g.senders[keep], receivers=g.receivers[keep],
                      edges=None if g.edges is None else g.edges[keep],
                      n_edge=jnp.asarray([int(keep.sum())]))
    assert np.any((leaf[keep] != 1.0)), "training moved the kept scores (else the test is weak)"
    plain = build_encoder("gcn")
    nnx.update(plain, nnx.State({k: v for k, v in params.items() if k != EDGE}))
    np.testing.assert_allclose(nnx.merge(graphdef, params)(g), plain(kept), rtol=1e-5, atol=1e-6)


def test_rigl_grows_the_pruned_edges_of_largest_gradient():
    _, _, history = _train("rigl", steps=3)
    grew = 0
    for (_, before, _), (_, after, grads) in itertools.pairwise(history):
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


# ---------------------------------------------------------------------------------------------
# FLOPs: the aggregation over the edges scales with the edge leaf's density.


def _edge_masks(model, keep):
    """All-True masks of ``model``'s params, the edge leaf's set to ``keep``."""
    params = nnx.split(model, nnx.Param, ...)[1]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: (np.asarray(keep, bool) if masks.path_str(path) == EDGE
                         else np.ones(np.shape(x), bool)), params)


def test_gcn_flops_hand_count_with_pruned_edges():
    g = random_graph(symmetric=True, self_loops=True)
    e = int(g.senders.shape[0])
    keep = random_keep(e)
    k = int(keep.sum())
    enc = build_encoder("gcn", num_edges=e)  # F=5 -> 8 -> 3, biases
    report = flops.forward(enc, g, _edge_masks(enc, keep))
    n = 12
    layer0 = 2 * n * 5 * 8 + 2 * k * 8 + n * 8
    layer1 = 2 * n * 8 * 3 + 2 * k * 3 + n * 3
    assert report.per_layer == {"layers/0": layer0, "layers/1": layer1}
    assert report.weight_flops["edge_weight"] == 2 * e * 8 + 2 * e * 3
    assert report.densities["edge_weight"] == k / e


@pytest.mark.parametrize("kind", ["gcn", "sage", "gin", "gat"])
def test_flops_with_pruned_edges_equal_the_compacted_graph_and_match_xla(kind):
    g = random_graph(n=64, m=600, features=32, symmetric=True, self_loops=True, seed=2)
    e = int(g.senders.shape[0])
    keep = random_keep(e, fraction=0.9)
    enc = models.build(kind, 32, 32, 16, rngs=nnx.Rngs(0), num_edges=e,
                       **({"heads": 2} if kind == "gat" else {}))
    plain = models.build(kind, 32, 32, 16, rngs=nnx.Rngs(0),
                         **({"heads": 2} if kind == "gat" else {}))
    compacted = g._replace(senders=g.senders[keep], receivers=g.receivers[keep],
                           n_edge=jnp.asarray([int(keep.sum())]))
    ours = flops.forward(enc, g, _edge_masks(enc, keep)).total
    assert ours == pytest.approx(flops.forward(plain, compacted).total, rel=1e-12)
    graphdef, state = nnx.split(plain)
    cost = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, compacted).compile()
    cost = cost.cost_analysis()
    xla = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    # The README's tolerances of the analytic count against XLA's (4%, GAT 8%).
    assert ours == pytest.approx(xla, rel=0.08 if kind == "gat" else 0.04)


def test_rigl_training_flops_count_the_edges_and_their_dense_gradient_steps():
    g, graphdef, history = _train("rigl", steps=3)
    state = history[-1][1]
    model = nnx.merge(graphdef, history[-1][0])
    trace = sp.get_trace(state)
    assert int(trace.mask_updates) == 1  # the update at step 2
    final = sp.get_masks(state)
    f_sparse = flops.forward(model, g, final).total
    f_dense = flops.forward(model, g).total
    # RigL keeps every density constant: 3 f_S a step, plus f_D - f_S for the update step.
    total = flops.training_from_trace(flops.forward(model, g), trace)
    # (The trace sums float32 densities.)
    assert total == pytest.approx(3 * 3 * f_sparse + (f_dense - f_sparse), rel=1e-6)
    edge_share = flops.forward(model, g).weight_flops["edge_weight"]
    assert f_dense - f_sparse > EDGE_SPARSITY * edge_share  # the pruned edges are not counted


# ---------------------------------------------------------------------------------------------
# Runs, the command line, sweeps.


@pytest.mark.parametrize("flags, fragment", [
    (["--edge-sparsity=1.0"], r"--edge-sparsity must be in \[0, 1\), got 1.0"),
    (["--edge-sparsity=-0.5"], r"--edge-sparsity must be in \[0, 1\), got -0.5"),
    (["--edge-sparsity=nan"], r"--edge-sparsity must be in \[0, 1\), got nan"),
    (["--edge-sparsity=0.5", "--model=mlp"], r"--edge-sparsity has no effect with --model=mlp"),
])
def test_run_cli_rejects_a_bad_edge_sparsity(flags, fragment, tmp_path, capsys,
                                             no_data_loading):
    assert cli.main("node", flags + [f"--out={tmp_path}", "--no-progress"]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert captured.out == "" and line.startswith("error: ") and re.search(fragment, line), line
    assert list(tmp_path.iterdir()) == []


def test_node_run_records_the_exact_edge_sparsity_beside_the_weight_sparsity(tmp_path):
    flags = ["--method=rigl", "--sparsity=0.9", "--edge-sparsity=0.5", "--epochs=2",
             f"--out={tmp_path}", "--no-progress"]
    assert cli.main("node", flags) == 0
    [path] = tmp_path.glob("*.json")
    assert path.name == "node_synthetic-sbm_gcn_rigl_s0.9_e0.5_seed0.json"
    rec = json.loads(path.read_text())
    cfg = config.resolve(config.RunConfig(task="node", dataset="synthetic-sbm", method="rigl",
                                          sparsity=0.9, edge_sparsity=0.5, epochs=2))
    problem = tasks.get("node").prepare(cfg)
    e = int(problem.graph.senders.shape[0])
    assert rec["config"]["edge_sparsity"] == 0.5
    assert rec["edge_sparsity"] == (e - masks.keep_count(e, 0.5)) / e
    assert rec["layer_sparsity"]["encoder/edge_weight"] == pytest.approx(rec["edge_sparsity"])
    # ``sparsity`` stays the weight matrices' own: uniform 0.9 over the two kernels.
    sizes = [int(np.prod(s)) for p, s in runs.prunable_shapes(problem).items()
             if p != "encoder/edge_weight"]
    kept = sum(masks.keep_count(n, 0.1) for n in sizes)
    assert rec["sparsity"] == pytest.approx(1 - kept / sum(sizes), rel=1e-6)


def test_the_default_run_has_no_edge_weights():
    cfg = config.RunConfig(task="node", dataset="synthetic-sbm", epochs=1)
    args = cli.build_parser("node").parse_args([])
    assert args.edge_sparsity == 0.0
    assert cli.config_from_args("node", args).edge_sparsity is None
    problem = tasks.get("node").prepare(config.resolve(cfg))
    assert "encoder/edge_weight" not in runs.prunable_shapes(problem)


def test_sweep_edge_sparsity_axis(tmp_path):
    argv = ["--task=node", "--model=gcn", "--methods=rigl", "--sparsities=0.5",
            "--edge-sparsities=0,0.5", "--seeds=1", "--epochs=2", f"--out={tmp_path}",
            "--no-progress"]
    assert sweep_script().main(argv) == 0
    rows = sweeps.read_csv(tmp_path / "results.csv")
    assert [(r["edge_sparsity"], float(r["achieved_edge_sparsity"])) for r in rows] == [
        ("0.0", 0.0), ("0.5", pytest.approx(0.5, abs=0.01))]
    # With a non-zero value in the grid every run carries the edge weights, the 0 one too.
    for name in ("rigl_s0.5_e0_seed0.json", "rigl_s0.5_e0.5_seed0.json"):
        rec = json.loads((tmp_path / "records" / name).read_text())
        assert "encoder/edge_weight" in rec["layer_sparsity"]
    assert sweeps.done_runs(rows) == {("synthetic-sbm", "gcn", "rigl", 0.5, 0.0, 0, None),
                                      ("synthetic-sbm", "gcn", "rigl", 0.5, 0.5, 0, None)}


@pytest.mark.parametrize("flag, want", [("0", [None]), ("0,0.5,0.9", [0.0, 0.5, 0.9]),
                                        ("0.5,0.5", [0.5])])
def test_sweep_edge_grid(flag, want):
    assert sweep_cli.parse_edge_grid(flag) == want


def test_sweep_rejects_a_bad_edge_grid(tmp_path, capsys, no_data_loading):
    argv = ["--edge-sparsities=0,1", f"--out={tmp_path}", "--no-progress"]
    assert sweep_script().main(argv) == 2
    assert capsys.readouterr().err == "error: --edge-sparsities must be in [0, 1), got 1.0\n"


# ---------------------------------------------------------------------------------------------
# Link prediction: the leaf covers the training-time graph; the evaluation graph's extra
# edges are always kept.


def test_link_edge_weights_cover_the_training_graph_and_evaluation_keeps_the_rest():
    cfg = config.resolve(config.RunConfig(task="link", model="gcn", edge_sparsity=0.5,
                                          epochs=1))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    train_g, eval_g = problem.graph, problem.eval_graphs["test"]
    e = int(train_g.senders.shape[0])
    assert int(eval_g.senders.shape[0]) > e
    np.testing.assert_array_equal(np.asarray(eval_g.senders[:e]), np.asarray(train_g.senders))
    np.testing.assert_array_equal(np.asarray(eval_g.receivers[:e]),
                                  np.asarray(train_g.receivers))
    # The training graph's edges between distinct nodes come first, its self loops after them,
    # outside the leaf: a node keeps its own input whatever is pruned.
    loops = np.asarray(train_g.senders) == np.asarray(train_g.receivers)
    links = int((~loops).sum())
    assert 0 < links < e and not loops[:links].any() and loops[links:].all()
    model = task.build_model(problem, 0)
    assert model.encoder.edge_weight.shape == (links,)
    keep = random_keep(links)
    model.encoder.edge_weight[...] = jnp.asarray(keep, jnp.float32)
    # On the evaluation graph: the pruned training edges are gone, every other edge is kept.
    full_keep = np.concatenate([keep, np.ones(int(eval_g.senders.shape[0]) - links, bool)])
    compacted = eval_g._replace(senders=eval_g.senders[full_keep],
                                receivers=eval_g.receivers[full_keep],
                                n_edge=jnp.asarray([int(full_keep.sum())]))
    plain = task.build_model(dataclasses.replace(
        problem, cfg=dataclasses.replace(cfg, edge_sparsity=None)), 0)
    np.testing.assert_allclose(model.encoder(eval_g), plain.encoder(compacted),
                               rtol=1e-5, atol=1e-6)


def test_with_edges_first_puts_the_given_edges_first():
    small = random_graph(symmetric=True, self_loops=True, m=10)
    big = random_graph(symmetric=True, self_loops=True, m=30)
    first = graphs.from_edges(np.asarray(big.senders[::3]), np.asarray(big.receivers[::3]), 12,
                              symmetric=False, self_loops=False)
    out = graphs.with_edges_first(first, big)
    k = int(first.senders.shape[0])
    np.testing.assert_array_equal(np.asarray(out.senders[:k]), np.asarray(first.senders))
    np.testing.assert_array_equal(np.asarray(out.receivers[:k]), np.asarray(first.receivers))
    as_set = lambda g: sorted(zip(np.asarray(g.senders), np.asarray(g.receivers)))
    assert as_set(out) == as_set(big)
    extra = graphs.from_edges([0], [11], 12, symmetric=False, self_loops=False)
    with pytest.raises(ValueError, match="1 edges of `first` are not edges of `graph`"):
        graphs.with_edges_first(extra, small)


def test_resume_compares_the_edge_sparsity_and_accepts_checkpoints_from_before_it():
    cfg = config.resolve(config.RunConfig(task="node", dataset="synthetic-sbm"))
    older = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "edge_sparsity"}
    assert runs.config_differences(older, cfg) == []
    edges = dataclasses.replace(cfg, edge_sparsity=0.5)
    assert runs.config_differences(older, edges) == [
        "edge_sparsity: not in the checkpoint, 0.5 requested"]
    assert runs.config_differences(dataclasses.asdict(cfg), edges) == [
        "edge_sparsity: None in the checkpoint, 0.5 requested"]


def test_edge_sparsity_of_a_method_that_prunes_nothing_is_refused():
    with pytest.raises(ValueError, match="--edge-sparsity has no effect with --method=dense"):
        config.resolve(config.RunConfig(task="node", method="dense", edge_sparsity=0.5))
    assert config.resolve(config.RunConfig(task="node", method="dense",
                                           edge_sparsity=0.0)).edge_sparsity == 0.0


def test_report_gives_each_edge_sparsity_a_column_of_its_own(tmp_path):
    rows = [{"dataset": "d", "model": "gcn", "method": "rigl", "sparsity": 0.9, "seed": 0,
             "test_accuracy": 0.5, "training_flops": 1.0, "training_flops_relative": 0.5,
             "edge_sparsity": edge} for edge in ("", 0.0, 0.5)]
    sweeps.write_csv(tmp_path / "results.csv", rows)
    got = [r["method"] for r in report.read_results(tmp_path / "results.csv")]
    assert got == ["rigl", "rigl (edges 0)", "rigl (edges 0.5)"]


def test_edge_leaf_covers_the_links_and_refuses_a_self_loop_among_them():
    cfg = config.RunConfig(edge_sparsity=0.5)
    g = jraph.GraphsTuple(nodes=None, edges=None, senders=jnp.asarray([1, 0, 2]),
                          receivers=jnp.asarray([1, 1, 0]), n_node=jnp.asarray([3]),
                          n_edge=jnp.asarray([3]), globals=None)
    with pytest.raises(ValueError, match="stores a self loop before another edge"):
        tasks.edge_leaf_size(cfg, g)
    assert tasks.edge_leaf_size(cfg, graphs.self_loops_last(g)) == 2
    assert tasks.edge_leaf_size(config.RunConfig(), g) is None


def test_weight_decay_leaves_the_edge_scores_alone():
    params = {"encoder": {"edge_weight": jnp.ones(4), "layers": {"0": {"kernel": jnp.ones((2, 2))}}}}
    tx = runs.inner_optimizer(config.RunConfig(optimizer="sgd", lr=0.1, weight_decay=0.5), 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert np.all(np.asarray(updates["encoder"]["edge_weight"]) == 0.0)
    assert np.all(np.asarray(updates["encoder"]["layers"]["0"]["kernel"]) < 0.0)
