"""End-to-end runs on the embedded synthetic datasets: learning, exact sparsity, FLOPs wiring."""
import dataclasses
import warnings

import numpy as np
import pytest

from sparsegnn_jax import baselines, config, data, flops, runs, sparsity, tasks, train

# One link RigL run serves the record test and the exact-sparsity test of rigl.
LINK_RIGL = config.RunConfig(task="link", method="rigl", sparsity=0.9, epochs=3, update_every=3,
                             progress=False)


@pytest.fixture(scope="module")
def link_rigl_record():
    return runs.run(LINK_RIGL)


def test_node_gcn_dense_learns_the_synthetic_sbm():
    rec = runs.run(config.RunConfig(task="node", method="dense", epochs=60, progress=False))
    # Six planted communities: chance is ~1/6.
    assert rec["test"]["accuracy"] >= 0.9
    assert rec["sparsity"] == 0.0


def test_link_gcn_dense_beats_chance_on_the_synthetic_stream():
    rec = runs.run(config.RunConfig(task="link", method="dense", epochs=4, progress=False))
    assert rec["test"]["roc_auc"] >= 0.7
    assert rec["data"]["steps"] == 4 * rec["data"]["steps_per_epoch"]


def test_link_record_has_baselines_breakdown_and_selected_epoch(link_rigl_record):
    rec = link_rigl_record
    assert set(rec["baselines"]) == set(baselines.BASELINES)
    assert set(rec["val_baselines"]) == set(baselines.BASELINES)
    for metrics_ in rec["baselines"].values():
        assert 0.0 <= metrics_["roc_auc"] <= 1.0 and "seen" in metrics_ and "new" in metrics_
    assert set(rec["test"]) >= {"roc_auc", "ap", "accuracy", "mrr", "hits@10", "seen", "new"}
    assert list(rec["test"])[:2] == ["roc_auc", "ap"]
    assert rec["test"]["seen"]["pairs"] + rec["test"]["new"]["pairs"] == 2 * rec["data"][
        "test_edges"]
    assert 1 <= rec["selected_epoch"] <= 3
    # The selection is by validation ROC-AUC: no other epoch's parameters are reported.
    assert rec["config"]["select"] == "best_val" and rec["config"]["target_fraction"] == 0.2


@pytest.mark.parametrize("method", [  # rigl in the default run, all three in CI
    pytest.param("static", marks=pytest.mark.slow), "rigl",
    pytest.param("set", marks=pytest.mark.slow)])
def test_layer_sparsity_is_exact_and_embedding_stays_dense(method, request):
    cfg = dataclasses.replace(LINK_RIGL, method=method)
    rec = (request.getfixturevalue("link_rigl_record") if method == "rigl"
           else runs.run(cfg))
    problem = tasks.get("link").prepare(config.resolve(cfg))
    _, params = train.split_model(tasks.get("link").build_model(problem, 0))
    sizes = {p: leaf.size for p, leaf in _paths(params).items()}
    assert "encoder/embedding" not in rec["layer_sparsity"]
    assert set(rec["layer_sparsity"]) == {p for p in sizes if p.endswith("kernel")}
    # Link GNNs spread the sparsity by ERK: the [64, 1] output layer stays dense, the others
    # are pruned to ERK's exact keep counts, 90% of the kernels' weights in all.
    assert config.resolve(cfg).distribution == "erk"
    expected = sparsity.masks.layer_sparsity(sparsity.masks.init(
        0, params, 0.9, distribution="erk", filter_fn=tasks.weight_matrices))
    assert rec["layer_sparsity"]["decoder/mlp/layers/1/kernel"] == 0.0
    for path, s in rec["layer_sparsity"].items():
        assert s == pytest.approx(expected[path], abs=1e-7), path
    kept = sum(sizes[p] * (1 - s) for p, s in rec["layer_sparsity"].items())
    # Each layer's count is rounded: at most one weight per layer off 10% overall.
    assert kept == pytest.approx(0.1 * sum(sizes[p] for p in rec["layer_sparsity"]),
                                 abs=len(rec["layer_sparsity"]))


def test_static_training_flops_equal_three_sparse_forwards_per_step():
    cfg = config.resolve(config.RunConfig(task="link", method="static", sparsity=0.75, epochs=2,
                                      progress=False))
    rec = runs.run(cfg)
    problem = tasks.get("link").prepare(cfg)
    model = tasks.get("link").build_model(problem, 0)
    _, params = train.split_model(model)
    masks = sparsity.masks.init(0, params, 0.75, distribution=cfg.distribution,
                                filter_fn=tasks.weight_matrices)
    step = flops.forward(model, (problem.graph, 2 * problem.batch_size), masks).total
    assert rec["flops"]["training"] == pytest.approx(3 * step * problem.total_steps, rel=1e-6)
    dense_step = flops.forward(model, (problem.graph, 2 * problem.batch_size)).total
    assert rec["flops"]["training_relative"] == pytest.approx(step / dense_step, rel=1e-6)


def test_resolve_fills_paper_defaults_for_the_mlp():
    link = config.resolve(config.RunConfig(task="link", model="mlp"))
    node = config.resolve(config.RunConfig(task="node", model="mlp"))
    assert (link.epochs, link.hidden, link.lr, link.optimizer, link.batch_size) == (
        50, 128, 0.1, "sgd", 1024)
    assert (node.epochs, node.lr, node.optimizer, node.batch_size, node.dropout) == (
        40, 0.1, "adam", 128, 0.1)
    assert (link.rho, node.rho) == (0.01, 0.02)
    # The paper's uniform per-layer sparsity, except link GNNs (ERK, see config.py).
    gcn_node = config.resolve(config.RunConfig(task="node", model="gcn"))
    assert (link.distribution, node.distribution, gcn_node.distribution) == ("uniform",) * 3
    # The link MLP reads the pair input; --decoder=mlp_concat is the paper's concatenation.
    assert (link.decoder, link.features) == ("mlp_pair", "walks+struct")


def test_method_kwargs_scale_the_papers_slr_phases():
    cfg = config.resolve(config.RunConfig(method="slr"))
    kw = runs.method_kwargs(cfg, total_steps=400, steps_per_epoch=10)
    # 20 dense + 10 penalty + 10 retraining epochs of 40.
    assert (kw["dense_steps"], kw["penalty_steps"], kw["update_every"]) == (200, 100, 10)
    rigl = runs.method_kwargs(dataclasses.replace(cfg, method="rigl"), 400, 10)
    assert rigl["update_every"] == 40 and rigl["end_step"] is None


def _paths(tree):
    import jax

    return {sparsity.masks.path_str(k): v
            for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("task, model, flag, value", [
    ("node", "mlp", "hidden", 64), ("node", "mlp", "num_layers", 3), ("node", "mlp", "dropout", 0.5),
    ("link", "mlp", "num_layers", 3), ("link", "mlp", "dropout", 0.5),
    ("link", "gcn", "embedding_dim", 16), ("node", "gcn", "decoder", "dot"),
])
def test_flags_a_model_does_not_read_are_rejected(task, model, flag, value):
    cfg = config.RunConfig(task=task, model=model, **{flag: value})
    with pytest.raises(ValueError, match=f"--{flag.replace('_', '-')} has no effect"):
        config.resolve(cfg)


def test_resolve_is_idempotent():
    for task in ("link", "node"):
        for model in ("gcn", "mlp"):
            once = config.resolve(config.RunConfig(task=task, model=model))
            assert config.resolve(once) == once


def test_node_graph_without_edges_between_nodes_warns(monkeypatch):
    ds = data.load("synthetic-sbm")
    loops = np.arange(ds.num_nodes, dtype=np.int32)
    edgeless = dataclasses.replace(ds, senders=loops, receivers=loops, edge_weights=None)
    monkeypatch.setattr(tasks.sg_data, "load", lambda *args, **kwargs: edgeless)
    cfg = config.resolve(config.RunConfig(task="node", dataset="synthetic-sbm", epochs=1))
    with pytest.warns(UserWarning, match=rf"^dataset 'synthetic-sbm' has no edge between two "
                                         rf"distinct nodes \({ds.num_nodes} edges, all "
                                         r"self-loops\): a message-passing model sees each "
                                         r"node alone$"):
        tasks.get("node").prepare(cfg)
    monkeypatch.setattr(tasks.sg_data, "load", lambda *args, **kwargs: ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tasks.get("node").prepare(cfg)
