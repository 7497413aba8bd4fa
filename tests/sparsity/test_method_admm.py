"""ADMM and SLR: phases, the hard prune against a NumPy reference, convergence on least squares,
and the SLR step-size rule / surrogate optimality condition."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsegnn_jax.sparsity as sp
from sparsegnn_jax.sparsity.admm import slr_alpha

D_IN, D_OUT, N = 24, 8, 256


def least_squares(seed=0, sparsity=0.75):
    """A convex problem whose solution is sparse: Y = X W* with W* having the target sparsity."""
    kx, kw, km, kp = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(kx, (N, D_IN))
    w_true = jax.random.normal(kw, (D_IN, D_OUT))
    keep = jax.random.uniform(km, (D_IN, D_OUT)) >= sparsity
    y = x @ jnp.where(keep, w_true, 0) + 0.5
    params = {"w": 0.1 * jax.random.normal(kp, (D_IN, D_OUT)), "b": jnp.zeros(D_OUT)}

    def loss(p):
        return 0.5 * jnp.mean(jnp.sum((x @ p["w"] + p["b"] - y) ** 2, axis=1))

    return params, loss


def run(tx, params, loss, steps, value_at=None):
    """Jitted updates; returns per step (params in, state out)."""
    state = tx.init(params)
    update = jax.jit(tx.update)
    log = []
    for t in range(steps):
        value, grads = jax.value_and_grad(loss)(params)
        if value_at is not None and t in value_at:
            value = jnp.asarray(value_at[t], jnp.float32)
        updates, new_state = update(grads, state, params, value=value)
        log.append((params, new_state))
        params, state = optax.apply_updates(params, updates), new_state
    return log, params


def np_top(scores, k):
    flat = np.asarray(scores).reshape(-1)
    order = np.lexsort((np.arange(flat.size), -flat))
    out = np.zeros(flat.size, bool)
    out[order[:k]] = True
    return out.reshape(np.shape(scores))


@pytest.mark.parametrize("method", ["admm", "slr"])
def test_phases_and_hard_prune_is_magnitude_topk(method):
    params, loss = least_squares()
    dense_steps, penalty_steps, every = 5, 12, 4
    tx = sp.sparsifier(method, optax.sgd(0.05, momentum=0.9), sparsity=0.75, rho=0.1,
                       dense_steps=dense_steps, penalty_steps=penalty_steps, update_every=every)
    log, final = run(tx, params, loss, dense_steps + penalty_steps + 6)
    prune = dense_steps + penalty_steps
    k = int(round(D_IN * D_OUT * 0.25))
    for t, (p_in, state) in enumerate(log):
        mask = np.asarray(state.masks["w"])
        if t < prune:
            assert mask.all()
        elif t == prune:
            np.testing.assert_array_equal(mask, np_top(np.abs(np.asarray(p_in["w"])), k))
        else:
            np.testing.assert_array_equal(mask, np.asarray(log[prune][1].masks["w"]))
        assert np.asarray(state.masks["b"]).all()
        assert int(state.keep_counts["w"]) == k
    assert int((np.asarray(final["w"]) != 0).sum()) <= k
    assert np.all(np.asarray(final["w"])[~np.asarray(log[-1][1].masks["w"])] == 0)
    trace = sp.get_trace(log[-1][1])
    # The prune step's gradient is still dense: steps 0..prune count 1, the 5 after it 0.25.
    np.testing.assert_allclose(float(trace.density_steps["w"]), prune + 1 + 0.25 * 5, rtol=1e-6)


def test_dense_phase_is_the_inner_optimizer_and_penalty_is_rho_w_minus_z_plus_u():
    params, loss = least_squares()
    inner = optax.sgd(0.05)
    tx = sp.admm(inner, sparsity=0.75, rho=0.3, dense_steps=2, penalty_steps=10, update_every=3)
    state, inner_state = tx.init(params), inner.init(params)
    for t in range(6):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        ref, inner_state = inner.update(grads, inner_state, params)
        if t < 2:
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(ref)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            z, u = state.extra.z["w"], state.extra.u["w"]
            want = -0.05 * (grads["w"] + 0.3 * (params["w"] - z + u))
            np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(want), rtol=1e-5,
                                       atol=1e-7)
            np.testing.assert_array_equal(np.asarray(updates["b"]), np.asarray(ref["b"]))
            if t == 2:  # Z = proj(W), U = 0 at the first penalty step
                w = np.asarray(params["w"])
                np.testing.assert_array_equal(
                    np.asarray(z), np.where(np_top(np.abs(w), 48), w, 0))
                assert not np.any(np.asarray(u))
            if t == 5:  # Z = proj(W + U_prev), U = U_prev + W - Z
                assert np.any(np.asarray(u))
        params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("method", ["admm", "slr"])
def test_w_minus_z_falls_on_least_squares(method):
    params, loss = least_squares()
    dense_steps, penalty_steps, every = 200, 400, 10
    tx = sp.sparsifier(method, optax.sgd(0.05), sparsity=0.75, rho=2.0,
                       dense_steps=dense_steps, penalty_steps=penalty_steps, update_every=every)
    log, final = run(tx, params, loss, dense_steps + penalty_steps + 50)
    gaps = []
    for t in range(dense_steps, dense_steps + penalty_steps, every):
        w = np.asarray(log[t][0]["w"])
        z = np.asarray(log[t][1].extra.z["w"])
        gaps.append(np.linalg.norm(w - z))
    assert gaps[0] > 0.1
    assert max(gaps[len(gaps) // 2:]) < 0.5 * gaps[0], gaps
    # The hard prune then costs little: the pruned model still fits (dense optimum is ~0).
    assert float(loss(final)) < 0.2


def test_slr_alpha():
    for k, M, r in [(1, 200, 0.1), (2, 200, 0.1), (7, 200, 0.1), (3, 50, 0.5)]:
        want = 1 - 1 / (M * k ** (1 - 1 / k ** r))
        np.testing.assert_allclose(float(slr_alpha(k, M, r)), want, rtol=1e-6)
    assert float(slr_alpha(1)) == pytest.approx(1 - 1 / 200)


def test_slr_step_size_rule_and_surrogate_condition():
    params, loss = least_squares()
    dense_steps, every, rho = 3, 5, 0.2
    tx = sp.slr(optax.sgd(0.02), sparsity=0.75, rho=rho, dense_steps=dense_steps,
                penalty_steps=60, update_every=every, M=200, r=0.1)
    bad_step = dense_steps + 4 * every  # a huge loss there: the condition must fail
    log, _ = run(tx, params, loss, 60, value_at={bad_step: 1e9})
    rejected = accepted = 0
    for t in range(dense_steps + every, dense_steps + 60, every):
        before, after = log[t - 1][1].extra, log[t][1].extra
        w = np.asarray(log[t][0]["w"])
        z_new = np.asarray(after.z["w"])
        # Z' = proj(W + lam / rho), whatever the condition says.
        target = w + np.asarray(before.lam["w"]) / rho
        np.testing.assert_allclose(z_new, np.where(np_top(np.abs(target), 48), target, 0),
                                   rtol=1e-6)
        held = int(after.accepted) == int(before.accepted) + 1
        if held:
            accepted += 1
            n_prev = np.linalg.norm(np.asarray(before.w_prev["w"]) - np.asarray(before.z_prev["w"]))
            n_new = np.linalg.norm(w - z_new)
            s_want = float(slr_alpha(int(before.k))) * float(before.s) * n_prev / n_new
            np.testing.assert_allclose(float(after.s), s_want, rtol=1e-4)
            np.testing.assert_allclose(np.asarray(after.lam["w"]),
                                       np.asarray(before.lam["w"]) + s_want * (w - z_new),
                                       rtol=1e-4, atol=1e-6)
            assert int(after.k) == int(before.k) + 1
        else:
            rejected += 1
            np.testing.assert_array_equal(np.asarray(after.lam["w"]), np.asarray(before.lam["w"]))
            assert float(after.s) == float(before.s) and int(after.k) == int(before.k)
        if t == bad_step:
            assert not held
    assert accepted >= 3 and rejected >= 1
