"""Compacted training: while a method's edge mask stays fixed, steps pass messages over the
kept edges only.

A run whose encoder has the ``edge_weight`` leaf (``--edge-sparsity``) gates the pruned edges
off, but a masked step still gathers and sums over every stored edge. Where the edge mask
stays fixed for a stretch - the whole run for static masks, between mask updates for SET and
RigL, after the prune for one-shot, GMP, SLR and ADMM - the kept edges are compacted once
(:func:`compact`, a fixed number of slots: the method's final edge keep count, so shapes are
static) and the steps pass messages over them (``models.CompactEdges``). The layers compute
what they compute on the masked graph: a pruned edge carries nothing there, and padding slots
are gated to 0 here. Steps that read the gradient of pruned weights (RigL's mask updates,
``MethodSpec.dense_gradient_at``) and steps while the mask keeps more edges than the slots
(dense phases) use the whole graph.

The compaction is cached across steps and epochs and rebuilt only when the mask differs from
the one it was made from (one comparison of the ``[E]`` mask per step). The cache is not part
of the training state: it is derived from the masks, so checkpoints and resumed runs are
unchanged. Gradients differ from the masked run's only at pruned entries of the edge leaf
(0 here), which no method reads outside its dense-gradient steps: ``sparse_transform`` masks
the gradient before the inner optimizer.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax import graphs, models, sparsity
from sparsegnn_jax.sparsity import registry

#: ``--compact-edges`` values: ``auto`` compacts where the run allows it, ``off`` never.
MODES = ("auto", "off")


class Cache(NamedTuple):
    """The compaction of one edge mask (a pytree, carried through the steps).

    Attributes:
      edges: the compacted edges (``models.CompactEdges``).
      mask: ``[E]`` bool, the edge mask they were made from.
      valid: bool scalar, whether that mask keeps at most the plan's slots (else the steps use
        the whole graph).
      ready: bool scalar, False before the first compaction.
      steps: int32 scalar, the steps that ran on the compacted edges so far.
    """

    edges: models.CompactEdges
    mask: jax.Array
    valid: jax.Array
    ready: jax.Array
    steps: jax.Array


def edge_mask(opt_state) -> jax.Array:
    """The ``[E]`` bool mask of the encoder's ``edge_weight`` leaf in a method's state."""
    return sparsity.get_masks(opt_state)["encoder"][models.EDGE_WEIGHT]


def compact(graph, mask: jax.Array, slots: int) -> models.CompactEdges:
    """The edges of ``graph`` an encoder with edge mask ``mask`` passes messages over.

    The first ``len(mask)`` stored edges are the leaf's: the kept ones (in order, padded to
    ``slots`` slots) come first, then the edges past the leaf (self loops), all of them.

    Args:
      graph: the message-passing ``GraphsTuple``.
      mask: ``[E]`` bool edge mask, ``E <= `` the graph's edge count.
      slots: static number of slots for the kept edges; a traced mask with more kept edges
        loses the last ones (check the count first, as :func:`refresh` does).

    Returns:
      ``models.CompactEdges`` with ``slots + (stored - E)`` edges.
    """
    num = mask.shape[0]
    positions = jnp.arange(num, dtype=jnp.int32)
    # compact_edges of the positions: the kept positions in order, padding slots at 0 with
    # weight 0 (which marks them).
    index, _, filled = graphs.compact_edges(positions, positions, None, mask, slots)
    rest = slice(num, None)

    def take(x):
        return jnp.concatenate([x[index], x[rest]])

    weights = None if graph.edges is None else take(graphs.edge_weights_of(graph))
    return models.CompactEdges(take(graph.senders), take(graph.receivers), weights, index,
                               filled != 0)


def empty_cache(graph, num_edges: int, slots: int) -> Cache:
    """A cache holding no compaction: the first :func:`refresh` builds one."""
    rest = int(graph.senders.shape[0]) - num_edges
    ints = jnp.zeros((slots + rest,), graph.senders.dtype)
    weights = (None if graph.edges is None
               else jnp.zeros((slots + rest,), graphs.edge_weights_of(graph).dtype))
    edges = models.CompactEdges(ints, ints, weights, jnp.zeros((slots,), jnp.int32),
                                jnp.zeros((slots,), bool))
    false = jnp.zeros((), bool)
    return Cache(edges, jnp.zeros((num_edges,), bool), false, false, jnp.zeros((), jnp.int32))


def refresh(cache: Cache, mask: jax.Array, graph, slots: int) -> Cache:
    """``cache`` if it was made from ``mask``, else the compaction of ``mask`` (under
    ``lax.cond``: the compaction runs only at a mask change)."""

    # The mask is an operand of the conds, not a closure: traced inside them even when the
    # call is eager, so compact_edges never sees a concrete mask with more kept edges than slots.
    def rebuild(mask):
        valid = jnp.sum(mask, dtype=jnp.int32) <= slots
        edges = jax.lax.cond(valid, lambda m: compact(graph, m, slots), lambda m: cache.edges,
                             mask)
        return Cache(edges, mask, valid, jnp.ones((), bool), cache.steps)

    changed = ~cache.ready | jnp.any(mask != cache.mask)
    return jax.lax.cond(changed, rebuild, lambda _: cache, mask)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a run compacts its edges.

    Attributes:
      num_edges: size ``E`` of the ``edge_weight`` leaf.
      slots: kept-edge slots, the largest edge keep count of the method (static shapes).
      dense_gradient_at: ``step -> bool``, whether the method's update at ``step`` reads the
        gradient of pruned weights (then the step runs on the whole graph).
    """

    num_edges: int
    slots: int
    dense_gradient_at: Callable[[Any], Any]

    def empty_cache(self, graph) -> Cache:
        """The cache before the first step (see :func:`empty_cache`)."""
        return empty_cache(graph, self.num_edges, self.slots)

    def scan(self, step: Callable, state, cache: Cache, xs, graph):
        """``lax.scan`` of ``step(state, x, edges) -> (state, loss)`` over ``xs``.

        Before each step the cache follows the state's edge mask; the step gets the compacted
        edges when they are valid and the method does not read dense gradients at that step,
        else ``edges=None`` (the whole graph).

        Returns:
          ``((state, cache), losses)``.
        """

        def body(carry, x):
            state, cache = carry
            sparse_state = sparsity.find_state(state.opt_state)
            cache = refresh(cache, sparse_state.masks["encoder"][models.EDGE_WEIGHT], graph,
                            self.slots)
            compacted = cache.valid & ~self.dense_gradient_at(sparse_state.count)
            state, loss = jax.lax.cond(compacted, lambda s: step(s, x, cache.edges),
                                       lambda s: step(s, x, None), state)
            cache = cache._replace(steps=cache.steps + compacted.astype(jnp.int32))
            return (state, cache), loss

        return jax.lax.scan(body, (state, cache), xs)


def scan_steps(plan: Plan | None, step: Callable, state, xs, graph, cache: Cache | None):
    """``lax.scan`` of ``step(state, x, edges) -> (state, loss)`` over ``xs``: on the whole
    graph (``edges=None``) without a plan, else :meth:`Plan.scan`.

    Returns:
      ``(state, losses, cache)`` (``cache`` None without a plan).
    """
    if plan is None:
        state, losses = jax.lax.scan(lambda s, x: step(s, x, None), state, xs)
        return state, losses, None
    (state, cache), losses = plan.scan(step, state, cache, xs, graph)
    return state, losses, cache


def epoch_out(plan: Plan | None, state, loss, cache):
    """An epoch's result: ``(state, loss)``, and the cache after them with a plan."""
    return (state, loss) if plan is None else (state, loss, cache)


def plan_for(cfg, params, opt_state, method_kwargs: dict) -> Plan | None:
    """The compaction plan of a run, or None when it trains on the masked graph.

    Masked when ``cfg.compact_edges`` is ``"off"``, the params have no ``encoder/edge_weight``
    leaf, the optimizer has no sparsity state, the method does not say which of its steps
    read dense gradients (``MethodSpec.dense_gradient_predicate``), or the edge keep count
    leaves nothing to compact (edge sparsity 0).

    Args:
      cfg: the run's resolved ``config.RunConfig``.
      params: the run's params (pure dict).
      opt_state: the initial optimizer state (concrete: the keep count is read from it).
      method_kwargs: the method factory's keyword arguments (``runs.method_kwargs``).
    """
    if getattr(cfg, "compact_edges", "auto") == "off":
        return None
    leaf = params.get("encoder", {}).get(models.EDGE_WEIGHT) if isinstance(params, dict) else None
    if leaf is None:
        return None
    predicate = registry.get(cfg.method).dense_gradient_predicate(method_kwargs)
    if predicate is None:
        return None
    try:
        found = sparsity.find_state(opt_state)
    except ValueError:
        return None
    num_edges = int(leaf.shape[-1])
    slots = int(np.max(np.asarray(found.keep_counts["encoder"][models.EDGE_WEIGHT])))
    if slots >= num_edges:
        return None
    return Plan(num_edges, slots, predicate)


class CompactedEpoch:
    """``epoch(state, inputs) -> (state, loss)`` for ``train.fit`` that keeps the compaction
    cache between epochs.

    Wraps a task's epoch built with ``compaction=plan`` (whose signature is
    ``epoch(state, inputs, cache) -> (state, loss, cache)``) and jits it; the cache starts
    empty, so any state (a fresh or a resumed run) is compacted from its own masks.
    """

    def __init__(self, epoch: Callable, plan: Plan):
        self.plan = plan
        self._epoch = jax.jit(epoch)
        self._cache = None

    @property
    def compacted_steps(self) -> int:
        """How many steps so far passed messages over the compacted edges."""
        return 0 if self._cache is None else int(self._cache.steps)

    def __call__(self, state, inputs):
        if self._cache is None:
            self._cache = self.plan.empty_cache(inputs.graph)
        state, loss, self._cache = self._epoch(state, inputs, self._cache)
        return state, loss
