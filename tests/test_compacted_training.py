"""Compacted training (``sparsegnn_jax.compaction``): steps over the kept edges only give the
parameters and masks of steps over the masked graph, for every method and every GNN."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build_encoder, random_graph

from sparsegnn_jax import compaction, config, graphs, models, runs, tasks, train
from sparsegnn_jax.sparsity import registry

EPOCHS = 8
EDGE_SPARSITY = 0.6


def _cfg(method, model="gcn", task="node", **kw):
    return config.resolve(config.RunConfig(
        task=task, dataset="synthetic-sbm" if task == "node" else "synthetic-temporal",
        model=model, method=method, **{**dict(sparsity=0.5, edge_sparsity=EDGE_SPARSITY,
                                              epochs=EPOCHS, update_every=2, hidden=16,
                                              progress=False), **kw}))


def _train(cfg, compacted: bool, problem=None):
    """(final state, compacted steps) of ``cfg`` trained with or without compaction."""
    task = tasks.get(cfg.task)
    problem = problem or task.prepare(cfg)
    bound, params = train.split_model(task.build_model(problem, cfg.seed))
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(cfg.seed))
    plan = compaction.plan_for(cfg, state.params, state.opt_state, runs.method_kwargs(
        cfg, problem.total_steps, problem.steps_per_epoch))
    if not compacted:
        epoch = jax.jit(task.make_epoch(problem, bound, tx))
    else:
        assert plan is not None
        epoch = compaction.CompactedEpoch(task.make_epoch(problem, bound, tx, compaction=plan),
                                          plan)
    state, _ = train.fit(epoch, state, problem.inputs, cfg.epochs)
    return state, (epoch.compacted_steps if compacted else 0), problem


def _assert_same(masked, compacted):
    for path, a, b in zip(*[[p for p, _ in jax.tree_util.tree_flatten_with_path(masked.params)[0]],
                            jax.tree.leaves(masked.params), jax.tree.leaves(compacted.params)]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-6,
                                   err_msg=jax.tree_util.keystr(path))
    ma = jax.tree.leaves(runs.sparsity.get_masks(masked.opt_state))
    mb = jax.tree.leaves(runs.sparsity.get_masks(compacted.opt_state))
    assert all(bool(jnp.all(x == y)) for x, y in zip(ma, mb))


# Steps that must run compacted (of EPOCHS full-batch node steps): static every step; SET
# every step after the first compaction; RigL all but its mask updates (steps 2, 4, 6); the
# pruning methods only after their prune.
# static (fixed edges) and RigL (dense-gradient steps on the full graph) in the default run;
# the other methods' schedules where CI runs the slow tests. Lottery rounds train through
# their own loop (rounds.py), which does not compact.
@pytest.mark.parametrize("method", [
    m if m in ("static", "rigl") else pytest.param(m, marks=pytest.mark.slow)
    for m in registry.names() if registry.get(m).sparse and registry.get(m).rounds is None])
def test_every_method_trains_to_the_masked_runs_parameters(method):
    cfg = _cfg(method)
    masked, _, problem = _train(cfg, compacted=False)
    compacted, steps, _ = _train(cfg, compacted=True, problem=problem)
    _assert_same(masked, compacted)
    assert steps > 0, f"{method}: no step ran on the compacted edges"
    if method in ("static", "set"):
        assert steps == EPOCHS
    if method == "rigl":
        assert steps == EPOCHS - 3  # steps 2, 4 and 6 read the dense gradient


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sage", "gat", "gin"])
@pytest.mark.parametrize("method", ["static", "rigl"])
def test_every_gnn_trains_to_the_masked_runs_parameters(model, method):
    assert set(config.MODELS) >= {"gcn", "sage", "gat", "gin"}
    cfg = _cfg(method, model=model)
    masked, _, problem = _train(cfg, compacted=False)
    compacted, steps, _ = _train(cfg, compacted=True, problem=problem)
    _assert_same(masked, compacted)
    assert steps > 0


def test_link_minibatch_epochs_train_to_the_masked_runs_parameters():
    cfg = _cfg("rigl", task="link", epochs=2, batch_size=256)
    masked, _, problem = _train(cfg, compacted=False)
    compacted, steps, _ = _train(cfg, compacted=True, problem=problem)
    _assert_same(masked, compacted)
    assert 0 < steps < problem.total_steps


@pytest.mark.parametrize("kind", ["gcn", "sage", "gat", "gin"])
def test_compacted_edges_give_the_masked_outputs_and_leaf_gradient(kind):
    g = graphs.self_loops_last(random_graph(symmetric=True, self_loops=True, weights=True))
    e = int(np.sum(np.asarray(g.senders) != np.asarray(g.receivers)))
    enc = build_encoder(kind, num_edges=e)
    rng = np.random.default_rng(1)
    mask = rng.random(e) < 0.5
    leaf = jnp.where(mask, jnp.asarray(rng.random(e) + 0.5, jnp.float32), 0.0)
    leaf = leaf.at[np.flatnonzero(mask)[0]].set(0.0)  # a kept edge at 0 (just regrown): gated off
    enc.edge_weight[...] = leaf
    edges = compaction.compact(g, jnp.asarray(mask), int(mask.sum()) + 3)  # 3 padding slots
    np.testing.assert_allclose(enc(g, edges=edges), enc(g), rtol=1e-5, atol=1e-6)
    bound, params = train.split_model(enc)

    def out_sum(w, e_):
        kw = {} if e_ is None else {"edges": e_}
        return jnp.sum(bound(dict(params, edge_weight=w), g, **kw) ** 2)

    full = jax.grad(out_sum)(leaf, None)
    compact = jax.grad(out_sum)(leaf, edges)
    # Equal at kept entries; nothing reaches the pruned ones, the padding slots included.
    np.testing.assert_allclose(compact[mask], full[mask], rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(compact)[~mask] == 0)


def test_refresh_compacts_only_at_a_mask_change():
    g = graphs.self_loops_last(random_graph(symmetric=True, self_loops=True))
    e = int(np.sum(np.asarray(g.senders) != np.asarray(g.receivers)))
    mask = jnp.arange(e) % 3 == 0
    slots = int(mask.sum())
    cache = compaction.refresh(compaction.empty_cache(g, e, slots), mask, g, slots)
    assert bool(cache.valid) and bool(cache.ready)
    np.testing.assert_array_equal(cache.edges.leaf_index, np.flatnonzero(mask))
    # The same mask: the cache object's arrays come back as they were.
    again = compaction.refresh(cache, mask, g, slots)
    np.testing.assert_array_equal(again.edges.senders, cache.edges.senders)
    # More kept edges than slots (a dense phase): not valid, the steps use the whole graph.
    dense = compaction.refresh(cache, jnp.ones(e, bool), g, slots)
    assert not bool(dense.valid)


def test_plan_is_none_where_nothing_is_compacted():
    for cfg in (_cfg("static", compact_edges="off"),
                dataclasses.replace(_cfg("static"), edge_sparsity=0.0)):
        problem = tasks.get("node").prepare(cfg)
        _, params = train.split_model(tasks.get("node").build_model(problem, 0))
        tx = runs.build_optimizer(problem)
        state = train.init_state(params, tx, jax.random.key(0))
        assert compaction.plan_for(cfg, state.params, state.opt_state, {}) is None


def test_unknown_compact_edges_value_is_refused():
    with pytest.raises(ValueError, match="compact-edges"):
        _cfg("static", compact_edges="always")


@pytest.mark.slow
def test_run_records_its_mode_and_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path,
                                                                            monkeypatch):
    base = dict(task="node", dataset="synthetic-sbm", model="gcn", method="rigl", sparsity=0.5,
                edge_sparsity=EDGE_SPARSITY, epochs=6, update_every=2, hidden=16,
                progress=False)
    full = runs.run(config.RunConfig(**base))
    off = runs.run(config.RunConfig(**base, compact_edges="off"))
    assert (full["training_mode"], off["training_mode"]) == ("compacted", "full_graph")
    assert full["test"]["accuracy"] == pytest.approx(off["test"]["accuracy"], abs=1e-6)
    assert full["final_train_loss"] == pytest.approx(off["final_train_loss"], rel=1e-5)
    # Interrupted in epoch 3 (after the checkpoint of epoch 2); the resumed run compacts its
    # restored masks anew and ends where the uninterrupted one did.
    ckpt = dict(checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)

    def stop_in_epoch_3(method, names=None):
        def hook(epochs_done, state, loss):
            if epochs_done == 3:
                raise KeyboardInterrupt
        return hook

    with monkeypatch.context() as patch:
        patch.setattr(train, "finite_guard", stop_in_epoch_3)
        with pytest.raises(KeyboardInterrupt):
            runs.run(config.RunConfig(**base, **ckpt))
    resumed = runs.run(config.RunConfig(**base, **ckpt, resume=True))
    assert resumed["training_mode"] == "compacted"
    assert resumed["final_train_loss"] == full["final_train_loss"]
    assert resumed["test"] == full["test"]
