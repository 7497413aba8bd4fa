"""The optax transformation behind every sparsity method, built from a :class:`Rule`.

New methods are best written with :func:`sparsegnn_jax.sparse_method` (module ``custom``),
whose rules see one documented context; :class:`Rule` is the lower-level form the built-in
methods use (gradient edits, method-specific state).

Every method is the same optax transformation with a different *rule*: a rule decides the initial
masks, optionally edits the gradients (ADMM / SLR penalties) and, under ``lax.cond``, decides the
next masks. Rules see and return pytrees with the params' structure (masks as bool pytrees).
This module owns what is common to all of them:

* the state (:class:`SparsityState`) and the cheap run record (:class:`SparsityTrace`);
* the masked-update emission ``u' = where(old & new, u, -p)``: ``optax.apply_updates`` then gives
  exactly sparse params, the inner update is kept bit for bit where a weight stays active, and
  weights that are dropped *or* grown end the step at exactly 0;
* the reset of the inner optimizer's parameter-shaped state (momentum, Adam moments, ...) at grown
  positions, with ``optax.tree_map_params`` - no list of optimizer types;
* :func:`get_masks` / :func:`get_trace`, which find the state inside nested optax states.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsegnn_jax.sparsity import checks
from sparsegnn_jax.sparsity import structure as structure_lib
from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity.trees import as_pure, leaf_paths, prunable
from sparsegnn_jax.sparsity.validation import raise_first

__all__ = [
    "SparsityTrace",
    "SparsityState",
    "Rule",
    "StepContext",
    "sparse_transform",
    "find_state",
    "get_masks",
    "get_trace",
    "make_key",
    "init_dense",
    "init_masks_by",
    "keep_counts_fn",
    "KeepCounts",
]


class SparsityTrace(NamedTuple):
    """What a run did, recorded at the cost of one reduction per prunable layer and step.

    Attributes:
      steps: int32 scalar, number of ``update`` calls.
      density_steps: ``{path: float32}``, per prunable layer the sum over steps of the layer's
        density during the step (the mask the step's gradient was computed with; dense phases
        count as 1).
      mask_updates: int32 scalar, number of steps that used a dense gradient to regrow (RigL).
      violations: int32 scalar, number of ``update`` calls (after the first) that received
        params not zero outside the current masks: something after the method in an
        ``optax.chain`` changed its update (see :func:`sparse_transform`). Each also raises.
    """

    steps: jax.Array
    density_steps: dict
    mask_updates: jax.Array
    violations: jax.Array = np.zeros((), np.int32)  # NumPy: no device work at import


class SparsityState(NamedTuple):
    """State of every sparsity method.

    Attributes:
      count: int32 scalar, number of ``update`` calls so far (the step index of the next call).
      masks: bool pytree with the params' structure (all True for non-prunable leaves).
      keep_counts: int32 pytree with the params' structure: the target number of active weights
        per leaf (the final one for methods that prune progressively; size for non-prunable).
      key: raw uint32 PRNG key (random regrowth).
      inner_state: state of the wrapped optimizer.
      trace: :class:`SparsityTrace`.
      extra: method-specific state (e.g. :class:`AdmmState`), ``()`` when there is none.
    """

    count: jax.Array
    masks: Any
    keep_counts: Any
    key: jax.Array
    inner_state: Any
    trace: SparsityTrace
    extra: Any


def _no_extra(params, counts, prunable_tree):
    return ()


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one method chooses its masks.

    Every tree a rule receives or returns has the params' structure: params and grads, bool
    masks, int32 keep counts, and ``prunable`` (Python bools, :func:`trees.prunable`).

    Attributes:
      init_masks: ``(key, params, counts, prunable) -> masks``.
      step: ``(ctx: StepContext) -> (masks, key, extra, used_dense_grad)`` or None for fixed
        masks. It is traced once and must choose between update and non-update steps with
        ``lax.cond``.
      init_extra: ``(params, counts, prunable) -> extra state`` (``()`` by default).
      grads: ``(ctx) -> (grads, extra)``: edits gradients before masking (penalties).
      may_grow: whether the rule can activate weights (then the inner state is reset there).
      masked: False for the dense method: the inner update passes through untouched (no select
        around it), so that XLA compiles exactly the inner optimizer's arithmetic.
      own_counts: the rule's masks may keep more weights than the keep counts (a dense phase,
        a gradual schedule); otherwise a mask with more is an error, at ``init`` and at every
        ``update``.
      starts_dense: the initial masks are all True by design (the rule chooses them at its
        first update, e.g. from the first batch's gradients): counts are checked from the
        first ``update`` on.
    """

    init_masks: Callable
    step: Optional[Callable] = None
    init_extra: Callable = _no_extra
    grads: Optional[Callable] = None
    may_grow: bool = False
    masked: bool = True
    own_counts: bool = False
    starts_dense: bool = False


class StepContext(NamedTuple):
    """Everything a rule sees during ``update``; trees have the params' structure.

    Attributes:
      step: int32 scalar, the step index of this ``update`` call.
      grads: the incoming gradients.
      params: the params passed to ``update``.
      masks: the current bool masks.
      counts: the int32 keep counts.
      prunable: Python bools, which leaves the method may sparsify.
      key: raw PRNG key.
      extra: the method's extra state.
      extra_args: the extra keyword arguments of ``update`` (e.g. ``value``).
    """

    step: jax.Array
    grads: Any
    params: Any
    masks: Any
    counts: Any
    prunable: Any
    key: jax.Array
    extra: Any
    extra_args: dict


def make_key(seed: int = 0, key=None) -> jax.Array:
    """A raw uint32 key from ``key`` (typed or raw) or ``seed``; raw keys survive every container."""
    if key is None:
        return jax.random.PRNGKey(seed)
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def init_dense(key, params, counts, prunable_tree):
    """``Rule.init_masks`` of the methods that start dense: all True."""
    return masks_lib.all_true(params)


def init_masks_by(scores, structure=None) -> Callable:
    """A ``Rule.init_masks``: per prunable leaf the top keep-count of ``scores``.

    Args:
      scores: ``"random"`` or ``"magnitude"`` (see :func:`masks.initial_masks`), or a callable
        ``scores(key, params) -> score pytree`` with the params' structure (e.g. random scores
        for the weights and a structural score for an edge leaf), called at ``init`` with the
        method's key.
      structure: None or an N:M structure (:func:`masks.select_top`).

    Raises:
      ValueError: for another ``scores``.
    """
    if callable(scores):
        def init_from_callable(key, params, counts, prunable_tree):
            return masks_lib.select_top(scores(key, params), counts, prunable_tree, structure)

        return init_from_callable
    if scores not in masks_lib.SCORES:
        raise ValueError(f"scores must be 'random', 'magnitude' or a callable, got {scores!r}")

    def init_masks(key, params, counts, prunable_tree):
        return masks_lib.initial_masks(key, params, counts, prunable_tree, scores, structure)

    return init_masks


@dataclasses.dataclass(frozen=True)
class KeepCounts:
    """A ``counts_fn`` for :func:`sparse_transform`: ``distributions.keep_counts`` as int32.

    Calling it maps ``params`` to int32 keep counts (a pytree with the params' structure); the
    sparsity may be traced. With an N:M ``structure`` the weight matrices' counts are the
    structure's (:func:`structure.keep_counts`). When the sparsity is a JAX array (an ``optax.inject_hyperparams``
    hyperparameter), every ``update`` recomputes the counts and fails loudly when they differ
    from the state's: keep counts are fixed at ``init``.
    """

    sparsity: Any
    distribution: Any
    filter_fn: Optional[Callable]
    structure: Any = None

    @property
    def may_change(self) -> bool:
        """Whether the sparsity is an array, which ``inject_hyperparams`` may change."""
        return isinstance(self.sparsity, jax.Array)

    def __call__(self, params):
        counts = structure_lib.keep_counts(params, self.sparsity, self.distribution,
                                           self.filter_fn, self.structure)
        return jax.tree.map(lambda c: jnp.asarray(c, jnp.int32), counts)


def keep_counts_fn(sparsity, distribution, filter_fn, structure=None) -> KeepCounts:
    """The :class:`KeepCounts` of ``sparsity`` under ``distribution`` and ``filter_fn`` (and
    an N:M ``structure``, or None)."""
    return KeepCounts(sparsity, distribution, filter_fn, structure)


# ---------------------------------------------------------------------------------------------
# Finding the state.


def find_state(state) -> SparsityState:
    """The first (outermost) :class:`SparsityState` inside a possibly nested optax state.

    Args:
      state: the method's state, or any optax state containing it (``optax.chain``,
        ``optax.MultiSteps``, ``optax.inject_hyperparams``, an ``nnx.Optimizer``'s ``opt_state``).

    Returns:
      The state, with NNX Variable boxes removed.

    Raises:
      ValueError: when there is none.
    """
    return find_state_of(
        state, SparsityState, f"no sparsity method state found in the optimizer state of type "
        f"{type(state).__name__}; was the optimizer built with a sparsity method?")


def find_state_of(state, state_type: type, missing: str):
    """The first (outermost) ``state_type`` inside a possibly nested optax state, NNX Variable
    boxes removed.

    Raises:
      ValueError: ``missing``, when there is none.
    """
    found = optax.tree_utils.tree_get_all_with_path(
        state, state_type.__name__, filtering=lambda path, value: isinstance(value, state_type))
    if not found:
        raise ValueError(missing)
    return as_pure(found[0][1])


def get_masks(state):
    """The current masks (a bool pytree with the params' structure) of a sparsity method.

    Args:
      state: as in :func:`find_state`.

    Returns:
      The masks pytree.
    """
    return find_state(state).masks


def get_trace(state, every_k: Optional[int] = None) -> SparsityTrace:
    """The :class:`SparsityTrace` of a sparsity method: what the run computed.

    Inside ``optax.MultiSteps(tx, every_k_schedule=k)`` the method's ``update`` runs once per
    ``k`` mini-batches, each of which had its forward and backward pass at the masks then in
    force; with ``every_k=k`` the returned trace counts those mini-batches (steps and
    per-layer density sums times ``k``, plus the mini-batches accumulated since the last
    update at the current masks; each RigL mask update needed the dense gradient of all ``k``).

    Args:
      state: as in :func:`find_state`.
      every_k: ``k`` of the enclosing ``optax.MultiSteps`` (a positive int); required when the
        method is inside one, rejected otherwise.

    Returns:
      The trace (counting mini-batches inside ``optax.MultiSteps``).

    Raises:
      ValueError: when the method is inside ``optax.MultiSteps`` and ``every_k`` is missing or
        not a positive int, or when ``every_k`` is given without ``optax.MultiSteps``.
    """
    found = find_state(state)
    multi = _enclosing_multi_steps(state)
    if multi is None:
        if every_k is not None:
            raise ValueError("get_trace: `every_k` is given but the sparsity method is not "
                             "inside optax.MultiSteps")
        return found.trace
    if every_k is None:
        raise ValueError("get_trace: the sparsity method runs inside optax.MultiSteps, so its "
                         "trace holds one step per k mini-batches; pass get_trace(state, "
                         "every_k=k) to count every mini-batch that was computed")
    if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"get_trace: `every_k` must be a positive int (MultiSteps' constant "
                         f"every_k_schedule), got {every_k!r}")
    trace, partial = found.trace, jnp.asarray(as_pure(multi.mini_step), jnp.int32)
    current = _densities_by_path(found.masks, trace.density_steps)
    return SparsityTrace(
        steps=trace.steps * every_k + partial,
        density_steps={p: v * every_k + partial * current[p]
                       for p, v in trace.density_steps.items()},
        mask_updates=trace.mask_updates * every_k,
        violations=trace.violations)


def _enclosing_multi_steps(state):
    """The ``optax.MultiStepsState`` whose inner state holds the sparsity state, or None."""
    found = optax.tree_utils.tree_get_all_with_path(
        state, optax.MultiStepsState.__name__,
        filtering=lambda path, value: isinstance(value, optax.MultiStepsState))
    for _, multi in found:
        if optax.tree_utils.tree_get_all_with_path(
                multi.inner_opt_state, SparsityState.__name__,
                filtering=lambda path, value: isinstance(value, SparsityState)):
            return multi
    return None


def _densities_by_path(masks, recorded: dict) -> dict:
    """``{path: density}`` of the mask leaves ``recorded`` names; leading axes beyond those of
    the recorded values (a vmapped run's batch axes) are kept."""
    out = {}
    for name, m in zip(leaf_paths(masks), jax.tree.leaves(masks)):
        if name in recorded:
            axes = tuple(range(jnp.ndim(recorded[name]), m.ndim))
            out[name] = jnp.mean(m, axis=axes, dtype=jnp.float32)
    return out


# ---------------------------------------------------------------------------------------------
# The transformation.


def _densities(masks, flags, paths) -> dict:
    return {path: jnp.sum(m, dtype=jnp.int32).astype(jnp.float32) / m.size
            for m, p, path in zip(jax.tree.leaves(masks), flags, paths) if p}


def _init_trace(flags, paths) -> SparsityTrace:
    zero = jnp.zeros((), jnp.float32)
    return SparsityTrace(jnp.zeros((), jnp.int32),
                         {path: zero for path, p in zip(paths, flags) if p},
                         jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _zero_where(x, where):
    return jnp.where(where, jnp.zeros_like(x), x)


def sparse_transform(inner: optax.GradientTransformation, rule: Rule, *, counts_fn: Callable,
                     filter_fn=None, key: jax.Array,
                     name: str = "sparsity") -> optax.GradientTransformationExtraArgs:
    """Builds a sparsity method from a :class:`Rule`.

    Args:
      inner: the optimizer whose updates are masked. When the rule may grow weights, its
        ``init`` must accept ``optax.tree_map_params``' params placeholder (optax's optimizers
        do; ``optax.masked`` with a callable mask does not).
      rule: the method's mask rule.
      counts_fn: ``params -> int32 keep counts`` (a pytree with the params' structure), called
        in ``init``, where the sparsity may be traced (``jax.vmap`` of ``init`` over sparsities);
        a :class:`KeepCounts` whose ``may_change`` is also checked at every ``update``.
      filter_fn: which leaves are prunable (``trees.default_filter`` when None).
      key: raw PRNG key stored in the state.
      name: method name used in error messages.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Where a method may stand: its update must reach ``optax.apply_updates`` unchanged, because
    it sets pruned weights to 0 by emitting ``-p`` there. So it goes last in an
    ``optax.chain`` (anything before it - clipping, scaling, another optimizer - is fine, as is
    making the chain its ``inner`` optimizer), or inside ``optax.MultiSteps`` /
    ``optax.inject_hyperparams`` / ``nnx.Optimizer``, which pass the update through. Followed
    by another transformation in an ``optax.chain`` it raises from ``init`` and ``update``, also
    while ``jit`` traces them. From the second update on, ``update`` also checks (one reduction
    per prunable layer) that the params it receives are zero outside the masks (a rescale
    outside any chain), counts a failure in ``trace.violations`` and raises naming the layers;
    so do masks keeping more weights than the keep counts, unless the rule has ``own_counts``
    (see :mod:`checks` for how these value checks raise under ``jit``).
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        checks.check_last_in_chain(name)
        params = as_pure(params)
        prunable_tree = prunable(params, filter_fn)
        counts = counts_fn(params)
        masks = rule.init_masks(key, params, counts, prunable_tree)
        masks = jax.tree.map(lambda m, x, p: jnp.asarray(m, bool) if p else jnp.ones(x.shape, bool),
                             masks, params, prunable_tree)
        if not (rule.own_counts or rule.starts_dense):
            raise_first(checks.count_checks(name, masks, counts, jax.tree.leaves(prunable_tree),
                                            leaf_paths(params), "returned at init"))
        return SparsityState(
            count=jnp.zeros((), jnp.int32),
            masks=masks,
            keep_counts=counts,
            key=key,
            inner_state=inner.init(params),
            trace=_init_trace(jax.tree.leaves(prunable_tree), leaf_paths(params)),
            extra=rule.init_extra(params, counts, prunable_tree),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{name}: update() needs the current params "
                             f"(tx.update(grads, state, params)) to mask and prune them")
        checks.check_last_in_chain(name)
        # Updates go back out with the structure they came in (e.g. an nnx.State of Params).
        out_treedef = jax.tree.structure(updates)
        updates = as_pure(updates)
        params = as_pure(params)
        treedef = jax.tree.structure(params)

        def like_params(tree):
            return jax.tree.unflatten(treedef, treedef.flatten_up_to(tree))

        old = like_params(state.masks)
        prunable_tree = prunable(params, filter_fn)
        # The value checks of this step, raised together in one host callback under jit.
        step_checks = []
        if getattr(counts_fn, "may_change", False):
            changed = checks.counts_changed(counts_fn(params), like_params(state.keep_counts))
            step_checks.append((changed, changed, checks.counts_changed_message(name)))
        ctx = StepContext(state.count, like_params(updates), params, old,
                          like_params(state.keep_counts), prunable_tree, state.key, state.extra,
                          extra_args)

        extra = state.extra
        if rule.grads is not None:
            grads, extra = rule.grads(ctx)
            ctx = ctx._replace(grads=grads, extra=extra)
        if rule.step is not None:
            new, key, extra, used_dense_grad = rule.step(ctx)
        else:
            new, key, used_dense_grad = old, state.key, jnp.zeros((), bool)

        if not rule.masked:
            inner_updates, inner_state = inner.update(updates, state.inner_state, params,
                                                      **extra_args)
        else:
            # The step's gradient belongs to the current (old) mask: pruned weights learn nothing.
            masked = jax.tree.map(lambda m, g: jnp.where(m, g, jnp.zeros_like(g)), old, ctx.grads)
            inner_updates, inner_state = inner.update(masked, state.inner_state, params,
                                                      **extra_args)

        if rule.may_grow:
            grown = jax.tree.map(lambda n, o: n & ~o, new, old)
            any_grown = jnp.any(jnp.stack([jnp.any(g) for g in jax.tree.leaves(grown)]))
            inner_state = jax.lax.cond(
                any_grown,
                lambda s: optax.tree_map_params(inner, _zero_where, s, grown),
                lambda s: s, inner_state)

        if rule.masked:
            # Dropped and grown weights both end at exactly 0; kept ones get the inner update.
            out = jax.tree.map(lambda o, n, u, p: jnp.where(o & n, u, (-p).astype(u.dtype)),
                               old, new, like_params(inner_updates), params)
        else:
            out = inner_updates

        flags = jax.tree.leaves(prunable_tree)
        violated = jnp.zeros((), bool)
        if rule.masked and any(flags):
            # After the first update the params must be exactly masked: they are the result of
            # this method's own previous update, unless something rescaled it.
            outside = checks.outside_masks(params, old, flags) & (state.count > 0)
            violated = jnp.any(outside)
            prunable_paths = [p for p, f in zip(leaf_paths(params), flags) if f]
            step_checks.append((outside, outside,
                                checks.dense_params_message(name, prunable_paths)))
        if rule.step is not None and not rule.own_counts:
            step_checks += checks.count_checks(name, new, ctx.counts, flags, leaf_paths(params),
                                               "chosen at this update")
        raise_first(step_checks)
        dens = _densities(old, flags, leaf_paths(params))
        trace = SparsityTrace(
            steps=state.trace.steps + 1,
            density_steps={k: state.trace.density_steps[k] + dens[k] for k in dens},
            mask_updates=state.trace.mask_updates + used_dense_grad.astype(jnp.int32),
            violations=state.trace.violations + violated.astype(jnp.int32))
        new_state = SparsityState(
            count=state.count + 1,
            masks=new,
            keep_counts=state.keep_counts,
            key=key,
            inner_state=inner_state,
            trace=trace,
            extra=extra)
        return jax.tree.unflatten(out_treedef, jax.tree.leaves(out)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
