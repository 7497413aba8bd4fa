"""Training FLOPs of every method: the formulas, hand counts and the paper's budget claim."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparsegnn_jax import flops, models

# The paper's sparsity grid (percent).
PAPER_GRID = (12.5, 25, 37.5, 50, 62.5, 75, 87.5, 90.625, 93.75, 96.875, 98.4375, 99.21875)


class Trace(NamedTuple):
    """Same fields as sparsegnn_jax's SparsityTrace (flops reads them by name)."""

    steps: object
    density_steps: dict
    mask_updates: object



def test_rigl_step_formula_worked_example():
    # f_S = 100, f_D = 1000, dT = 9: nine sparse steps at 3 f_S = 300 and one update step at
    # 2 f_S + f_D = 1200 average to (2700 + 1200) / 10 = 390 per step.
    assert flops.rigl_step_flops(100.0, 1000.0, 9) == 390.0
    # 100 steps with updates stopping at step 50: 50 * 390 + 50 * 3 * 100.
    assert flops.training("rigl", 100, 1000.0, 0.1, update_every=9, end_step=50) == pytest.approx(
        34500.0)
    assert flops.training("rigl", 100, 1000.0, 0.1, update_every=9) == pytest.approx(39000.0)


def test_training_phases_hand_counts():
    f_d = 1000.0
    assert flops.training("dense", 10, f_d) == 30000.0
    for name in ("static", "set", "static_sparse", "set_"):
        assert flops.training(name, 10, f_d, 0.2) == pytest.approx(6000.0)
    # SLR / ADMM: 4 dense + 3 penalty steps at 3 f_D, 3 retraining steps at 3 f_S.
    for name in ("slr", "admm"):
        assert flops.training(name, 10, f_d, 0.2, dense_steps=4,
                              penalty_steps=3) == pytest.approx(7 * 3000 + 3 * 600)
    assert flops.training("one_shot", 10, f_d, 0.2, prune_step=6) == pytest.approx(
        6 * 3000 + 4 * 600)
    with pytest.raises(ValueError, match="method"):
        flops.training("lottery", 10, f_d)
    with pytest.raises(ValueError, match="update_every"):
        flops.training("rigl", 10, f_d, 0.5)
    with pytest.raises(ValueError, match="fit"):
        flops.training("slr", 10, f_d, 0.5, dense_steps=8, penalty_steps=8)


def test_training_keeps_fixed_terms_dense():
    # A report's bias and aggregation FLOPs do not shrink with density.
    model = models.paper_link_mlp(nnx.Rngs(0))
    dense = flops.forward(model, 1)
    bias = 128 + 1
    f_s = bias + 0.25 * (2 * 16 * 128 + 2 * 128)
    assert flops.training("static", 4, dense, 0.25) == pytest.approx(12 * f_s)


def test_gmp_integrates_density_over_steps():
    from sparsegnn_jax.sparsity import schedules

    weights = {"a": 10.0, "b": 5.0}
    targets = {"a": 0.1, "b": 0.5}
    steps, begin, end, every = 1000, 100, 700, 50
    expected = 0.0
    for t in range(steps):
        total = 0.0
        for p, f in weights.items():
            if t < begin:
                s = 0.0
            else:
                last = min(begin + ((t - begin) // every) * every, end)
                s = (1 - targets[p]) * (1 - (1 - (last - begin) / (end - begin)) ** 3)
            total += (1 - s) * f
        expected += 3 * total
    got = flops.training("gmp", steps, weights, targets, begin_step=begin, end_step=end,
                         every=every)
    assert got == pytest.approx(expected, rel=1e-12)
    # Between the dense and the static-sparse cost.
    assert flops.training("static", steps, weights, targets) < got < flops.training(
        "dense", steps, weights)
    # A library schedule: sparsity 0.75 reached at the last step, evaluated every step.
    sched = schedules.polynomial_sparsity(0.75, 0, steps - 1)
    ref = sum(3 * 15.0 * (1 - float(sched(t))) for t in range(steps))
    assert flops.training("gmp", steps, weights, schedule=sched) == pytest.approx(ref, rel=1e-5)


def test_training_from_trace_matches_config_formula():
    # RigL with constant density 0.1: 20 steps, mask updates at 2 of them (dT = 9).
    trace = Trace(steps=np.int32(20), density_steps={"a": np.float32(2.0)},
                  mask_updates=np.int32(2))
    expected = 3 * 1000 * 2.0 + 2 * (1000 - 100)
    assert flops.training_from_trace({"a": 1000.0}, trace) == pytest.approx(expected)
    assert flops.training("rigl", 20, 1000.0, 0.1, update_every=9) == pytest.approx(expected)
    assert flops.training("rigl", 0, {"a": 1000.0}, trace=trace) == pytest.approx(expected)
    # SLR-like trace: 12 dense steps (density 1), 8 at density 0.25, no dense-gradient steps.
    slr = Trace(np.int32(20), {"a": np.float32(12 + 8 * 0.25)}, np.int32(0))
    assert flops.training_from_trace({"a": 1000.0}, slr) == pytest.approx(
        flops.training("slr", 20, 1000.0, 0.25, dense_steps=8, penalty_steps=4))


def test_training_from_trace_with_a_model_and_batched_traces():
    model = models.paper_link_mlp(nnx.Rngs(0))
    dense = flops.forward(model, 1)
    paths = list(dense.weight_flops)
    trace = Trace(np.int32(10), {p: np.float32(5.0) for p in paths}, np.int32(0))
    # Fixed (bias) FLOPs every step, weight FLOPs at mean density 0.5.
    expected = 3 * (dense.fixed * 10 + 0.5 * 10 * sum(dense.weight_flops.values()))
    assert flops.training_from_trace(model, 1, trace) == pytest.approx(expected)
    assert flops.training_from_trace(dense, trace) == pytest.approx(expected)
    # A vmapped sweep's trace (leading axis of 3 runs) gives one total per run.
    batched = Trace(np.full(3, 10, np.int32), {p: np.array([10.0, 5.0, 1.0]) for p in paths},
                    np.zeros(3, np.int32))
    totals = flops.training_from_trace(dense, batched)
    assert totals.shape == (3,)
    assert totals[1] == pytest.approx(expected)
    assert totals[0] == pytest.approx(3 * 10 * dense.total)
    with pytest.raises(ValueError, match="unknown/kernel"):
        flops.training_from_trace(dense, Trace(1, {"unknown/kernel": 1.0}, 0))


def _brain_budget(sparsity_percent, steps_per_epoch=250):
    """RigL / SLR training FLOPs of the paper's brain MLP (64-256-128-10, no bias).

    RigL: 40 sparse epochs, dT = 1000, masks updated the whole run. SLR: 20 dense + 10 penalty
    (dense weights) + 10 masked retraining epochs. Same steps per epoch and batch for both.
    """
    model = models.paper_node_mlp(nnx.Rngs(0))
    dense = flops.forward(model, jnp.ones((128, 64)))
    density = 1 - sparsity_percent / 100
    s = steps_per_epoch
    rigl = flops.training("rigl", 40 * s, dense, density, update_every=1000)
    slr = flops.training("slr", 40 * s, dense, density, dense_steps=20 * s, penalty_steps=10 * s)
    return rigl / slr


def test_brain_mlp_budget_matches_paper():
    # Hand value at density 1/32: RigL 40 (3/32 + (31/32) / 1001) vs SLR 30 * 3 + 10 * 3/32.
    d = 1 / 32
    hand = 40 * (3 * d + (1 - d) / 1001) / (90 + 30 * d)
    assert _brain_budget(96.875) == pytest.approx(hand, rel=1e-9)
    assert _brain_budget(96.875) == pytest.approx(0.041, abs=0.001)
    for sparsity in PAPER_GRID:
        if sparsity >= 90.625:
            assert _brain_budget(sparsity) < 1 / 7, sparsity
    # And not below 1/7 at low sparsity: the claim is specific to extreme sparsity.
    assert _brain_budget(12.5) > 1 / 7


def _run_method(tx, params, steps):
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(steps):
        grads = jax.tree.map(lambda x, t=t: jax.random.normal(jax.random.key(t), x.shape), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return state


def test_training_from_library_traces_hand_counts():
    import sparsegnn_jax as sg

    model = models.paper_link_mlp(nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[1])
    dense = flops.forward(model, 1)
    bias, weights = 128 + 1, 2 * 16 * 128 + 2 * 128 * 1
    f_d, f_s = bias + weights, bias + 0.25 * weights
    assert (dense.total, flops.forward(model, 1, densities={
        "layers/0/kernel": 0.25, "layers/1/kernel": 0.25}).total) == (f_d, f_s)
    # RigL, dT = 5, 23 steps: masks change at steps 5, 10, 15, 20 with a dense gradient each.
    state = _run_method(sg.rigl(optax.sgd(0.1), sparsity=0.75, update_every=5), params, 23)
    trace = sg.get_trace(state)
    assert int(trace.mask_updates) == 4
    assert flops.training_from_trace(dense, trace) == pytest.approx(
        23 * 3 * f_s + 4 * (f_d - f_s), rel=1e-6)
    # Inside optax.MultiSteps(k=4), 23 mini-batches are 5 updates (mask updates at inner steps
    # 2 and 4, each from the dense gradients of 4 mini-batches) and 3 accumulated ones: every
    # mini-batch had its forward and backward pass.
    multi = optax.MultiSteps(sg.rigl(optax.sgd(0.1), sparsity=0.75, update_every=2),
                             every_k_schedule=4)
    state = _run_method(multi, params, 23)
    with pytest.raises(ValueError, match="every_k=k"):
        sg.get_trace(state)
    assert flops.training_from_trace(dense, sg.get_trace(state, every_k=4)) == pytest.approx(
        23 * 3 * f_s + 8 * (f_d - f_s), rel=1e-6)
    # SLR: every step up to and including the pruning step (5 dense + 5 penalty + the prune)
    # has dense weights, the 4 after it are sparse.
    state = _run_method(sg.slr(optax.sgd(0.1), sparsity=0.75, dense_steps=5, penalty_steps=5,
                               update_every=2), params, 15)
    assert flops.training_from_trace(dense, sg.get_trace(state)) == pytest.approx(
        11 * 3 * f_d + 4 * 3 * f_s, rel=1e-6)
