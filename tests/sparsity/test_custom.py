"""The public extension point (sg.sparse_method), user masks / scores for static_sparse, a
schedule callable for gradual_magnitude, and drop_grow on pytrees."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_counts, assert_exactly_masked, loss_fn, make_params, train

import sparsegnn_jax as sg


def _np_top(scores, k):
    """Reference top-k: stable descending order, ties to the lower flat index."""
    flat = np.asarray(scores).reshape(-1)
    out = np.zeros(flat.size, bool)
    out[np.argsort(-flat, kind="stable")[:k]] = True
    return out.reshape(np.shape(scores))


def _snip_scores(params):
    grads = jax.grad(loss_fn)(params)
    return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def test_snip_then_static_user_method_is_seen_by_masks_trace_and_flops():
    params = make_params()
    snip = _snip_scores(params)
    tx = sg.sparse_method(
        optax.adam(1e-2), sparsity=0.75,
        init_masks=lambda ctx: sg.masks.select_top(snip, ctx.keep_counts, ctx.prunable))
    history, state = train(tx, params, 4)
    masks = sg.get_masks(state)
    for name, shape in (("l0", (12, 32)), ("l1", (32, 24)), ("l2", (24, 3))):
        k = round(0.25 * shape[0] * shape[1])
        np.testing.assert_array_equal(masks[name]["kernel"], _np_top(snip[name]["kernel"], k))
        assert masks[name]["bias"].all()
    assert_exactly_masked(history[-1], masks)
    trace = sg.get_trace(state)
    assert int(trace.steps) == 4 and int(trace.mask_updates) == 0
    # FLOPs of the run from its trace: 3 forward passes per step at the masks' densities.
    dense = {"l0/kernel": 100.0, "l1/kernel": 10.0, "l2/kernel": 1.0}
    densities = {p: np.asarray(masks[p.split("/")[0]]["kernel"]).mean() for p in dense}
    expected = sum(3 * 4 * f * densities[p] for p, f in dense.items())
    assert sg.flops.training_from_trace(dense, trace) == pytest.approx(expected, rel=1e-6)


def test_a_user_drop_grow_rule_reproduces_rigl_and_takes_typed_or_raw_keys():
    params = make_params()

    def init_masks(ctx):
        return sg.masks.select_top(sg.masks.random_scores(ctx.key, ctx.params),
                                   ctx.keep_counts, ctx.prunable)

    def update_masks(ctx):
        return sg.drop_grow(ctx.masks, ctx.params, jax.tree.map(jnp.abs, ctx.grads), 0.3,
                            ctx.prunable)

    rigl = sg.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.8, update_every=2,
                   drop_fraction=0.3, scores="magnitude")
    _, rigl_state = train(rigl, params, 7)
    mine = sg.sparse_method(optax.sgd(0.1, momentum=0.9), sparsity=0.8, update_every=2,
                            dense_gradient=True, key=jax.random.key(3),
                            init_masks=lambda ctx: sg.masks.top_magnitude(
                                ctx.params, ctx.keep_counts, ctx.prunable),
                            update_masks=update_masks)
    history, state = train(mine, params, 7)
    for a, b in zip(jax.tree.leaves(sg.get_masks(state)),
                    jax.tree.leaves(sg.get_masks(rigl_state))):
        np.testing.assert_array_equal(a, b)
    assert int(sg.get_trace(state).mask_updates) == 3  # steps 2, 4, 6
    assert_exactly_masked(history[-1], sg.get_masks(state))
    # A typed and a raw key of the same seed draw the same random masks.
    masks = [sg.get_masks(sg.sparse_method(optax.sgd(0.1), sparsity=0.5, key=k,
                                           init_masks=init_masks).init(params))
             for k in (jax.random.key(5), jax.random.PRNGKey(5))]
    for a, b in zip(*map(jax.tree.leaves, masks)):
        np.testing.assert_array_equal(a, b)


def test_user_method_on_an_nnx_optimizer():
    model = nnx.Linear(16, 8, rngs=nnx.Rngs(0))
    tx = sg.sparse_method(optax.sgd(0.1), sparsity=0.5,
                          init_masks=lambda ctx: sg.masks.top_magnitude(
                              ctx.params, ctx.keep_counts, ctx.prunable))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 16))) ** 2))(model)
    opt.update(model, grads)
    assert int(np.count_nonzero(np.asarray(model.kernel[...]))) == 64
    assert sg.mask_sparsity(sg.get_masks(opt.opt_state)) == 0.5


def test_rule_returning_another_structure_is_rejected():
    tx = sg.sparse_method(optax.sgd(0.1), init_masks=lambda ctx: {"w": jnp.ones((2, 2), bool)},
                          name="mine")
    with pytest.raises(ValueError, match="mine: the rule returned masks tree structure"):
        tx.init(make_params())


def test_static_sparse_with_given_masks_or_scores():
    params = make_params()
    snip = _snip_scores(params)
    by_scores = sg.static_sparse(optax.sgd(0.1), sparsity=0.75, scores=snip)
    state = by_scores.init(params)
    np.testing.assert_array_equal(sg.get_masks(state)["l1"]["kernel"],
                                  _np_top(snip["l1"]["kernel"], 192))
    given = jax.tree.map(lambda x: jnp.arange(x.size).reshape(x.shape) % 3 == 0, params)
    history, state = train(sg.static_sparse(optax.sgd(0.1), masks=given), params, 3)
    # Used as given on the kernels; biases are not prunable and stay all True.
    expected = jax.tree.map(lambda m: m if m.ndim >= 2 else jnp.ones_like(m), given)
    for a, b in zip(jax.tree.leaves(sg.get_masks(state)), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    assert_counts(sg.get_masks(state), sg.sparsity.find_state(state).keep_counts)
    assert_exactly_masked(history[-1], expected)
    with pytest.raises(ValueError, match="not both"):
        sg.static_sparse(optax.sgd(0.1), masks=given, scores=snip)


def test_gradual_magnitude_follows_a_schedule_callable():
    params = make_params()
    tx = sg.gradual_magnitude(optax.sgd(0.01), sparsity=0.5, begin_step=0, end_step=4, every=1,
                              schedule=lambda t: 0.125 * t)
    state = tx.init(params)
    for t in range(5):
        grads = jax.grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        # After the update at step t, layer l1 (768 weights) keeps round(768 * (1 - t / 8)).
        assert int(np.asarray(sg.get_masks(state)["l1"]["kernel"]).sum()) == round(
            768 * (1 - 0.125 * t))


def test_drop_grow_on_pytrees_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    mask = np.zeros(30, bool)
    mask[rng.permutation(30)[:10]] = True
    mask = mask.reshape(6, 5)
    scores = rng.normal(size=(6, 5)).astype(np.float32)
    out = sg.drop_grow({"w": mask, "b": np.ones(5, bool)}, {"w": w, "b": np.zeros(5)},
                       {"w": scores, "b": np.zeros(5)}, 0.3)
    n = 3  # floor(0.3 * 10)
    kept = mask & _np_top(np.where(mask, np.abs(w), -np.inf), 10 - n)
    grown = _np_top(np.where(mask, -np.inf, scores), n)
    np.testing.assert_array_equal(out["w"], kept | grown)
    assert out["b"].all() and int(np.asarray(out["w"]).sum()) == 10
