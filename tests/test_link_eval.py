"""Link evaluation reading inputs computed once per split: the metrics of the evaluation that
derives the pairs' history features at every call."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsegnn_jax import config, data, link_eval, tasks, train

# The ranking key of LinkTask.evaluate.
RANKING_KEY = tasks.EVAL_SEED + 10_000
K = 100  # ranking negatives per positive (evaluate_link's default)


def _problem(dataset: str, data_root=None):
    cfg = config.resolve(config.RunConfig(task="link", dataset=dataset, model="mlp", epochs=1,
                                          data_root=data_root, progress=False))
    assert cfg.pair_features == "history"
    task = tasks.get("link")
    problem = task.prepare(cfg)
    models = [task.build_model(problem, seed) for seed in (0, 1)]
    bound, _ = train.split_model(models[0])
    return task, problem, bound, [train.split_model(m)[1] for m in models]


def _computing_every_input(problem, bound, params, part: str, **kw) -> dict:
    """The evaluation deriving the pairs' features from the history at every call (or reading
    ``inputs``)."""
    pos, neg = problem.eval_pairs[part]
    return train.evaluate_link(bound, params, problem.eval_graphs[part], pos, neg,
                               problem.num_nodes, jax.random.key(RANKING_KEY),
                               seen_nodes=problem.seen_nodes[part],
                               history=problem.history(part), **kw)


def _collisions(problem, part: str) -> np.ndarray:
    """[P] how often each positive itself is among its corrupted pairs (NumPy)."""
    pos = problem.eval_pairs[part][0]
    pairs = np.asarray(train.corrupt_destinations(jax.random.key(RANKING_KEY),
                                                  jnp.arange(len(pos)), jnp.asarray(pos),
                                                  problem.num_nodes, K))
    return (pairs == pos[:, None, :]).all(axis=2).sum(axis=1)


def assert_same_evaluation(problem, bound, params, part: str, got: dict):
    """``got`` against the evaluation computing every input: every metric equal but MRR and
    Hits@10, whose ranks are equal at every positive without a collision.

    A corrupted pair equal to its positive (a collision, kept by design) ties with it when
    both logits read the same features; derived in two programs at every call, the two logits
    of that pair can differ in the last bit, so such a positive's rank may differ by at most
    its collisions.
    """
    # One ranking negative: the pair metrics as they are, without a second costly ranking.
    expected = _computing_every_input(problem, bound, params, part, num_ranking_negatives=1)
    ranked = {"mrr", "hits@10"}
    assert {k: v for k, v in got.items() if k not in ranked} == {
        k: v for k, v in expected.items() if k not in ranked}
    pos, neg = problem.eval_pairs[part]
    args = (bound, params, problem.eval_graphs[part], pos, neg, problem.num_nodes,
            jax.random.key(RANKING_KEY))
    kw = dict(history=problem.history(part))
    every_call = np.asarray(train.link_ranks(*args, **kw))
    read = np.asarray(train.link_ranks(*args, **kw, inputs=problem.eval_inputs[part]))
    collisions = _collisions(problem, part)
    assert 0 < np.count_nonzero(collisions) < len(pos) / 4
    np.testing.assert_array_equal(read[collisions == 0], every_call[collisions == 0])
    assert np.all(np.abs(read - every_call) <= collisions)
    assert got["mrr"] == pytest.approx(np.mean(1.0 / read), rel=1e-6)
    assert got["hits@10"] == pytest.approx(np.mean(read <= 10), rel=1e-6)


@pytest.fixture(scope="module")
def synthetic():
    task, problem, bound, param_list = _problem("synthetic-temporal")
    # The first 400 pairs of each part: 40k ranking pairs, scored at every call in seconds.
    pairs = {part: (pos[:400], neg[:400]) for part, (pos, neg) in problem.eval_pairs.items()}
    return (task, dataclasses.replace(problem, eval_pairs=pairs, eval_inputs={}), bound,
            param_list)


def test_runs_sharing_a_problem_get_the_metrics_of_the_evaluation_computing_every_input(
        synthetic):
    task, problem, bound, param_list = synthetic
    part = "test"
    for i, params in enumerate(param_list):
        # Each run sees its own copy of the problem, as in a sweep; the inputs are shared.
        run_problem = dataclasses.replace(problem, cfg=dataclasses.replace(problem.cfg, seed=i))
        got = task.evaluate(run_problem, bound, params, part)
        assert_same_evaluation(problem, bound, params, part, got)
        assert 0.0 < got["mrr"] <= 1.0 and got["roc_auc"] is not None
    assert set(problem.eval_inputs) == {"test"}
    # Different params give different figures: nothing of the scores is kept between runs.
    assert (task.evaluate(problem, bound, param_list[0], "test")
            != task.evaluate(problem, bound, param_list[1], "test"))


def test_inputs_hold_the_ranking_pairs_and_their_history_features(synthetic):
    task, problem, _, _ = synthetic
    inputs = task.evaluation_inputs(problem, "test")
    pos, neg = problem.eval_pairs["test"]
    np.testing.assert_array_equal(np.asarray(inputs.pairs), np.concatenate([pos, neg]))
    assert inputs.negatives.shape == (len(pos), K, 2)
    np.testing.assert_array_equal(np.asarray(inputs.negatives[:, :, 0]),
                                  np.repeat(pos[:, :1], K, axis=1))
    assert not np.any(np.asarray(inputs.negatives[:, :, 1]) == pos[:, :1])
    # Columns met_uv / met_vu against the events known at test time, by hand.
    ds = data.load("synthetic-temporal", seed=0)
    known = np.concatenate([problem.split.train_index, problem.split.val_index])
    met = set(zip(np.asarray(ds.senders)[known].tolist(), np.asarray(ds.receivers)[known].tolist()))
    for pairs, features in ((inputs.pairs, inputs.features),
                            (inputs.negatives.reshape(-1, 2),
                             inputs.negative_features.reshape(-1, 12))):
        pairs, features = np.asarray(pairs), np.asarray(features)
        expected_uv = np.array([(u, v) in met for u, v in pairs.tolist()])
        expected_vu = np.array([(v, u) in met for u, v in pairs.tolist()])
        assert 0 < expected_uv.sum() < len(pairs)
        np.testing.assert_array_equal(features[:, 0], expected_uv.astype(np.float32))
        np.testing.assert_array_equal(features[:, 1], expected_vu.astype(np.float32))
    assert (link_eval.ranking_cache_bytes(len(pos), K, 12)
            == inputs.negatives.nbytes + inputs.negative_features.nbytes
            == len(pos) * K * (2 + 12) * 4)


def test_inputs_over_the_cache_budget_are_derived_at_every_call(synthetic):
    _, problem, bound, param_list = synthetic
    pos, neg = problem.eval_pairs["val"]
    key, history = jax.random.key(RANKING_KEY), problem.history("val")
    expected = _computing_every_input(problem, bound, param_list[0], "val")
    pairs_only = link_eval.ranking_cache_bytes(len(pos), K, 0)
    for budget, cached in ((0, None), (pairs_only, "negatives")):
        inputs = train.evaluation_inputs(pos, neg, problem.num_nodes, key, history,
                                         cache_bytes=budget)
        assert inputs.features.shape == (len(pos) + len(neg), 12)
        assert inputs.negative_features is None
        assert (inputs.negatives is None) == (cached is None)
        got = _computing_every_input(problem, bound, param_list[0], "val", inputs=inputs)
        assert got == expected


def test_inputs_of_other_pairs_are_refused(synthetic):
    _, problem, bound, param_list = synthetic
    pos, neg = problem.eval_pairs["val"]
    key, history = jax.random.key(RANKING_KEY), problem.history("val")
    inputs = train.evaluation_inputs(pos[:5], neg[:5], problem.num_nodes, key, history,
                                     num_ranking_negatives=3)
    with pytest.raises(ValueError, match="inputs hold 10 pairs"):
        train.evaluate_link(bound, param_list[0], problem.eval_graphs["val"], pos[:6], neg[:6],
                            problem.num_nodes, key, history=history, inputs=inputs)
    with pytest.raises(ValueError, match="3 ranking negatives for each of 5 positives, expected num_ranking_negatives=100"):
        train.evaluate_link(bound, param_list[0], problem.eval_graphs["val"], pos[:5], neg[:5],
                            problem.num_nodes, key, history=history, inputs=inputs)
    with pytest.raises(ValueError, match="computed with a history, history is None"):
        train.evaluate_link(bound, param_list[0], problem.eval_graphs["val"], pos[:5], neg[:5],
                            problem.num_nodes, key, num_ranking_negatives=3, inputs=inputs)


@pytest.mark.slow
@pytest.mark.xla_optimized
def test_real_data_metrics_equal_the_evaluation_computing_every_input(data_root):
    task, problem, bound, param_list = _problem("email-eu-temporal", str(data_root))
    for part in ("val", "test"):
        assert_same_evaluation(problem, bound, param_list[0], part,
                               task.evaluate(problem, bound, param_list[0], part))
