"""Tests for sparsegnn_jax.sparsity.schedules against hand-computed values, with and without jit."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsegnn_jax.sparsity import schedules


def values(schedule, steps):
    eager = np.array([float(schedule(s)) for s in steps])
    jitted = np.array([float(jax.jit(schedule)(s)) for s in steps])
    batched = np.asarray(jax.vmap(schedule)(jnp.asarray(steps)))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batched, eager, rtol=1e-6, atol=1e-7)
    return eager


def test_cosine_drop_matches_rigl_formula():
    end = 1000
    steps = [0, 1, 250, 500, 750, 999, 1000, 1500]
    got = values(schedules.cosine_drop(0.3, end), steps)
    ref = [0.3 / 2 * (1 + math.cos(math.pi * min(t, end) / end)) for t in steps]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert got[0] == pytest.approx(0.3) and got[3] == pytest.approx(0.15)
    assert got[-1] == pytest.approx(0.0, abs=1e-7)


def test_cosine_drop_with_final_fraction_and_paper_drop():
    got = values(schedules.cosine_drop(0.5, 100, final_fraction=0.1), [0, 25, 50, 100, 300])
    expected = [0.5, 0.1 + 0.4 * (1 + math.cos(math.pi / 4)) / 2, 0.3, 0.1, 0.1]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    got = values(schedules.paper_drop(200), [0, 100, 200, 400])
    np.testing.assert_allclose(got, [0.5, 0.2525, 0.005, 0.005], rtol=1e-6)


def test_constant_linear_and_as_schedule():
    np.testing.assert_allclose(values(schedules.constant(0.3), [0, 5, 10**6]), [0.3] * 3,
                               rtol=1e-7)
    got = values(schedules.linear(1.0, 0.2, 100), [0, 25, 50, 100, 150])
    np.testing.assert_allclose(got, [1.0, 0.8, 0.6, 0.2, 0.2], rtol=1e-6)
    np.testing.assert_allclose(values(schedules.linear(1.0, 0.2, 0), [0, 3]), [0.2, 0.2])
    assert float(schedules.as_schedule(0.25)(7)) == 0.25
    opt = optax.linear_schedule(0.5, 0.0, 10)
    assert schedules.as_schedule(opt) is opt
    # Our schedules are valid optax learning-rate schedules too.
    tx = optax.sgd(schedules.cosine_drop(0.1, 10))
    params = {"w": jnp.ones(2)}
    updates, _ = tx.update({"w": jnp.ones(2)}, tx.init(params))
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1], rtol=1e-6)


def test_polynomial_sparsity_zhu_gupta_hand_values():
    sched = schedules.polynomial_sparsity(0.9, begin_step=10, end_step=110)
    got = values(sched, [0, 10, 35, 60, 110, 500])
    # s_t = 0.9 + (0 - 0.9) * (1 - (t - 10) / 100) ** 3
    expected = [0.0, 0.0, 0.9 - 0.9 * 0.75**3, 0.9 - 0.9 * 0.125, 0.9, 0.9]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    sched = schedules.polynomial_sparsity(0.75, 0, 4, initial_sparsity=0.5, power=1)
    np.testing.assert_allclose(values(sched, [0, 1, 2, 4, 8]), [0.5, 0.5625, 0.625, 0.75, 0.75])
    step = schedules.polynomial_sparsity(0.8, 5, 5)
    np.testing.assert_allclose(values(step, [0, 4, 5, 6]), [0.0, 0.0, 0.8, 0.8])


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="end_step must be > 0, got 0"):
        schedules.cosine_drop(0.3, 0)
    with pytest.raises(ValueError, match="end_step must be >= begin_step"):
        schedules.polynomial_sparsity(0.9, 100, 10)
    with pytest.raises(ValueError, match=r"final_sparsity must be in \[0, 1\), got 1.0"):
        schedules.polynomial_sparsity(1.0, 0, 10)
    with pytest.raises(ValueError, match="end_step must be an integer step"):
        schedules.linear(0.0, 1.0, "ten")
