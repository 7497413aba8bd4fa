"""Pruning methods as optax transformations: dense, static sparse, one-shot and gradual magnitude.

Each wraps an inner optimizer and emits updates after which plain ``optax.apply_updates`` gives
exactly masked params (see :mod:`transform`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import distributions as distributions_lib
from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity import schedules as schedules_lib
from sparsegnn_jax.sparsity import structure as structure_lib
from sparsegnn_jax.sparsity import transform
from sparsegnn_jax.sparsity.topk import drop, keep_count
from sparsegnn_jax.sparsity.trees import align_to, leaf_paths, prunable
from sparsegnn_jax.sparsity.validation import check_sparsity, check_step, is_concrete


class GmpState(NamedTuple):
    """Extra state of :func:`gradual_magnitude`.

    Attributes:
      final_sparsity: float32 scalars with the params' structure, each leaf's final sparsity
        (0 for non-prunable leaves).
    """

    final_sparsity: Any


def dense(inner: optax.GradientTransformation,
          filter_fn: Optional[Callable] = None) -> optax.GradientTransformationExtraArgs:
    """The dense baseline: all-True masks, updates identical to ``inner``'s bit for bit.

    It still records a :class:`SparsityTrace` (density 1 everywhere), so dense runs are counted
    like every other method.

    Args:
      inner: the optimizer.
      filter_fn: which leaves count as layers in the trace (``masks.default_filter`` when None).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    rule = transform.Rule(init_masks=transform.init_dense, masked=False)
    return transform.sparse_transform(inner, rule, counts_fn=_sizes, filter_fn=filter_fn,
                                      key=transform.make_key(0), name="dense")


def static_sparse(inner: optax.GradientTransformation, sparsity=0.9, distribution="uniform",
                  scores="random", filter_fn: Optional[Callable] = None, seed: int = 0,
                  key=None, masks=None, structure=None) -> optax.GradientTransformationExtraArgs:
    """Static sparse training: a mask chosen at init, never changed.

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1) (may be a traced value with ``"uniform"``).
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a
        ``{layer-path: sparsity}`` dict.
      scores: ``"random"`` (random mask), ``"magnitude"`` (top-|w| of the init params), a
        pytree of score arrays with the params' structure (e.g. SNIP's ``|g * w|``) or a
        callable ``scores(key, params) -> score pytree``: each prunable layer keeps its
        keep-count highest scores.
      filter_fn: which leaves are prunable (``masks.default_filter`` when None).
      seed: seed of the random mask, used when ``key`` is None.
      key: a PRNG key (typed or raw) for the random mask.
      masks: a bool mask pytree with the params' structure, used as given; ``sparsity``,
        ``distribution`` and ``scores`` are then not used, and the keep counts are the masks'
        True counts.
      structure: None, or N:M structured masks (``sg.structure.NM(2, 4)`` or ``"nm:2:4"``;
        ``sparsity`` must be ``1 - n/m``): every weight matrix keeps the ``n`` highest scores
        of every ``m`` consecutive inputs (:mod:`~sparsegnn_jax.sparsity.structure`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: for an invalid sparsity, distribution or scores name, both ``masks`` and
        a ``scores`` pytree or a ``structure``, or a structure the sparsity contradicts; at
        ``init``, for masks or scores of another structure.
    """
    check_sparsity(sparsity)
    distributions_lib.check_distribution(distribution)
    structure = structure_lib.check_structure(structure, sparsity, distribution, "static_sparse")
    if masks is not None:
        if not isinstance(scores, str) or structure is not None:
            raise ValueError("static_sparse: pass `masks`, or `scores` other than a name or a "
                             "`structure`, not both")
        return _given_masks(inner, masks, filter_fn)
    if isinstance(scores, str) or callable(scores):
        init_masks = transform.init_masks_by(scores, structure)
    else:
        def init_masks(key, params, counts, prunable_tree):
            return masks_lib.select_top(scores, counts, prunable_tree, structure)
    rule = transform.Rule(init_masks=init_masks)
    return transform.sparse_transform(
        inner, rule,
        counts_fn=transform.keep_counts_fn(sparsity, distribution, filter_fn, structure),
        filter_fn=filter_fn, key=transform.make_key(seed, key), name="static_sparse")


def _given_masks(inner, masks, filter_fn):
    """:func:`static_sparse` with user masks: keep counts are their True counts."""

    def init_masks(key, params, counts, prunable_tree):
        return align_to(masks, params, "masks")

    def counts_fn(params):
        given = align_to(masks, params, "masks")
        return jax.tree.map(
            lambda m, x, p: (jnp.sum(jnp.asarray(m, bool), dtype=jnp.int32) if p
                             else jnp.asarray(x.size, jnp.int32)),
            given, params, prunable(params, filter_fn))

    rule = transform.Rule(init_masks=init_masks)
    return transform.sparse_transform(inner, rule, counts_fn=counts_fn, filter_fn=filter_fn,
                                      key=transform.make_key(0), name="static_sparse")


def one_shot(inner: optax.GradientTransformation, sparsity=0.9, prune_step: int = 0,
             distribution="uniform", filter_fn: Optional[Callable] = None,
             structure=None) -> optax.GradientTransformationExtraArgs:
    """Dense training, a magnitude prune at ``prune_step``, masked training after.

    At the ``update`` call with step index ``prune_step`` (0-based) each prunable layer keeps its
    keep-count largest |w| (w = the params passed to that call).

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1).
      prune_step: step index of the prune.
      distribution: as in :func:`static_sparse`.
      filter_fn: which leaves are prunable.
      structure: None, or N:M: the prune keeps the ``n`` largest |w| of every ``m``
        consecutive inputs of each weight matrix (as in :func:`static_sparse`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    check_sparsity(sparsity)
    distributions_lib.check_distribution(distribution)
    check_step(prune_step, "prune_step")
    structure = structure_lib.check_structure(structure, sparsity, distribution, "one_shot")

    def step(ctx: transform.StepContext):
        new = jax.lax.cond(
            ctx.step == prune_step,
            lambda: masks_lib.top_magnitude(ctx.params, ctx.counts, ctx.prunable, structure),
            lambda: ctx.masks)
        return new, ctx.key, ctx.extra, jnp.zeros((), bool)

    # Dense until the prune: the masks keep more than the keep counts by design.
    rule = transform.Rule(init_masks=transform.init_dense, step=step, own_counts=True)
    return transform.sparse_transform(
        inner, rule,
        counts_fn=transform.keep_counts_fn(sparsity, distribution, filter_fn, structure),
        filter_fn=filter_fn, key=transform.make_key(0), name="one_shot")


def gradual_magnitude(inner: optax.GradientTransformation, sparsity=0.9, begin_step: int = 0,
                      end_step: int = 1000, every: int = 100, initial_sparsity=0.0,
                      power: float = 3, distribution="uniform",
                      filter_fn: Optional[Callable] = None,
                      schedule: Optional[Callable] = None) -> optax.GradientTransformationExtraArgs:
    """Gradual magnitude pruning (Zhu & Gupta 2017): sparsity rises polynomially, masks only shrink.

    Pruning steps are ``begin_step, begin_step + every, ...`` up to ``end_step`` (and
    ``end_step`` itself). At each, layer l keeps ``keep_count(size_l, 1 - s_l(t))`` weights, the
    largest |w| among its active ones, where ``s_l(t)`` is
    ``schedules.polynomial_sparsity(s_l, begin_step, end_step, s_l * initial_sparsity /
    sparsity, power)`` and ``s_l`` the layer's final sparsity under ``distribution`` (with
    ``"uniform"``: ``s_l = sparsity``, so ``s_l(t)`` is exactly the global schedule).

    Args:
      inner: the optimizer.
      sparsity: final sparsity in [0, 1).
      begin_step: first pruning step.
      end_step: last pruning step (the final sparsity is reached there).
      every: steps between pruning steps.
      initial_sparsity: sparsity at ``begin_step``.
      power: exponent of the schedule (3 in Zhu & Gupta).
      distribution: as in :func:`static_sparse`.
      filter_fn: which leaves are prunable.
      schedule: any ``step -> sparsity`` callable (an optax schedule, a
        :mod:`~sparsegnn_jax.sparsity.schedules` one, a lambda) in place of the polynomial one:
        at each pruning step layer l's sparsity is ``schedule(t) * s_l / sparsity``, exactly
        ``schedule(t)`` with ``"uniform"``; ``initial_sparsity`` and ``power`` are then unused.
        ``flops.training("gmp", ..., schedule=...)`` counts it as if it was applied at every
        step (pass ``every=1`` for an exact count between ``begin_step`` and ``end_step``).
        Masks only shrink: a decreasing schedule keeps the masks it reached.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``keep_counts`` in its state are the final
      counts.

    References:
      Zhu & Gupta, "To prune, or not to prune", 2017.
    """
    check_sparsity(sparsity)
    check_sparsity(initial_sparsity, "initial_sparsity")
    distributions_lib.check_distribution(distribution)
    check_step(begin_step, "begin_step")
    check_step(end_step, "end_step")
    check_step(every, "every", positive=True)
    if is_concrete(end_step) and is_concrete(begin_step) and end_step < begin_step:
        raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step})")

    def init_extra(params, counts, prunable_tree):
        # Final per-layer sparsities, fixed at init so that update never needs the distribution.
        if distribution == "uniform":
            final = jax.tree.map(lambda x: jnp.asarray(sparsity, jnp.float32), params)
        else:
            final = _layer_sparsities(params, sparsity, distribution, filter_fn, prunable_tree)
        return GmpState(final_sparsity=final)

    def step(ctx: transform.StepContext):
        t = ctx.step
        is_prune = ((t >= begin_step) & (t <= end_step)
                    & (((t - begin_step) % every == 0) | (t == end_step)))

        def prune_layer(m, x, s_final, p):
            if not p:
                return m
            s_t = layer_schedule(s_final)(t)
            target = keep_count(x.size, 1.0 - s_t)
            active = jnp.sum(m, dtype=jnp.int32)
            n_drop = jnp.maximum(active - jnp.asarray(target, jnp.int32), 0)
            return drop(m, x, n_drop)

        def prune():
            return jax.tree.map(prune_layer, ctx.masks, ctx.params, ctx.extra.final_sparsity,
                                ctx.prunable)

        new = jax.lax.cond(is_prune, prune, lambda: ctx.masks)
        return new, ctx.key, ctx.extra, jnp.zeros((), bool)

    def layer_schedule(s_final):
        if schedule is not None:
            if distribution == "uniform":
                return schedule
            scale = s_final / jnp.where(sparsity > 0, sparsity, 1)
            return lambda t: schedule(t) * scale
        if distribution == "uniform":
            init_s = initial_sparsity
        else:
            ratio = jnp.where(sparsity > 0, initial_sparsity / jnp.where(sparsity > 0, sparsity, 1),
                              0.0)
            init_s = s_final * ratio
        return schedules_lib.polynomial_sparsity(s_final, begin_step, end_step,
                                                 initial_sparsity=init_s, power=power)

    # Dense, then thinner at every pruning step until end_step: own counts by design.
    rule = transform.Rule(init_masks=transform.init_dense, step=step, init_extra=init_extra,
                          own_counts=True)
    return transform.sparse_transform(
        inner, rule, counts_fn=transform.keep_counts_fn(sparsity, distribution, filter_fn),
        filter_fn=filter_fn, key=transform.make_key(0), name="gradual_magnitude")


def _sizes(params):
    """Leaf sizes as int32 counts (the keep counts of a dense model)."""
    return jax.tree.map(lambda x: jnp.asarray(x.size, jnp.int32), params)


def _layer_sparsities(params, sparsity, distribution, filter_fn, prunable_tree):
    """Per-leaf final sparsities with the params' structure (0 for non-prunable leaves)."""
    densities = distributions_lib.layer_densities(params, sparsity, distribution, filter_fn)
    treedef = jax.tree.structure(params)
    final = [jnp.asarray(1.0 - densities[path], jnp.float32) if p else jnp.zeros((), jnp.float32)
             for path, p in zip(leaf_paths(params), jax.tree.leaves(prunable_tree))]
    return jax.tree.unflatten(treedef, final)
