"""Temporal link prediction: held-out targets, cold start, evaluation protocols, selection,
splits."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import build_encoder, random_graph, ring_of_communities

from sparsegnn_jax import config, data, metrics, models, runs, tasks, train


def _keys(edges, n):
    return set((np.asarray(edges)[:, 0].astype(np.int64) * n + np.asarray(edges)[:, 1]).tolist())


@pytest.fixture(scope="module")
def arrivals_split():
    ds = data.load("synthetic-arrivals", seed=0)
    return ds, data.temporal_link_split(ds, target_fraction=0.2)


def test_targets_are_the_latest_training_edges_and_outside_the_training_graph(arrivals_split):
    ds, split = arrivals_split
    order = np.argsort(ds.times, kind="stable")
    raw = np.stack([ds.senders[order], ds.receivers[order]], axis=1)
    n_train = split.train_index.size
    n_hist = split.history_index.size
    assert n_hist == int(np.floor(n_train * 0.8 + 1e-9))
    np.testing.assert_array_equal(split.history_senders, raw[:n_hist, 0])
    np.testing.assert_array_equal(split.history_receivers, raw[:n_hist, 1])
    assert _keys(split.target_edges, ds.num_nodes) == _keys(raw[n_hist:n_train], ds.num_nodes)
    # The evaluation graph holds every training edge, never a validation or test edge.
    graph_keys = _keys(np.stack([split.graph_senders, split.graph_receivers], 1), ds.num_nodes)
    assert graph_keys == _keys(split.train_edges, ds.num_nodes)
    assert graph_keys.isdisjoint(_keys(split.val_edges, ds.num_nodes)
                                 - _keys(split.train_edges, ds.num_nodes))
    assert ds.times[split.history_index].max() <= ds.times[order[n_hist:n_train]].min()


def test_no_true_edge_among_evaluation_negatives(arrivals_split):
    ds, split = arrivals_split
    true = _keys(split.all_edges, ds.num_nodes)
    for part in ("val", "test"):
        pos, neg = data.evaluation_pairs(split, part, 0)
        assert len(pos) == len(neg) > 0
        assert _keys(neg, ds.num_nodes).isdisjoint(true)
        assert (neg[:, 0] != neg[:, 1]).all()
        again = data.evaluation_pairs(split, part, 0)
        np.testing.assert_array_equal(neg, again[1])


def test_negatives_can_be_restricted_to_given_nodes():
    nodes = jnp.asarray([3, 7, 11], jnp.int32)
    neg = np.asarray(data.sample_negatives(jax.random.key(0), 20, 500, jnp.zeros((0,), jnp.int32),
                                           nodes=nodes))
    assert set(neg.ravel().tolist()) == {3, 7, 11}
    assert (neg[:, 0] != neg[:, 1]).all()


def test_cold_start_row_is_shared_by_nodes_without_edges():
    enc = models.Encoder("gcn", 4, 8, 8, num_nodes=5, cold_start=True, rngs=nnx.Rngs(0))
    from sparsegnn_jax import graphs

    g = graphs.from_edges(np.array([0, 1]), np.array([1, 2]), 5)
    x = np.asarray(enc.input_features(g))
    np.testing.assert_array_equal(x[3], np.asarray(enc.cold_start[...]))
    np.testing.assert_array_equal(x[4], np.asarray(enc.cold_start[...]))
    np.testing.assert_array_equal(x[0], np.asarray(enc.embedding[...])[0])


def test_new_nodes_positives_score_above_uniform_negatives():
    # Half the nodes join during the stream. Trained with every training pair in the graph
    # and unseen nodes only ever negative, a model learns "no history, no link" and ranks the
    # test links of new nodes below random pairs; with held-out targets and a shared
    # cold-start row it learns how new nodes link.
    cfg = config.resolve(config.RunConfig(task="link", dataset="synthetic-arrivals",
                                          method="dense", epochs=8, progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    bound, params = train.split_model(task.build_model(problem, 0))
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(0))
    state, _ = train.fit(jax.jit(task.make_epoch(problem, bound, tx)), state, problem.inputs,
                         cfg.epochs)
    pos, neg = problem.eval_pairs["test"]
    new = ~problem.seen_nodes["test"][pos].all(axis=1)
    assert new.mean() > 0.2
    logits = np.asarray(train.link_logits(bound, state.params, problem.eval_graphs["test"],
                                          jnp.asarray(np.concatenate([pos[new], neg])),
                                          train.EVAL_MEMORY_BYTES, problem.history("test")))
    auc = metrics.pair_metrics(logits[: new.sum()], logits[new.sum():])["roc_auc"]
    assert auc > 0.6


def test_best_on_validation_keeps_the_best_epoch_per_run():
    scores = iter([jnp.asarray([0.5, 0.9]), jnp.asarray([0.7, 0.2]), jnp.asarray([0.6, jnp.nan])])
    hook = train.BestOnValidation(lambda params: next(scores),
                                  train.no_selection({"w": jnp.zeros((2, 3))}, (2,)))
    for epoch in (1, 2, 3):
        params = {"w": jnp.full((2, 3), float(epoch))}
        hook(epoch, train.TrainState(params, None, None, jnp.int32(epoch)), jnp.zeros(2))
    np.testing.assert_array_equal(hook.selection.epoch, [2, 1])
    np.testing.assert_array_equal(hook.selection.params["w"], [[2.0] * 3, [1.0] * 3])
    np.testing.assert_allclose(hook.selection.score, [0.7, 0.9])


def test_an_epoch_keeps_the_step_budget_of_every_training_pair():
    cfg = config.resolve(config.RunConfig(task="link", method="dense", epochs=1,
                                          progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    assert problem.steps_per_epoch == max(tasks.MIN_STEPS_PER_EPOCH,
                                          len(problem.split.train_edges) // cfg.batch_size)
    assert len(problem.split.target_edges) < problem.steps_per_epoch * cfg.batch_size
    bound, params = train.split_model(task.build_model(problem, 0))
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(0))
    state, _ = jax.jit(task.make_epoch(problem, bound, tx))(state, problem.inputs)
    assert int(state.step) == problem.steps_per_epoch


@pytest.mark.parametrize("flag, value", [("target_fraction", 0.1), ("features", "ids"),
                                         ("eval_protocol", "dyglib"), ("select", "last")])
def test_link_flags_are_rejected_for_node_classification(flag, value):
    with pytest.raises(ValueError, match="link prediction only"):
        config.resolve(config.RunConfig(task="node", **{flag: value}))


def test_selection_never_picks_a_dense_phase_epoch():
    # SLR over 20 epochs of 7 steps: 70 dense + 35 penalty steps, hard prune at step 105; the
    # params after epoch 15 come from step 104 (not yet pruned), after epoch 16 from step 111.
    cfg = config.resolve(config.RunConfig(task="link", method="slr", epochs=20))
    assert runs.first_selectable_epoch(cfg, 140, 7) == 16
    # GMP reaches its target at step 70 (end_step = half the run): epoch 11 (step 76) onwards.
    gmp = config.resolve(config.RunConfig(task="link", method="gmp", epochs=20))
    assert runs.first_selectable_epoch(gmp, 140, 7) == 11
    for method in ("dense", "rigl", "set", "static"):
        cfg = config.resolve(config.RunConfig(task="link", method=method, epochs=20))
        assert runs.first_selectable_epoch(cfg, 140, 7) == 1
    rec = runs.run(config.RunConfig(task="link", method="slr", sparsity=0.9, epochs=4,
                                    progress=False))
    steps = rec["data"]["steps_per_epoch"]
    assert rec["selected_epoch"] >= runs.first_selectable_epoch(
        config.resolve(config.RunConfig(task="link", method="slr", epochs=4)), 4 * steps, steps)


# Bitwise equality of the chunked and whole evaluation holds for XLA's optimized programs.
@pytest.mark.xla_optimized
def test_link_evaluation_in_chunks_equals_one_chunk():
    # A GCN + MLP decoder on a 12-node graph; 23 positives and 23 negatives. A budget of
    # 16 * 3 * 4 bytes decodes 4 pairs at a time (the last chunk partial) and ranks one
    # positive per chunk; 1 GiB holds everything in one chunk.
    graph = random_graph(seed=3, symmetric=True, self_loops=True)
    model = models.LinkPredictor(build_encoder("gcn"),
                                 models.MLPDecoder(3, 4, mode="concat", rngs=nnx.Rngs(1)))
    bound, params = train.split_model(model)
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 12, (23, 2)).astype(np.int32)
    neg = rng.integers(0, 12, (23, 2)).astype(np.int32)
    key = jax.random.key(4)
    assert train.pairs_per_chunk(3, 16 * 3 * 4) == 4
    chunked = train.evaluate_link(bound, params, graph, pos, neg, 12, key,
                                  num_ranking_negatives=7, hits_k=3, memory_bytes=16 * 3 * 4)
    whole = train.evaluate_link(bound, params, graph, pos, neg, 12, key,
                                num_ranking_negatives=7, hits_k=3, memory_bytes=2**30)
    assert chunked == whole
    # The figures are those of one forward pass over every pair (and every ranking pair) at
    # once, to the last float bit that differently compiled programs may round differently.
    rank_pairs = train.corrupt_destinations(key, jnp.arange(23), jnp.asarray(pos), 12, 7)
    assert not np.any(np.asarray(rank_pairs[..., 0] == rank_pairs[..., 1]))
    every_pair = jnp.concatenate([jnp.asarray(np.concatenate([pos, neg])),
                                  rank_pairs.reshape(-1, 2)])
    logits = np.asarray(jax.jit(train.link_scores, static_argnums=0)(bound, params, graph,
                                                                     every_pair))
    full = metrics.pair_metrics(logits[:23], logits[23:46])
    mrr, hits = metrics.mrr_hits(logits[:23], logits[46:].reshape(23, 7), k=3)
    assert whole["roc_auc"] == pytest.approx(full["roc_auc"])
    assert whole["ap"] == pytest.approx(full["ap"])
    assert whole["mrr"] == pytest.approx(float(mrr)) and whole["hits@3"] == float(hits)


def test_validation_score_is_the_roc_auc_of_the_evaluation_on_the_same_pairs():
    # The score reads the pairs' history features computed once ahead; the evaluation
    # computes them chunk by chunk. Both are the model's validation ROC-AUC.
    cfg = config.resolve(config.RunConfig(task="link", model="mlp", epochs=1, progress=False))
    assert cfg.pair_features == "history"
    task = tasks.get("link")
    problem = task.prepare(cfg)
    bound, params = train.split_model(task.build_model(problem, 0))
    score = float(tasks.jit_with_inputs(task.validation_score(problem, bound))(params))
    assert score == pytest.approx(task.evaluate(problem, bound, params, "val")["roc_auc"],
                                  abs=1e-6)


_LATE_AND_NEW = """0 1 1
1 2 2
2 0 3
0 3 4
3 1 5
4 0 6
1 4 7
2 3 8
5 0 9
4 2 10
"""


def test_mlp_inputs_of_nodes_without_history(tmp_path):
    # 10 edges: 5 history, 2 targets (node 4 first links there), 1 validation, 2 test (node 5
    # first links there). The MLP reads [8 walk | 6 structure | has-history] per node.
    path = tmp_path / "late.txt"
    path.write_text(_LATE_AND_NEW)
    cfg = config.resolve(config.RunConfig(task="link", model="mlp", method="dense",
                                          dataset=f"file:{path}", progress=False))
    problem = tasks.get("link").prepare(cfg)
    train_rows = np.asarray(problem.graph.nodes)
    eval_rows = np.asarray(problem.eval_graphs["val"].nodes)
    cold = problem.cold_row
    assert train_rows.shape == eval_rows.shape == (6, 8 + 6 + 1) and cold.shape == (15,)
    np.testing.assert_array_equal(cold[:8], 0.0)
    assert cold[-1] == 0.0
    np.testing.assert_array_equal(train_rows[:4, -1], 1.0)  # nodes 0-3 have history
    # Node 4 has no history while training: it reads the cold row, at training time exactly.
    np.testing.assert_array_equal(train_rows[4], cold)
    np.testing.assert_array_equal(train_rows[5], cold)
    # Evaluation: node 4 has training edges (structure) but no walk embedding, and says so.
    np.testing.assert_array_equal(eval_rows[4, :8], 0.0)
    assert eval_rows[4, -1] == 0.0 and not np.array_equal(eval_rows[4], cold)
    # Node 5 (first seen in the test period) reads the cold row at evaluation too, also in
    # the test's graph, which holds the validation edges besides the training edges.
    np.testing.assert_array_equal(eval_rows[5], cold)
    np.testing.assert_array_equal(np.asarray(problem.eval_graphs["test"].nodes)[5], cold)


def test_mlp_pair_input_by_default_and_the_papers_concatenation_by_flag(tmp_path):
    path = tmp_path / "late.txt"
    path.write_text(_LATE_AND_NEW)
    default = config.resolve(config.RunConfig(task="link", model="mlp", method="dense",
                                              dataset=f"file:{path}", progress=False))
    paper = config.resolve(config.RunConfig(task="link", model="mlp", method="dense",
                                            dataset=f"file:{path}", features="walks",
                                            decoder="mlp_concat", pair_features="none",
                                            progress=False))
    task = tasks.get("link")
    model = task.build_model(task.prepare(default), 0)
    problem = task.prepare(default)
    assert model.decoder.mode == "pair" and model.encoder.rate == problem.cold_start
    assert problem.info["cold_start_rate"] == problem.cold_start
    # [x_u, x_v, x_u * x_v, |x_u - x_v|] of 8 walk + 6 structure + 1 flag columns, then the
    # pair history's columns.
    assert model.decoder.mlp.layers[0].kernel[...].shape == (4 * (8 + 6 + 1) + 12, 128)
    model = task.build_model(task.prepare(paper), 0)
    # The paper's 16-128-1 on two 8-d walk embeddings, nothing replaced while training.
    shapes = [layer.kernel[...].shape for layer in model.decoder.mlp.layers]
    assert shapes == [(16, 128), (128, 1)] and model.encoder.rate == 0.0


@pytest.mark.slow
def test_link_mlp_beats_every_baseline_on_the_embedded_graph():
    # The embedded temporal SBM: community structure that Jaccard reads off the graph (0.78).
    # The paper's pipeline as it was (1 skip-gram pass, concatenation) scored 0.56 here.
    rec = runs.run(config.RunConfig(task="link", model="mlp", method="dense", sparsity=0.0,
                                    progress=False))
    best = max(m["roc_auc"] for m in rec["baselines"].values())
    assert best > 0.75
    assert rec["test"]["roc_auc"] > best + 0.02


def test_cold_start_rate_matches_the_validation_share_of_endpoints_without_history():
    has_history = np.array([True, True, True, False, False])
    targets = np.array([[0, 1], [1, 2], [2, 3], [0, 1], [1, 2]])  # 1 of 10 ends new: t = 0.1
    val = np.array([[0, 3], [4, 3], [1, 2], [2, 0]])             # 3 of 8 ends new: v = 0.375
    # 0.1 + 0.9 r = 0.375
    assert tasks.cold_start_rate(has_history, targets, val) == pytest.approx(0.275 / 0.9)
    # No more new ends in validation than in the targets: nothing replaced.
    assert tasks.cold_start_rate(has_history, targets, np.array([[0, 1], [1, 2]])) == 0.0
    assert tasks.cold_start_rate(has_history, targets, np.zeros((0, 2), int)) == 0.0
    # Every validation end new, none in the targets: capped below 1.
    assert tasks.cold_start_rate(has_history, targets[:2], np.array([[3, 4]])) == 0.99


@pytest.mark.parametrize("fields, message", [
    (dict(decoder="dot"), "--pair-features=history needs an MLP decoder"),
    (dict(target_fraction=0.0), "needs --target-fraction > 0"),
    (dict(dyglib_setting="inductive"), "--dyglib-setting needs --eval-protocol=dyglib"),
    (dict(eval_protocol="dyglib", dyglib_negatives="sideways"),
     "--dyglib-negatives must be one of random, historical, inductive"),
])
def test_link_flag_combinations_that_mean_nothing_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        config.resolve(config.RunConfig(task="link", **fields))


def test_test_history_holds_the_validation_events_and_validation_only_training(arrivals_split):
    cfg = config.resolve(config.RunConfig(task="link", dataset="synthetic-arrivals",
                                          method="dense", epochs=1, progress=False))
    problem = tasks.get("link").prepare(cfg)
    split = problem.split
    for part, events in (("val", len(split.train_index)),
                         ("test", len(split.train_index) + len(split.val_index))):
        assert float(np.asarray(problem.history(part).node_events).sum()) == 2 * events
    assert float(np.asarray(problem.history("train").node_events).sum()) == (
        2 * len(split.history_index))
    # The test's graph holds every validation pair; the validation's none of the new ones.
    test_keys = _keys(np.stack([problem.eval_graphs["test"].senders,
                                problem.eval_graphs["test"].receivers], 1), split.num_nodes)
    val_keys = _keys(np.stack([problem.eval_graphs["val"].senders,
                               problem.eval_graphs["val"].receivers], 1), split.num_nodes)
    # (graphs are symmetric: a validation pair is new when neither direction trained)
    train_both = _keys(np.concatenate([split.train_edges, split.train_edges[:, ::-1]]),
                       split.num_nodes)
    new_in_val = _keys(split.val_edges, split.num_nodes) - train_both
    assert new_in_val and new_in_val <= test_keys and not new_in_val & val_keys


# ----------------------------------------------------------------------------- --split


def _sorted_static_edge_list(path):
    """A 2-column edge list (no times), sorted by node id as networkx and SciPy list edges."""
    src, dst, n = ring_of_communities(communities=6, size=30, p_in=0.25, p_ring=0.02)
    path.write_text("".join(f"{u} {v}\n" for u, v in zip(src, dst)))
    return n


def test_a_graph_without_times_is_split_at_random_by_default(tmp_path):
    path = tmp_path / "sorted.txt"
    _sorted_static_edge_list(path)
    task = tasks.get("link")
    cfg = config.resolve(config.RunConfig(task="link", method="dense", dataset=f"file:{path}",
                                          progress=False))
    problem = task.prepare(cfg)
    assert problem.info["split"] == "random"
    # Test links touching a node without a training edge: few under the random split ...
    assert problem.info["new_node_share_test"] < 0.05
    # ... most of them in stored order, which --split=temporal asks for, with a warning.
    with pytest.warns(UserWarning, match="no timestamps"):
        ordered = task.prepare(config.resolve(dataclasses.replace(cfg, split="temporal")))
    assert ordered.info["split"] == "temporal"
    assert ordered.info["new_node_share_test"] > 0.5
    # The split is seeded per dataset: another run seed is scored on the same pairs.
    other_seed = task.prepare(config.resolve(dataclasses.replace(cfg, seed=1)))
    for part in ("val", "test"):
        for a, b in zip(problem.eval_pairs[part], other_seed.eval_pairs[part]):
            np.testing.assert_array_equal(a, b)


def test_a_graph_with_times_is_split_by_time_by_default():
    cfg = config.resolve(config.RunConfig(task="link", method="dense", epochs=1,
                                          progress=False))
    assert tasks.get("link").prepare(cfg).info["split"] == "temporal"


@pytest.mark.parametrize("fields, fragment", [
    (dict(split="chronological"), "--split must be one of random, temporal"),
    (dict(split="random", eval_protocol="dyglib"), "--split=random has no effect with "
                                                  "--eval-protocol=dyglib"),
    (dict(task="node", split="random"), "--split has no effect"),
])
def test_bad_split_settings_are_refused(fields, fragment):
    with pytest.raises(ValueError, match=fragment):
        config.resolve(config.RunConfig(**({"task": "link", "method": "dense"} | fields)))


def test_split_flag_of_the_link_cli_only():
    from sparsegnn_jax import cli
    args = cli.build_parser("link").parse_args(["--split=random"])
    assert cli.config_from_args("link", args).split == "random"
    assert cli.config_from_args("link", cli.build_parser("link").parse_args([])).split is None
    with pytest.raises(SystemExit):
        cli.build_parser("node").parse_args(["--split=random"])
