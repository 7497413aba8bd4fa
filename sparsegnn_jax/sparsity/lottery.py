"""Lottery tickets: iterative magnitude pruning with rewinding (IMP), as pure per-round pieces.

A lottery method runs in rounds. Each round is one whole training run at fixed masks (an optax
transformation, :func:`imp`), after which pure functions choose the next masks
(:func:`prune_remaining`, :func:`imp_next_masks`) and the parameters the next round restarts
from (:func:`rewind`). The loop over rounds calls ``train.fit`` once per round and lives above
this package (``sparsegnn_jax.rounds``): rewinding resets the parameters and the optimizer
state, which no single optax transformation can do to the params it is handed.

Counts are exact and per layer (the library's uniform convention): a round that prunes a
fraction ``f`` of a layer keeps ``topk.keep_count(remaining, 1 - f)`` of its ``remaining``
weights, so after ``R`` rounds the layer's density is ``(1 - f)^R`` up to one weight of
rounding per round.

References:
  Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
  Networks", ICLR 2019 (IMP, rewinding to the initialisation).
  Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
  Hypothesis", ICML 2020 (rewinding to step k of the first run).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity import transform
from sparsegnn_jax.sparsity.pruning import static_sparse
from sparsegnn_jax.sparsity.topk import drop, keep_count
from sparsegnn_jax.sparsity.trees import as_pure, flatten_with_paths, prunable_flags
from sparsegnn_jax.sparsity.validation import check_sparsity, check_step

__all__ = ["RewindState", "at_masks", "find_rewind_state", "imp", "imp_next_masks",
           "prune_fractions", "prune_remaining", "rewind", "rewind_point", "round_keep_counts"]


class RewindState(NamedTuple):
    """State of :func:`rewind_point`.

    Attributes:
      count: int32 scalar, ``update`` calls so far.
      params: the params handed to the ``update`` call with index ``rewind_step`` (the params
        after ``rewind_step`` steps); before that call, the params given to ``init``.
      inner_state: the wrapped optimizer's state.
    """

    count: jax.Array
    params: Any
    inner_state: Any


def rewind_point(inner: optax.GradientTransformation,
                 rewind_step: int = 0) -> optax.GradientTransformationExtraArgs:
    """``inner`` that also keeps a copy of the params after ``rewind_step`` steps.

    The copy is taken inside ``update`` (a select per leaf, no host round trip), so it is the
    exact step-``k`` value whatever the epoch length; with ``rewind_step=0`` it is the params
    given to ``init``.

    Args:
      inner: the optimizer; its updates pass through unchanged.
      rewind_step: k, the number of steps after which the params are kept (0: the init).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`RewindState`.
    """
    check_step(rewind_step, "rewind_step")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        params = as_pure(params)
        return RewindState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params),
                           inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("rewind_point: update() needs the current params")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        due = state.count == rewind_step
        kept = jax.tree.map(lambda old, p: jnp.where(due, p, old), state.params, as_pure(params))
        return updates, RewindState(state.count + 1, kept, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_rewind_state(opt_state) -> RewindState:
    """The :class:`RewindState` inside an optimizer state (e.g. an :func:`imp` round's).

    Raises:
      ValueError: when there is none.
    """
    return transform.find_state_of(
        opt_state, RewindState, "no rewind point in this optimizer state: was it built with "
        "sparsegnn_jax.sparsity.lottery.imp (or rewind_point)?")


def at_masks(inner: optax.GradientTransformation, masks=None, filter_fn=None,
             name: str = "lottery") -> optax.GradientTransformationExtraArgs:
    """``inner`` trained at fixed masks: the given ones, or all True (a dense round) for None.

    A lottery round is a static-mask run; keep counts are the masks' True counts.
    """
    if masks is not None:
        return static_sparse(inner, masks=masks, filter_fn=filter_fn)

    def sizes(params):
        return jax.tree.map(lambda x: jnp.asarray(x.size, jnp.int32), params)

    return transform.sparse_transform(inner, transform.Rule(init_masks=transform.init_dense),
                                      counts_fn=sizes, filter_fn=filter_fn,
                                      key=transform.make_key(0), name=name)


def imp(inner: optax.GradientTransformation, masks=None, rewind_step: int = 0,
        filter_fn: Optional[Callable] = None) -> optax.GradientTransformationExtraArgs:
    """One round of iterative magnitude pruning: training at fixed ``masks``, keeping the
    rewind point.

    The round loop (``sparsegnn_jax.rounds``) builds one per round: the first at ``masks=None``
    (dense) records the params after ``rewind_step`` steps (:func:`find_rewind_state`); after
    each round :func:`imp_next_masks` prunes and :func:`rewind` restores the kept weights to
    that point, and the next round starts from a fresh optimizer state.

    Args:
      inner: the optimizer.
      masks: the round's bool masks (params' structure), or None for all True.
      rewind_step: k, the step whose params the next rounds restart from (0: the init).
      filter_fn: which leaves are prunable.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    References:
      Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020 (rewinding to step k).
    """
    return at_masks(rewind_point(inner, rewind_step), masks, filter_fn, "imp")


def prune_fractions(params, prune_per_round: float, edge_prune_per_round: float | None = None,
                    filter_fn=None, edge_filter: Optional[Callable] = None) -> dict:
    """``{path: fraction}`` a round prunes: ``prune_per_round`` for every prunable weight leaf,
    ``edge_prune_per_round`` (None: 0, kept) for the leaves ``edge_filter(path, leaf)`` names.

    Raises:
      ValueError: a fraction outside [0, 1).
    """
    check_sparsity(prune_per_round, "prune_per_round")
    if edge_prune_per_round is not None:
        check_sparsity(edge_prune_per_round, "edge_prune_per_round")
    paths, leaves, _ = flatten_with_paths(params)
    out = {}
    for path, leaf, flag in zip(paths, leaves, prunable_flags(paths, leaves, filter_fn)):
        if not flag:
            continue
        is_edge = edge_filter is not None and edge_filter(path, leaf)
        out[path] = (edge_prune_per_round or 0.0) if is_edge else prune_per_round
    return out


def prune_remaining(masks, scores, fractions: Mapping[str, float]):
    """Next masks: per leaf, the lowest ``|score|`` of a ``fractions[path]`` share of the
    weights still kept are pruned.

    Args:
      masks: the current bool masks.
      scores: arrays with the masks' structure; magnitudes rank the kept entries.
      fractions: ``{path: fraction}``; leaves it does not name (or at 0) keep their masks.

    Returns:
      Bool masks, a subset of ``masks``, keeping ``keep_count(remaining, 1 - fraction)`` per leaf.
    """
    paths, leaves, treedef = flatten_with_paths(as_pure(masks))
    score_leaves = treedef.flatten_up_to(as_pure(scores))
    out = []
    for path, mask, score in zip(paths, leaves, score_leaves):
        fraction = fractions.get(path, 0.0)
        if not fraction:
            out.append(mask)
            continue
        remaining = int(np.sum(np.asarray(mask)))
        out.append(drop(mask, score, remaining - keep_count(remaining, 1.0 - fraction)))
    return jax.tree.unflatten(treedef, out)


def imp_next_masks(params, opt_state, masks, fractions: Mapping[str, float]):
    """IMP's next masks: the kept weights of smallest ``|w|`` pruned, ``fractions`` per leaf
    (an edge-weight leaf by ``|edge weight|``). ``opt_state`` is not read."""
    del opt_state
    return prune_remaining(masks, params, fractions)


def rewind(params_at_rewind, masks):
    """The params a round restarts from: the rewind point's values where kept, 0 elsewhere."""
    return masks_lib.apply(as_pure(params_at_rewind), as_pure(masks))


def round_keep_counts(sizes: Mapping[str, int], fractions: Mapping[str, float],
                      rounds: int) -> list[dict]:
    """Exact keep counts after 0, 1, ..., ``rounds`` rounds: ``{path: count}`` each.

    ``sizes``: ``{path: size}`` of the prunable leaves; a path ``fractions`` does not name
    keeps every entry. The counts are those :func:`prune_remaining` reaches.
    """
    counts = [dict(sizes)]
    for _ in range(rounds):
        counts.append({p: keep_count(c, 1.0 - fractions[p]) if fractions.get(p) else c
                       for p, c in counts[-1].items()})
    return counts
