"""Tests for sparsegnn_jax.sparsity.masks: exact counts, tie-breaking, jit/vmap, pytrees."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import tiny_layer_params, two_layers
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsegnn_jax import sparsity
from sparsegnn_jax.sparsity import distributions, masks, topk

PAPER_GRID = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.90625, 0.9375, 0.96875,
              0.984375, 0.9921875]


# ------------------------------------------------------------------------------------------
# Models and NumPy references
# ------------------------------------------------------------------------------------------


def dict_model(seed=0):
    """3-layer MLP as a plain nested dict: the paper's 16-128-... shapes plus a 1-wide head."""
    rng = np.random.default_rng(seed)
    shapes = {"l0": (16, 128), "l1": (128, 64), "l2": (64, 1)}
    return {
        name: {
            "kernel": jnp.asarray(rng.normal(size=s), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=s[1]), jnp.float32),
        }
        for name, s in shapes.items()
    }


class TinyNet(nnx.Module):
    def __init__(self, rngs):
        self.l0 = nnx.Linear(64, 256, use_bias=False, rngs=rngs)
        self.l1 = nnx.Linear(256, 128, rngs=rngs)
        self.l2 = nnx.Linear(128, 10, rngs=rngs)


def nnx_params():
    _, params, _ = nnx.split(TinyNet(nnx.Rngs(0)), nnx.Param, ...)
    return params


def np_keep(size, density):
    return min(max(int(round(size * density)), 1), size)


def np_topk(scores, k):
    """Reference: stable descending order, ties to the lower flat index."""
    flat = np.asarray(scores).reshape(-1)
    order = np.argsort(-flat, kind="stable")
    out = np.zeros(flat.size, bool)
    out[order[: max(0, min(k, flat.size))]] = True
    return out.reshape(np.shape(scores))


def np_drop(mask, weights, n_drop):
    mask = np.asarray(mask).reshape(-1)
    w = np.abs(np.asarray(weights).reshape(-1))
    active = np.flatnonzero(mask)
    n_keep = len(active) - min(max(n_drop, 0), len(active))
    # Keep the largest |w| among active; on ties the lower index is kept.
    order = active[np.argsort(-w[active], kind="stable")]
    out = np.zeros(mask.size, bool)
    out[order[:n_keep]] = True
    return out.reshape(np.shape(weights))


def np_grow(mask, scores, n_grow):
    mask = np.asarray(mask).reshape(-1)
    s = np.asarray(scores).reshape(-1)
    inactive = np.flatnonzero(~mask)
    n = min(max(n_grow, 0), len(inactive))
    order = inactive[np.argsort(-s[inactive], kind="stable")]
    out = mask.copy()
    out[order[:n]] = True
    return out.reshape(np.shape(scores))


def counts(tree):
    return {p: int(np.sum(np.asarray(m))) for p, m in
            ((masks.path_str(kp), m) for kp, m in jax.tree_util.tree_flatten_with_path(tree)[0])}


# ------------------------------------------------------------------------------------------
# Paths and filters
# ------------------------------------------------------------------------------------------


def test_path_str_drops_nnx_value_and_formats_keys():
    params = nnx_params()
    paths = [masks.path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert paths == ["l0/kernel", "l1/bias", "l1/kernel", "l2/bias", "l2/kernel"]
    tree = {"params": {"Dense_0": {"kernel": 1}}, "layers": [{"w": 2}, (3,)]}
    paths = [masks.path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == ["layers/0/w", "layers/1/0", "params/Dense_0/kernel"]
    assert masks.path_str("a/b") == "a/b"


def test_prunable_default_and_custom_filter():
    p = dict_model()
    flags = masks.prunable(p)
    assert flags == {n: {"kernel": True, "bias": False} for n in ("l0", "l1", "l2")}
    only_l1 = masks.prunable(p, lambda path, leaf: path.startswith("l1/"))
    assert only_l1["l1"] == {"kernel": True, "bias": True}
    assert only_l1["l0"] == {"kernel": False, "bias": False}
    nflags = jax.tree.leaves(masks.prunable(nnx_params()))
    assert nflags == [True, False, True, False, True]


# ------------------------------------------------------------------------------------------
# topk_mask
# ------------------------------------------------------------------------------------------


def test_topk_exact_with_ties_and_lower_index_wins():
    scores = jnp.array([1.0, 2.0, 2.0, 2.0, 0.0, 2.0])
    np.testing.assert_array_equal(masks.topk_mask(scores, 2), [0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(masks.topk_mask(scores, 5), [1, 1, 1, 1, 0, 1])
    for k in range(0, 8):
        m = masks.topk_mask(scores, k)
        assert int(m.sum()) == min(k, 6)
        np.testing.assert_array_equal(m, np_topk(np.asarray(scores), k))


@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 4, 6)])
def test_topk_all_zero_scores_exact_and_first_indices(shape):
    z = jnp.zeros(shape)
    n = math.prod(shape)
    for k in [0, 1, n // 3, n - 1, n]:
        m = masks.topk_mask(z, k)
        assert m.shape == shape and m.dtype == jnp.bool_
        assert int(m.sum()) == k
        # All tied: the first k flat indices are chosen.
        np.testing.assert_array_equal(np.asarray(m).reshape(-1), np.arange(n) < k)


def test_topk_nan_negzero_and_out_of_range_k():
    s = jnp.array([jnp.nan, 0.0, -0.0, 1.0, -jnp.inf])
    # NaN ranks lowest; -0.0 ties 0.0 so the lower index wins.
    np.testing.assert_array_equal(masks.topk_mask(s, 2), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(masks.topk_mask(s, 3), [0, 1, 1, 1, 0])
    assert int(masks.topk_mask(s, 4).sum()) == 4
    assert int(masks.topk_mask(s, 99).sum()) == 5
    assert int(masks.topk_mask(s, -3).sum()) == 0
    np.testing.assert_array_equal(masks.topk_mask(jnp.array([3, 1, 3, 2]), 2), [1, 0, 1, 0])
    np.testing.assert_array_equal(masks.topk_mask(jnp.array([False, True, True]), 1), [0, 1, 0])


def test_topk_random_against_numpy_with_many_ties():
    rng = np.random.default_rng(1)
    for _ in range(10):
        s = rng.integers(0, 4, size=(6, 11)).astype(np.float32)  # heavy ties
        k = int(rng.integers(0, s.size + 1))
        np.testing.assert_array_equal(masks.topk_mask(jnp.asarray(s), k), np_topk(s, k))


def test_topk_jit_traced_k_and_vmap_varying_k():
    rng = np.random.default_rng(2)
    s = jnp.asarray(rng.integers(0, 3, size=(4, 5)).astype(np.float32))
    f = jax.jit(masks.topk_mask)
    for k in [0, 3, 7, 20]:
        np.testing.assert_array_equal(f(s, k), np_topk(np.asarray(s), k))
    ks = jnp.array([0, 1, 7, 13, 20], dtype=jnp.int32)
    batched = jax.jit(jax.vmap(masks.topk_mask, in_axes=(None, 0)))(s, ks)
    for b, k in enumerate(ks.tolist()):
        np.testing.assert_array_equal(batched[b], np_topk(np.asarray(s), k))
        assert int(batched[b].sum()) == k
    sb = jnp.asarray(rng.integers(0, 2, size=(5, 4, 5)).astype(np.float32))
    batched = jax.vmap(masks.topk_mask)(sb, ks)
    for b, k in enumerate(ks.tolist()):
        np.testing.assert_array_equal(batched[b], np_topk(np.asarray(sb[b]), k))


def np_ranks(scores):
    """Position of every entry in the reference order (stable, descending, NaN lowest)."""
    flat = np.asarray(scores).reshape(-1)
    if flat.dtype == bool:
        flat = flat.astype(np.int64)
    elif flat.dtype.kind == "f" or flat.dtype.kind == "V" or str(flat.dtype) == "bfloat16":
        flat = flat.astype(np.float64)
        flat = np.where(np.isnan(flat), -np.inf, flat)
    else:
        flat = flat.astype(np.int64)
    order = np.argsort(-flat, kind="stable")
    ranks = np.empty(flat.size, np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks


def topk_search(scores, k):
    """The sort-free path of topk_mask (used for arrays above topk.SORT_MAX_SIZE), on any size."""
    return topk.topk_mask_by_search(scores, k)


TOPK_IMPLS = pytest.mark.parametrize("topk", [masks.topk_mask, topk_search],
                                     ids=["topk_mask", "search"])


def _score_cases(rng, size):
    """Random, heavily tied, all-equal and special-value (NaN, +-inf, -0.0) score vectors."""
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.0, 2.5], np.float32)
    return {
        "random": rng.normal(size=size).astype(np.float32),
        "tied012": rng.integers(0, 3, size).astype(np.float32),
        "all_equal": np.full(size, 0.75, np.float32),
        "special": rng.choice(special, size),
    }


# Every k of a 5000-entry array: run time, not compilation, so XLA's optimizations pay.
@pytest.mark.xla_optimized
@TOPK_IMPLS
@pytest.mark.parametrize("size", [1, 2, 3, 17, 256, 1001, 4096, 4097, 5000])
def test_topk_every_k_matches_numpy_reference(size, topk):
    rng = np.random.default_rng(size)
    ks = jnp.arange(size + 1, dtype=jnp.int32)
    # vmap over every k in [0, size]; row k must be exactly the k best in reference order.
    every_k = jax.jit(jax.vmap(topk, in_axes=(None, 0)))
    for name, s in _score_cases(rng, size).items():
        got = np.asarray(every_k(jnp.asarray(s), ks))
        want = np_ranks(s)[None, :] < np.arange(size + 1)[:, None]
        bad = np.flatnonzero(np.any(got != want, axis=1))
        assert bad.size == 0, (name, size, bad[:5])
        np.testing.assert_array_equal(got.sum(axis=1), np.arange(size + 1))


@TOPK_IMPLS
def test_topk_jit_scalar_k_every_k_with_ties_straddling_the_cut(topk):
    # Unbatched k takes the conditional tie-splitting path; check every k on tied scores.
    rng = np.random.default_rng(11)
    f = jax.jit(topk)
    for s in [rng.integers(0, 3, 300).astype(np.float32),
              rng.choice(np.array([np.nan, -0.0, 0.0, np.inf, -np.inf], np.float32), 300)]:
        ranks = np_ranks(s)
        for k in range(-2, 303):
            got = np.asarray(f(jnp.asarray(s), k))
            np.testing.assert_array_equal(got, ranks < min(max(k, 0), s.size), err_msg=str(k))
    big = rng.integers(0, 3, size=(50, 100)).astype(np.float32)  # 2-D, large tie groups
    ranks = np_ranks(big).reshape(big.shape)
    for k in [0, 1, 1666, 1667, 3333, 3334, 4999, 5000]:
        np.testing.assert_array_equal(f(jnp.asarray(big), k), ranks < k)


@TOPK_IMPLS
def test_topk_vmap_batched_scores_and_k_on_special_values(topk):
    rng = np.random.default_rng(12)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 3.0], np.float32)
    sb = rng.choice(special, size=(40, 7, 9))
    ks = rng.integers(-1, 65, 40).astype(np.int32)
    got = np.asarray(jax.jit(jax.vmap(topk))(jnp.asarray(sb), jnp.asarray(ks)))
    for b in range(40):
        want = np_ranks(sb[b]).reshape(7, 9) < min(max(int(ks[b]), 0), 63)
        np.testing.assert_array_equal(got[b], want, err_msg=str(b))


@TOPK_IMPLS
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.uint8, jnp.uint32, jnp.float16,
                                   jnp.bfloat16, jnp.bool_])
def test_topk_other_dtypes_match_numpy_reference(dtype, topk):
    rng = np.random.default_rng(13)
    raw = rng.integers(-4, 5, 120)
    if dtype in (jnp.uint8, jnp.uint32):
        raw = np.abs(raw) + (np.iinfo(np.uint32).max - 8 if dtype == jnp.uint32 else 0)
    s = jnp.asarray(raw > 0 if dtype == jnp.bool_ else raw, dtype)
    if dtype == jnp.float16:
        s = s.at[:3].set(jnp.array([jnp.nan, -0.0, jnp.inf], dtype))
    ranks = np_ranks(np.asarray(s.astype(jnp.float32) if dtype == jnp.bfloat16 else s))
    got = np.asarray(jax.vmap(topk, in_axes=(None, 0))(s, jnp.arange(121)))
    np.testing.assert_array_equal(got, ranks[None, :] < np.arange(121)[:, None])


@TOPK_IMPLS
def test_topk_extreme_finite_values(topk):
    info = np.finfo(np.float32)
    # Subnormals are left out: XLA on CPU may treat them as zero.
    s = np.array([info.max, info.min, info.tiny, -info.tiny, 2 * info.tiny, -2 * info.tiny,
                  0.0, -0.0], np.float32)
    ranks = np_ranks(s)
    f = jax.jit(topk)
    for k in range(9):
        np.testing.assert_array_equal(f(jnp.asarray(s), k), ranks < k)


def test_topk_fractional_k_selects_ceil_on_both_paths():
    # A fractional k selects ceil(k) entries, as comparing integer ranks with k does.
    s = jnp.asarray(np.random.default_rng(14).normal(size=5000).astype(np.float32))
    for scores in (s[:100], s):  # sorted below topk.SORT_MAX_SIZE entries, searched above
        np.testing.assert_array_equal(masks.topk_mask(scores, 2.5), np_topk(scores, 3))
        assert int(masks.topk_mask(scores, 0.0).sum()) == 0


@pytest.mark.xla_optimized
@pytest.mark.parametrize("size", [1, 97, 5000])
def test_drop_grow_every_count_match_numpy_with_excluded_extremes(size):
    # Excluded positions become -inf and eligible ones are clamped finite: counts stay exact
    # even when eligible scores are -inf, NaN or tie with each other.
    rng = np.random.default_rng(size)
    mask = rng.random(size) < 0.5
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 2.0], np.float32)
    w = rng.choice(special, size)
    g = rng.choice(special, size)
    n_active = int(mask.sum())
    ns = jnp.arange(size + 2, dtype=jnp.int32)
    dropped = np.asarray(jax.jit(jax.vmap(masks.drop, in_axes=(None, None, 0)))(
        jnp.asarray(mask), jnp.asarray(w), ns))
    grown = np.asarray(jax.jit(jax.vmap(masks.grow, in_axes=(None, None, 0)))(
        jnp.asarray(mask), jnp.asarray(g), ns))
    # Reference ranking of the eligible entries: scores clamped to the finite range (NaN to
    # the lowest finite value, so it ties -inf), excluded entries strictly below all of them.
    info = np.finfo(np.float32)

    def eligible_ranks(x, eligible):
        return np_ranks(np.where(eligible, np.nan_to_num(x, nan=info.min), -np.inf))

    keep_ranks, grow_ranks = eligible_ranks(np.abs(w), mask), eligible_ranks(g, ~mask)
    for n in range(size + 2):
        want_drop = keep_ranks < n_active - min(n, n_active)
        want_grow = mask | (grow_ranks < min(n, size - n_active))
        np.testing.assert_array_equal(dropped[n], want_drop, err_msg=str(n))
        np.testing.assert_array_equal(grown[n], want_grow, err_msg=str(n))
        assert int(dropped[n].sum()) == n_active - min(n, n_active)
        assert int(grown[n].sum()) == n_active + min(n, size - n_active)


# ------------------------------------------------------------------------------------------
# keep_count
# ------------------------------------------------------------------------------------------


def test_keep_count_hand_values_and_traced():
    assert masks.keep_count(2048, 1 - 0.9921875) == 16
    assert masks.keep_count(128, 1 - 0.9921875) == 1
    assert masks.keep_count(10, 0.01) == 1  # at least one weight
    assert masks.keep_count(10, 1.0) == 10
    assert masks.keep_count(10, 0.25) == 2  # 2.5 rounds half to even
    assert masks.keep_count(0, 0.5) == 0
    traced = jax.jit(lambda d: masks.keep_count(2048, d))
    for s in PAPER_GRID:
        assert int(traced(1.0 - s)) == masks.keep_count(2048, 1.0 - s) == np_keep(2048, 1 - s)
    assert int(jax.jit(lambda d: masks.keep_count(10, d))(0.001)) == 1


# ------------------------------------------------------------------------------------------
# drop / grow
# ------------------------------------------------------------------------------------------


def _random_case(rng, shape, density, tie_values=3):
    mask = rng.random(shape) < density
    w = rng.integers(-tie_values, tie_values + 1, size=shape).astype(np.float32)
    return mask, w


@pytest.mark.parametrize("seed", range(6))
def test_drop_grow_match_numpy_with_ties(seed):
    rng = np.random.default_rng(seed)
    mask, w = _random_case(rng, (9, 13), density=0.4)
    g = rng.integers(0, 3, size=w.shape).astype(np.float32)
    n_active = int(mask.sum())
    for n in [0, 1, n_active // 2, n_active, n_active + 5]:
        dropped = masks.drop(jnp.asarray(mask), jnp.asarray(w), n)
        np.testing.assert_array_equal(dropped, np_drop(mask, w, n))
        assert int(dropped.sum()) == n_active - min(n, n_active)
        assert not np.any(np.asarray(dropped) & ~mask)  # subset of the active set
        grown = masks.grow(dropped, jnp.asarray(g), n)
        np.testing.assert_array_equal(grown, np_grow(np.asarray(dropped), g, n))
        new = np.asarray(grown) & ~np.asarray(dropped)
        assert int(new.sum()) == min(n, int((~np.asarray(dropped)).sum()))
        assert np.all(np.asarray(grown)[np.asarray(dropped)])  # superset


def test_drop_grow_all_zero_scores_and_weights_are_exact():
    mask = np.zeros((6, 7), bool)
    mask.reshape(-1)[[3, 10, 11, 20, 33, 40]] = True
    zeros = jnp.zeros((6, 7))
    dropped = masks.drop(jnp.asarray(mask), zeros, 2)
    # All |w| tie: the highest-index active weights go first.
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(dropped)), [3, 10, 11, 20])
    grown = masks.grow(dropped, zeros, 3)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(grown) & ~np.asarray(dropped)),
                                  [0, 1, 2])
    # Grow can never exceed the inactive set, drop never the active set.
    assert int(masks.grow(jnp.asarray(mask), zeros, 1000).sum()) == 42
    assert int(masks.drop(jnp.asarray(mask), zeros, 1000).sum()) == 0


def test_drop_grow_ignore_extreme_scores_of_excluded_positions():
    mask = jnp.array([True, False, True, False, True, False])
    # Inactive entries carrying -inf / NaN scores must still be grown before any active one.
    scores = jnp.array([9.0, -jnp.inf, 9.0, jnp.nan, 9.0, -jnp.inf])
    grown = masks.grow(mask, scores, 3)
    np.testing.assert_array_equal(grown, [True] * 6)
    # NaN and -inf both rank lowest among eligible entries: the lower index wins the tie.
    grown2 = masks.grow(mask, scores, 2)
    np.testing.assert_array_equal(grown2, [True, True, True, True, True, False])
    w = jnp.array([jnp.inf, 5.0, jnp.nan, 0.0, 1.0, 7.0])
    dropped = masks.drop(mask, w, 1)
    assert int(dropped.sum()) == 2 and not bool(jnp.any(dropped & ~mask))
    np.testing.assert_array_equal(dropped, [True, False, False, False, True, False])


def test_drop_grow_under_jit_and_vmap_with_varying_counts():
    rng = np.random.default_rng(7)
    mask, w = _random_case(rng, (5, 8), density=0.5)
    g = rng.random(w.shape).astype(np.float32)
    ns = jnp.array([0, 2, 5, 11], dtype=jnp.int32)

    def step(n):
        d = masks.drop(jnp.asarray(mask), jnp.asarray(w), n)
        return d, masks.grow(d, jnp.asarray(g), n)

    ds, gs = jax.jit(jax.vmap(step))(ns)
    for b, n in enumerate(ns.tolist()):
        ref_d = np_drop(mask, w, n)
        np.testing.assert_array_equal(ds[b], ref_d)
        np.testing.assert_array_equal(gs[b], np_grow(ref_d, g, n))
        # RigL keeps the number of active weights constant when n <= #active.
        if n <= mask.sum():
            assert int(gs[b].sum()) == int(mask.sum())


# ------------------------------------------------------------------------------------------
# init / apply / sparsity
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("make", [dict_model, nnx_params], ids=["dict", "nnx"])
def test_init_exact_counts_on_paper_grid(make, distribution):
    params = make()
    shapes = {masks.path_str(kp): np.shape(x)
              for kp, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    prunable_paths = [p for p, s in shapes.items() if len(s) >= 2]
    for i, s in enumerate(PAPER_GRID):
        m = masks.init(jax.random.key(i), params, s, distribution)
        assert jax.tree.structure(m) == jax.tree.structure(params)
        got = counts(m)
        dens = distributions.layer_densities(params, s, distribution)
        for p, shape in shapes.items():
            size = math.prod(shape)
            if p in prunable_paths:
                expected = np_keep(size, 1.0 - s if distribution == "uniform" else dens[p])
                assert got[p] == expected, (p, s, got[p], expected)
                assert got[p] >= 1
            else:
                assert got[p] == size  # non-prunable leaves all True


def test_init_uniform_hand_counts_dict_model():
    m = masks.init(jax.random.key(0), dict_model(), 0.9921875)
    assert counts(m) == {"l0/bias": 128, "l0/kernel": 16, "l1/bias": 64, "l1/kernel": 64,
                         "l2/bias": 1, "l2/kernel": 1}
    m = masks.init(jax.random.key(0), dict_model(), 0.875, "uniform_dense_first")
    assert counts(m)["l0/kernel"] == 2048 and counts(m)["l1/kernel"] == 1024


def test_init_keeps_at_least_one_weight_in_tiny_layers():
    params = {"a": jnp.ones((1, 2)), "b": jnp.ones((2, 3)), "c": jnp.ones((1, 1))}
    for dist in ["uniform", "erk", "er", "uniform_dense_first"]:
        m = masks.init(jax.random.key(0), params, 0.99, dist)
        assert all(v >= 1 for v in counts(m).values()), dist


def test_init_magnitude_scores_keep_largest():
    w = jnp.array([[0.1, -5.0, 0.3], [2.0, 0.0, -0.2]])
    m = masks.init(jax.random.key(0), {"w": w}, 0.5, scores="magnitude")
    np.testing.assert_array_equal(m["w"], [[False, True, True], [True, False, False]])


def test_init_given_scores_on_nnx_state_needs_no_key():
    nparams = nnx_params()
    pure_scores = jax.tree.map(jnp.abs, nnx.to_pure_dict(nparams))
    # Pure-dict scores for an NNX State (and NNX-boxed scores for a pure dict), no key.
    m = masks.init(params=nparams, sparsity=0.75, scores=pure_scores)
    m_pure = masks.init(None, nnx.to_pure_dict(nparams), 0.75,
                        scores=jax.tree.map(jnp.abs, nparams))
    expected = masks.init(0, nparams, 0.75, scores="magnitude")
    for a, b, c in zip(jax.tree.leaves(m), jax.tree.leaves(m_pure), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    kernel = np.abs(np.asarray(nparams["l0"]["kernel"][...]))
    np.testing.assert_array_equal(m["l0"]["kernel"][...], np_topk(kernel, np_keep(64 * 256, 0.25)))
    with pytest.raises(ValueError, match="needs a `key`"):
        masks.init(params=nparams, sparsity=0.75)


def test_init_random_is_reproducible_and_key_dependent():
    p = dict_model()
    a = masks.init(jax.random.key(3), p, 0.5)
    b = masks.init(jax.random.key(3), p, 0.5)
    c = masks.init(jax.random.key(4), p, 0.5)
    assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))
    assert not bool(jnp.all(a["l0"]["kernel"] == c["l0"]["kernel"]))
    assert masks.init(3, p, 0.5)["l0"]["kernel"].sum() == a["l0"]["kernel"].sum()


def test_init_vmapped_over_sparsity_matches_individual_inits():
    p = nnx_params()
    grid = jnp.asarray(PAPER_GRID, jnp.float32)
    batched = jax.jit(jax.vmap(lambda s: masks.init(jax.random.key(0), p, s)))(grid)
    for i, s in enumerate(PAPER_GRID):
        single = masks.init(jax.random.key(0), p, s)
        same = jax.tree.map(lambda b, x: bool(jnp.all(b[i] == x)), batched, single)
        assert all(jax.tree.leaves(same)), s


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_init_rejects_bad_sparsity(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got"):
        masks.init(jax.random.key(0), dict_model(), bad)
    with pytest.raises(ValueError, match="scores must be"):
        masks.init(jax.random.key(0), dict_model(), 0.5, scores="gradient")


def test_apply_zeros_where_false_and_is_idempotent():
    for params in [dict_model(), nnx_params()]:
        m = masks.init(jax.random.key(1), params, 0.75)
        once = masks.apply(params, m)
        twice = masks.apply(once, m)
        for p, q, r, mk in zip(jax.tree.leaves(params), jax.tree.leaves(once),
                               jax.tree.leaves(twice), jax.tree.leaves(m)):
            p, q, r, mk = map(np.asarray, (p, q, r, mk))
            assert q.dtype == p.dtype
            np.testing.assert_array_equal(q[~mk], 0)
            np.testing.assert_array_equal(q[mk], p[mk])
            np.testing.assert_array_equal(q, r)
        assert jax.tree.structure(once) == jax.tree.structure(params)
    jitted = jax.jit(masks.apply)(params, m)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), jitted, once)))


def test_apply_structure_mismatch_names_both_structures():
    params = dict_model()
    m = masks.init(jax.random.key(0), params, 0.5)
    del m["l2"]
    with pytest.raises(ValueError) as err:
        masks.apply(params, m)
    text = str(err.value)
    assert "masks tree structure does not match params" in text
    assert str(jax.tree.structure(params)) in text
    assert str(jax.tree.structure(m)) in text
    # A plain-dict mask for an nnx State is a structure mismatch too.
    nparams = nnx_params()
    plain = jax.tree.map(lambda x: jnp.ones(x.shape, bool), nnx.to_pure_dict(nparams))
    with pytest.raises(ValueError, match="params:"):
        masks.apply(nparams, plain)


def test_sparsity_and_layer_sparsity_hand_values():
    m = {
        "a": jnp.array([[True, False], [False, False]]),  # 3/4 sparse
        "b": jnp.array([[True, True, True, False]]),  # 1/4 sparse
        "bias": jnp.array([False, False]),  # not prunable: ignored
    }
    assert masks.sparsity(m) == pytest.approx(4 / 8)
    assert masks.layer_sparsity(m) == {"a": 0.75, "b": 0.25}
    assert masks.sparsity({"bias": jnp.ones(3, bool)}) == 0.0
    pm = masks.init(jax.random.key(0), dict_model(), 0.9375)
    assert masks.sparsity(pm) == pytest.approx(1 - (128 + 512 + 4) / (2048 + 8192 + 64))
    assert float(jax.jit(masks.sparsity)(m)) == pytest.approx(0.5)


def test_mask_sparsity_rejects_float_params_and_param_sparsity_counts_zeros():
    params = {"w": jnp.zeros((4, 5)).at[0, 0].set(1.5).at[2, 3].set(-1.0),  # 2 of 20
              "v": jnp.zeros((3, 3)).at[0, 0].set(-2.0),  # 1 of 9
              "bias": jnp.zeros(5)}
    for fn in (masks.sparsity, masks.layer_sparsity):
        with pytest.raises(TypeError, match=r"leaf 'v' has dtype float32.*param_sparsity"):
            fn(params)
    summary = masks.param_sparsity(params)
    assert summary.nonzero == {"v": 1, "w": 2}
    assert summary.size == 29
    assert summary.per_layer == {"v": pytest.approx(8 / 9), "w": pytest.approx(18 / 20)}
    assert summary.total == pytest.approx(1 - 3 / 29)
    # Masked params of an NNX model: zeros counted from the weights agree with the masks.
    nparams = nnx_params()
    m = masks.init(jax.random.key(1), nparams, 0.75)
    summary = masks.param_sparsity(masks.apply(nparams, m))
    assert summary.total == pytest.approx(masks.sparsity(m))
    assert summary.per_layer == pytest.approx(masks.layer_sparsity(m))


def test_magnitude_masks_tree_and_path_dict_counts():
    params = dict_model()
    c = distributions.keep_counts(params, 0.75)
    m = masks.magnitude_masks(params, c)
    for name in ("l0", "l1", "l2"):
        w = np.asarray(params[name]["kernel"])
        np.testing.assert_array_equal(m[name]["kernel"], np_topk(np.abs(w), int(c[name]["kernel"])))
        assert bool(jnp.all(m[name]["bias"]))
    m2 = masks.magnitude_masks(params, {"l1/kernel": 5})
    assert counts(m2)["l1/kernel"] == 5 and counts(m2)["l0/kernel"] == 2048
    with pytest.raises(ValueError, match="valid layer paths"):
        masks.magnitude_masks(params, {"l9/kernel": 5})
    m3 = jax.jit(masks.magnitude_masks)(params, c)
    assert counts(m3) == counts(m)


# ------------------------------------------------------------------------------------------
# Property test
# ------------------------------------------------------------------------------------------


_DIMS = st.sampled_from([1, 2, 3, 5, 8])  # few distinct shapes keep compilations cached


@settings(max_examples=20, deadline=None)
@given(
    shapes=st.lists(st.tuples(_DIMS, _DIMS), min_size=1, max_size=3),
    sparsity=st.floats(0.0, 0.999, allow_nan=False),
    distribution=st.sampled_from(["uniform", "uniform_dense_first", "erk"]),
    seed=st.integers(0, 2**16),
)
def test_property_exact_counts_min_one_and_idempotent_apply(shapes, sparsity, distribution, seed):
    rng = np.random.default_rng(seed)
    params = {f"layer{i}": {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32),
                            "bias": jnp.asarray(rng.normal(size=s[1]), jnp.float32)}
              for i, s in enumerate(shapes)}
    m = masks.init(jax.random.key(seed), params, sparsity, distribution)
    dens = distributions.layer_densities(params, sparsity, distribution)
    got = counts(m)
    for i, s in enumerate(shapes):
        size = s[0] * s[1]
        assert got[f"layer{i}/kernel"] == np_keep(size, dens[f"layer{i}/kernel"])
        assert got[f"layer{i}/kernel"] >= 1
        assert got[f"layer{i}/bias"] == s[1]
    once = masks.apply(params, m)
    twice = masks.apply(once, m)
    trees = (params, once, twice, m)
    for p, q, r, mk in zip(*(map(np.asarray, jax.tree.leaves(t)) for t in trees)):
        np.testing.assert_array_equal(q, r)
        np.testing.assert_array_equal(q, np.where(mk, p, 0))


# ----------------------------------------------------------------------------------------------
# Edge cases: a layer smaller than 1 / density; masks of another structure or shape.


@pytest.mark.parametrize("distribution", ["uniform", "uniform_dense_first", "dict"])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.99])
def test_layer_smaller_than_one_over_density_keeps_exactly_one(distribution, target):
    # (ERK gives a 2x2 layer a high density by design, so it is not a case of this rule.)
    params = tiny_layer_params()
    assert 4 < 1 / (1 - target)  # the 2x2 "tiny" kernel would round to zero weights
    if distribution == "dict":
        distribution = {"tiny/kernel": target}
    counts = sparsity.distributions.keep_counts(params, target, distribution)
    assert int(counts["tiny"]["kernel"]) == 1
    masks = sparsity.masks.init(jax.random.key(0), params, target, distribution=distribution)
    assert int(masks["tiny"]["kernel"].sum()) == 1
    for leaf in jax.tree.leaves(masks):
        assert int(leaf.sum()) >= 1


def test_masks_of_another_structure_name_both_structures():
    params = two_layers()
    masks = {"a": {"kernel": jnp.ones((8, 4), bool)}, "b": {"kernel": jnp.ones((4, 2), bool)}}
    with pytest.raises(ValueError, match="does not match") as err:
        sparsity.masks.apply(params, masks)
    text = str(err.value)
    assert str(jax.tree.structure(params)) in text and str(jax.tree.structure(masks)) in text


def test_masks_of_another_shape_name_the_leaf():
    params = two_layers()
    masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    # A [1, 4] mask would broadcast over the [8, 4] kernel without the check.
    masks["a"]["kernel"] = jnp.ones((1, 4), bool)
    with pytest.raises(ValueError, match=r"'a/kernel' has shape \(1, 4\) but the parameter "
                                         r"has shape \(8, 4\)"):
        sparsity.masks.apply(params, masks)


def test_apply_norm_preserving_keeps_each_thinned_matrix_at_its_dense_norm():
    k = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(k[0], (64, 32)), "dense": jax.random.normal(k[1], (8, 8)),
              "gate": jnp.ones(10), "empty": jax.random.normal(k[2], (4, 4))}
    mask = jax.random.uniform(k[0], (64, 32)) < 0.1
    m = {"w": mask, "dense": jnp.ones((8, 8), bool),
         "gate": jnp.arange(10) < 5, "empty": jnp.zeros((4, 4), bool)}
    out = masks.apply_norm_preserving(params, m)
    plain = masks.apply(params, m)
    assert not np.any(np.asarray(out["w"])[~np.asarray(mask)])           # still exactly sparse
    np.testing.assert_allclose(jnp.linalg.norm(out["w"]), jnp.linalg.norm(params["w"]),
                               rtol=1e-5)
    for name in ("dense", "gate", "empty"):  # all-True, 1-D and nothing kept: as apply
        np.testing.assert_array_equal(out[name], plain[name])
