"""No jitted function of a run closes over graph-sized arrays: they are arguments of the
compiled programs, not constants XLA folds at every compilation."""
import re

import jax
import numpy as np
import pytest

from sparsegnn_jax import compaction, config, link_eval, runs, tasks, train

# Constants with data (not splats of one value) above this many elements would be the data.
LARGEST = 256
_CONSTANT = re.compile(r"stablehlo\.constant dense<(\"0x[0-9A-F]+\"|\[.*?\])>\s*:\s*tensor<([^>]*)>")


def largest_constant(lowered) -> int:
    """Elements of the largest non-splat constant in a lowered program's StableHLO."""
    sizes = [0]
    for _, shape in _CONSTANT.findall(lowered.as_text()):
        dims = [int(d) for d in shape.split("x")[:-1] if d.isdigit()]
        sizes.append(int(np.prod(dims)) if dims else 1)
    return max(sizes)


@pytest.fixture(scope="module")
def link_run():
    cfg = config.resolve(config.RunConfig(task="link", dataset="synthetic-temporal", model="gcn",
                                          method="rigl", edge_sparsity=0.5, epochs=2,
                                          hidden=16, progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    bound, params = train.split_model(task.build_model(problem, 0))
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(0))
    return cfg, task, problem, bound, tx, state


def test_validation_score_takes_the_graph_as_an_argument(link_run):
    _, task, problem, bound, _, state = link_run
    score = task.validation_score(problem, bound)
    assert problem.eval_graphs["val"].senders.shape[0] > 10 * LARGEST
    # A plain jit of the closure embeds the validation graph and pairs: the check sees them.
    assert largest_constant(jax.jit(lambda p: score(p)).lower(state.params)) > 10 * LARGEST
    assert largest_constant(tasks.jit_with_inputs(score).lower(state.params)) <= LARGEST
    jitted = tasks.jit_with_inputs(score)
    np.testing.assert_allclose(float(jitted(state.params)), float(score(state.params)),
                               rtol=1e-6)


def test_epochs_masked_and_compacted_take_the_graph_as_an_argument(link_run):
    cfg, task, problem, bound, tx, state = link_run
    epoch = jax.jit(task.make_epoch(problem, bound, tx))
    assert largest_constant(epoch.lower(state, problem.inputs)) <= LARGEST
    plan = compaction.plan_for(cfg, state.params, state.opt_state, runs.method_kwargs(
        cfg, problem.total_steps, problem.steps_per_epoch))
    compacted = jax.jit(task.make_epoch(problem, bound, tx, compaction=plan))
    cache = plan.empty_cache(problem.inputs.graph)
    assert largest_constant(compacted.lower(state, problem.inputs, cache)) <= LARGEST


def test_link_evaluation_takes_its_pairs_and_their_features_as_arguments():
    # With history features: the ranking pairs and their features are read, not derived.
    cfg = config.resolve(config.RunConfig(task="link", dataset="synthetic-temporal",
                                          model="mlp", epochs=1, progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    bound, params = train.split_model(task.build_model(problem, 0))
    inputs = task.evaluation_inputs(problem, "test")
    pos = jax.numpy.asarray(problem.eval_pairs["test"][0])
    assert inputs.negative_features.size > 10 * LARGEST
    args = (bound, params, problem.eval_graphs["test"], pos, problem.num_nodes, 100,
            train.EVAL_MEMORY_BYTES, jax.random.key(tasks.RANKING_SEED), problem.history("test"))
    ranking = link_eval._ranking
    assert largest_constant(ranking.lower(*args, inputs)) <= LARGEST
    # Closed over, the same inputs would be constants of the program: the check sees them.
    closed = jax.jit(lambda p: ranking.__wrapped__(bound, p, *args[2:], inputs))
    assert largest_constant(closed.lower(params)) > 10 * LARGEST
