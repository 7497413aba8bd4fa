"""Schedules: callables ``step -> value`` built from jnp ops, usable inside ``jax.jit``.

They follow optax's schedule convention, so any ``optax.Schedule`` can be passed wherever the
library takes a schedule (e.g. a method's ``drop_fraction``), and these can be passed to optax.
:func:`as_schedule` turns a constant into a schedule and leaves callables untouched.

Why not optax's own schedules: their arithmetic rounds differently, and these values decide keep
counts and drop counts, which must not move. Measured over steps 0..5000 (float32, eager, jit and
vmap): ``optax.linear_schedule`` differs from :func:`linear` by one ulp at ~2% of the steps;
``optax.cosine_decay_schedule(init, T, alpha=final / init)`` matches :func:`cosine_drop` for
``final_fraction`` 0 and for the paper's 0.5 -> 0.005 but differs at 20-30% of the steps for e.g.
0.3 -> 0.003 or 0.9 -> 0.2; ``optax.polynomial_schedule``
differs from :func:`polynomial_sparsity` by one ulp at a few steps under ``jit`` (and is constant
instead of a step when ``end_step == begin_step``); ``optax.constant_schedule`` returns the bare
Python value instead of a float32 array of the step's shape.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import jax.numpy as jnp

from sparsegnn_jax.sparsity.validation import check_sparsity, check_step, is_concrete

Schedule = Callable[[Union[int, jnp.ndarray]], jnp.ndarray]

__all__ = [
    "Schedule",
    "as_schedule",
    "constant",
    "linear",
    "cosine_drop",
    "paper_drop",
    "polynomial_sparsity",
]


def _as_float(step):
    return jnp.asarray(step, dtype=jnp.float32)


def constant(value) -> Schedule:
    """A schedule that always returns ``value``.

    Args:
      value: the constant (float).

    Returns:
      ``step -> value`` as a float32 jnp scalar (broadcast to the step's shape).
    """

    def schedule(step):
        return jnp.full(jnp.shape(step), value, dtype=jnp.float32)

    return schedule


def as_schedule(value_or_schedule) -> Schedule:
    """A callable is returned unchanged; a number becomes :func:`constant`.

    Args:
      value_or_schedule: a float or a callable ``step -> value`` (any optax schedule).

    Returns:
      A schedule.
    """
    if callable(value_or_schedule):
        return value_or_schedule
    return constant(value_or_schedule)


def linear(init, final, end_step) -> Schedule:
    """Linear interpolation from ``init`` at step 0 to ``final`` at ``end_step``, then flat.

    Args:
      init: value at step 0.
      final: value at and after ``end_step``.
      end_step: step where ``final`` is reached (``0`` gives ``final`` everywhere).

    Returns:
      ``step -> init + (final - init) * clip(step / end_step, 0, 1)``.
    """
    end = check_step(end_step, "end_step")

    def schedule(step):
        if end == 0:
            return jnp.full(jnp.shape(step), final, dtype=jnp.float32)
        frac = jnp.clip(_as_float(step) / end, 0.0, 1.0)
        return init + (final - init) * frac

    return schedule


def cosine_drop(init_fraction, end_step, final_fraction=0.0) -> Schedule:
    """RigL's cosine-decayed drop fraction.

    ``final + (init - final) / 2 * (1 + cos(pi * min(step, end_step) / end_step))``: equals
    ``init_fraction`` at step 0 and ``final_fraction`` from ``end_step`` on. With
    ``final_fraction=0`` this is exactly RigL's ``init / 2 * (1 + cos(pi * t / T))``.

    Args:
      init_fraction: fraction of active weights dropped at step 0.
      end_step: step at which the decay ends (> 0).
      final_fraction: fraction from ``end_step`` on.

    Returns:
      A schedule ``step -> fraction`` (float32).

    References:
      Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """
    end = check_step(end_step, "end_step", positive=True)

    def schedule(step):
        t = jnp.minimum(_as_float(step), float(end))
        cos = 0.5 * (1.0 + jnp.cos(math.pi * t / end))
        return final_fraction + (init_fraction - final_fraction) * cos

    return schedule


def paper_drop(end_step) -> Schedule:
    """The drop fraction of Peng et al. (2022): cosine from 0.5 to 0.005 over ``end_step``.

    Args:
      end_step: step at which the decay ends (> 0), normally the total number of steps.

    Returns:
      ``cosine_drop(0.5, end_step, 0.005)``.
    """
    return cosine_drop(0.5, end_step, final_fraction=0.005)


def polynomial_sparsity(final_sparsity, begin_step, end_step, initial_sparsity=0.0,
                        power=3) -> Schedule:
    """Gradual magnitude pruning's sparsity schedule (Zhu & Gupta 2017).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power`` for ``t0 <= t <= t1``,
    ``s_i`` before ``t0`` and ``s_f`` after ``t1`` (the paper's ``n * dt`` is ``t1 - t0``).

    Args:
      final_sparsity: ``s_f`` in ``[0, 1)``.
      begin_step: ``t0``.
      end_step: ``t1`` (>= ``begin_step``; equal gives a step from ``s_i`` to ``s_f``).
      initial_sparsity: ``s_i`` in ``[0, 1)``.
      power: exponent (3 in the paper).

    Returns:
      A schedule ``step -> sparsity`` (float32).

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
      compression", 2017.
    """
    check_sparsity(final_sparsity, "final_sparsity")
    check_sparsity(initial_sparsity, "initial_sparsity")
    t0 = check_step(begin_step, "begin_step")
    t1 = check_step(end_step, "end_step")
    if not (is_concrete(t0) and is_concrete(t1)):
        # Traced steps (injected hyperparameters inside jit): the same formula, in jnp.
        return _traced_polynomial(final_sparsity, t0, t1, initial_sparsity, power)
    if t1 < t0:
        raise ValueError(f"end_step must be >= begin_step, got end_step={t1}, begin_step={t0}")
    span = float(max(t1 - t0, 1))

    def schedule(step):
        t = _as_float(step)
        progress = jnp.clip((t - t0) / span, 0.0, 1.0)
        if t1 == t0:
            progress = jnp.where(t >= t1, 1.0, 0.0)
        value = final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power
        return value.astype(jnp.float32)

    return schedule


def _traced_polynomial(final_sparsity, t0, t1, initial_sparsity, power) -> Schedule:
    """:func:`polynomial_sparsity` for traced ``t0`` / ``t1`` (no Python comparisons)."""

    def schedule(step):
        t = _as_float(step)
        span = jnp.maximum(t1 - t0, 1).astype(jnp.float32)
        progress = jnp.clip((t - t0) / span, 0.0, 1.0)
        progress = jnp.where(t1 == t0, jnp.where(t >= t1, 1.0, 0.0), progress)
        value = final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power
        return value.astype(jnp.float32)

    return schedule
