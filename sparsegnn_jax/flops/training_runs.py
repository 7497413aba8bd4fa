"""Total FLOPs of whole training runs, per sparsity method.

One step costs three forward passes at that step's densities (Evci et al. 2020, appendix H); a
RigL mask update step needs the dense weight gradient instead of the sparse one. See
:mod:`sparsegnn_jax.flops` for the full convention.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from flax import nnx

from sparsegnn_jax.flops.counting import forward
from sparsegnn_jax.flops.report import affine_parts, at_densities, density_map

__all__ = ["METHODS", "rigl_step_flops", "training", "training_from_trace"]

METHODS = ("dense", "static", "one_shot", "gmp", "admm", "slr", "set", "rigl")
_ALIASES = {"static_sparse": "static", "set_": "set", "gradual_magnitude": "gmp",
            "oneshot": "one_shot"}


def rigl_step_flops(f_sparse, f_dense, update_every: int):
    """Average FLOPs of one RigL training step while mask updates run.

    Every ``update_every`` (dT) steps the update step computes the dense weight gradient, costing
    ``2 f_S + f_D`` instead of ``3 f_S`` (Evci et al. 2020, appendix H).

    Args:
      f_sparse: forward FLOPs of the sparse network.
      f_dense: forward FLOPs of the dense network.
      update_every: dT, steps between mask updates (>= 1).

    Returns:
      ``(3 f_S dT + 2 f_S + f_D) / (dT + 1)``.
    """
    if update_every < 1:
        raise ValueError(f"rigl_step_flops: `update_every` must be >= 1, got {update_every}")
    return (3.0 * f_sparse * update_every + 2.0 * f_sparse + f_dense) / (update_every + 1.0)


def _gmp_sparsity(step, final, begin_step, end_step, every, initial, power):
    """Sparsity of one weight in force during each of ``step`` under gradual magnitude pruning.

    The Zhu & Gupta (2017) polynomial ``final + (initial - final) * (1 - progress) ** power``,
    evaluated at the latest pruning step: pruning steps are ``begin_step + k * every``, the
    progress of one past ``end_step`` is clipped to ``end_step``, and each pruning step's sparsity
    holds until the next one; before ``begin_step`` the network is dense.
    ``schedules.polynomial_sparsity`` is the same polynomial but evaluated at every step and in
    float32, so the step-held float64 form is kept here.

    Args:
      step: step indices (an int or a NumPy array; vectorised).
      final: sparsity reached at ``end_step``.
      begin_step: first pruning step.
      end_step: step at which ``final`` is reached.
      every: steps between pruning steps (>= 1).
      initial: sparsity at ``begin_step``.
      power: exponent of the polynomial.

    Returns:
      float64 sparsities with the shape of ``step``.
    """
    step = np.asarray(step)
    last = begin_step + np.floor((step - begin_step) / every) * every
    last = np.minimum(last, end_step)
    if end_step == begin_step:
        progress = np.where(last >= end_step, 1.0, 0.0)
    else:
        progress = np.clip((last - begin_step) / (end_step - begin_step), 0.0, 1.0)
    s = final + (initial - final) * (1.0 - progress) ** power
    return np.where(step < begin_step, 0.0, s)


def training(method: str, steps: int, dense_forward, density=1.0, *, trace=None,
             update_every: int | None = None, end_step: int | None = None,
             dense_steps: int = 0, penalty_steps: int = 0, prune_step: int | None = None,
             begin_step: int = 0, every: int = 1, initial_sparsity: float = 0.0,
             power: float = 3.0,
             schedule: Callable[[Any], Any] | None = None) -> float:
    """Total training FLOPs of a run of ``steps`` steps with a sparsity method.

    Args:
      method: one of ``dense``, ``static``, ``one_shot``, ``gmp``, ``admm``, ``slr``, ``set``,
        ``rigl`` (the CLI's ``--method`` names; ``static_sparse``, ``set_`` and
        ``gradual_magnitude`` are accepted too).
      steps: number of training steps (batches) in the run.
      dense_forward: forward FLOPs of one step's batch with dense weights: a dense
        :class:`FlopsReport` from :func:`forward`; a dict ``{weight path: FLOPs}`` (every entry
        scales with its density); or a float (all of it scales with ``density``).
      density: the target density (1 - sparsity) of the sparse phases: a float, or
        ``{weight path: density}``.
      trace: a ``SparsityTrace`` recorded by the method (``sparsegnn_jax.get_trace(state)``); when
        given the run's recorded densities are used (:func:`training_from_trace`) and the config
        arguments below are ignored.
      update_every: RigL's dT (required for ``rigl``).
      end_step: ``rigl``: no mask updates from this step on (None: updates for the whole run);
        ``gmp``: step at which the final sparsity is reached (required).
      dense_steps: ``admm`` / ``slr``: steps of the dense phase.
      penalty_steps: ``admm`` / ``slr``: steps of the penalty phase (dense weights too);
        retraining, sparse, takes the remaining ``steps - dense_steps - penalty_steps``.
      prune_step: ``one_shot``: the step at which the dense network is pruned (required).
      begin_step: ``gmp``: first pruning step.
      every: ``gmp``: steps between pruning steps.
      initial_sparsity: ``gmp``: sparsity at ``begin_step``.
      power: ``gmp``: exponent of the polynomial schedule (3 in Zhu & Gupta 2017).
      schedule: ``gmp``: optional callable ``step -> sparsity in force during that step``
        (vectorised over an array of steps, e.g. a ``sparsegnn_jax.schedules`` schedule)
        replacing the polynomial one; every weight then follows it (``density``, ``begin_step``,
        ``every`` and ``end_step`` are unused).

    Returns:
      Total FLOPs of the run (forward and backward passes of every step; RigL's dense-gradient
      steps included).

    Raises:
      ValueError: unknown method, missing method argument, or inconsistent phase lengths.
    """
    if trace is not None:
        return training_from_trace(dense_forward, trace)
    name = _ALIASES.get(method, method)
    if name not in METHODS:
        raise ValueError(f"training: unknown `method` {method!r}; expected one of {METHODS}")
    if steps < 0:
        raise ValueError(f"training: `steps` must be >= 0, got {steps}")
    f_dense = at_densities(dense_forward, 1.0)
    f_sparse = at_densities(dense_forward, density)

    if name == "dense":
        return 3.0 * f_dense * steps
    if name in ("static", "set"):
        return 3.0 * f_sparse * steps
    if name == "rigl":
        if update_every is None:
            raise ValueError("training: method 'rigl' needs `update_every` (dT)")
        updating = steps if end_step is None else min(max(end_step, 0), steps)
        return (updating * rigl_step_flops(f_sparse, f_dense, update_every)
                + 3.0 * f_sparse * (steps - updating))
    if name in ("admm", "slr"):
        dense_phase = dense_steps + penalty_steps
        if dense_steps < 0 or penalty_steps < 0 or dense_phase > steps:
            raise ValueError(f"training: {name} phases dense_steps={dense_steps} + penalty_steps="
                             f"{penalty_steps} must be >= 0 and fit in steps={steps}")
        return 3.0 * f_dense * dense_phase + 3.0 * f_sparse * (steps - dense_phase)
    if name == "one_shot":
        if prune_step is None:
            raise ValueError("training: method 'one_shot' needs `prune_step`")
        before = min(max(prune_step, 0), steps)
        return 3.0 * f_dense * before + 3.0 * f_sparse * (steps - before)
    # gmp
    t = np.arange(steps)
    fixed, weights = affine_parts(dense_forward)
    if schedule is not None:
        s = np.asarray(schedule(t), dtype=np.float64)
        return float(3.0 * np.sum(fixed + (1.0 - s) * sum(weights.values())))
    if end_step is None:
        raise ValueError("training: method 'gmp' needs `end_step` (or a `schedule`)")
    if every < 1:
        raise ValueError(f"training: `every` must be >= 1, got {every}")
    dens = density_map(weights, density, "density")
    total = 3.0 * fixed * steps
    for path, flops in weights.items():
        s = _gmp_sparsity(t, 1.0 - dens[path], begin_step, end_step, every, initial_sparsity,
                          power)
        total += 3.0 * flops * float(np.sum(1.0 - s))
    return float(total)


def training_from_trace(dense_forward, *args, densities=None):
    """Total training FLOPs of a run from the density trace its sparsity method recorded.

    Call as ``training_from_trace(dense_forward, trace)`` or, to count the model's dense forward
    pass on the fly, ``training_from_trace(model, graph_or_batch, trace)``.

    ``sum_p 3 weight_flops[p] * density_steps[p] + 3 fixed * steps
    + mask_updates * (f_D - f_S)``: every step costs three forward passes at that step's
    densities, and each RigL mask update step adds the dense weight gradient in place of the
    sparse one. The trace keeps only the sum of densities over steps, not the density at each
    update, so ``f_S`` of the update steps is approximated by ``densities`` (the final masks'
    densities, e.g. ``mask_densities(get_masks(state))``) or, when None, by the run's mean density
    per weight (``density_steps / steps``). RigL keeps densities constant, so for it the result
    is exact either way.

    Args:
      dense_forward: a dense :class:`FlopsReport`, a dict ``{weight path: dense FLOPs}``, or a
        float (a single weight path ``""``: only usable with a trace of one weight); or an NNX
        model, followed by its ``graph_or_batch`` (as for :func:`forward`).
      *args: ``trace``, or ``graph_or_batch, trace`` after a model. ``trace`` is a
        ``SparsityTrace`` (``steps``, ``density_steps`` ``{path: float}``, ``mask_updates``);
        fields may be JAX or NumPy arrays, batched (vmapped) ones included.
      densities: densities for the mask-update correction, see above.

    Returns:
      Total FLOPs (a float, or a NumPy array for a batched trace). Weights the trace does not
      list (excluded from pruning) count as dense on every step.
    """
    if isinstance(dense_forward, nnx.Module):
        if len(args) != 2:
            raise ValueError("training_from_trace: with a model, pass (model, graph_or_batch, "
                             f"trace); got {1 + len(args)} positional arguments")
        dense_forward = forward(dense_forward, args[0])
        args = args[1:]
    if len(args) != 1:
        raise ValueError("training_from_trace: pass (dense_forward, trace); got "
                         f"{1 + len(args)} positional arguments")
    trace = args[0]
    fixed, weights = affine_parts(dense_forward)
    steps = np.asarray(trace.steps, dtype=np.float64)
    updates = np.asarray(trace.mask_updates, dtype=np.float64)
    recorded = {str(p): np.asarray(v, dtype=np.float64) for p, v in trace.density_steps.items()}
    if list(weights) == [""] and len(recorded) == 1:
        weights = {next(iter(recorded)): weights[""]}
    unknown = sorted(set(recorded) - set(weights))
    if unknown:
        raise ValueError(f"training_from_trace: the trace records weights that `dense_forward` "
                         f"does not have: {unknown}; known weights: {sorted(weights)}")
    safe_steps = np.maximum(steps, 1.0)
    if densities is None:
        dens = {p: recorded[p] / safe_steps if p in recorded else 1.0 for p in weights}
    else:
        dens = density_map(weights, densities, "densities")
    total = 3.0 * fixed * steps
    correction = 0.0
    for path, flops in weights.items():
        total = total + 3.0 * flops * recorded.get(path, steps)
        correction = correction + (1.0 - dens[path]) * flops
    total = total + updates * correction
    return float(total) if np.ndim(total) == 0 else total
