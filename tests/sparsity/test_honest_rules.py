"""Honest rules and errors that read well under jit: SNIP from the first batch's gradients
against a hand computation, masks keeping more than the sparsity allows, rules whose scores
all tie, and the placement / injected-sparsity errors under jax.jit and nnx.jit."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_exactly_masked, make_params, train

import sparsegnn_jax as sg

# A tiny two-layer model with known weights and one known batch.
W0 = np.array([[0.5, -1.2, 0.3, 0.9], [-0.7, 0.2, 1.1, -0.4], [0.8, 0.6, -0.9, 0.1]],
              np.float32)
B0 = np.array([0.1, -0.2, 0.05, 0.0], np.float32)
W1 = np.array([[1.0, -0.5], [0.3, 0.8], [-1.1, 0.2], [0.4, -0.9]], np.float32)
X = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7], [-0.6, 0.4, 0.9], [0.3, 0.3, -1.2],
              [1.5, -0.2, 0.1]], np.float32)
Y = np.array([[0.5, -0.1], [0.0, 0.3], [-0.4, 0.8], [1.0, 0.0], [0.2, -0.6]], np.float32)


def _tiny_params():
    return {"l0": {"kernel": jnp.asarray(W0), "bias": jnp.asarray(B0)},
            "l1": {"kernel": jnp.asarray(W1)}}


def _tiny_loss(params):
    h = jnp.tanh(X @ params["l0"]["kernel"] + params["l0"]["bias"])
    return jnp.mean((h @ params["l1"]["kernel"] - Y) ** 2)


def _hand_snip_masks(keep0: int, keep1: int):
    """Backpropagation of the mean squared error by hand, then top-k of |g * w| per layer."""
    a = X @ W0 + B0
    h = np.tanh(a)
    d_out = 2.0 * (h @ W1 - Y) / Y.size
    g1 = h.T @ d_out
    g0 = X.T @ ((d_out @ W1.T) * (1.0 - h ** 2))

    def top(scores, k):
        flat = scores.reshape(-1)
        out = np.zeros(flat.size, bool)
        out[np.argsort(-flat, kind="stable")[:k]] = True
        return out.reshape(scores.shape)

    s0, s1 = np.abs(g0 * W0), np.abs(g1 * W1)
    # The k-th and (k+1)-th scores differ: the hand mask is not decided by a tie.
    for s, k in ((s0, keep0), (s1, keep1)):
        ordered = np.sort(s.reshape(-1))[::-1]
        assert ordered[k - 1] > ordered[k] * (1 + 1e-4)
    return top(s0, keep0), top(s1, keep1)


@pytest.mark.parametrize("jit", [False, True])
def test_snip_masks_equal_a_hand_computation_on_one_batch(jit):
    params = _tiny_params()
    tx = sg.snip(optax.sgd(0.1), sparsity=0.5)
    state = tx.init(params)
    # Before the first update the masks are all True (they need that update's gradients).
    assert all(bool(m.all()) for m in jax.tree.leaves(sg.get_masks(state)))

    def step(p, s):
        updates, s = tx.update(jax.grad(_tiny_loss)(p), s, p)
        return optax.apply_updates(p, updates), s

    step = jax.jit(step) if jit else step
    new_params, state = step(params, state)
    masks = sg.get_masks(state)
    hand0, hand1 = _hand_snip_masks(keep0=6, keep1=4)  # half of 12 and of 8
    np.testing.assert_array_equal(np.asarray(masks["l0"]["kernel"]), hand0)
    np.testing.assert_array_equal(np.asarray(masks["l1"]["kernel"]), hand1)
    assert bool(masks["l0"]["bias"].all())
    assert_exactly_masked(new_params, masks)
    # The masks stay: a second step (other gradients) changes nothing.
    new_params, state = step(new_params, state)
    np.testing.assert_array_equal(np.asarray(sg.get_masks(state)["l0"]["kernel"]), hand0)
    # Step 0 ran dense and is counted so; step 1 at half density.
    trace = sg.get_trace(state)
    assert float(trace.density_steps["l0/kernel"]) == pytest.approx(1.5)


def test_snip_is_registered_and_counted_as_dense_for_its_first_step():
    spec = sg.registry.get("snip")
    assert spec.factory is sg.snip and not spec.in_sweeps
    np.testing.assert_array_equal(spec.sparsity_at({}, np.arange(3), 0.9), [0.0, 0.9, 0.9])
    tx = sg.sparsifier("snip", optax.adam(1e-2), sparsity=0.75)
    history, state = train(tx, make_params(), 3)
    assert sg.mask_sparsity(sg.get_masks(state)) == pytest.approx(0.75, abs=0.01)
    assert_exactly_masked(history[-1], sg.get_masks(state))


def test_init_from_grads_lets_a_natural_snip_rule_see_gradients_without_warning():
    def natural_snip(ctx):
        scores = jax.tree.map(lambda g, w: jnp.abs(g * w), ctx.grads, ctx.params)
        return sg.masks.select_top(scores, ctx.keep_counts, ctx.prunable)

    params = _tiny_params()
    # At init the gradients are zeros: every score ties, and the rule is told so.
    with pytest.warns(UserWarning, match=r"every score of \['l0/kernel', 'l1/kernel'\] is "
                                         r"equal.*init_from_grads=True"):
        state = sg.sparse_method(optax.sgd(0.1), sparsity=0.5,
                                 init_masks=natural_snip).init(params)
    # ... and it kept the first k indices, not a choice by score.
    np.testing.assert_array_equal(np.asarray(sg.get_masks(state)["l1"]["kernel"]).reshape(-1),
                                  np.arange(8) < 4)
    tx = sg.sparse_method(optax.sgd(0.1), sparsity=0.5, init_masks=natural_snip,
                          init_from_grads=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = tx.init(params)
        _, state = tx.update(jax.grad(_tiny_loss)(params), state, params)
    hand0, hand1 = _hand_snip_masks(6, 4)
    np.testing.assert_array_equal(np.asarray(sg.get_masks(state)["l0"]["kernel"]), hand0)
    np.testing.assert_array_equal(np.asarray(sg.get_masks(state)["l1"]["kernel"]), hand1)


def test_tied_scores_warn_under_jit_too():
    params = _tiny_params()
    tx = sg.static_sparse(optax.sgd(0.1), sparsity=0.5,
                          scores=lambda key, p: jax.tree.map(jnp.zeros_like, p))
    with pytest.warns(UserWarning, match="every score of"):
        jax.block_until_ready(jax.jit(tx.init)(params))
    # Random scores (the default) never tie: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.block_until_ready(jax.jit(sg.static_sparse(optax.sgd(0.1), sparsity=0.5).init)(
            params))


def _all_true(ctx):
    return jax.tree.map(lambda w: jnp.ones(w.shape, bool), ctx.params)


def test_masks_keeping_more_than_the_sparsity_allows_raise_naming_the_layer():
    params = make_params()  # l0 12x32, l1 32x24, l2 24x3
    tx = sg.sparse_method(optax.sgd(0.1), sparsity=0.9, init_masks=_all_true)
    with pytest.raises(ValueError, match=r"^sparse_method: the masks returned at init keep more "
                                         r"weights than the sparsity allows \('l0/kernel' keeps "
                                         r"384, allowed 38, 'l1/kernel' keeps 768, allowed 77, "
                                         r"'l2/kernel' keeps 72, allowed 7\)"):
        tx.init(params)
    # Keeping fewer is allowed; declaring own counts allows more.
    fewer = sg.sparse_method(optax.sgd(0.1), sparsity=0.5, init_masks=lambda ctx: jax.tree.map(
        lambda w: (jnp.arange(w.size) == 0).reshape(w.shape), ctx.params))
    fewer.init(params)
    sg.sparse_method(optax.sgd(0.1), sparsity=0.9, init_masks=_all_true,
                     own_counts=True).init(params)


def test_an_update_rule_keeping_too_many_raises_under_jit_with_method_errors():
    params = make_params()
    tx = sg.sparse_method(optax.sgd(0.1), sparsity=0.9, update_every=2,
                          init_masks=lambda ctx: sg.masks.top_magnitude(
                              ctx.params, ctx.keep_counts, ctx.prunable),
                          update_masks=_all_true)
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = jax.tree.map(jnp.ones_like, params)
    p = params
    for _ in range(2):  # step 0 and 1 keep the init masks
        updates, state = update(grads, state, p)
        p = optax.apply_updates(p, updates)
    with pytest.raises(sg.sparsity.MethodError) as err:
        with sg.method_errors():
            jax.block_until_ready(update(grads, state, p))
    assert str(err.value).splitlines()[0].startswith(
        "sparse_method: the masks chosen at this update keep more weights than the sparsity "
        "allows ('l0/kernel' keeps 384, allowed 38")


def test_every_built_in_method_keeps_its_counts_or_declares_it_does_not():
    params = make_params()
    kw = {"static": {}, "one_shot": dict(prune_step=2), "set": dict(update_every=2),
          "rigl": dict(update_every=2), "snip": {},
          "gmp": dict(begin_step=1, end_step=3, every=1),
          "admm": dict(dense_steps=1, penalty_steps=2, update_every=1),
          "slr": dict(dense_steps=1, penalty_steps=2, update_every=1)}
    # A lottery round trains at the masks the round loop hands it.
    fixed = sg.masks.init(jax.random.key(0), params, sparsity=0.8)
    for name in sg.registry.names():
        if sg.registry.get(name).rounds is not None:
            extra = dict(masks=fixed)
        else:
            extra = {} if name == "dense" else dict(sparsity=0.8, **kw[name])
        history, state = train(sg.sparsifier(name, optax.sgd(0.1), **extra), params, 5)
        assert_exactly_masked(history[-1], sg.get_masks(state))


# ------------------------------------------------------------------------------------------------
# Errors under jit: the library's message is the first line.

_FOLLOWED = "rigl: the sparsity method is followed by 1 other transformation in an optax.chain"


def _misplaced():
    return optax.chain(sg.rigl(optax.scale_by_adam(), sparsity=0.9, update_every=2),
                       optax.scale_by_learning_rate(1e-2))


def test_a_method_before_a_rescale_fails_at_init_eagerly_and_under_jax_jit():
    params = make_params()
    for init in (_misplaced().init, jax.jit(_misplaced().init)):
        with pytest.raises(ValueError) as err:
            init(params)
        assert str(err.value).splitlines()[0].startswith(_FOLLOWED)
        assert "Put the sparsity method last in the chain" in str(err.value)


def test_a_method_before_a_rescale_fails_when_jit_traces_the_update():
    params = make_params()
    tx = _misplaced()
    # A state assembled without the chain's init: the update itself must refuse.
    state = (sg.rigl(optax.scale_by_adam(), sparsity=0.9, update_every=2).init(params),
             optax.scale_by_learning_rate(1e-2).init(params))
    with pytest.raises(ValueError) as err:
        jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert str(err.value).splitlines()[0].startswith(_FOLLOWED)
    # named_chain and nested chains are read the same way; a chain before the method is fine.
    with pytest.raises(ValueError, match="followed by 2 other transformations"):
        optax.named_chain(("m", sg.rigl(optax.sgd(0.1), sparsity=0.9)),
                          ("a", optax.scale(0.5)), ("b", optax.identity())).init(params)
    with pytest.raises(ValueError, match="followed by 1 other transformation"):
        optax.chain(optax.chain(optax.clip(1.0), sg.rigl(optax.sgd(0.1), sparsity=0.9)),
                    optax.scale(0.5)).init(params)
    optax.chain(optax.chain(optax.clip(1.0), optax.scale(0.5)),
                sg.rigl(optax.chain(optax.scale_by_adam(), optax.scale(-1e-2)),
                        sparsity=0.9)).init(params)


def test_a_method_before_a_rescale_fails_under_nnx_jit():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(12, 32, rngs=rngs)
            self.b = nnx.Linear(32, 3, rngs=rngs)

        def __call__(self, x):
            return self.b(jax.nn.relu(self.a(x)))

    @nnx.jit
    def build(model):
        nnx.Optimizer(model, _misplaced(), wrt=nnx.Param)

    with pytest.raises(ValueError) as err:
        build(Net(nnx.Rngs(0)))
    assert str(err.value).splitlines()[0].startswith(_FOLLOWED)


def test_value_checks_under_jit_unwrap_with_method_errors_and_log_nothing(capfd):
    params = make_params()
    injected = optax.inject_hyperparams(sg.rigl)(optax.sgd(0.1), sparsity=0.8, update_every=2)
    state = injected.init(params)
    update = jax.jit(injected.update)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = update(grads, state, params)
    p = optax.apply_updates(params, updates)
    state.hyperparams["sparsity"] = jnp.asarray(0.5)
    capfd.readouterr()
    with pytest.raises(sg.sparsity.MethodError) as err:
        with sg.method_errors():
            jax.block_until_ready(update(grads, state, p))
    assert str(err.value).splitlines()[0].startswith("rigl: the sparsity changed after init")
    # Without the context manager XLA's wrapper comes first; either way stderr stays quiet.
    with pytest.raises(jax.errors.JaxRuntimeError, match="the sparsity changed after init"):
        jax.block_until_ready(update(grads, state, p))
    assert "Traceback" not in capfd.readouterr().err
    # A rescale outside any chain (the caller's own) is caught from the next step's params.
    tx = sg.rigl(optax.sgd(0.1), sparsity=0.9, update_every=2)
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(grads, s, p))
    updates, state = step(params, state)
    p = optax.apply_updates(params, jax.tree.map(lambda u: 0.5 * u, updates))
    with pytest.raises(sg.sparsity.MethodError) as err:
        with sg.method_errors():
            jax.block_until_ready(step(p, state))
    assert str(err.value).splitlines()[0].startswith(
        "rigl: the params passed to update() are not zero outside the method's masks")
    # Other errors pass through the context manager unchanged.
    with pytest.raises(ZeroDivisionError):
        with sg.method_errors():
            1 / 0
