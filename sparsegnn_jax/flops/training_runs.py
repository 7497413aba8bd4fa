"""Total FLOPs of whole training runs, per sparsity method.

One step costs three forward passes at that step's densities (Evci et al. 2020, appendix H); a
RigL mask update step needs the dense weight gradient instead of the sparse one. See
:mod:`sparsegnn_jax.flops` for the full convention.
"""
from __future__ import annotations


import numpy as np
from flax import nnx

from sparsegnn_jax.flops.forward_pass import forward
from sparsegnn_jax.flops.report import affine_parts, at_densities, density_map
from sparsegnn_jax.sparsity import registry

__all__ = ["rigl_step_flops", "training", "training_from_trace"]


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


def training(method: str, steps: int, dense_forward, density=1.0, *, trace=None,
             **method_kwargs) -> float:
    """Total training FLOPs of a run of ``steps`` steps with a sparsity method.

    Every step costs three forward passes at the densities in force during it (the method's
    registry entry, :attr:`~sparsegnn_jax.sparsity.registry.MethodSpec.sparsity_at`, says which);
    each step that computes the dense weight gradient (RigL's mask updates,
    :attr:`~sparsegnn_jax.sparsity.registry.MethodSpec.dense_gradient_steps`) adds
    ``f_D - f_S``.

    Args:
      method: a registered method name (the CLI's ``--method``: ``dense``, ``static``,
        ``one_shot``, ``gmp``, ``admm``, ``slr``, ``set``, ``rigl``, or a user's) or one of its
        aliases (``registry.aliases()``: the factory names ``static_sparse``,
        ``gradual_magnitude``, ``sparse_evolutionary``, ...).
      steps: number of training steps (batches) in the run.
      dense_forward: forward FLOPs of one step's batch with dense weights: a dense
        :class:`FlopsReport` from :func:`forward`; a dict ``{weight path: FLOPs}`` (every entry
        scales with its density); or a float (all of it scales with ``density``).
      density: the target density (1 - sparsity) of the sparse phases: a float, or
        ``{weight path: density}``.
      trace: a ``SparsityTrace`` recorded by the method (``sparsegnn_jax.get_trace(state)``); when
        given the run's recorded densities are used (:func:`training_from_trace`) and the
        method arguments are ignored.
      **method_kwargs: the method's schedule arguments, as its factory takes them (e.g.
        ``update_every`` and ``end_step`` for RigL, ``dense_steps`` and ``penalty_steps`` for
        ADMM / SLR, ``prune_step`` for one-shot, ``begin_step`` / ``end_step`` / ``every`` /
        ``initial_sparsity`` / ``power`` or a ``schedule`` callable for GMP). Arguments a
        method needs to be counted are listed in its spec's ``flops_requires``.

    Lottery methods (``imp``, ``ugs``) count every round, the honest cost of finding a ticket:
    pass ``rounds=R`` and ``steps_per_round=S`` with ``steps = (R + 1) * S`` (IMP's trainings
    at the masks after 0..R rounds) and ``density`` the ticket's (after ``R`` rounds, e.g.
    ``{kernel: 0.8**R, edges: 0.95**R}``); training ``r`` runs at ``density ** (r / R)``, each
    step ``3 f`` (UGS's score gradients are elementwise products at kept entries, no dense
    gradient; its separate ticket trainings are counted from the runs' traces). This uses the
    nominal densities; a run's record (``sparsegnn_jax.rounds``) sums the recorded traces of
    every training, i.e. the exact keep counts, and holds beside it the ticket's own training
    (``training_ticket``) and per-step FLOPs (``step_ticket``), and per-round sparsities.

    Returns:
      Total FLOPs of the run (forward and backward passes of every step; RigL's dense-gradient
      steps included; every round of a lottery method).

    Raises:
      ValueError: unknown method, missing method argument, or inconsistent phase lengths.
    """
    if trace is not None:
        return training_from_trace(dense_forward, trace)
    try:
        name = registry.canonical_name(method)
    except ValueError as err:
        raise ValueError(f"training: {err}") from None
    spec = registry.get(name)
    if steps < 0:
        raise ValueError(f"training: `steps` must be >= 0, got {steps}")
    missing = [k for k in spec.flops_requires if method_kwargs.get(k) is None]
    if missing:
        raise ValueError(f"training: method {name!r} needs `{'`, `'.join(missing)}`")
    spec.check(method_kwargs, steps)
    t = np.arange(steps)
    fixed, weights = affine_parts(dense_forward)
    dens = density_map(weights, density, "density")
    total = 3.0 * fixed * steps
    for path, flops in weights.items():
        s = spec.sparsity_at(method_kwargs, t, 1.0 - np.asarray(dens[path], np.float64))
        total += 3.0 * flops * float(np.sum(1.0 - np.asarray(s, np.float64)))
    extra = spec.dense_gradient_steps(method_kwargs, steps)
    if extra:
        total += extra * (at_densities(dense_forward, 1.0) - at_densities(dense_forward, density))
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
