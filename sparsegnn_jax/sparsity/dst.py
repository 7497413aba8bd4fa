"""Dynamic sparse training as optax transformations: SET and RigL.

Every ``update_every`` steps each prunable layer drops its ``n`` smallest-magnitude active weights
and grows ``n`` inactive ones - at random (SET) or where the dense gradient is largest (RigL).
Pruned weights are exactly 0, so the gradient w.r.t. the params is already dense: RigL needs no
second backward pass.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import distributions as distributions_lib
from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity import schedules as schedules_lib
from sparsegnn_jax.sparsity import structure as structure_lib
from sparsegnn_jax.sparsity import transform
from sparsegnn_jax.sparsity.topk import drop, grow
from sparsegnn_jax.sparsity.validation import (
    check_fraction,
    check_sparsity,
    check_step,
)


def drop_count(mask, fraction) -> jax.Array:
    """Weights to swap in one layer: ``floor(fraction * active)``, at most the inactive count.

    The cap keeps the grown set disjoint from the dropped one (regrowth only among weights that
    were inactive before the update) while the layer's count stays exact.
    """
    active = jnp.sum(mask, dtype=jnp.int32)
    n = jnp.floor(jnp.clip(fraction, 0.0, 1.0) * active.astype(jnp.float32)).astype(jnp.int32)
    return jnp.clip(n, 0, mask.size - active)


def swap(mask, weights, scores, fraction, structure=None):
    """One layer's drop-and-grow: returns the new mask.

    Args:
      mask: bool mask before the update.
      weights: the layer's weights (drop the smallest |w| among active positions).
      scores: grow scores (grow the largest among positions inactive in ``mask``).
      fraction: fraction of the active weights to swap.
      structure: None, or an N:M structure covering this layer: the swap then stays inside
        each group of ``m`` inputs (:func:`structure.nm_swap`).

    Returns:
      New bool mask with exactly as many True as ``mask`` (in every group, with a structure).
    """
    n = drop_count(mask, fraction)
    if structure is not None and structure.covers(mask):
        return structure_lib.nm_swap(mask, weights, scores, n, structure.m)
    kept = drop(mask, weights, n)
    grown = grow(mask, scores, n) & ~mask
    return kept | grown


def drop_grow(masks, params, grow_scores, fraction, prunable=None, structure=None):
    """RigL's and SET's mask update on whole pytrees: per prunable leaf, :func:`swap`.

    Each prunable layer drops its ``n = min(floor(fraction * active), inactive)``
    smallest-|w| active weights and grows the ``n`` highest-scoring weights among those inactive
    before the call, so its count is unchanged and the two sets are disjoint. With an N:M
    ``structure`` a weight matrix swaps within its groups (:func:`structure.nm_swap`): a
    dropped weight is replaced by the best-scoring inactive weight of its own group, so every
    group keeps exactly ``n``; the layer swaps ``n`` weights when its groups can give them up.

    Args:
      masks: bool masks with the params' structure.
      params: the weights (ranks the active entries by magnitude).
      grow_scores: scores with the params' structure (``|grad|`` for RigL, random for SET).
      fraction: fraction of each layer's active weights to swap (a float or traced scalar).
      prunable: Python bools with the params' structure (``sg.masks.prunable(params,
        filter_fn)``); None: ``sg.masks.prunable(params)``, the leaves with ``ndim >= 2``.
      structure: None or an :class:`~sparsegnn_jax.sparsity.structure.NM`.

    Returns:
      The new bool masks, with the structure of ``masks``.
    """
    if prunable is None:
        prunable = masks_lib.prunable(params)
    return jax.tree.map(lambda m, x, s, p: swap(m, x, s, fraction, structure) if p else m,
                        masks, params, grow_scores, prunable)


def _dst(inner, *, regrow: str, sparsity, update_every, drop_fraction, end_step, distribution,
         scores, filter_fn, seed, key, name, structure) -> optax.GradientTransformationExtraArgs:
    check_sparsity(sparsity)
    distributions_lib.check_distribution(distribution)
    structure = structure_lib.check_structure(structure, sparsity, distribution, name)
    check_step(update_every, "update_every", positive=True)
    check_fraction(drop_fraction, "drop_fraction")
    check_step(end_step, "end_step", allow_none=True)
    fraction_at = schedules_lib.as_schedule(drop_fraction)

    def is_update(t):
        due = (t > 0) & (t % update_every == 0)
        return due if end_step is None else due & (t <= end_step)

    def step(ctx: transform.StepContext):
        def update():
            fraction = jnp.asarray(fraction_at(ctx.step), jnp.float32)
            if regrow == "gradient":
                key, grow_scores = ctx.key, jax.tree.map(jnp.abs, ctx.grads)
            else:
                key, sub = jax.random.split(ctx.key)
                grow_scores = masks_lib.random_scores(sub, ctx.params)
            new = drop_grow(ctx.masks, ctx.params, grow_scores, fraction, ctx.prunable,
                            structure)
            return new, key

        new, key = jax.lax.cond(is_update(ctx.step), update, lambda: (ctx.masks, ctx.key))
        used_dense_grad = is_update(ctx.step) if regrow == "gradient" else jnp.zeros((), bool)
        return new, key, ctx.extra, used_dense_grad

    rule = transform.Rule(init_masks=transform.init_masks_by(scores, structure), step=step,
                          may_grow=True)
    return transform.sparse_transform(
        inner, rule,
        counts_fn=transform.keep_counts_fn(sparsity, distribution, filter_fn, structure),
        filter_fn=filter_fn, key=transform.make_key(seed, key), name=name)


def rigl(inner: optax.GradientTransformation, sparsity=0.9, update_every: int = 100,
         drop_fraction=0.3, end_step: Optional[int] = None, distribution="uniform",
         scores="random", filter_fn: Optional[Callable] = None, seed: int = 0,
         key=None, structure=None) -> optax.GradientTransformationExtraArgs:
    """RigL: drop by magnitude, regrow where the dense gradient is largest.

    Mask updates happen at the ``update`` calls with step index ``t > 0``, ``t % update_every ==
    0`` and ``t <= end_step`` (every such step when ``end_step`` is None). At one, each prunable
    layer swaps ``n = min(floor(drop_fraction(t) * active), inactive)`` weights: the ``n``
    smallest |w| among active weights are dropped (w = the params passed to the call) and the
    ``n`` largest |gradient| among the weights inactive before the update are grown, so dropped
    and grown sets are disjoint and every layer keeps its exact count. Grown weights start at 0
    and the inner optimizer's state (momentum, Adam moments) is reset there.

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1) (may be a traced value with ``"uniform"``).
      update_every: steps between mask updates (dT).
      drop_fraction: a float in (0, 1] or a schedule step -> fraction
        (``schedules.cosine_drop(0.3, end_step)`` is RigL's).
      end_step: last step that may change the masks; None = the whole run.
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a dict.
      scores: initial mask, ``"random"``, ``"magnitude"`` or a callable
        ``scores(key, params) -> score pytree`` (:func:`transform.init_masks_by`).
      filter_fn: which leaves are prunable (``masks.default_filter`` when None).
      seed: seed of the initial mask, used when ``key`` is None.
      key: a PRNG key (typed or raw).
      structure: None, or N:M structured masks (``sg.structure.NM(2, 4)`` or ``"nm:2:4"``;
        ``sparsity`` must be ``1 - n/m``): the initial mask is N:M and every update drops and
        grows within each group of ``m`` inputs, so each group keeps exactly ``n``
        (:func:`drop_grow`; :mod:`~sparsegnn_jax.sparsity.structure`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    References:
      Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """
    return _dst(inner, regrow="gradient", sparsity=sparsity, update_every=update_every,
                drop_fraction=drop_fraction, end_step=end_step, distribution=distribution,
                scores=scores, filter_fn=filter_fn, seed=seed, key=key, name="rigl",
                structure=structure)


def sparse_evolutionary(inner: optax.GradientTransformation, sparsity=0.9,
                        update_every: int = 100, drop_fraction=0.3,
                        end_step: Optional[int] = None, distribution="uniform",
                        scores="random", filter_fn: Optional[Callable] = None,
                        seed: int = 0, key=None,
                        structure=None) -> optax.GradientTransformationExtraArgs:
    """SET (sparse evolutionary training): drop by magnitude, regrow at random.

    Also available as ``set_`` (its former name) and, in the registry, as ``"set"``.

    Same schedule and invariants as :func:`rigl`; grown positions are the top-``n`` of uniform
    random scores among inactive weights, drawn from a key split off the state's key at each mask
    update (reproducible per ``seed`` / ``key``).

    Args: as :func:`rigl`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    References:
      Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
      connectivity inspired by network science", Nature Communications 2018.
    """
    return _dst(inner, regrow="random", sparsity=sparsity, update_every=update_every,
                drop_fraction=drop_fraction, end_step=end_step, distribution=distribution,
                scores=scores, filter_fn=filter_fn, seed=seed, key=key, name="sparse_evolutionary",
                structure=structure)


#: Former name of :func:`sparse_evolutionary`.
set_ = sparse_evolutionary
