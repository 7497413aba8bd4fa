"""Every method under jax.jit and eagerly (allclose), bitwise reproducible across runs with one key,
and one compilation for 100 updates of a 1M-parameter model."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    METHOD_CONFIGS,
    assert_counts,
    assert_exactly_masked,
    make_params,
    train,
)

import sparsegnn_jax.sparsity as sp

# ------------------------------------------------------------------------------------------------
# jit vs no jit, determinism.


# The eager runs cost seconds per method: the default run keeps one method per family (dense,
# penalty, regrowth); CI runs every method (slow tests).
DEFAULT_RUN_METHODS = ("dense", "slr", "rigl")


@pytest.mark.parametrize("method", [
    m if m in DEFAULT_RUN_METHODS else pytest.param(m, marks=pytest.mark.slow)
    for m in METHOD_CONFIGS])
def test_jit_matches_eager_and_runs_are_bitwise_reproducible(method):
    params = make_params()
    make = lambda: sp.sparsifier(method, optax.sgd(0.05, momentum=0.9),  # noqa: E731
                                 **METHOD_CONFIGS[method])
    # 4 steps cover every method's mask change (prunes at 2-3, regrowth at 2).
    jitted, state_a = train(make(), params, 4, jit=True)
    again, state_b = train(make(), params, 4, jit=True)
    eager, state_c = train(make(), params, 4, jit=False)
    for a, b, c in zip(jax.tree.leaves(jitted), jax.tree.leaves(again), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(sp.get_masks(state_a)), jax.tree.leaves(sp.get_masks(state_c))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert_exactly_masked(jitted[-1], sp.get_masks(state_a))
    if method != "dense":
        assert_counts(sp.get_masks(state_a), state_a.keep_counts)


# ------------------------------------------------------------------------------------------------
# One compilation for many steps.


def test_hundred_updates_of_a_million_parameters_compile_once():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"a": {"kernel": jax.random.normal(keys[0], (1000, 960)), "bias": jnp.zeros(960)},
              "b": {"kernel": jax.random.normal(keys[1], (960, 42)), "bias": jnp.zeros(42)}}
    assert sum(x.size for x in jax.tree.leaves(params)) > 1_000_000
    tx = sp.rigl(optax.sgd(0.01, momentum=0.9), sparsity=0.9, update_every=10,
                 drop_fraction=sp.schedules.cosine_drop(0.3, 100))
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)  # runs only while tracing
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    grads = jax.tree.map(lambda x: jax.random.normal(keys[2], x.shape), params)
    first = sp.get_masks(state)["a"]["kernel"]
    for _ in range(100):
        params, state = step(params, state, grads)
    jax.block_until_ready(params)
    assert len(traces) == 1
    assert step._cache_size() == 1
    trace = sp.get_trace(state)
    assert int(trace.steps) == 100 and int(trace.mask_updates) == 9
    assert not np.array_equal(np.asarray(first), np.asarray(sp.get_masks(state)["a"]["kernel"]))
    assert_counts(sp.get_masks(state), state.keep_counts)
