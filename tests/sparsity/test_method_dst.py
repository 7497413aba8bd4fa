"""RigL and SET: drop / grow invariants against NumPy references, schedules, end_step, moment reset."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    SHAPES,
    loss_fn,
    make_batch,
    make_params,
    tiny_layer_params,
    train_on_pseudo_grads,
)

import sparsegnn_jax.sparsity as sp
from sparsegnn_jax.sparsity import dst, schedules

UPDATE_EVERY, END_STEP, STEPS = 2, 6, 10


def np_top(scores, eligible, k):
    """NumPy reference: the k highest scores among eligible entries, ties to the lower index."""
    flat, elig = np.asarray(scores).reshape(-1), np.asarray(eligible).reshape(-1)
    idx = np.flatnonzero(elig)
    order = idx[np.lexsort((idx, -flat[idx]))]
    out = np.zeros(flat.size, bool)
    out[order[:k]] = True
    return out.reshape(np.shape(scores))


def record(tx, steps=STEPS, params=None):
    """Runs ``steps`` jitted updates; returns per step (old masks, params in, grads, new masks,
    params out, state out)."""
    params = make_params() if params is None else params
    batch = make_batch()
    state = tx.init(params)
    update = jax.jit(tx.update)
    log = []
    for _ in range(steps):
        grads = jax.grad(loss_fn)(params, batch)
        old = sp.get_masks(state)
        updates, state = update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        log.append((old, params, grads, sp.get_masks(state), new_params, state))
        params = new_params
    return log


def fraction_schedule():
    return schedules.cosine_drop(0.5, END_STEP)


def check_dst(log, regrow, expect_dense_grad_updates=True):
    swaps = 0
    for t, (old, params, grads, new, new_params, state) in enumerate(log):
        is_update = t > 0 and t % UPDATE_EVERY == 0 and t <= END_STEP
        for name in SHAPES:
            o = np.asarray(old[name]["kernel"])
            n = np.asarray(new[name]["kernel"])
            w = np.asarray(params[name]["kernel"])
            g = np.asarray(grads[name]["kernel"])
            assert n.sum() == o.sum()
            assert np.all(np.asarray(new_params[name]["kernel"])[~n] == 0)
            assert np.all(np.asarray(new[name]["bias"]))
            if not is_update:
                np.testing.assert_array_equal(n, o)
                continue
            active = int(o.sum())
            frac = np.float32(fraction_schedule()(t))
            k = min(int(np.floor(frac * np.float32(active))), o.size - active)
            assert k > 0 or t == END_STEP  # cosine_drop reaches 0 at END_STEP
            dropped, grown = o & ~n, n & ~o
            assert dropped.sum() == grown.sum() == k  # the drop fraction follows its schedule
            # Kept = the top (active - k) |w| among active weights: no dropped weight regrown.
            np.testing.assert_array_equal(o & n, np_top(np.abs(w), o, active - k))
            assert not np.any(dropped & grown)
            assert not np.any(grown & o)  # grown only where the weight was inactive
            if regrow == "gradient":
                np.testing.assert_array_equal(grown, np_top(np.abs(g), ~o, k))
            # Grown weights start at exactly 0.
            assert np.all(np.asarray(new_params[name]["kernel"])[grown] == 0)
            swaps += 1
    trace = sp.get_trace(log[-1][-1])
    n_updates = len([t for t in range(len(log)) if t > 0 and t % UPDATE_EVERY == 0
                     and t <= END_STEP])
    # Steps that used a dense gradient, including a due step where the schedule reached 0.
    assert int(trace.mask_updates) == (n_updates if expect_dense_grad_updates else 0)
    assert int(trace.steps) == len(log)
    assert swaps == n_updates * len(SHAPES)


def test_rigl_invariants_against_numpy():
    tx = sp.rigl(optax.sgd(0.05, momentum=0.9), sparsity=0.5, update_every=UPDATE_EVERY,
                 drop_fraction=fraction_schedule(), end_step=END_STEP)
    log = record(tx)
    check_dst(log, "gradient")
    # No change after end_step (steps 7..9 include the due step 8).
    final = [np.asarray(m) for m in jax.tree.leaves(log[END_STEP][3])]
    for entry in log[END_STEP + 1:]:
        for a, b in zip(final, jax.tree.leaves(entry[3])):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_rigl_end_step_none_keeps_updating():
    tx = sp.rigl(optax.sgd(0.05), sparsity=0.5, update_every=2, drop_fraction=0.3)
    log = record(tx, steps=10)
    changed = [t for t, e in enumerate(log)
               if any(np.any(np.asarray(a) != np.asarray(b))
                      for a, b in zip(jax.tree.leaves(e[0]), jax.tree.leaves(e[3])))]
    assert changed == [2, 4, 6, 8]
    assert int(sp.get_trace(log[-1][-1]).mask_updates) == 4


def test_set_invariants_and_reproducible_randomness():
    def make(seed):
        return sp.set_(optax.sgd(0.05, momentum=0.9), sparsity=0.5, update_every=UPDATE_EVERY,
                       drop_fraction=fraction_schedule(), end_step=END_STEP, seed=seed)

    log_a, log_b, log_c = record(make(0)), record(make(0)), record(make(1))
    check_dst(log_a, "random", expect_dense_grad_updates=False)
    check_dst(log_c, "random", expect_dense_grad_updates=False)
    for ea, eb in zip(log_a, log_b):  # same key: bitwise identical masks and params
        for a, b in zip(jax.tree.leaves((ea[3], ea[4])), jax.tree.leaves((eb[3], eb[4]))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Regrowth is random: not the gradient's choice, and a different key grows elsewhere.
    old, _, grads, new, _, _ = log_a[UPDATE_EVERY]
    o, n = np.asarray(old["l1"]["kernel"]), np.asarray(new["l1"]["kernel"])
    grown = n & ~o
    assert not np.array_equal(grown, np_top(np.abs(np.asarray(grads["l1"]["kernel"])), ~o,
                                            int(grown.sum())))
    same_start_key = sp.set_(optax.sgd(0.05, momentum=0.9), sparsity=0.5,
                             update_every=UPDATE_EVERY, drop_fraction=fraction_schedule(),
                             end_step=END_STEP, seed=1, key=jax.random.key(0))
    log_d = record(same_start_key)  # key overrides seed, typed keys accepted
    np.testing.assert_array_equal(np.asarray(log_d[-1][3]["l1"]["kernel"]),
                                  np.asarray(log_a[-1][3]["l1"]["kernel"]))
    assert not np.array_equal(np.asarray(log_c[-1][3]["l1"]["kernel"]),
                              np.asarray(log_a[-1][3]["l1"]["kernel"]))


def test_drop_count_caps_at_inactive_and_truncates():
    mask = jnp.asarray([True] * 7 + [False])
    assert int(dst.drop_count(mask, 1.0)) == 1          # only one inactive slot to grow into
    assert int(dst.drop_count(mask, 0.3)) == 1          # floor(0.3 * 7) = 2, capped at 1
    mask = jnp.asarray([True] * 7 + [False] * 9)
    assert int(dst.drop_count(mask, 0.3)) == 2          # floor(2.1)
    new = dst.swap(mask, jnp.arange(16.0), jnp.arange(16.0), 0.3)
    np.testing.assert_array_equal(np.asarray(new), np.asarray(
        [False, False] + [True] * 5 + [False] * 7 + [True, True]))


def _fill_moments(state, value=1.0):
    """The inner state with every floating array set to ``value`` (momentum / Adam moments)."""
    return state._replace(inner_state=jax.tree.map(
        lambda x: jnp.full_like(x, value)
        if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim > 0 else x, state.inner_state))


@pytest.mark.parametrize("inner_name", ["sgd_momentum", "adam"])
def test_moment_reset_at_grown_positions(inner_name):
    inner = (optax.sgd(0.05, momentum=0.9) if inner_name == "sgd_momentum"
             else optax.adam(1e-2))
    tx = sp.rigl(inner, sparsity=0.75, update_every=1, drop_fraction=0.5)
    params = make_params()
    state = tx.init(params)
    params = optax.apply_updates(params, tx.update(jax.tree.map(jnp.zeros_like, params),
                                                   state, params)[0])  # step 0: apply masks
    state = state._replace(count=jnp.ones((), jnp.int32))
    state = _fill_moments(state)
    grads = jax.grad(loss_fn)(params, make_batch())
    old = sp.get_masks(state)
    _, new_state = jax.jit(tx.update)(grads, state, params)
    new = sp.get_masks(new_state)
    if inner_name == "sgd_momentum":
        trees = [new_state.inner_state[0].trace]
    else:
        trees = [new_state.inner_state[0].mu, new_state.inner_state[0].nu]
    for tree in trees:
        for name in SHAPES:
            o, n = np.asarray(old[name]["kernel"]), np.asarray(new[name]["kernel"])
            grown = n & ~o
            assert grown.sum() > 0
            moment = np.asarray(tree[name]["kernel"])
            assert np.all(moment[grown] == 0)
            assert np.all(moment[~grown] != 0)  # elsewhere the inner update ran untouched
            assert np.all(np.asarray(tree[name]["bias"]) != 0)


def test_rigl_resets_nested_param_shaped_inner_state_at_grown_positions():
    # The inner optimizer's params-shaped state is found inside any nesting of optax states
    # (MultiSteps' accumulators, a chain, inject_hyperparams' Adam moments) and zeroed exactly at
    # the grown positions; the rest of the inner state is untouched.
    params = {"a": jnp.ones((6, 5)), "b": jnp.ones(5)}
    inner = optax.MultiSteps(optax.chain(optax.add_decayed_weights(1e-3),
                                         optax.inject_hyperparams(optax.adam)(learning_rate=0.1)),
                             every_k_schedule=2)
    tx = sp.rigl(inner, sparsity=0.5, update_every=1, drop_fraction=0.5)
    state = tx.init(params)
    filled = jax.tree.map(lambda x: jnp.full_like(x, 2.0) if x.ndim else x, state.inner_state)
    state = state._replace(count=jnp.ones((), jnp.int32), inner_state=filled)
    # At step 1 the params are those the first update left: zero outside the masks (the
    # method refuses others).
    params = sp.masks.apply(params, state.masks)
    grads = {"a": jnp.arange(30.0).reshape(6, 5), "b": jnp.ones(5)}
    _, new_state = jax.jit(tx.update)(grads, state, params)
    grown = np.asarray(new_state.masks["a"]) & ~np.asarray(state.masks["a"])
    assert grown.sum() > 0
    out = new_state.inner_state
    adam_state = out.inner_opt_state[1].inner_state[0]
    # The first call is a MultiSteps mini-step: Adam does not run, so its moments stay 2 wherever
    # no weight was grown.
    for tree in (adam_state.mu, adam_state.nu, out.acc_grads):
        assert np.all(np.asarray(tree["a"])[grown] == 0)
        assert np.all(np.asarray(tree["b"]) != 0)
    for tree in (adam_state.mu, adam_state.nu):
        np.testing.assert_array_equal(np.asarray(tree["a"])[~grown], 2.0)


@pytest.mark.parametrize("method", ["rigl"])
def test_tiny_layer_keeps_one_weight_through_training(method):
    params = tiny_layer_params()
    kw = {} if method == "static" else dict(update_every=2, drop_fraction=0.5)
    tx = sp.sparsifier(method, optax.sgd(0.1), sparsity=0.95, **kw)
    got, state = train_on_pseudo_grads(tx, params, 6)
    masks = sp.get_masks(state)
    assert int(masks["tiny"]["kernel"].sum()) == 1
    assert int((got["tiny"]["kernel"] != 0).sum()) <= 1
    assert int(masks["l0"]["kernel"].sum()) == round(96 * 0.05)
