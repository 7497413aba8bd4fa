"""Shared machinery of the sparsity methods.

Every method is the same optax transformation with a different *rule*: a rule decides the initial
masks, optionally edits the gradients (ADMM / SLR penalties) and, under ``lax.cond``, decides the
next masks. This module owns what is common to all of them:

* the state (:class:`SparsityState`) and the cheap run record (:class:`SparsityTrace`);
* the masked-update emission ``u' = where(old & new, u, -p)``: ``optax.apply_updates`` then gives
  exactly sparse params, the inner update is kept bit for bit where a weight stays active, and
  weights that are dropped *or* grown end the step at exactly 0;
* the reset of the inner optimizer's parameter-shaped state (momentum, Adam moments, ...) at grown
  positions, found by matching the params' tree structure inside the inner state - no list of
  optimizer types;
* :func:`get_masks` / :func:`get_trace`, which find the state inside nested optax states.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsegnn_jax.sparsity import distributions as distributions_lib
from sparsegnn_jax.sparsity import masks as masks_lib

KNOWN_DISTRIBUTIONS = tuple(distributions_lib._ALIASES)


class SparsityTrace(NamedTuple):
    """What a run did, recorded at the cost of one reduction per prunable layer and step.

    Attributes:
      steps: int32 scalar, number of ``update`` calls.
      density_steps: ``{path: float32}``, per prunable layer the sum over steps of the layer's
        density during the step (the mask the step's gradient was computed with; dense phases
        count as 1).
      mask_updates: int32 scalar, number of steps that used a dense gradient to regrow (RigL).
    """

    steps: jax.Array
    density_steps: dict
    mask_updates: jax.Array


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


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one method chooses its masks. Leaves are handled as flat lists (params' leaf order).

    Attributes:
      init_masks: ``(key, leaves, counts, prunable) -> mask leaves``.
      step: ``(ctx) -> (mask leaves, key, extra, used_dense_grad)`` or None for fixed masks. It is
        traced once and must choose between update and non-update steps with ``lax.cond``.
      init_extra: ``(params, leaves, counts, prunable) -> extra state``.
      grads: ``(ctx) -> (grad leaves, extra)``: edits gradients before masking (penalties).
      may_grow: whether the rule can activate weights (then the inner state is reset there).
      masked: False for the dense method: the inner update passes through untouched (no select
        around it), so that XLA compiles exactly the inner optimizer's arithmetic.
    """

    init_masks: Callable
    step: Optional[Callable] = None
    init_extra: Callable = lambda params, leaves, counts, prunable: ()
    grads: Optional[Callable] = None
    may_grow: bool = False
    masked: bool = True


class StepContext(NamedTuple):
    """Everything a rule sees during ``update`` (flat leaf lists in the params' leaf order)."""

    step: jax.Array
    grads: list
    params: list
    masks: list
    counts: list
    prunable: list
    key: jax.Array
    extra: Any
    extra_args: dict


# ---------------------------------------------------------------------------------------------
# Argument validation.


def _is_concrete_number(x) -> bool:
    return isinstance(x, (numbers.Number, np.number)) and not isinstance(x, bool)


def check_sparsity(sparsity, name: str = "sparsity") -> None:
    """Raises ValueError unless a concrete ``sparsity`` lies in [0, 1); traced values pass."""
    if isinstance(sparsity, dict):
        for path, value in sparsity.items():
            check_sparsity(value, f"{name}[{path!r}]")
        return
    if _is_concrete_number(sparsity) and not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {sparsity!r}")


def check_distribution(distribution) -> None:
    """Raises ValueError for an unknown distribution name."""
    if isinstance(distribution, dict):
        for path, value in distribution.items():
            check_sparsity(value, f"distribution[{path!r}]")
        return
    if not isinstance(distribution, str) or distribution.lower() not in KNOWN_DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; known: "
                         f"{', '.join(KNOWN_DISTRIBUTIONS)} or a {{layer-path: sparsity}} dict")


def check_positive_int(value, name: str) -> None:
    """Raises ValueError unless ``value`` is an integer > 0."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_step(value, name: str, allow_none: bool = False) -> None:
    """Raises ValueError unless ``value`` is an integer step >= 0 (or None when allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0{' or None' if allow_none else ''}, "
                         f"got {value!r}")


def check_fraction(value, name: str) -> None:
    """Raises ValueError unless a concrete ``value`` lies in (0, 1]; schedules (callables) pass."""
    if callable(value):
        return
    if not _is_concrete_number(value) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] or a schedule step -> fraction, got {value!r}")


def as_schedule(value) -> Callable:
    """A constant or a schedule, as a schedule (like optax's learning rates)."""
    return value if callable(value) else (lambda step: value)


def make_key(seed: int = 0, key=None) -> jax.Array:
    """A raw uint32 key from ``key`` (typed or raw) or ``seed``; raw keys survive every container."""
    if key is None:
        return jax.random.PRNGKey(seed)
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


# ---------------------------------------------------------------------------------------------
# Pytree helpers.


as_pure = masks_lib.as_pure


def leaf_paths(tree) -> list:
    """Path strings of the leaves (``masks.path_str``), in leaf order."""
    return [masks_lib.path_str(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def prunable_leaves(params, filter_fn) -> list:
    """Python bools, in leaf order: which leaves the method may sparsify."""
    return [bool(b) for b in jax.tree.leaves(masks_lib.prunable(params, filter_fn))]


def _children(node):
    """The immediate children of a pytree node and the treedef to rebuild it (None for a leaf)."""
    children, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    if jax.tree_util.treedef_is_leaf(treedef) and len(children) == 1 and children[0] is node:
        return None, None
    return children, treedef


def reset_param_shaped(tree, params_treedef, shapes: list, where_leaves: list):
    """Zeros every params-shaped subtree of ``tree`` at the positions marked in ``where_leaves``.

    A subtree is params-shaped when its structure equals the params' structure and its leaves have
    the params' shapes (SGD momentum, Adam mu / nu, MultiSteps' accumulators, whatever container
    holds them: chain tuples, InjectHyperparamsState, MultiStepsState ...).

    Args:
      tree: an optimizer state.
      params_treedef: ``jax.tree.structure(params)``.
      shapes: the params' leaf shapes, in leaf order.
      where_leaves: bool arrays, in leaf order: positions to zero.

    Returns:
      ``tree`` with those positions zeroed, everything else untouched.
    """

    def is_param_shaped(node) -> bool:
        if jax.tree.structure(node) != params_treedef:
            return False
        return all(getattr(leaf, "shape", None) == tuple(shape)
                   for leaf, shape in zip(jax.tree.leaves(node), shapes))

    def visit(node):
        if is_param_shaped(node):
            leaves = jax.tree.leaves(node)
            new = [jnp.where(w, jnp.zeros_like(x), x) for x, w in zip(leaves, where_leaves)]
            return jax.tree.unflatten(params_treedef, new)
        children, treedef = _children(node)
        if children is None:
            return node
        return jax.tree.unflatten(treedef, [visit(c) for c in children])

    return visit(tree)


def find_state(state) -> SparsityState:
    """The first (outermost) :class:`SparsityState` inside a possibly nested optax state.

    Raises:
      ValueError: when there is none.
    """

    def visit(node):
        if isinstance(node, SparsityState):
            return node
        children, _ = _children(node)
        for child in children or ():
            found = visit(child)
            if found is not None:
                return found
        return None

    found = visit(state)
    if found is None:
        raise ValueError(f"no sparsity method state found in the optimizer state of type "
                         f"{type(state).__name__}; was the optimizer built with a sparsity method?")
    return as_pure(found)


def get_masks(state):
    """The current masks (a bool pytree with the params' structure) of a sparsity method.

    Args:
      state: the method's state, or any optax state containing it (``optax.chain``,
        ``optax.MultiSteps``, ``optax.inject_hyperparams``, an ``nnx.Optimizer``'s ``opt_state``).

    Returns:
      The masks pytree.
    """
    return find_state(state).masks


def get_trace(state) -> SparsityTrace:
    """The :class:`SparsityTrace` of a sparsity method (see :func:`get_masks` for ``state``)."""
    return find_state(state).trace


# ---------------------------------------------------------------------------------------------
# The transformation.


def _densities(mask_leaves, prunable, paths) -> dict:
    return {path: jnp.sum(m, dtype=jnp.int32).astype(jnp.float32) / m.size
            for m, p, path in zip(mask_leaves, prunable, paths) if p}


def _init_trace(mask_leaves, prunable, paths) -> SparsityTrace:
    zero = jnp.zeros((), jnp.float32)
    return SparsityTrace(jnp.zeros((), jnp.int32),
                         {path: zero for path, p in zip(paths, prunable) if p},
                         jnp.zeros((), jnp.int32))


def keep_counts(params, sparsity, distribution, filter_fn) -> list:
    """Per-leaf int32 keep counts (leaf order) from ``distributions.keep_counts``."""
    counts = distributions_lib.keep_counts(params, sparsity, distribution, filter_fn)
    return [jnp.asarray(c, jnp.int32) for c in jax.tree.leaves(counts)]


def sparse_transform(inner: optax.GradientTransformation, rule: Rule, *, counts_fn: Callable,
                     filter_fn=None, key: jax.Array,
                     name: str = "sparsity") -> optax.GradientTransformationExtraArgs:
    """Builds a sparsity method from a :class:`Rule`.

    Args:
      inner: the optimizer whose updates are masked.
      rule: the method's mask rule.
      counts_fn: ``params -> list of int32 keep counts`` (leaf order), called in ``init``.
      filter_fn: which leaves are prunable (``masks.default_filter`` when None).
      key: raw PRNG key stored in the state.
      name: method name used in error messages.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        params = as_pure(params)
        leaves, treedef = jax.tree.flatten(params)
        prunable = prunable_leaves(params, filter_fn)
        paths = leaf_paths(params)
        counts = counts_fn(params)
        mask_leaves = rule.init_masks(key, leaves, counts, prunable)
        mask_leaves = [jnp.asarray(m, bool) if p else jnp.ones(x.shape, bool)
                       for m, x, p in zip(mask_leaves, leaves, prunable)]
        return SparsityState(
            count=jnp.zeros((), jnp.int32),
            masks=jax.tree.unflatten(treedef, mask_leaves),
            keep_counts=jax.tree.unflatten(treedef, counts),
            key=key,
            inner_state=inner.init(params),
            trace=_init_trace(mask_leaves, prunable, paths),
            extra=rule.init_extra(params, leaves, counts, prunable),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{name}: update() needs the current params "
                             f"(tx.update(grads, state, params)) to mask and prune them")
        # Updates go back out with the structure they came in (e.g. an nnx.State of Params).
        out_treedef = jax.tree.structure(updates)
        updates = as_pure(updates)
        params = as_pure(params)
        leaves, treedef = jax.tree.flatten(params)
        grad_leaves = treedef.flatten_up_to(updates)
        old = treedef.flatten_up_to(state.masks)
        counts = treedef.flatten_up_to(state.keep_counts)
        prunable = prunable_leaves(params, filter_fn)
        paths = leaf_paths(params)
        ctx = StepContext(state.count, grad_leaves, leaves, old, counts, prunable, state.key,
                          state.extra, extra_args)

        extra = state.extra
        if rule.grads is not None:
            grad_leaves, extra = rule.grads(ctx)
            ctx = ctx._replace(extra=extra)
        if rule.step is not None:
            new, key, extra, used_dense_grad = rule.step(ctx)
        else:
            new, key, used_dense_grad = old, state.key, jnp.zeros((), bool)

        if not rule.masked:
            inner_updates, inner_state = inner.update(updates, state.inner_state, params,
                                                      **extra_args)
            u_leaves = treedef.flatten_up_to(inner_updates)
        else:
            # The step's gradient belongs to the current (old) mask: pruned weights learn nothing.
            masked = [jnp.where(m, g, jnp.zeros_like(g)) for m, g in zip(old, grad_leaves)]
            inner_updates, inner_state = inner.update(
                jax.tree.unflatten(treedef, masked), state.inner_state, params, **extra_args)
            u_leaves = treedef.flatten_up_to(inner_updates)

        if rule.may_grow:
            grown = [n & ~o for n, o in zip(new, old)]
            any_grown = jnp.any(jnp.stack([jnp.any(g) for g in grown]))
            shapes = [x.shape for x in leaves]
            inner_state = jax.lax.cond(
                any_grown,
                lambda s: reset_param_shaped(s, treedef, shapes, grown),
                lambda s: s, inner_state)

        # Dropped weights and grown weights both end at exactly 0; kept ones get the inner update.
        out = [jnp.where(o & n, u, (-p).astype(u.dtype)) if rule.masked else u
               for o, n, u, p in zip(old, new, u_leaves, leaves)]

        dens = _densities(old, prunable, paths)
        trace = SparsityTrace(
            steps=state.trace.steps + 1,
            density_steps={k: state.trace.density_steps[k] + dens[k] for k in dens},
            mask_updates=state.trace.mask_updates + used_dense_grad.astype(jnp.int32))
        new_state = SparsityState(
            count=state.count + 1,
            masks=jax.tree.unflatten(treedef, new),
            keep_counts=state.keep_counts,
            key=key,
            inner_state=inner_state,
            trace=trace,
            extra=extra)
        out = inner_updates if not rule.masked else jax.tree.unflatten(treedef, out)
        return jax.tree.unflatten(out_treedef, jax.tree.leaves(out)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Mask helpers shared by the rules (flat leaf lists; non-prunable leaves stay all True).


def all_true(leaves) -> list:
    """All-True masks for every leaf."""
    return [jnp.ones(x.shape, bool) for x in leaves]


def magnitude(leaves, counts, prunable) -> list:
    """Per-leaf masks keeping the ``counts`` largest |w| (all True for non-prunable leaves)."""
    return [masks_lib.topk_mask(jnp.abs(x), k) if p else jnp.ones(x.shape, bool)
            for x, k, p in zip(leaves, counts, prunable)]


def random_scores(key, leaves) -> list:
    """Independent uniform scores per leaf (leaf i uses ``split(key, n)[i]``, as ``masks.init``)."""
    keys = jax.random.split(key, max(len(leaves), 1))
    return [jax.random.uniform(k, x.shape) for k, x in zip(keys, leaves)]


def init_masks_by(scores: str) -> Callable:
    """An ``init_masks`` for a rule: top-k of random or magnitude scores, with the keep counts."""
    if scores not in ("random", "magnitude"):
        raise ValueError(f"scores must be 'random' or 'magnitude', got {scores!r}")

    def init_masks(key, leaves, counts, prunable):
        if scores == "magnitude":
            return magnitude(leaves, counts, prunable)
        rand = random_scores(key, leaves)
        return [masks_lib.topk_mask(s, k) if p else jnp.ones(x.shape, bool)
                for s, x, k, p in zip(rand, leaves, counts, prunable)]

    return init_masks


def init_dense(key, leaves, counts, prunable) -> list:
    """``init_masks`` of the methods that start dense."""
    return all_true(leaves)


def sizes(leaves) -> list:
    """Leaf sizes as int32 counts (the keep counts of a dense model)."""
    return [jnp.asarray(x.size, jnp.int32) for x in leaves]


def sq_norm(leaves, prunable) -> jax.Array:
    """Sum of squares over the prunable leaves."""
    terms = [jnp.sum(jnp.square(x)) for x, p in zip(leaves, prunable) if p]
    return sum(terms, jnp.zeros((), jnp.float32))
