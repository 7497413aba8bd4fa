"""Train-and-prune methods as optax transformations: ADMM and SLR.

Both run four phases over the ``update`` step index t:

1. dense training, ``t < dense_steps``;
2. penalty phase, ``dense_steps <= t < dense_steps + penalty_steps``: the gradients of the
   prunable layers get ``rho * (W - Z + U)`` added (the gradient of ``rho/2 ||W - Z + U||^2``),
   where ``Z`` is the per-layer magnitude projection of ``W + U`` onto the keep counts. At
   ``t = dense_steps`` ``Z = proj(W)``, ``U = 0``; every ``update_every`` steps after that ``Z``
   and the multipliers are updated;
3. hard prune at ``t = dense_steps + penalty_steps``: each layer keeps its top-|W| (W = the params
   passed to that call);
4. masked retraining.

They differ in the multiplier update: ADMM's ``U += W - Z``; SLR's step-size rule and surrogate
optimality condition (Gurevin et al., IJCAI 2021).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import distributions as distributions_lib
from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity import structure as structure_lib
from sparsegnn_jax.sparsity import transform
from sparsegnn_jax.sparsity.validation import check_greater, check_sparsity, check_step


class AdmmState(NamedTuple):
    """Extra state of :func:`admm`: trees with the params' structure (a scalar 0 placeholder on
    non-prunable leaves).

    Attributes:
      z: the sparse projections Z.
      u: the scaled multipliers U.
    """

    z: Any
    u: Any


class SlrState(NamedTuple):
    """Extra state of :func:`slr`; ``z, lam, w_prev, z_prev`` are trees with the params'
    structure (a scalar 0 placeholder on non-prunable leaves).

    Attributes:
      z: the sparse projections Z.
      lam: the Lagrange multipliers (the penalty uses ``U = lam / rho``).
      w_prev: W at the last accepted multiplier update.
      z_prev: Z at the last accepted multiplier update.
      loss_prev: loss value (extra argument ``value``) at the last accepted update.
      s: the multiplier step size.
      k: the SLR iteration counter (starts at 1; grows with accepted updates).
      accepted: number of multiplier updates where the surrogate condition held.
    """

    z: Any
    lam: Any
    w_prev: Any
    z_prev: Any
    loss_prev: jax.Array
    s: jax.Array
    k: jax.Array
    accepted: jax.Array


def _project(tree, counts, prunable_tree, structure):
    """Per-layer magnitude projection: keep the ``counts`` largest |x| (the N:M pattern of |x|
    on the weight matrices a structure covers), zero the rest."""
    keep = masks_lib.top_magnitude(tree, counts, prunable_tree, structure)
    return jax.tree.map(lambda m, x: jnp.where(m, x, jnp.zeros_like(x)), keep, tree)


def _zeros(params, prunable_tree):
    # Non-prunable leaves carry a scalar placeholder: no memory is spent on them.
    return jax.tree.map(lambda x, p: jnp.zeros_like(x) if p else jnp.zeros((), x.dtype),
                        params, prunable_tree)


def _keep_placeholders(new, old, prunable_tree):
    """``new`` on prunable leaves, ``old`` (the scalar placeholder) elsewhere: cond-stable shapes."""
    return jax.tree.map(lambda n, o, p: n if p else o, new, old, prunable_tree)


def _sq_norm(tree, prunable_tree) -> jax.Array:
    """Sum of squares over the prunable leaves (summed in leaf order)."""
    terms = [jnp.sum(jnp.square(x))
             for x, p in zip(jax.tree.leaves(tree), jax.tree.leaves(prunable_tree)) if p]
    return sum(terms, jnp.zeros((), jnp.float32))


def _validate(sparsity, distribution, rho, dense_steps, penalty_steps, update_every) -> None:
    check_sparsity(sparsity)
    distributions_lib.check_distribution(distribution)
    check_greater(rho, "rho", 0)
    check_step(dense_steps, "dense_steps")
    check_step(penalty_steps, "penalty_steps")
    check_step(update_every, "update_every", positive=True)


def _phased(inner, *, sparsity, distribution, filter_fn, dense_steps, penalty_steps,
            update_every, init_extra, start, multiplier_update, penalty, name, structure):
    """The four-phase method shared by ADMM and SLR (see the module docstring)."""
    prune_step = dense_steps + penalty_steps

    def grads(ctx: transform.StepContext):
        t = ctx.step
        in_penalty = (t >= dense_steps) & (t < prune_step)
        extra = jax.lax.cond(
            in_penalty & (t == dense_steps), lambda: start(ctx),
            lambda: jax.lax.cond(
                in_penalty & ((t - dense_steps) % update_every == 0),
                lambda: multiplier_update(ctx), lambda: ctx.extra))
        pen = penalty(ctx.params, extra)
        new = jax.tree.map(lambda g, d, p: jnp.where(in_penalty, g + d, g) if p else g,
                           ctx.grads, pen, ctx.prunable)
        return new, extra

    def step(ctx: transform.StepContext):
        new = jax.lax.cond(ctx.step == prune_step,
                           lambda: masks_lib.top_magnitude(ctx.params, ctx.counts, ctx.prunable,
                                                           structure),
                           lambda: ctx.masks)
        return new, ctx.key, ctx.extra, jnp.zeros((), bool)

    # Dense through the first two phases: the masks keep more than the keep counts by design.
    rule = transform.Rule(init_masks=transform.init_dense, step=step, grads=grads,
                          init_extra=init_extra, own_counts=True)
    return transform.sparse_transform(
        inner, rule,
        counts_fn=transform.keep_counts_fn(sparsity, distribution, filter_fn, structure),
        filter_fn=filter_fn, key=transform.make_key(0), name=name)


def admm(inner: optax.GradientTransformation, sparsity=0.9, rho=0.01, dense_steps: int = 0,
         penalty_steps: int = 1000, update_every: int = 100, distribution="uniform",
         filter_fn: Optional[Callable] = None,
         structure=None) -> optax.GradientTransformationExtraArgs:
    """ADMM pruning: dense -> penalty (``rho (W - Z + U)``) -> hard prune -> masked retraining.

    In the penalty phase, every ``update_every`` steps after its first step:
    ``Z = proj(W + U)``, ``U = U + W - Z`` (W = the params passed to that call).

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1).
      rho: penalty weight (> 0).
      dense_steps: steps of dense training before the penalty phase.
      penalty_steps: steps of the penalty phase; the hard prune is at step
        ``dense_steps + penalty_steps``.
      update_every: steps between Z / U updates.
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a dict.
      filter_fn: which leaves are prunable.
      structure: None, or N:M structured masks (``sg.structure.NM(2, 4)`` or ``"nm:2:4"``;
        ``sparsity`` must be ``1 - n/m``): ``Z`` and the hard prune keep the ``n`` largest
        magnitudes of every ``m`` consecutive inputs of each weight matrix.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``extra`` state is :class:`AdmmState`.

    References:
      Zhang et al., "A Systematic DNN Weight Pruning Framework using Alternating Direction Method
      of Multipliers", ECCV 2018.
    """
    _validate(sparsity, distribution, rho, dense_steps, penalty_steps, update_every)
    structure = structure_lib.check_structure(structure, sparsity, distribution, "admm")

    def init_extra(params, counts, prunable_tree):
        return AdmmState(z=_zeros(params, prunable_tree), u=_zeros(params, prunable_tree))

    def start(ctx):
        z = _project(ctx.params, ctx.counts, ctx.prunable, structure)
        return AdmmState(z=_keep_placeholders(z, ctx.extra.z, ctx.prunable), u=ctx.extra.u)

    def multiplier_update(ctx):
        w_u = jax.tree.map(lambda w, u: w + u, ctx.params, ctx.extra.u)
        z = _project(w_u, ctx.counts, ctx.prunable, structure)
        u = jax.tree.map(lambda u, w, zz: u + w - zz, ctx.extra.u, ctx.params, z)
        return AdmmState(z=_keep_placeholders(z, ctx.extra.z, ctx.prunable),
                         u=_keep_placeholders(u, ctx.extra.u, ctx.prunable))

    def penalty(params, extra):
        return jax.tree.map(lambda w, z, u: rho * (w - z + u), params, extra.z, extra.u)

    return _phased(inner, sparsity=sparsity, distribution=distribution, filter_fn=filter_fn,
                   dense_steps=dense_steps, penalty_steps=penalty_steps,
                   update_every=update_every, init_extra=init_extra, start=start,
                   multiplier_update=multiplier_update, penalty=penalty, name="admm",
                   structure=structure)


def slr_alpha(k, M=200.0, r=0.1) -> jax.Array:
    """SLR's step-size factor ``alpha_k = 1 - 1 / (M k^(1 - 1/k^r))``."""
    k = jnp.asarray(k, jnp.float32)
    return 1.0 - 1.0 / (M * k ** (1.0 - 1.0 / k ** r))


def slr(inner: optax.GradientTransformation, sparsity=0.9, rho=0.01, dense_steps: int = 0,
        penalty_steps: int = 1000, update_every: int = 100, M: float = 200.0, r: float = 0.1,
        initial_step_size=None, distribution="uniform",
        filter_fn: Optional[Callable] = None,
        structure=None) -> optax.GradientTransformationExtraArgs:
    """SLR pruning: ADMM's phases with surrogate Lagrangian relaxation multiplier updates.

    The penalty is ``rho (W - Z) + lam`` (the gradient of ``lam.(W - Z) + rho/2 ||W - Z||^2``).
    At each multiplier step (every ``update_every`` steps after the first penalty step), with W the
    params passed to the call and f the loss passed as the extra argument ``value`` (0 when
    absent):

    * ``Z' = proj(W + lam / rho)``;
    * the surrogate optimality condition holds when the surrogate Lagrangian
      ``L(W, Z', lam) = f + sum_l rho/2 ||W - Z' + lam/rho||^2`` is below its value at the last
      accepted point ``L(W_prev, Z_prev, lam)`` (always at k = 1);
    * if it holds: ``s_k = alpha_k s_{k-1} ||W_prev - Z_prev|| / ||W - Z'||``, with
      ``alpha_k = 1 - 1/(M k^(1 - 1/k^r))``; ``lam += s_k (W - Z')``; ``k += 1``; the point
      becomes the last accepted one. Otherwise the multipliers and step size stay;
    * ``Z = Z'`` in both cases.

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1).
      rho: penalty weight (> 0).
      dense_steps: steps of dense training before the penalty phase.
      penalty_steps: steps of the penalty phase; the hard prune is at
        ``dense_steps + penalty_steps``.
      update_every: steps between multiplier updates (the paper: once per epoch).
      M: SLR constant M (200 in the paper).
      r: SLR constant r (0.1 in the paper).
      initial_step_size: s_0; None = ``rho`` (the first multiplier step then equals ADMM's).
      distribution: as in :func:`admm`.
      filter_fn: which leaves are prunable.
      structure: as in :func:`admm`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``extra`` state is :class:`SlrState`.

    References:
      Gurevin et al., "Enabling Retrain-free Deep Neural Network Pruning using Surrogate
      Lagrangian Relaxation", IJCAI 2021.
    """
    _validate(sparsity, distribution, rho, dense_steps, penalty_steps, update_every)
    structure = structure_lib.check_structure(structure, sparsity, distribution, "slr")
    check_greater(M, "M", 1)
    check_greater(r, "r", 0)
    s0 = rho if initial_step_size is None else initial_step_size
    check_greater(s0, "initial_step_size", 0)

    def init_extra(params, counts, prunable_tree):
        zeros = lambda: _zeros(params, prunable_tree)  # noqa: E731
        return SlrState(z=zeros(), lam=zeros(), w_prev=zeros(), z_prev=zeros(),
                        loss_prev=jnp.zeros((), jnp.float32),
                        s=jnp.asarray(s0, jnp.float32), k=jnp.ones((), jnp.int32),
                        accepted=jnp.zeros((), jnp.int32))

    def loss_value(ctx):
        return jnp.asarray(ctx.extra_args.get("value", 0.0), jnp.float32)

    def start(ctx):
        e = ctx.extra
        keep = lambda new, old: _keep_placeholders(new, old, ctx.prunable)  # noqa: E731
        z = keep(_project(ctx.params, ctx.counts, ctx.prunable, structure), e.z)
        w = keep(ctx.params, e.w_prev)
        return e._replace(z=z, w_prev=w, z_prev=z, loss_prev=loss_value(ctx))

    def surrogate(f, w, z, lam, prunable_tree):
        gap = jax.tree.map(lambda ww, zz, ll: ww - zz + ll / rho, w, z, lam)
        return f + 0.5 * rho * _sq_norm(gap, prunable_tree)

    def distance(a, b, prunable_tree):
        return jnp.sqrt(_sq_norm(jax.tree.map(jnp.subtract, a, b), prunable_tree))

    def multiplier_update(ctx):
        e, prunable_tree = ctx.extra, ctx.prunable
        keep = lambda new, old: _keep_placeholders(new, old, prunable_tree)  # noqa: E731
        f = loss_value(ctx)
        w = keep(ctx.params, e.w_prev)
        w_lam = jax.tree.map(lambda ww, ll: ww + ll / rho, w, e.lam)
        z = keep(_project(w_lam, ctx.counts, prunable_tree, structure), e.z)
        holds = (surrogate(f, w, z, e.lam, prunable_tree)
                 < surrogate(e.loss_prev, e.w_prev, e.z_prev, e.lam, prunable_tree)) | (e.k == 1)
        n_prev = distance(e.w_prev, e.z_prev, prunable_tree)
        n_new = distance(w, z, prunable_tree)
        ratio_ok = (n_prev > 0) & (n_new > 0)
        s_new = jnp.where(ratio_ok,
                          slr_alpha(e.k, M, r) * e.s * n_prev / jnp.where(ratio_ok, n_new, 1.0),
                          e.s)
        lam_new = jax.tree.map(lambda ll, ww, zz: ll + s_new * (ww - zz), e.lam, w, z)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(holds, x, y), a, b)  # noqa: E731
        return SlrState(
            z=z,
            lam=keep(pick(lam_new, e.lam), e.lam),
            w_prev=pick(w, e.w_prev),
            z_prev=pick(z, e.z_prev),
            loss_prev=jnp.where(holds, f, e.loss_prev),
            s=jnp.where(holds, s_new, e.s),
            k=e.k + holds.astype(jnp.int32),
            accepted=e.accepted + holds.astype(jnp.int32))

    def penalty(params, extra):
        return jax.tree.map(lambda w, z, ll: rho * (w - z) + ll, params, extra.z, extra.lam)

    return _phased(inner, sparsity=sparsity, distribution=distribution, filter_fn=filter_fn,
                   dense_steps=dense_steps, penalty_steps=penalty_steps,
                   update_every=update_every, init_extra=init_extra, start=start,
                   multiplier_update=multiplier_update, penalty=penalty, name="slr",
                   structure=structure)

