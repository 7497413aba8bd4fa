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

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import _core


class AdmmState(NamedTuple):
    """Extra state of :func:`admm` (leaf lists in the params' leaf order).

    Attributes:
      z: the sparse projections Z.
      u: the scaled multipliers U.
    """

    z: list
    u: list


class SlrState(NamedTuple):
    """Extra state of :func:`slr` (leaf lists in the params' leaf order).

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

    z: list
    lam: list
    w_prev: list
    z_prev: list
    loss_prev: jax.Array
    s: jax.Array
    k: jax.Array
    accepted: jax.Array


def _project(leaves, counts, prunable) -> list:
    """Per-layer magnitude projection: keep the ``counts`` largest |x|, zero the rest."""
    masks = _core.magnitude(leaves, counts, prunable)
    return [jnp.where(m, x, jnp.zeros_like(x)) for m, x in zip(masks, leaves)]


def _zeros(leaves, prunable) -> list:
    # Non-prunable leaves carry a scalar placeholder: no memory is spent on them.
    return [jnp.zeros_like(x) if p else jnp.zeros((), x.dtype) for x, p in zip(leaves, prunable)]


def _validate(sparsity, distribution, rho, dense_steps, penalty_steps, update_every) -> None:
    _core.check_sparsity(sparsity)
    _core.check_distribution(distribution)
    if _core._is_concrete_number(rho) and not float(rho) > 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    _core.check_step(dense_steps, "dense_steps")
    _core.check_step(penalty_steps, "penalty_steps")
    _core.check_positive_int(update_every, "update_every")


def _phased(inner, *, sparsity, distribution, filter_fn, dense_steps, penalty_steps,
            update_every, init_extra, start, multiplier_update, penalty, name):
    """The four-phase method shared by ADMM and SLR (see the module docstring)."""
    prune_step = dense_steps + penalty_steps

    def grads(ctx: _core.StepContext):
        t = ctx.step
        in_penalty = (t >= dense_steps) & (t < prune_step)
        extra = jax.lax.cond(
            in_penalty & (t == dense_steps), lambda: start(ctx),
            lambda: jax.lax.cond(
                in_penalty & ((t - dense_steps) % update_every == 0),
                lambda: multiplier_update(ctx), lambda: ctx.extra))
        pen = penalty(ctx.params, extra, ctx.prunable)
        new = [jnp.where(in_penalty, g + d, g) if p else g
               for g, d, p in zip(ctx.grads, pen, ctx.prunable)]
        return new, extra

    def step(ctx: _core.StepContext):
        new = jax.lax.cond(ctx.step == prune_step,
                           lambda: _core.magnitude(ctx.params, ctx.counts, ctx.prunable),
                           lambda: list(ctx.masks))
        return new, ctx.key, ctx.extra, jnp.zeros((), bool)

    rule = _core.Rule(init_masks=_core.init_dense, step=step, grads=grads, init_extra=init_extra)
    return _core.sparse_transform(
        inner, rule,
        counts_fn=lambda params: _core.keep_counts(params, sparsity, distribution, filter_fn),
        filter_fn=filter_fn, key=_core.make_key(0), name=name)


def admm(inner: optax.GradientTransformation, sparsity=0.9, rho=0.01, dense_steps: int = 0,
         penalty_steps: int = 1000, update_every: int = 100, distribution="uniform",
         filter_fn: Optional[Callable] = None) -> optax.GradientTransformationExtraArgs:
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

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``extra`` state is :class:`AdmmState`.

    References:
      Zhang et al., "A Systematic DNN Weight Pruning Framework using Alternating Direction Method
      of Multipliers", ECCV 2018.
    """
    _validate(sparsity, distribution, rho, dense_steps, penalty_steps, update_every)

    def init_extra(params, leaves, counts, prunable):
        return AdmmState(z=_zeros(leaves, prunable), u=_zeros(leaves, prunable))

    def start(ctx):
        z = _project(ctx.params, ctx.counts, ctx.prunable)
        return AdmmState(z=_keep_placeholders(z, ctx.extra.z, ctx.prunable), u=ctx.extra.u)

    def multiplier_update(ctx):
        w_u = [w + u for w, u in zip(ctx.params, ctx.extra.u)]
        z = _project(w_u, ctx.counts, ctx.prunable)
        u = [u + w - zz for u, w, zz in zip(ctx.extra.u, ctx.params, z)]
        return AdmmState(z=_keep_placeholders(z, ctx.extra.z, ctx.prunable),
                         u=_keep_placeholders(u, ctx.extra.u, ctx.prunable))

    def penalty(params, extra, prunable):
        return [rho * (w - z + u) for w, z, u in zip(params, extra.z, extra.u)]

    return _phased(inner, sparsity=sparsity, distribution=distribution, filter_fn=filter_fn,
                   dense_steps=dense_steps, penalty_steps=penalty_steps,
                   update_every=update_every, init_extra=init_extra, start=start,
                   multiplier_update=multiplier_update, penalty=penalty, name="admm")


def slr_alpha(k, M=200.0, r=0.1) -> jax.Array:
    """SLR's step-size factor ``alpha_k = 1 - 1 / (M k^(1 - 1/k^r))``."""
    k = jnp.asarray(k, jnp.float32)
    return 1.0 - 1.0 / (M * k ** (1.0 - 1.0 / k ** r))


def slr(inner: optax.GradientTransformation, sparsity=0.9, rho=0.01, dense_steps: int = 0,
        penalty_steps: int = 1000, update_every: int = 100, M: float = 200.0, r: float = 0.1,
        initial_step_size=None, distribution="uniform",
        filter_fn: Optional[Callable] = None) -> optax.GradientTransformationExtraArgs:
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

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``extra`` state is :class:`SlrState`.

    References:
      Gurevin et al., "Enabling Retrain-free Deep Neural Network Pruning using Surrogate
      Lagrangian Relaxation", IJCAI 2021.
    """
    _validate(sparsity, distribution, rho, dense_steps, penalty_steps, update_every)
    if _core._is_concrete_number(M) and not float(M) > 1:
        raise ValueError(f"M must be > 1, got {M!r}")
    if _core._is_concrete_number(r) and not float(r) > 0:
        raise ValueError(f"r must be > 0, got {r!r}")
    s0 = rho if initial_step_size is None else initial_step_size
    if _core._is_concrete_number(s0) and not float(s0) > 0:
        raise ValueError(f"initial_step_size must be > 0, got {s0!r}")

    def init_extra(params, leaves, counts, prunable):
        zeros = lambda: _zeros(leaves, prunable)  # noqa: E731
        return SlrState(z=zeros(), lam=zeros(), w_prev=zeros(), z_prev=zeros(),
                        loss_prev=jnp.zeros((), jnp.float32),
                        s=jnp.asarray(s0, jnp.float32), k=jnp.ones((), jnp.int32),
                        accepted=jnp.zeros((), jnp.int32))

    def loss_value(ctx):
        return jnp.asarray(ctx.extra_args.get("value", 0.0), jnp.float32)

    def start(ctx):
        e = ctx.extra
        keep = lambda new, old: _keep_placeholders(new, old, ctx.prunable)  # noqa: E731
        z = keep(_project(ctx.params, ctx.counts, ctx.prunable), e.z)
        w = keep(list(ctx.params), e.w_prev)
        return e._replace(z=z, w_prev=w, z_prev=z, loss_prev=loss_value(ctx))

    def surrogate(f, w, z, lam, prunable):
        return f + 0.5 * rho * _core.sq_norm(
            [ww - zz + ll / rho for ww, zz, ll in zip(w, z, lam)], prunable)

    def multiplier_update(ctx):
        e, prunable = ctx.extra, ctx.prunable
        keep = lambda new, old: _keep_placeholders(new, old, prunable)  # noqa: E731
        f = loss_value(ctx)
        w = keep(list(ctx.params), e.w_prev)
        z = keep(_project([ww + ll / rho for ww, ll in zip(w, e.lam)], ctx.counts, prunable),
                 e.z)
        holds = (surrogate(f, w, z, e.lam, prunable)
                 < surrogate(e.loss_prev, e.w_prev, e.z_prev, e.lam, prunable)) | (e.k == 1)
        n_prev = jnp.sqrt(_core.sq_norm([a - b for a, b in zip(e.w_prev, e.z_prev)], prunable))
        n_new = jnp.sqrt(_core.sq_norm([a - b for a, b in zip(w, z)], prunable))
        ratio_ok = (n_prev > 0) & (n_new > 0)
        s_new = jnp.where(ratio_ok,
                          slr_alpha(e.k, M, r) * e.s * n_prev / jnp.where(ratio_ok, n_new, 1.0),
                          e.s)
        lam_new = [ll + s_new * (ww - zz) for ll, ww, zz in zip(e.lam, w, z)]
        pick = lambda a, b: [jnp.where(holds, x, y) for x, y in zip(a, b)]  # noqa: E731
        return SlrState(
            z=z,
            lam=keep(pick(lam_new, e.lam), e.lam),
            w_prev=pick(w, e.w_prev),
            z_prev=pick(z, e.z_prev),
            loss_prev=jnp.where(holds, f, e.loss_prev),
            s=jnp.where(holds, s_new, e.s),
            k=e.k + holds.astype(jnp.int32),
            accepted=e.accepted + holds.astype(jnp.int32))

    def penalty(params, extra, prunable):
        return [rho * (w - z) + ll for w, z, ll in zip(params, extra.z, extra.lam)]

    return _phased(inner, sparsity=sparsity, distribution=distribution, filter_fn=filter_fn,
                   dense_steps=dense_steps, penalty_steps=penalty_steps,
                   update_every=update_every, init_extra=init_extra, start=start,
                   multiplier_update=multiplier_update, penalty=penalty, name="slr")


def _keep_placeholders(new, old, prunable) -> list:
    """``new`` on prunable leaves, ``old`` (the scalar placeholder) elsewhere: cond-stable shapes."""
    return [n if p else o for n, o, p in zip(new, old, prunable)]
