"""Tests for sparsegnn_jax.sparsity.distributions: ERK against a NumPy reference, exact counts."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import two_layers

from sparsegnn_jax import sparsity
from sparsegnn_jax.sparsity import distributions

PAPER_GRID = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.90625, 0.9375, 0.96875,
              0.984375, 0.9921875]


def params_from_shapes(shapes):
    return {name: {"kernel": jnp.zeros(s), "bias": jnp.zeros(s[-1])} for name, s in shapes.items()}


class TinyNet(nnx.Module):
    def __init__(self, rngs):
        self.l0 = nnx.Linear(64, 256, use_bias=False, rngs=rngs)
        self.l1 = nnx.Linear(256, 128, rngs=rngs)
        self.l2 = nnx.Linear(128, 10, rngs=rngs)


def reference_erk(shape_list, sparsity, include_kernel=True):
    """Independent vectorised NumPy version of RigL's Erdos-Renyi(-Kernel) solve.

    Non-zeros to distribute: sum_l (N_l - floor(S N_l)); a layer whose scaled density would
    exceed one becomes dense (contributing N_l non-zeros) and the rest are re-solved.
    """
    n = np.array([np.prod(s) for s in shape_list], dtype=np.float64)
    if include_kernel:
        raw = np.array([np.sum(s) / np.prod(s) for s in shape_list], dtype=np.float64)
    else:
        raw = np.array([(s[-2] + s[-1]) / (s[-2] * s[-1]) for s in shape_list])
    target = np.sum(n - np.floor(sparsity * n))
    dense = np.zeros(len(n), bool)
    while True:
        eps = (target - np.sum(n[dense])) / np.sum(raw[~dense] * n[~dense])
        over = (~dense) & (raw == raw[~dense].max())
        if raw[~dense].max() * eps > 1:
            dense |= over
        else:
            return np.where(dense, 1.0, eps * raw)


MLP_SHAPES = {"l0": (16, 128), "l1": (128, 64), "l2": (64, 1)}
# A narrow layer next to a huge one: the narrow one must be made dense by the ERK loop.
SKEWED_SHAPES = {"a": (4, 3), "b": (512, 512), "c": (512, 8), "d": (8, 512)}
CONV_SHAPES = {"c0": (3, 3, 8, 16), "c1": (3, 3, 16, 32), "fc": (32, 10)}


@pytest.mark.parametrize("shapes", [MLP_SHAPES, SKEWED_SHAPES, CONV_SHAPES],
                         ids=["mlp", "skewed", "conv"])
@pytest.mark.parametrize("name,kernel", [("erk", True), ("er", False)])
def test_erk_er_match_numpy_reference_on_paper_grid(shapes, name, kernel):
    params = params_from_shapes(shapes)
    for s in PAPER_GRID:
        got = distributions.layer_densities(params, s, name)
        ref = reference_erk(list(shapes.values()), s, include_kernel=kernel)
        assert list(got) == [f"{k}/kernel" for k in shapes]
        np.testing.assert_allclose([got[f"{k}/kernel"] for k in shapes], ref, rtol=1e-12)
        assert all(0 < d <= 1 for d in got.values())
        # The non-zero budget is exactly that of RigL's uniform sparsity.
        n = np.array([np.prod(v) for v in shapes.values()])
        budget = np.sum(n - np.floor(s * n))
        assert np.sum(np.array(list(got.values())) * n) == pytest.approx(budget, rel=1e-12)


def test_erk_hand_value_two_layers():
    # Layers 10x20 and 20x10: equal raw probability 30/200, so ERK equals uniform.
    params = params_from_shapes({"a": (10, 20), "b": (20, 10)})
    d = distributions.layer_densities(params, 0.5, "erk")
    assert d == pytest.approx({"a/kernel": 0.5, "b/kernel": 0.5})
    # 2x2 (raw 1) with 100x100 (raw 0.02): at S=0.5, eps = 5002 / (4 + 200) -> 2x2 dense,
    # then eps = (5000 - 2) / 200 and the big layer gets 0.02 * eps = 0.4998.
    params = params_from_shapes({"small": (2, 2), "big": (100, 100)})
    d = distributions.layer_densities(params, 0.5, "erk")
    assert d["small/kernel"] == 1.0
    assert d["big/kernel"] == pytest.approx(0.4998)


def test_er_equals_erk_for_matrices_and_differs_for_kernels():
    p2 = params_from_shapes(MLP_SHAPES)
    assert distributions.layer_densities(p2, 0.9, "er") == distributions.layer_densities(
        p2, 0.9, "erk")
    p4 = params_from_shapes(CONV_SHAPES)
    er = distributions.layer_densities(p4, 0.9, "er")
    erk = distributions.layer_densities(p4, 0.9, "erk")
    assert er["c0/kernel"] != pytest.approx(erk["c0/kernel"])
    # Aliases from RigL's naming.
    assert distributions.layer_densities(p4, 0.9, "erdos_renyi_kernel") == erk
    assert distributions.layer_densities(p4, 0.9, "erdos_renyi") == er


def test_uniform_includes_first_and_last_dense_first_excludes_first():
    params = params_from_shapes(MLP_SHAPES)
    u = distributions.layer_densities(params, 0.75)
    assert u == {"l0/kernel": 0.25, "l1/kernel": 0.25, "l2/kernel": 0.25}
    df = distributions.layer_densities(params, 0.75, "uniform_dense_first")
    assert df == {"l0/kernel": 1.0, "l1/kernel": 0.25, "l2/kernel": 0.25}
    _, nparams, _ = nnx.split(TinyNet(nnx.Rngs(0)), nnx.Param, ...)
    df = distributions.layer_densities(nparams, 0.5, "uniform_dense_first")
    assert df == {"l0/kernel": 1.0, "l1/kernel": 0.5, "l2/kernel": 0.5}


def test_uniform_traced_sparsity_under_jit_and_vmap():
    params = params_from_shapes(MLP_SHAPES)
    grid = jnp.asarray(PAPER_GRID, jnp.float32)
    batched = jax.jit(jax.vmap(lambda s: distributions.keep_counts(params, s)))(grid)
    for i, s in enumerate(PAPER_GRID):
        concrete = distributions.keep_counts(params, s)
        for name, shape in MLP_SHAPES.items():
            size = shape[0] * shape[1]
            expected = max(1, round(size * (1 - s)))
            assert int(concrete[name]["kernel"]) == expected
            assert int(batched[name]["kernel"][i]) == expected
            assert int(batched[name]["bias"][i]) == shape[1]
    d = jax.jit(lambda s: distributions.layer_densities(params, s, "uniform_dense_first"))(0.75)
    assert float(d["l0/kernel"]) == 1.0 and float(d["l2/kernel"]) == 0.25


@pytest.mark.parametrize("shapes", [MLP_SHAPES, SKEWED_SHAPES, CONV_SHAPES],
                         ids=["mlp", "skewed", "conv"])
@pytest.mark.parametrize("name,kernel", [("erk", True), ("er", False)])
def test_erk_er_traced_over_the_grid_match_the_numpy_reference(shapes, name, kernel):
    # One vmapped solve over the whole grid: the sweeps' case (each run's sparsity traced).
    params = params_from_shapes(shapes)
    grid = jnp.asarray(PAPER_GRID, jnp.float32)
    got = jax.jit(jax.vmap(lambda s: distributions.layer_densities(params, s, name)))(grid)
    for i, s in enumerate(PAPER_GRID):
        ref = reference_erk(list(shapes.values()), s, include_kernel=kernel)
        row = [float(got[f"{k}/kernel"][i]) for k in shapes]
        np.testing.assert_allclose(row, ref, rtol=1e-5)
        # Layers the solve makes dense are exactly dense (not 1 - rounding).
        assert [d == 1.0 for d in row] == [r == 1.0 for r in ref]


def test_keep_counts_structure_and_hand_values():
    params = params_from_shapes(MLP_SHAPES)
    c = distributions.keep_counts(params, 0.9375, "uniform")
    assert jax.tree.structure(c) == jax.tree.structure(params)
    assert {k: (int(v["kernel"]), int(v["bias"])) for k, v in c.items()} == {
        "l0": (128, 128), "l1": (512, 64), "l2": (4, 1)}
    assert all(np.asarray(x).dtype == np.int32 for x in jax.tree.leaves(c))
    _, nparams, _ = nnx.split(TinyNet(nnx.Rngs(0)), nnx.Param, ...)
    nc = distributions.keep_counts(nparams, 0.9375, "erk")
    assert jax.tree.structure(nc) == jax.tree.structure(nparams)
    dens = distributions.layer_densities(nparams, 0.9375, "erk")
    assert int(nc["l1"]["kernel"].get_value()) == round(256 * 128 * dens["l1/kernel"])
    assert int(nc["l1"]["bias"].get_value()) == 128


def test_explicit_dict_distribution():
    params = params_from_shapes(MLP_SHAPES)
    d = distributions.layer_densities(params, 0.0, {"l1/kernel": 0.75})
    assert d == {"l0/kernel": 1.0, "l1/kernel": 0.25, "l2/kernel": 1.0}
    c = distributions.keep_counts(params, 0.0, {"l1/kernel": 0.75, "l2/kernel": 0.99})
    assert int(c["l1"]["kernel"]) == 2048 and int(c["l2"]["kernel"]) == 1
    assert int(c["l0"]["kernel"]) == 2048
    with pytest.raises(ValueError) as err:
        distributions.layer_densities(params, 0.5, {"l1/bias": 0.5, "l7/kernel": 0.5})
    text = str(err.value)
    assert "l1/bias" in text and "l7/kernel" in text
    assert "['l0/kernel', 'l1/kernel', 'l2/kernel']" in text
    with pytest.raises(ValueError, match=r"distribution\['l1/kernel'\] must be in \[0, 1\)"):
        distributions.layer_densities(params, 0.5, {"l1/kernel": 1.0})


def test_bad_arguments():
    params = params_from_shapes(MLP_SHAPES)
    with pytest.raises(ValueError, match="distribution must be one of"):
        distributions.layer_densities(params, 0.5, "gaussian")
    for bad in [1.0, -0.5, 2]:
        with pytest.raises(ValueError, match=rf"sparsity must be in \[0, 1\), got {bad}"):
            distributions.keep_counts(params, bad, "erk")
    assert distributions.layer_densities({"b": jnp.zeros(3)}, 0.5, "erk") == {}


def test_distribution_dict_naming_no_layer_lists_valid_paths():
    params = two_layers()
    with pytest.raises(ValueError, match=r"names no prunable layer for \['c/kernel'\]; "
                                         r"valid paths: \['a/kernel', 'b/kernel'\]"):
        sparsity.distributions.layer_densities(params, 0.5, {"c/kernel": 0.5})
    tx = sparsity.sparsifier("static", optax.sgd(0.1), distribution={"a/kernal": 0.5})
    with pytest.raises(ValueError, match="valid paths"):
        tx.init(params)
    with pytest.raises(ValueError, match=r"distribution\['a/kernel'\] must be in \[0, 1\)"):
        sparsity.sparsifier("static", optax.sgd(0.1), distribution={"a/kernel": 1.0})
