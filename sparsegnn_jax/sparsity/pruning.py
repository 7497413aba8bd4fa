"""Pruning methods as optax transformations: dense, static sparse, one-shot and gradual magnitude.

Each wraps an inner optimizer and emits updates after which plain ``optax.apply_updates`` gives
exactly masked params (see ``_core``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import _core
from sparsegnn_jax.sparsity import distributions as distributions_lib
from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity import schedules as schedules_lib


class GmpState(NamedTuple):
    """Extra state of :func:`gradual_magnitude`: each leaf's final sparsity (float32, leaf order)."""

    final_sparsity: list


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
    rule = _core.Rule(init_masks=_core.init_dense, masked=False)
    return _core.sparse_transform(inner, rule, counts_fn=lambda p: _core.sizes(jax.tree.leaves(p)),
                                  filter_fn=filter_fn, key=_core.make_key(0), name="dense")


def static_sparse(inner: optax.GradientTransformation, sparsity=0.9, distribution="uniform",
                  scores: str = "random", filter_fn: Optional[Callable] = None, seed: int = 0,
                  key=None) -> optax.GradientTransformationExtraArgs:
    """Static sparse training: a mask drawn at init, never changed.

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1) (may be a traced value with ``"uniform"``).
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a
        ``{layer-path: sparsity}`` dict.
      scores: ``"random"`` (random mask) or ``"magnitude"`` (top-|w| of the init params).
      filter_fn: which leaves are prunable (``masks.default_filter`` when None).
      seed: seed of the random mask, used when ``key`` is None.
      key: a PRNG key (typed or raw) for the random mask.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    _core.check_sparsity(sparsity)
    _core.check_distribution(distribution)
    rule = _core.Rule(init_masks=_core.init_masks_by(scores))
    return _core.sparse_transform(
        inner, rule, counts_fn=_counts(sparsity, distribution, filter_fn), filter_fn=filter_fn,
        key=_core.make_key(seed, key), name="static_sparse")


def one_shot(inner: optax.GradientTransformation, sparsity=0.9, prune_step: int = 0,
             distribution="uniform", filter_fn: Optional[Callable] = None
             ) -> optax.GradientTransformationExtraArgs:
    """Dense training, a magnitude prune at ``prune_step``, masked training after.

    At the ``update`` call with step index ``prune_step`` (0-based) each prunable layer keeps its
    keep-count largest |w| (w = the params passed to that call).

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1).
      prune_step: step index of the prune.
      distribution: as in :func:`static_sparse`.
      filter_fn: which leaves are prunable.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    _core.check_sparsity(sparsity)
    _core.check_distribution(distribution)
    _core.check_step(prune_step, "prune_step")

    def step(ctx: _core.StepContext):
        new = jax.lax.cond(
            ctx.step == prune_step,
            lambda: _core.magnitude(ctx.params, ctx.counts, ctx.prunable),
            lambda: list(ctx.masks))
        return new, ctx.key, ctx.extra, jnp.zeros((), bool)

    rule = _core.Rule(init_masks=_core.init_dense, step=step)
    return _core.sparse_transform(inner, rule, counts_fn=_counts(sparsity, distribution, filter_fn),
                                  filter_fn=filter_fn, key=_core.make_key(0), name="one_shot")


def gradual_magnitude(inner: optax.GradientTransformation, sparsity=0.9, begin_step: int = 0,
                      end_step: int = 1000, every: int = 100, initial_sparsity=0.0,
                      power: float = 3, distribution="uniform",
                      filter_fn: Optional[Callable] = None) -> optax.GradientTransformationExtraArgs:
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

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``keep_counts`` in its state are the final
      counts.

    References:
      Zhu & Gupta, "To prune, or not to prune", 2017.
    """
    _core.check_sparsity(sparsity)
    _core.check_sparsity(initial_sparsity, "initial_sparsity")
    _core.check_distribution(distribution)
    _core.check_step(begin_step, "begin_step")
    _core.check_step(end_step, "end_step")
    _core.check_positive_int(every, "every")
    if end_step < begin_step:
        raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step})")

    def init_extra(params, leaves, counts, prunable):
        # Final per-layer sparsities, fixed at init so that update never needs the distribution.
        if distribution == "uniform":
            final = [jnp.asarray(sparsity, jnp.float32) for _ in leaves]
        else:
            final = _layer_sparsities(params, sparsity, distribution, filter_fn)
        return GmpState(final_sparsity=final)

    counts_fn = _counts(sparsity, distribution, filter_fn)

    def step(ctx: _core.StepContext):
        t = ctx.step
        is_prune = ((t >= begin_step) & (t <= end_step)
                    & (((t - begin_step) % every == 0) | (t == end_step)))

        def prune():
            out = []
            for m, x, s_final, p in zip(ctx.masks, ctx.params, ctx.extra.final_sparsity,
                                        ctx.prunable):
                if not p:
                    out.append(m)
                    continue
                s_t = layer_schedule(s_final)(t)
                target = masks_lib.keep_count(x.size, 1.0 - s_t)
                active = jnp.sum(m, dtype=jnp.int32)
                n_drop = jnp.maximum(active - jnp.asarray(target, jnp.int32), 0)
                out.append(masks_lib.drop(m, x, n_drop))
            return out

        new = jax.lax.cond(is_prune, prune, lambda: list(ctx.masks))
        return new, ctx.key, ctx.extra, jnp.zeros((), bool)

    def layer_schedule(s_final):
        if distribution == "uniform":
            init_s = initial_sparsity
        else:
            ratio = jnp.where(sparsity > 0, initial_sparsity / jnp.where(sparsity > 0, sparsity, 1),
                              0.0)
            init_s = s_final * ratio
        return schedules_lib.polynomial_sparsity(s_final, begin_step, end_step,
                                                 initial_sparsity=init_s, power=power)

    rule = _core.Rule(init_masks=_core.init_dense, step=step, init_extra=init_extra)
    return _core.sparse_transform(inner, rule, counts_fn=counts_fn, filter_fn=filter_fn,
                                  key=_core.make_key(0), name="gradual_magnitude")


def _counts(sparsity, distribution, filter_fn) -> Callable:
    return lambda params: _core.keep_counts(params, sparsity, distribution, filter_fn)


def _layer_sparsities(params, sparsity, distribution, filter_fn) -> list:
    """Per-leaf final sparsities (leaf order; 0 for non-prunable leaves)."""
    densities = distributions_lib.layer_densities(params, sparsity, distribution, filter_fn)
    prunable = _core.prunable_leaves(params, filter_fn)
    return [jnp.asarray(1.0 - densities[path], jnp.float32) if p else jnp.zeros((), jnp.float32)
            for path, p in zip(_core.leaf_paths(params), prunable)]
