"""Compatibility and contracts shared by every method: dense == inner bit for bit, Flax NNX
Optimizer, Linen dicts, optax.chain / MultiSteps / inject_hyperparams, argument validation and the
registry. (jit vs eager, determinism and compile-once live in test_method_jit.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    BATCH,
    assert_counts,
    assert_exactly_masked,
    make_params,
    tiny_layer_params,
    train,
    train_on_pseudo_grads,
)

import sparsegnn_jax.sparsity as sp

# ------------------------------------------------------------------------------------------------
# Dense is the inner optimizer, bit for bit.


@pytest.mark.parametrize("inner_name", ["sgd_momentum", "adam", "chain_nesterov_wd"])
def test_dense_and_zero_sparsity_equal_inner_bitwise(inner_name):
    def inner():
        if inner_name == "sgd_momentum":
            return optax.sgd(0.1, momentum=0.9)
        if inner_name == "adam":
            return optax.adam(1e-2)
        return optax.chain(optax.add_decayed_weights(5e-4),
                           optax.sgd(optax.cosine_decay_schedule(0.1, 10), momentum=0.9,
                                     nesterov=True))

    params = make_params()
    for jit in (True, False):
        ref, _ = train(inner(), params, 5, jit=jit)
        got, state = train(sp.dense(inner()), params, 5, jit=jit)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # With all-True masks the selects are exact: equal up to XLA's fusion choices (FMA).
    for tx in (sp.static_sparse(inner(), sparsity=0.0),
               sp.rigl(inner(), sparsity=0.0, update_every=2)):
        got, _ = train(tx, params, 5)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    trace = sp.get_trace(state)
    assert int(trace.steps) == 5
    assert {k: float(v) for k, v in trace.density_steps.items()} == {
        "l0/kernel": 5.0, "l1/kernel": 5.0, "l2/kernel": 5.0}


# ------------------------------------------------------------------------------------------------
# Containers.


def test_flax_nnx_optimizer():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l0 = nnx.Linear(12, 32, rngs=rngs)
            self.l1 = nnx.Linear(32, 3, rngs=rngs)

        def __call__(self, x):
            return self.l1(jax.nn.tanh(self.l0(x)))

    model = MLP(nnx.Rngs(0))
    tx = sp.rigl(optax.adam(1e-2), sparsity=0.9, update_every=2, drop_fraction=0.3)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, *BATCH)) for _ in range(7)]
    assert losses[-1] < losses[0]
    masks = sp.get_masks(optimizer.opt_state)
    assert jax.tree.structure(masks) == jax.tree.structure(nnx.as_pure(nnx.state(model,
                                                                                  nnx.Param)))
    assert int(masks["l0"]["kernel"].sum()) == round(12 * 32 * 0.1)
    assert int(masks["l1"]["kernel"].sum()) == round(32 * 3 * 0.1)
    assert bool(masks["l0"]["bias"].all())
    kernel = np.asarray(model.l0.kernel[...])
    assert np.all(kernel[~np.asarray(masks["l0"]["kernel"])] == 0)
    trace = sp.get_trace(optimizer.opt_state)
    assert int(trace.steps) == 7 and int(trace.mask_updates) == 3
    assert set(trace.density_steps) == {"l0/kernel", "l1/kernel"}


def test_linen_style_dict_params():
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jax.nn.tanh(nn.Dense(32)(x)))

    model = MLP()
    variables = model.init(jax.random.PRNGKey(0), BATCH[0])
    params = variables["params"]
    tx = sp.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.75, update_every=2,
                 distribution="erk")
    state = tx.init(params)
    loss = lambda p: jnp.mean((model.apply({"params": p}, BATCH[0]) - BATCH[1]) ** 2)  # noqa
    update = jax.jit(tx.update)
    for _ in range(5):
        updates, state = update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        assert_exactly_masked(params, sp.get_masks(state))
    assert_counts(sp.get_masks(state), state.keep_counts)
    assert set(sp.get_trace(state).density_steps) == {"Dense_0/kernel", "Dense_1/kernel"}


def _check_container(tx, steps=6):
    params = make_params()
    history, state = train(tx, params, steps)
    masks = sp.get_masks(state)
    inner_state = sp.find_state(state)
    assert_exactly_masked(history[-1], masks)
    assert_counts(masks, inner_state.keep_counts)
    return history, state


def test_inside_optax_chain():
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     sp.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.8, update_every=2))
    _, state = _check_container(tx)
    assert int(sp.get_trace(state).mask_updates) == 2


@pytest.mark.parametrize("jit", [False, True])
def test_a_rescaled_update_after_the_method_fails_loudly(jit):
    # The method's -p would be rescaled by what follows it: the weights would end up dense.
    # The chain says so before anything runs (a plain ValueError, also under jit).
    tx = optax.chain(sp.rigl(optax.scale_by_adam(), sparsity=0.9, update_every=2),
                     optax.scale_by_learning_rate(1e-2))
    with pytest.raises(ValueError, match=r"^rigl: the sparsity method is followed by 1 other "
                                         r"transformation in an optax.chain"):
        history, _ = train(tx, make_params(), 2, jit=jit)
    # A rescale outside any chain is seen in the next step's params, naming the layers.
    tx = sp.rigl(optax.scale_by_adam(), sparsity=0.9, update_every=2)
    params = make_params()
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    grads = jax.tree.map(jnp.ones_like, params)
    with pytest.raises(Exception, match=r"not zero outside the method's masks \(layers "
                                        r"\['l0/kernel', 'l1/kernel', 'l2/kernel'\]\)"):
        with sp.method_errors():
            for _ in range(2):
                updates, state = update(grads, state, params)
                params = optax.apply_updates(params, jax.tree.map(lambda u: 1e-2 * u, updates))
            jax.block_until_ready(params)
    # In front of the method (or as its inner optimizer) nothing is rescaled: no violation.
    for tx in (optax.chain(optax.scale_by_adam(),
                           sp.rigl(optax.scale_by_learning_rate(1e-2), sparsity=0.9,
                                   update_every=2)),
               sp.rigl(optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(1e-2)),
                       sparsity=0.9, update_every=2)):
        history, state = train(tx, make_params(), 5, jit=jit)
        assert int(sp.get_trace(state).violations) == 0
        assert_exactly_masked(history[-1], sp.get_masks(state))


def test_wrapping_optax_chain():
    inner = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9,
                                                                    nesterov=True))
    _check_container(sp.set_(inner, sparsity=0.8, update_every=2))


def test_multisteps_both_ways():
    outer = optax.MultiSteps(sp.rigl(optax.adam(1e-2), sparsity=0.8, update_every=2),
                             every_k_schedule=2)
    history, state = _check_container(outer, steps=8)
    assert int(sp.find_state(state).trace.steps) == 4  # the method sees every second step
    assert int(sp.get_trace(state, every_k=2).steps) == 8  # and 8 mini-batches were computed
    inner = sp.rigl(optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2), sparsity=0.8,
                    update_every=2)
    history, state = _check_container(inner, steps=8)
    assert int(sp.get_trace(state).steps) == 8
    assert int(sp.get_trace(state).mask_updates) == 3


def test_inject_hyperparams_inner_and_outer():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    tx = sp.rigl(inner, sparsity=0.8, update_every=2)
    _, state = _check_container(tx)
    # The momentum inside InjectHyperparamsState is params-shaped and found for the reset.
    assert jax.tree.structure(state.inner_state.inner_state[0].trace) == jax.tree.structure(
        make_params())
    outer = optax.inject_hyperparams(sp.static_sparse)(optax.sgd(0.1), sparsity=0.8)
    _, state = _check_container(outer)


def test_inject_hyperparams_of_every_changeable_argument():
    params = make_params()
    kw = dict(sparsity=0.8, update_every=2, drop_fraction=0.3, end_step=6, seed=1)
    injected = optax.inject_hyperparams(sp.rigl)(optax.sgd(0.1, momentum=0.9), **kw)
    history, state = train(injected, params, 7)
    _, plain = train(sp.rigl(optax.sgd(0.1, momentum=0.9), **kw), params, 7)
    for a, b in zip(jax.tree.leaves(sp.get_masks(state)), jax.tree.leaves(sp.get_masks(plain))):
        np.testing.assert_array_equal(a, b)
    assert int(sp.get_trace(state).mask_updates) == 3
    assert_exactly_masked(history[-1], sp.get_masks(state))
    # Steps and fractions change during training: no mask update once update_every is 100.
    state.hyperparams["update_every"] = jnp.asarray(100)
    update = jax.jit(injected.update)
    p = history[-1]
    for _ in range(3):
        updates, state = update(jax.tree.map(jnp.ones_like, p), state, p)
        p = optax.apply_updates(p, updates)
    assert int(sp.get_trace(state).mask_updates) == 3
    # The sparsity cannot change after init: it fails loudly, eagerly and under jit.
    state.hyperparams["sparsity"] = jnp.asarray(0.5)
    with pytest.raises(ValueError, match="the sparsity changed after init"):
        injected.update(jax.tree.map(jnp.ones_like, p), state, p)
    with pytest.raises(Exception, match="the sparsity changed after init"):
        jax.block_until_ready(update(jax.tree.map(jnp.ones_like, p), state, p))
    # Gradual magnitude pruning's steps (compared in Python before) can be injected too.
    gmp_kw = dict(sparsity=0.8, begin_step=1, end_step=4, every=1)
    _, gmp = train(optax.inject_hyperparams(sp.gradual_magnitude)(optax.sgd(0.1), **gmp_kw),
                   params, 6)
    _, gmp_plain = train(sp.gradual_magnitude(optax.sgd(0.1), **gmp_kw), params, 6)
    for a, b in zip(jax.tree.leaves(sp.get_masks(gmp)), jax.tree.leaves(sp.get_masks(gmp_plain))):
        np.testing.assert_array_equal(a, b)


def test_get_masks_errors_without_a_sparsity_state():
    with pytest.raises(ValueError, match="no sparsity method state"):
        sp.get_masks(optax.adam(1e-3).init(make_params()))


# ------------------------------------------------------------------------------------------------
# Validation and registry.


@pytest.mark.parametrize("call, match", [
    (lambda: sp.rigl(optax.sgd(0.1), sparsity=1.0), "sparsity"),
    (lambda: sp.static_sparse(optax.sgd(0.1), sparsity=-0.1), "sparsity"),
    (lambda: sp.rigl(optax.sgd(0.1), update_every=0), "update_every"),
    (lambda: sp.set_(optax.sgd(0.1), drop_fraction=0.0), "drop_fraction"),
    (lambda: sp.rigl(optax.sgd(0.1), drop_fraction=1.5), "drop_fraction"),
    (lambda: sp.rigl(optax.sgd(0.1), distribution="gaussian"), "distribution"),
    (lambda: sp.static_sparse(optax.sgd(0.1), scores="best"), "scores"),
    (lambda: sp.rigl(optax.sgd(0.1), end_step=-1), "end_step"),
    (lambda: sp.gradual_magnitude(optax.sgd(0.1), begin_step=5, end_step=2), "end_step"),
    (lambda: sp.gradual_magnitude(optax.sgd(0.1), every=0), "every"),
    (lambda: sp.admm(optax.sgd(0.1), rho=0.0), "rho"),
    (lambda: sp.slr(optax.sgd(0.1), update_every=-3), "update_every"),
    (lambda: sp.slr(optax.sgd(0.1), M=1), "M"),
    (lambda: sp.one_shot(optax.sgd(0.1), prune_step=-1), "prune_step"),
    (lambda: sp.sparsifier("lottery", optax.sgd(0.1)),
     "known: dense, slr, admm, gmp, set, rigl, static, one_shot"),
    (lambda: sp.sparsifier("rigl", optax.sgd(0.1), dT=3), "dT"),
])
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_update_needs_params():
    tx = sp.rigl(optax.sgd(0.1))
    params = make_params()
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(params, tx.init(params))


def test_registry_names():
    # Registration order is the order of tables: dense, the train-and-prune family, then
    # sparse training, then the reference points, then the lottery methods.
    assert list(sp.METHODS) == ["dense", "slr", "admm", "gmp", "set", "rigl", "static",
                                "one_shot", "snip", "imp", "ugs"]
    assert isinstance(sp.sparsifier("rigl", optax.sgd(0.1), sparsity=0.5),
                      optax.GradientTransformationExtraArgs)


# ----------------------------------------------------------------------------------------------
# Edge cases: sparsity 0 is the dense optimizer; invalid arguments through the registry.


def _inner():
    # The experiments' Adam with decoupled L2, as runs.inner_optimizer builds it.
    return optax.chain(optax.add_decayed_weights(5e-4), optax.adam(1e-2))


def test_sparsity_zero_is_the_dense_optimizer():
    params = tiny_layer_params()
    ref, _ = train_on_pseudo_grads(_inner(), params, 8)
    dense, _ = train_on_pseudo_grads(sp.dense(_inner()), params, 8)
    for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Mask updates every step with a large drop fraction: nothing is inactive, so nothing moves.
    for name, kw in (("static", {}), ("rigl", dict(update_every=1, drop_fraction=0.5))):
        got, state = train_on_pseudo_grads(sp.sparsifier(name, _inner(), sparsity=0.0, **kw), params, 8)
        assert all(bool(m.all()) for m in jax.tree.leaves(sp.get_masks(state))), name
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7,
                                       err_msg=name)


@pytest.mark.parametrize("method,kw,fragment", [
    ("rigl", dict(sparsity=1.0), r"sparsity must be in \[0, 1\), got 1.0"),
    ("static", dict(sparsity=-0.1), r"sparsity must be in \[0, 1\), got -0.1"),
    ("static", dict(sparsity=float("nan")), r"sparsity must be in \[0, 1\), got nan"),
    ("rigl", dict(update_every=0), "update_every must be > 0, got 0"),
    ("set", dict(update_every=-3), "update_every must be > 0, got -3"),
    ("rigl", dict(drop_fraction=0.0), r"drop_fraction must be in \(0, 1\]"),
    ("set", dict(drop_fraction=1.5), r"drop_fraction must be in \(0, 1\]"),
    ("foo", {}, "unknown sparsity method 'foo'; known: dense, slr, admm"),
    ("static", dict(distribution="nope"), r"distribution must be one of \['uniform', .*got 'nope'"),
    ("static", dict(update_every=3), "'static' does not take update_every"),
])
def test_invalid_method_arguments_raise_value_error(method, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        sp.sparsifier(method, optax.sgd(0.1), **kw)
