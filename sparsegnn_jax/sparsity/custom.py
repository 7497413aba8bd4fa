"""The public way to write a new sparsity method: :func:`sparse_method`.

A method is two functions on pytrees: how to choose the initial masks, and (optionally) how to
choose the next masks at a mask-update step. :func:`sparse_method` turns them into an optax
transformation wrapping an inner optimizer, like every built-in method: ``optax.apply_updates``
gives exactly masked params, :func:`~sparsegnn_jax.sparsity.transform.get_masks`,
:func:`~sparsegnn_jax.sparsity.transform.get_trace` and ``flops.training_from_trace`` work on it,
and it composes with ``optax.chain`` (as its last element) / ``MultiSteps`` /
``inject_hyperparams`` and ``nnx.Optimizer`` as the built-in methods do (see
:func:`~sparsegnn_jax.sparsity.transform.sparse_transform` for where a method may stand).

Example, SNIP (Lee et al. 2019): masks from the first batch's gradients, then static::

    def snip_masks(ctx):
        scores = jax.tree.map(lambda g, w: jnp.abs(g * w), ctx.grads, ctx.params)
        return sg.masks.select_top(scores, ctx.keep_counts, ctx.prunable)

    tx = sg.sparse_method(optax.adam(1e-2), sparsity=0.9, init_masks=snip_masks,
                          init_from_grads=True)

(``sg.snip`` is this method, registered as ``--method=snip``.)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import distributions as distributions_lib
from sparsegnn_jax.sparsity import structure as structure_lib
from sparsegnn_jax.sparsity import transform
from sparsegnn_jax.sparsity.trees import align_to
from sparsegnn_jax.sparsity.validation import check_sparsity, check_step

__all__ = ["MaskContext", "sparse_method"]


class MaskContext(NamedTuple):
    """What a user rule sees. Every tree has the params' structure, NNX boxes removed.

    Attributes:
      step: int32 scalar, the index of the ``update`` call (0 in ``init_masks``).
      params: the params (at ``init`` the initial params; in ``update`` the params passed to it).
      grads: the incoming gradients, dense: pruned weights are 0 but their gradient is not.
        In ``init_masks`` they are zeros, unless the method is built with
        ``init_from_grads=True``: then they are the first ``update``'s gradients (the first
        batch's, at the dense initial params).
      masks: the current bool masks (all True at ``init``).
      keep_counts: int32 scalars, the number of weights each leaf keeps (its size when not
        prunable).
      prunable: Python bools, which leaves the method may sparsify (from ``filter_fn``).
      key: a typed PRNG key, ``jax.random.fold_in(method_key, step)``: a fresh key per step.
      extra_args: the extra keyword arguments of ``update`` (e.g. ``value``); ``{}`` at init.
      structure: the method's N:M structure (:class:`~sparsegnn_jax.sparsity.structure.NM`)
        or None; ``sg.masks.select_top(scores, ctx.keep_counts, ctx.prunable,
        ctx.structure)`` honours it.
    """

    step: jax.Array
    params: Any
    grads: Any
    masks: Any
    keep_counts: Any
    prunable: Any
    key: jax.Array
    extra_args: dict
    structure: Any = None


def _typed(raw_key, step) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(raw_key), step)


def _bool_masks(name: str, masks, params):
    """``masks`` as bool arrays with the params' structure (matched by leaf path)."""
    try:
        masks = align_to(masks, params, "masks")
    except ValueError as err:
        raise ValueError(f"{name}: the rule returned {err}") from None
    return jax.tree.map(lambda m: jnp.asarray(m, bool), masks)


def sparse_method(inner: optax.GradientTransformation, *, init_masks: Callable,
                  update_masks: Optional[Callable] = None, sparsity=0.9,
                  distribution="uniform", update_every: int = 1, end_step: Optional[int] = None,
                  dense_gradient: bool = False, filter_fn: Optional[Callable] = None,
                  seed: int = 0, key=None, init_from_grads: bool = False,
                  own_counts: bool = False, structure=None,
                  name: str = "sparse_method") -> optax.GradientTransformationExtraArgs:
    """A sparsity method from two rules on pytrees.

    Contract of the rules (both are traced once, under ``jax.jit`` when the update is):

    * ``init_masks(ctx: MaskContext) -> masks``, called in ``init`` (with
      ``init_from_grads=True``: in the first ``update``, where ``ctx.grads`` are that step's
      gradients). ``masks`` is a pytree of bool arrays with the params' structure (an
      ``nnx.State`` or its pure dict form: leaves are matched by layer path). Entries of
      non-prunable leaves are ignored (they stay all True). The rule keeps at most
      ``ctx.keep_counts`` weights per prunable leaf
      (``sg.masks.select_top(scores, ctx.keep_counts, ctx.prunable)`` keeps exactly that
      many); more raises (naming the layer, kept and allowed) unless ``own_counts``. FLOPs are
      counted from the masks it actually returns.
    * ``update_masks(ctx: MaskContext) -> masks``, called at the mask-update steps: the
      ``update`` calls with step index ``t > 0``, ``t % update_every == 0`` and ``t <= end_step``
      (every such step when ``end_step`` is None), under ``lax.cond``. ``ctx.masks`` are the
      masks the step's gradient was computed with. Weights that become active start at 0 and the
      inner optimizer's parameter-shaped state (momentum, Adam moments) is reset there; weights
      that become inactive are set to 0. ``sg.drop_grow`` is RigL's and SET's update.

    Randomness comes from ``ctx.key``, a typed key different at every step; the rules need not
    split or return it.

    Args:
      inner: the optimizer whose updates are masked.
      init_masks: the initial-mask rule (see above).
      update_masks: the mask-update rule, or None for masks fixed at init.
      sparsity: target sparsity in [0, 1) of the keep counts the rules see.
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a
        ``{layer-path: sparsity}`` dict, for the keep counts.
      update_every: steps between mask updates (a positive integer).
      end_step: last step that may change the masks; None = the whole run.
      dense_gradient: whether ``update_masks`` reads the gradient of inactive weights (as RigL
        does); each update step is then recorded in the trace's ``mask_updates`` and counted by
        ``flops.training_from_trace`` with the dense weight gradient.
      filter_fn: which leaves are prunable (``masks.default_filter`` when None).
      seed: seed of the method's key, used when ``key`` is None.
      key: a PRNG key, typed (``jax.random.key``) or raw (``jax.random.PRNGKey``).
      init_from_grads: choose the initial masks from gradients: ``init`` leaves the masks all
        True and ``init_masks`` runs in the first ``update`` (step 0) with that step's dense
        gradients in ``ctx.grads``; that step's update is masked by the chosen masks, as a
        one-shot prune at step 0 (its forward and backward pass were dense, and the trace
        counts them so). Inside ``optax.MultiSteps`` the gradients are the mean over the first
        ``k`` mini-batches.
      own_counts: the rules manage their own counts (e.g. a gradual schedule or a dense
        phase): masks keeping more than ``ctx.keep_counts`` are then not an error.
      structure: None, or an N:M structure (``sg.structure.NM(2, 4)`` or ``"nm:2:4"``;
        ``sparsity`` must be ``1 - n/m``): the weight matrices' keep counts are the
        structure's and the rules see it as ``ctx.structure`` (they must honour it:
        ``sg.masks.select_top(..., ctx.structure)``, ``sg.drop_grow(..., structure=...)``).
      name: the method's name in error messages.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
      ValueError: for an invalid sparsity, distribution, ``update_every`` or ``end_step``, and
        (at ``init`` / ``update``) for masks of another structure than the params or, unless
        ``own_counts``, masks keeping more weights than the keep counts (a
        :class:`~sparsegnn_jax.sparsity.validation.MethodError`; see
        :func:`~sparsegnn_jax.sparsity.validation.method_errors` under ``jit``).
    """
    check_sparsity(sparsity)
    distributions_lib.check_distribution(distribution)
    check_step(update_every, "update_every", positive=True)
    check_step(end_step, "end_step", allow_none=True)
    structure = structure_lib.check_structure(structure, sparsity, distribution, name)

    def rule_init(raw_key, params, counts, prunable_tree):
        ctx = MaskContext(jnp.zeros((), jnp.int32), params,
                          jax.tree.map(jnp.zeros_like, params),
                          jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), params), counts,
                          prunable_tree, _typed(raw_key, 0), {}, structure)
        return _bool_masks(name, init_masks(ctx), params)

    def is_update(t):
        due = (t > 0) & (t % update_every == 0)
        return due if end_step is None else due & (t <= end_step)

    def call(user_rule, ctx: transform.StepContext):
        user = MaskContext(ctx.step, ctx.params, ctx.grads, ctx.masks, ctx.counts,
                           ctx.prunable, _typed(ctx.key, ctx.step), ctx.extra_args, structure)
        masks = _bool_masks(name, user_rule(user), ctx.params)
        return jax.tree.map(lambda m, p: m if p else jnp.ones_like(m), masks, ctx.prunable)

    def rule_step(ctx: transform.StepContext):
        new = ctx.masks
        if update_masks is not None:
            new = jax.lax.cond(is_update(ctx.step), lambda: call(update_masks, ctx),
                               lambda: ctx.masks)
        if init_from_grads:
            # Step 0 is never an update step (t > 0): the initial rule's turn.
            new = jax.lax.cond(ctx.step == 0, lambda: call(init_masks, ctx), lambda: new)
        used = is_update(ctx.step) if dense_gradient else jnp.zeros((), bool)
        return new, ctx.key, ctx.extra, used

    has_step = update_masks is not None or init_from_grads
    rule = transform.Rule(init_masks=transform.init_dense if init_from_grads else rule_init,
                          step=rule_step if has_step else None,
                          may_grow=update_masks is not None, own_counts=own_counts,
                          starts_dense=init_from_grads)
    return transform.sparse_transform(
        inner, rule,
        counts_fn=transform.keep_counts_fn(sparsity, distribution, filter_fn, structure),
        filter_fn=filter_fn, key=transform.make_key(seed, key), name=name)
