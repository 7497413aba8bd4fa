"""IMP's and UGS's round pieces: the rewind point, the next masks, the score gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsegnn_jax as sg
from sparsegnn_jax.sparsity import lottery
from sparsegnn_jax.sparsity.ugs import find_ugs_state, mask_scores, ugs_next_masks

from helpers import pseudo_grads


def model_params(seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    return {"l0": {"kernel": jax.random.normal(k[0], (12, 20)), "bias": jax.random.normal(k[1], (20,))},
            "l1": {"kernel": jax.random.normal(k[2], (20, 5))},
            "edge_weight": 1.0 + 0.1 * jax.random.normal(k[3], (40,))}


def is_edge(path, leaf):
    return path.endswith("edge_weight")


def prunable(path, leaf):
    return leaf.ndim >= 2 or is_edge(path, leaf)


def keep_by_hand(n, fraction):
    """Python's round is half to even, as the library's keep counts; at least one weight."""
    return min(max(round(n * (1 - fraction)), 1), n)


def train(tx, params, steps, jit=True):
    """``steps`` updates on pseudo-gradients; returns (params after each step, state)."""
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    history = []
    for t in range(steps):
        grads = pseudo_grads(params, t)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history, state


@pytest.mark.parametrize("rewind_step", [0, 3])
def test_imp_rewinds_kept_weights_to_their_step_k_values_exactly(rewind_step):
    params = model_params()
    history, state = train(sg.imp(optax.adam(0.05), rewind_step=rewind_step,
                                  filter_fn=prunable), params, 6)
    at_k = params if rewind_step == 0 else history[rewind_step - 1]
    point = lottery.find_rewind_state(state).params
    for got, want in zip(jax.tree.leaves(point), jax.tree.leaves(at_k)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    fractions = lottery.prune_fractions(params, 0.2, 0.1, prunable, is_edge)
    masks = lottery.imp_next_masks(history[-1], state, sg.get_masks(state), fractions)
    rewound = lottery.rewind(point, masks)
    for p, m, k in zip(jax.tree.leaves(rewound), jax.tree.leaves(masks), jax.tree.leaves(at_k)):
        p, m, k = map(np.asarray, (p, m, k))
        np.testing.assert_array_equal(p[m], k[m])  # bit for bit
        assert np.all(p[~m] == 0)
    # The next round: a fresh optimizer state at the new masks.
    state2 = sg.imp(optax.adam(0.05), masks=masks, filter_fn=prunable).init(rewound)
    adam = lottery.find_rewind_state(state2).inner_state[0]
    assert int(adam.count) == 0
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(adam.mu))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(sg.get_masks(state2)), jax.tree.leaves(masks)))


def test_prune_remaining_counts_and_magnitudes_per_round():
    params = model_params(1)
    fractions = lottery.prune_fractions(params, 0.2, 0.05, prunable, is_edge)
    assert fractions == {"edge_weight": 0.05, "l0/kernel": 0.2, "l1/kernel": 0.2}
    masks = sg.masks.all_true(params)
    expected = {"l0/kernel": 240, "l1/kernel": 100, "edge_weight": 40}
    for r in range(6):
        scores = jax.tree.map(lambda x: x + 0.01 * r, params)
        new = lottery.prune_remaining(masks, scores, fractions)
        for path, size in expected.items():
            expected[path] = keep_by_hand(size, fractions[path])
        by_path = dict(zip(sg.sparsity.trees.leaf_paths(new), jax.tree.leaves(new)))
        old_by_path = dict(zip(sg.sparsity.trees.leaf_paths(masks), jax.tree.leaves(masks)))
        score_by_path = dict(zip(sg.sparsity.trees.leaf_paths(scores), jax.tree.leaves(scores)))
        for path, count in expected.items():
            m, old = np.asarray(by_path[path]), np.asarray(old_by_path[path])
            assert int(m.sum()) == count, (r, path)
            assert not np.any(m & ~old)  # only ever removes
            s = np.abs(np.asarray(score_by_path[path]))
            pruned_now = old & ~m
            if pruned_now.any():
                assert s[pruned_now].max() <= s[m].min()
        assert np.all(np.asarray(by_path["l0/bias"]))
        masks = new
    assert lottery.round_keep_counts({"l1/kernel": 100}, {"l1/kernel": 0.2}, 3) == [
        {"l1/kernel": 100}, {"l1/kernel": 80}, {"l1/kernel": 64}, {"l1/kernel": 51}]


def test_ugs_score_gradients_with_l1_against_a_hand_computation():
    params = model_params(2)
    tx = mask_scores(optax.sgd(0.5), l1_weights=0.1, l1_edges=0.2, filter_fn=prunable,
                             edge_filter=is_edge)
    state = tx.init(params)
    theta = {k: np.asarray(v) for k, v in sg.sparsity.trees.flatten_with_paths(params)[:2]
             and zip(sg.sparsity.trees.leaf_paths(params), jax.tree.leaves(params))}
    scores = {p: np.ones_like(v) for p, v in theta.items() if p.endswith("kernel")}
    w = dict(theta)
    for t in range(2):
        current = jax.tree.unflatten(jax.tree.structure(params), [w[p] for p in theta])
        grads = pseudo_grads(current, t)
        g = dict(zip(theta, map(np.asarray, jax.tree.leaves(grads))))
        updates, state = tx.update(grads, state, current)
        u = dict(zip(theta, map(np.asarray, jax.tree.leaves(updates))))
        for p in theta:
            if p in scores:  # dL/dtheta = g m, dL/dm = g theta + l1 sign(m)
                theta_new = theta[p] - 0.5 * g[p] * scores[p]
                scores[p] = scores[p] - 0.5 * (g[p] * theta[p] + 0.1 * np.sign(scores[p]))
                theta[p] = theta_new
                w_new = theta[p] * scores[p]
            elif p == "edge_weight":
                theta[p] = theta[p] - 0.5 * (g[p] + 0.2 * np.sign(theta[p]))
                w_new = theta[p]
            else:
                theta[p] = theta[p] - 0.5 * g[p]
                w_new = theta[p]
            np.testing.assert_allclose(u[p], w_new - w[p], rtol=1e-5, atol=1e-6)
            w[p] = w[p] + u[p]
    found = find_ugs_state(state)
    got = dict(zip(theta, map(np.asarray, jax.tree.leaves(found.scores))))
    for p in scores:
        np.testing.assert_allclose(got[p], scores[p], rtol=1e-5, atol=1e-6)


def test_ugs_round_is_the_same_with_and_without_jit():
    params = model_params(3)
    masks = lottery.prune_remaining(sg.masks.all_true(params), params,
                                    lottery.prune_fractions(params, 0.3, 0.1, prunable, is_edge))

    def make():
        return sg.ugs(optax.adam(0.01), masks=masks, filter_fn=prunable, edge_filter=is_edge)

    jitted, state_j = train(make(), lottery.rewind(params, masks), 4, jit=True)
    eager, state_e = train(make(), lottery.rewind(params, masks), 4, jit=False)
    for a, b in zip(jax.tree.leaves((jitted[-1], find_ugs_state(state_j).scores)),
                    jax.tree.leaves((eager[-1], find_ugs_state(state_e).scores))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    next_j = ugs_next_masks(jitted[-1], state_j, masks, {"l1/kernel": 0.5})
    next_e = ugs_next_masks(eager[-1], state_e, masks, {"l1/kernel": 0.5})
    for a, b in zip(jax.tree.leaves(next_j), jax.tree.leaves(next_e)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    sg.sparsity.masks.apply(jitted[-1], masks)  # same structure
    for p, m in zip(jax.tree.leaves(jitted[-1]), jax.tree.leaves(masks)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0)


def test_ugs_prunes_by_scores_not_weights():
    params = model_params(4)
    state = sg.ugs(optax.sgd(0.1), filter_fn=prunable, edge_filter=is_edge).init(params)
    # Scores that rank the kernel's entries in reverse order of |w|: pruning follows the scores.
    kernel = np.asarray(params["l1"]["kernel"])
    order = np.argsort(np.abs(kernel).ravel())
    fake = np.empty(kernel.size, np.float32)
    fake[order] = np.linspace(2.0, 1.0, kernel.size)
    found = find_ugs_state(state)
    scores = dict(found.scores, l1={"kernel": jnp.asarray(fake.reshape(kernel.shape))})
    state = jax.tree.map(lambda x: x, state)  # a copy
    inner = state.inner_state._replace(scores=scores)
    state = state._replace(inner_state=inner)
    new = ugs_next_masks(params, state, sg.masks.all_true(params), {"l1/kernel": 0.2})
    m = np.asarray(new["l1"]["kernel"]).ravel()
    assert m.sum() == 80
    assert not m[order[-20:]].any()  # the largest |w|, lowest scores, went


def test_ugs_scores_start_at_one_with_the_authors_jitter():
    """With a key the weight scores and the edge leaf start at ``x * (1 + u)``, |u| <= 1e-5
    (float32 holds about 340 values in that band around 1, so most ties are broken at random);
    without one, at exactly 1 and ``x``."""
    params = model_params(0)
    plain = find_ugs_state(mask_scores(optax.sgd(0.1), filter_fn=prunable,
                                       edge_filter=is_edge).init(params))
    jittered = find_ugs_state(mask_scores(optax.sgd(0.1), filter_fn=prunable, edge_filter=is_edge,
                                          key=jax.random.key(3)).init(params))
    for path, s in zip(sg.sparsity.trees.leaf_paths(params), jax.tree.leaves(jittered.scores)):
        if path.endswith("kernel"):
            s = np.asarray(s)
            assert np.all(np.abs(s - 1) <= 1e-5 + 1.2e-7) and len(np.unique(s)) >= min(s.size, 100) * 0.7
    assert all(np.all(np.asarray(s) == 1) for p, s in zip(
        sg.sparsity.trees.leaf_paths(params), jax.tree.leaves(plain.scores)) if p.endswith("kernel"))
    edge, plain_edge = jittered.theta["edge_weight"], plain.theta["edge_weight"]
    np.testing.assert_array_equal(np.asarray(plain_edge), np.asarray(params["edge_weight"]))
    ratio = np.asarray(edge) / np.asarray(params["edge_weight"])
    assert np.all(np.abs(ratio - 1) <= 1e-5 + 3e-7) and len(np.unique(ratio)) >= 30
