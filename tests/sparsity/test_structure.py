"""N:M structured masks: the exact pattern, methods keeping it through their updates, FLOPs."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsegnn_jax as sg
from sparsegnn_jax import flops, models
from sparsegnn_jax.sparsity import structure

# Every new shape compiles: the property tests draw a few examples in the quick suite and the
# full number where the slow tests run (CI).
_EXAMPLES = 1 if os.environ.get("SPARSEGNN_SLOW_TESTS") == "1" else 5

# Scores from a few values, so that ties are common.
_TIED = st.sampled_from([-1.0, 0.0, -0.0, 0.5, 2.0, float("nan")])


def _reference_nm(scores, n, m):
    """NumPy N:M along axis 0: per column and group of m rows, the n best (ties: lower row;
    NaN lowest; a partial group of r rows keeps min(n, r))."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    out = np.zeros(scores.shape, bool)
    for col in range(scores.shape[1]):
        for start in range(0, scores.shape[0], m):
            group = scores[start:start + m, col]
            order = sorted(range(len(group)), key=lambda i: (-group[i], i))
            for i in order[:min(n, len(group))]:
                out[start + i, col] = True
    return out


def _expected_group_counts(size_in, n, m):
    return [n] * (size_in // m) + ([min(n, size_in % m)] if size_in % m else [])


@settings(max_examples=60 // _EXAMPLES, deadline=None)
@given(st.integers(1, 4), st.integers(1, 8), st.integers(1, 13), st.integers(1, 4),
       st.data())
def test_nm_mask_keeps_exactly_n_per_group(n, m, size_in, size_out, data):
    n = min(n, m)
    values = data.draw(st.lists(_TIED, min_size=size_in * size_out,
                                max_size=size_in * size_out))
    scores = np.asarray(values, np.float32).reshape(size_in, size_out)
    mask = np.asarray(sg.nm_mask(scores, n, m))
    counts = np.asarray(structure.group_counts(mask, m))
    assert counts.tolist() == [_expected_group_counts(size_in, n, m)] * size_out
    np.testing.assert_array_equal(mask, _reference_nm(scores, n, m))
    assert mask.sum() == sg.NM(n, m).keep_count(scores.shape)


def test_nm_mask_same_under_jit_and_vmap():
    scores = jax.random.normal(jax.random.key(0), (3, 10, 5))
    eager = np.stack([np.asarray(sg.nm_mask(s, 2, 4)) for s in scores])
    jitted = jax.jit(sg.nm_mask, static_argnums=(1, 2))
    mapped = jax.vmap(lambda s: sg.nm_mask(s, 2, 4))(scores)
    np.testing.assert_array_equal(np.stack([jitted(s, 2, 4) for s in scores]), eager)
    np.testing.assert_array_equal(mapped, eager)
    # A stack of matrices as one leaf: grouped per matrix along its axis -2.
    np.testing.assert_array_equal(sg.nm_mask(scores, 2, 4), eager)


def test_nm_mask_other_axis_groups_columns():
    scores = np.arange(24, dtype=np.float32).reshape(3, 8)
    mask = np.asarray(sg.nm_mask(scores, 1, 4, axis=-1))
    # Each row's two groups of 4 columns keep their largest, the last column of each group.
    assert mask.sum() == 6 and mask[:, [3, 7]].all()


@pytest.mark.parametrize("bad, message", [
    (dict(n=0, m=4), "0 < n <= m"), (dict(n=5, m=4), "0 < n <= m"),
    (dict(n=2.0, m=4), "n must be an int"), (dict(n=2, m=4, axis=2), "axis=2 is outside"),
])
def test_nm_mask_rejects_bad_arguments(bad, message):
    with pytest.raises(ValueError, match=message):
        sg.nm_mask(jnp.ones((4, 3)), **bad)


def test_parse_structure():
    assert structure.parse("nm:2:4") == sg.NM(2, 4) and str(sg.NM(2, 4)) == "nm:2:4"
    assert structure.parse(" NM:1:8 ") == sg.NM(1, 8)
    assert structure.parse(None) is None and structure.parse("none") is None
    assert structure.as_structure((2, 4)) == sg.NM(2, 4)
    with pytest.raises(ValueError, match="--structure must be nm:N:M"):
        structure.parse("2:4", "--structure")
    with pytest.raises(ValueError, match=r"--structure=nm:4:2: .*0 < n <= m"):
        structure.parse("nm:4:2", "--structure")


@settings(max_examples=40 // _EXAMPLES, deadline=None)
@given(st.integers(1, 3), st.sampled_from([2, 4, 5]), st.integers(1, 11), st.integers(1, 3),
       st.integers(0, 40), st.integers(0, 2 ** 16))
def test_nm_swap_keeps_every_group(n, m, size_in, size_out, n_swap, seed):
    n = min(n, m)
    rng = np.random.default_rng(seed)
    mask = np.asarray(sg.nm_mask(rng.normal(size=(size_in, size_out)), n, m))
    # Rounded weights and scores: ties in both rankings.
    weights = np.round(rng.normal(size=mask.shape), 1) * mask
    scores = np.round(rng.normal(size=mask.shape), 1)
    new = np.asarray(structure.nm_swap(mask, weights, scores, n_swap, m))
    np.testing.assert_array_equal(structure.group_counts(new, m), structure.group_counts(mask, m))
    dropped, grown = mask & ~new, new & ~mask
    # Capacity: a group with a active of g entries swaps at most min(a, g - a).
    capacity = sum(min(c, g - c) for col in range(size_out)
                   for c, g in zip(_expected_group_counts(size_in, n, m),
                                   [min(m, size_in - s) for s in range(0, size_in, m)]))
    assert dropped.sum() == grown.sum() == min(n_swap, capacity)
    # Within a group the grown entries outscore (or tie at a higher index) the ones not grown.
    for col in range(size_out):
        for start in range(0, size_in, m):
            rows = range(start, min(start + m, size_in))
            grown_s = [scores[r, col] for r in rows if grown[r, col]]
            idle_s = [scores[r, col] for r in rows if not mask[r, col] and not grown[r, col]]
            if grown_s and idle_s:
                assert min(grown_s) >= max(idle_s)


def _params():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return {"l0": {"kernel": jax.random.normal(k1, (10, 8)), "bias": jnp.zeros(8)},
            "l1": {"kernel": jax.random.normal(k2, (8, 3)), "bias": jnp.zeros(3)},
            "gate": jax.random.normal(k3, (9,))}


def _filter(path, leaf):
    return "bias" not in path


def _check_pattern(masks, params, nm):
    for name in ("l0", "l1"):
        kernel = masks[name]["kernel"]
        size_in, size_out = kernel.shape
        assert np.asarray(structure.group_counts(kernel, nm.m)).tolist() == (
            [_expected_group_counts(size_in, nm.n, nm.m)] * size_out)
        assert np.all(np.asarray(params[name]["kernel"])[~np.asarray(kernel)] == 0)


def _train(tx, steps, jit=True, seed=0):
    params = _params()
    state = tx.init(params)
    params = sg.masks.apply(params, sg.get_masks(state))
    update = jax.jit(tx.update) if jit else tx.update
    history = []
    for t in range(steps):
        grads = jax.tree.map(lambda x: jax.random.normal(jax.random.fold_in(
            jax.random.key(seed), t), x.shape), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append((sg.get_masks(state), params))
    return history


_DISTRIBUTION = {"l0/kernel": 0.5, "l1/kernel": 0.5, "gate": 0.7}


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_dst_keeps_nm_through_updates_under_jit(method):
    nm = sg.NM(2, 4)
    tx = sg.sparsifier(method, optax.adam(0.05), sparsity=0.5, update_every=2,
                       drop_fraction=0.5, distribution=_DISTRIBUTION, filter_fn=_filter,
                       structure=nm, key=jax.random.key(3))
    history = _train(tx, 24)
    first = history[0][0]
    for masks, params in history:
        _check_pattern(masks, params, nm)
        # The 1-D gate keeps its unstructured count: round(9 * 0.3) = 3.
        assert int(masks["gate"].sum()) == 3
    # The masks moved: the updates swapped weights inside groups.
    assert not np.array_equal(first["l0"]["kernel"], history[-1][0]["l0"]["kernel"])
    eager = _train(tx, 6, jit=False)
    for (m_jit, p_jit), (m_eager, p_eager) in zip(history[:6], eager):
        jax.tree.map(np.testing.assert_array_equal, m_jit, m_eager)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                     p_jit, p_eager)


@pytest.mark.parametrize("method, kwargs", [
    ("static", dict(scores="magnitude")),
    ("one_shot", dict(prune_step=3)),
    ("snip", {}),
    ("admm", dict(dense_steps=2, penalty_steps=4, update_every=2)),
    ("slr", dict(dense_steps=2, penalty_steps=4, update_every=2)),
])
def test_methods_taking_a_structure_end_nm(method, kwargs):
    nm = sg.NM(1, 4)
    tx = sg.sparsifier(method, optax.sgd(0.05), sparsity=0.75, filter_fn=_filter,
                       distribution=_DISTRIBUTION | {"l0/kernel": 0.75, "l1/kernel": 0.75},
                       structure=nm, **kwargs)
    masks, params = _train(tx, 10)[-1]
    _check_pattern(masks, params, nm)


def test_masks_init_nm_and_one_dimensional_leaf():
    params = _params()
    masks = sg.masks.init(0, params, sparsity=0.5, distribution=_DISTRIBUTION,
                          filter_fn=_filter, structure="nm:2:4", scores="magnitude")
    # l0 (10 inputs): groups of 4, 4, 2 keep 2 + 2 + 2; l1 (8 inputs): 2 + 2.
    assert int(masks["l0"]["kernel"].sum()) == 6 * 8 and int(masks["l1"]["kernel"].sum()) == 4 * 3
    np.testing.assert_array_equal(masks["l0"]["kernel"],
                                  _reference_nm(np.abs(np.asarray(params["l0"]["kernel"])), 2, 4))
    # The gate keeps its top-k by magnitude at its own sparsity.
    top3 = np.argsort(-np.abs(np.asarray(params["gate"])))[:3]
    assert sorted(np.flatnonzero(masks["gate"])) == sorted(top3)


def test_structure_contradicting_sparsity_is_an_error():
    inner = optax.sgd(0.1)
    with pytest.raises(ValueError, match=r"rigl: structure nm:2:4 .* sparsity 0.5; got "
                                         r"sparsity=0.9"):
        sg.rigl(inner, sparsity=0.9, structure=sg.NM(2, 4))
    with pytest.raises(ValueError, match="distribution must be 'uniform'"):
        sg.static_sparse(inner, sparsity=0.5, distribution="erk", structure="nm:2:4")
    with pytest.raises(ValueError, match=r"layer 'l0/kernel' of shape \(10, 8\) is given "
                                         r"density 0.3"):
        sg.static_sparse(inner, sparsity=0.5, structure="nm:2:4", filter_fn=_filter,
                         distribution=_DISTRIBUTION | {"l0/kernel": 0.7}).init(_params())
    with pytest.raises(ValueError, match="does not take structure"):
        sg.sparsifier("gmp", inner, structure=sg.NM(2, 4))
    with pytest.raises(ValueError, match="not both"):
        sg.static_sparse(inner, sparsity=0.5, structure="nm:2:4",
                         masks=sg.masks.init(0, _params(), sparsity=0.5))


def test_flops_count_nm_density_by_hand():
    model = models.MLP(10, 8, 3, num_layers=2, rngs=nnx.Rngs(0))
    params = nnx.split(model, nnx.Param, ...)[1]
    masks = sg.masks.init(0, params, sparsity=0.5, structure=sg.NM(2, 4))
    batch = 5
    report = flops.forward(model, batch, masks)
    # Layer 0: 10 -> 8, each output keeps 2 + 2 + 2 of its 10 inputs (groups 4, 4, 2): 48 MACs
    # per row; layer 1: 8 -> 3 keeps 4 of 8 per output: 12 MACs per row. Biases stay dense.
    assert report.per_layer == {"layers/0": batch * (2 * 48 + 8),
                                "layers/1": batch * (2 * 12 + 3)}
