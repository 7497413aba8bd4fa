"""UGS, the unified graph lottery ticket: learnt masks on the graph and on every weight matrix.

Each round trains the weights jointly with differentiable mask scores, an L1 penalty pulling the
scores towards 0; after the round the kept entries of lowest ``|score|`` are pruned (a share of
the weights per weight matrix, a share of the edges), the weights are rewound to the original
initialisation and the scores reset (:func:`ugs_next_masks`, ``lottery.rewind``; the loop over
rounds is ``sparsegnn_jax.rounds``).

Design. The graph mask ``m_g`` is the encoder's edge-weight leaf (a learnt score of each edge,
initialised at 1, which gates its edge: ``models.Encoder(num_edges=...)``): it is a parameter
of the model already, so the method only adds its L1 subgradient ``l1_edges * sign(m_g)`` to its
gradient. The weight scores ``m_theta`` are not parameters of the model: :func:`mask_scores`
keeps the raw weights ``theta`` and the scores in its own state and hands the model the
effective weights ``w = theta * m_theta`` (times the round's fixed mask, applied by the
enclosing static-mask transformation). With ``g = dL/dw`` the chain rule gives
``dL/dtheta = g * m_theta`` and ``dL/dm_theta = g * theta``, plus the L1 subgradient
``l1_weights * sign(m_theta)``; the inner optimizer updates ``(theta, m_theta)`` as one pytree
and the transformation emits ``w' - w``. So the model is unchanged (no mask modules, no second
parameter set in checkpoints of other methods), the gradient is the usual one, and the method is
a pure optax transformation that jits, vmaps and checkpoints as the others do.

Cost. Every search and every ticket training is counted. Pruned entries stay pruned: their gradient is masked, and the scores of kept entries need
only ``g`` at kept entries, which the sparse backward pass computes anyway (``g * theta`` is an
elementwise product, no matrix product). So a UGS step costs ``3 f_S`` like a static sparse step
(no dense gradient, unlike RigL's regrowth), and ``flops.training_from_trace`` counts it so.

Differences from the authors' code (VITA-Group/Unified-LTH-GNN, ``NodeClassification``): the
weights are pruned per weight matrix (theirs: one threshold
over all weight matrices; the library's uniform per-layer convention). As theirs, the next
masks come from the scores at the search's best validation epoch (``rounds`` selects it; the
last epoch's scores rank little: under the L1 term they drift towards 0 and the search's own
model collapses on Cora) and each ticket is then trained on its own at its fixed masks, from
the initialisation. As theirs, every search starts its scores at 1 times a uniform jitter of
1e-5 (the runs pass a key per round): otherwise the scores the L1 term dominates stay tied and
the pruning among them follows their index.

References:
  Chen, Sui, Chen, Zhang & Wang, "A Unified Lottery Ticket Hypothesis for Graph Neural
  Networks", ICML 2021; defaults (Cora GCN: ``s1 = s2 = 1e-2``, 20% of the weights and 5% of
  the edges per round) from the authors' README.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity.lottery import at_masks, prune_remaining
from sparsegnn_jax.sparsity.transform import find_state_of
from sparsegnn_jax.sparsity.trees import as_pure, flatten_with_paths, prunable_flags

__all__ = ["UgsState", "find_ugs_state", "mask_scores", "ugs", "ugs_next_masks"]


class UgsState(NamedTuple):
    """State of :func:`mask_scores`.

    Attributes:
      theta: the raw parameters (params' structure); the model's weight matrices are
        ``theta * scores``, its other leaves ``theta``.
      scores: the weight scores ``m_theta``, params' structure; leaves that are not scored hold
        an empty array (no state, nothing for the optimizer to do).
      inner_state: the inner optimizer's state over the pytree ``(theta, scores)``.
    """

    theta: Any
    scores: Any
    inner_state: Any


def _kinds(params, filter_fn, edge_filter):
    """Per leaf: "weight" (scored), "edge" (its own score, L1 only) or "plain"."""
    paths, leaves, treedef = flatten_with_paths(params)
    kinds = []
    for path, leaf, flag in zip(paths, leaves, prunable_flags(paths, leaves, filter_fn)):
        edge = flag and edge_filter is not None and edge_filter(path, leaf)
        kinds.append("edge" if edge else "weight" if flag else "plain")
    return jax.tree.unflatten(treedef, kinds)


def mask_scores(inner: optax.GradientTransformation, l1_weights: float = 1e-2,
                l1_edges: float = 1e-2, filter_fn: Optional[Callable] = None,
                edge_filter: Optional[Callable] = None, key: Optional[jax.Array] = None,
                noise: float = 1e-5) -> optax.GradientTransformationExtraArgs:
    """``inner`` on ``(theta, m_theta)``, the model's weight matrices being ``theta * m_theta``.

    Args:
      inner: the optimizer of ``theta`` and of the scores (UGS: Adam with weight decay on both).
      l1_weights: lambda_theta, the L1 weight of the weight scores.
      l1_edges: lambda_g, the L1 weight of the edge leaves (the graph mask).
      filter_fn: which leaves are prunable (scored weight matrices, and edge leaves).
      edge_filter: ``(path, leaf) -> bool``: which prunable leaves are graph masks.
      key: PRNG key of the scores' starting noise; None: scores start at exactly 1.
      noise: with ``key``, the scores (and the edge leaves) start at ``x * (1 + u)``, ``u``
        uniform in ``[-noise, noise)`` (the authors' ``all_one`` start, 1e-5). The L1 term
        moves every score it dominates by the same step under Adam, so without it most
        scores tie and the pruning among them follows their index, not chance.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`UgsState`; ``update`` needs
      ``params`` (the effective weights) and returns ``w' - w``.
    """
    inner = optax.with_extra_args_support(inner)

    def jitter(params):
        """Per leaf, ``1 + u`` (ones without a key)."""
        leaves, treedef = jax.tree.flatten(params)
        if key is None:
            return jax.tree.unflatten(treedef, [jnp.ones_like(x) for x in leaves])
        keys = jax.random.split(key, len(leaves))
        return jax.tree.unflatten(treedef, [
            1 + jax.random.uniform(k, x.shape, x.dtype, -noise, noise)
            for k, x in zip(keys, leaves)])

    def init_fn(params):
        params = as_pure(params)
        kinds = _kinds(params, filter_fn, edge_filter)
        start = jitter(params)
        scores = jax.tree.map(lambda x, j, k: j if k == "weight" else jnp.zeros((0,), x.dtype),
                              params, start, kinds)
        # The edge leaves are the model's own params: their jitter is the first update's.
        theta = jax.tree.map(lambda x, j, k: x * j if k == "edge" else jnp.array(x),
                             params, start, kinds)
        return UgsState(theta, scores, inner.init((theta, scores)))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("mask_scores: update() needs the current params")
        params = as_pure(params)
        kinds = _kinds(params, filter_fn, edge_filter)
        g = jax.tree.unflatten(jax.tree.structure(params),
                               jax.tree.structure(params).flatten_up_to(as_pure(updates)))

        def theta_grad(gl, t, s, k):
            if k == "weight":
                return gl * s
            if k == "edge":
                return gl + l1_edges * jnp.sign(t)
            return gl

        def score_grad(gl, t, s, k):
            return gl * t + l1_weights * jnp.sign(s) if k == "weight" else s

        grads = (jax.tree.map(theta_grad, g, state.theta, state.scores, kinds),
                 jax.tree.map(score_grad, g, state.theta, state.scores, kinds))
        (u_theta, u_scores), inner_state = inner.update(
            grads, state.inner_state, (state.theta, state.scores), **extra_args)
        theta = optax.apply_updates(state.theta, u_theta)
        scores = optax.apply_updates(state.scores, u_scores)
        effective = jax.tree.map(lambda t, s, k: t * s if k == "weight" else t,
                                 theta, scores, kinds)
        out = jax.tree.map(lambda w, p: (w - p).astype(p.dtype), effective, params)
        return out, UgsState(theta, scores, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ugs(inner: optax.GradientTransformation, masks=None, l1_weights: float = 1e-2,
        l1_edges: float = 1e-2, filter_fn: Optional[Callable] = None,
        edge_filter: Optional[Callable] = None,
        key: Optional[jax.Array] = None) -> optax.GradientTransformationExtraArgs:
    """One UGS round: training at fixed ``masks`` with learnt weight and edge scores.

    Args:
      inner: the optimizer.
      masks: the round's bool masks (params' structure), or None for all True.
      l1_weights: L1 weight of the weight scores (the authors' ``s2``; 1e-2 for Cora GCN).
      l1_edges: L1 weight of the edge scores (the authors' ``s1``; 1e-2 for Cora GCN).
      filter_fn: which leaves are prunable.
      edge_filter: ``(path, leaf) -> bool``: which prunable leaves are graph masks
        (the runs pass ``models.is_edge_weight``).
      key: PRNG key of the scores' starting noise of 1e-5 (:func:`mask_scores`); None: they
        start at exactly 1.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; the scores are read with
      :func:`find_ugs_state`, the masks with ``get_masks``.

    References:
      Chen et al., "A Unified Lottery Ticket Hypothesis for Graph Neural Networks", ICML 2021.
    """
    return at_masks(mask_scores(inner, l1_weights, l1_edges, filter_fn, edge_filter, key),
                    masks, filter_fn, "ugs")


def find_ugs_state(opt_state) -> UgsState:
    """The :class:`UgsState` inside an optimizer state (a :func:`ugs` round's).

    Raises:
      ValueError: when there is none.
    """
    return find_state_of(opt_state, UgsState, "no UGS scores in this optimizer state: was it "
                         "built with sparsegnn_jax.sparsity.ugs.ugs?")


def ugs_next_masks(params, opt_state, masks, fractions: Mapping[str, float]):
    """UGS's next masks: per leaf, the kept entries of lowest ``|score|`` pruned (a weight
    matrix by its scores ``m_theta``, an edge leaf by its value ``m_g``), ``fractions`` per leaf.
    """
    scores = find_ugs_state(opt_state).scores
    ranked = jax.tree.map(lambda s, p: s if s.shape == p.shape else p, scores, as_pure(params))
    return prune_remaining(masks, ranked, fractions)
