"""Link evaluation: pair logits in bounded-memory chunks, ROC-AUC / AP / accuracy on fixed pairs,
and MRR / Hits@K of each positive against corrupted destinations.

The ranking pairs (100 per positive: a million for 10k positives) and their history features
depend on the split and the evaluation key only, not on the parameters. Computing the features
costs far more than the model's scoring of them (two binary searches and a neighbour-row overlap
per pair), so :func:`evaluation_inputs` derives them once per split and every evaluation of
every run reads them (:class:`LinkEvalInputs`, an argument of the compiled scoring, never a
constant in it). Above :data:`RANKING_CACHE_BYTES` the ranking pairs' features (or the pairs
too) are derived chunk by chunk inside the scoring instead, at every call.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax import history as history_lib, metrics

#: Bytes the pair activations of one evaluation chunk may take (see :func:`pairs_per_chunk`).
EVAL_MEMORY_BYTES = 256 * 2**20
#: Bytes the ranking pairs and their features computed ahead may take, per evaluated part
#: (email-eu-temporal's 10,736 test positives: 1.07M pairs, 60 MB).
RANKING_CACHE_BYTES = 512 * 2**20


def pair_inputs(history, pairs):
    """``pair_features`` keyword of a link predictor for ``pairs``: the features of
    ``history`` (a ``history.PairHistory``), or nothing when it is None."""
    return {} if history is None else {"pair_features": history_lib.pair_features(history,
                                                                                  pairs)}


def link_scores(bound, params, graph, pairs, history=None) -> jax.Array:
    """Logits for ``pairs`` with dropout off (pair features from ``history`` when given);
    ``bound`` is a ``train.BoundModel``."""
    return bound(params, graph, pairs, **pair_inputs(history, pairs))


def pairs_per_chunk(width: int, memory_bytes: int = EVAL_MEMORY_BYTES) -> int:
    """How many pairs to decode at once so that their activations fit in ``memory_bytes``.

    A pair costs about ``4 * width`` float32 values (its two gathered node rows, the decoder's
    input and its hidden layer), where ``width`` is the node representation's width.
    """
    return max(1, memory_bytes // (16 * max(width, 1)))


def _chunked(fn, rows: int, chunk: int):
    """``fn`` over ``[0, rows)`` in ``chunk``-sized index blocks (one at a time), concatenated.

    ``fn(idx)`` gets [chunk] int32 row indices (the last block is clipped to ``rows - 1``, its
    extra results dropped) and returns arrays with a leading [chunk] axis.
    """
    chunk = max(1, min(chunk, rows))
    blocks = -(-rows // chunk)
    idx = jnp.minimum(jnp.arange(blocks * chunk, dtype=jnp.int32), rows - 1)
    out = jax.lax.map(fn, idx.reshape(blocks, chunk))
    return jax.tree.map(lambda x: x.reshape((blocks * chunk,) + x.shape[2:])[:rows], out)


def link_scores_chunked(bound, params, graph, pairs, memory_bytes: int = EVAL_MEMORY_BYTES,
                        history=None, pair_features=None) -> jax.Array:
    """Logits for ``pairs`` (dropout off): one encoding, then decoded in bounded-memory chunks.

    Equal to :func:`link_scores`; the pairs' activations never exceed about ``memory_bytes``
    at once (:func:`pairs_per_chunk`), so millions of pairs can be scored. A decoder that reads
    pair features takes them from ``pair_features [P, F]`` (computed ahead, e.g. each pair
    against its own streamed history) or else from ``history``.
    """
    module = bound.module(params)
    z = module.encode(graph)
    chunk = pairs_per_chunk(z.shape[-1], memory_bytes)

    def decode(idx):
        if pair_features is not None:
            return module.decode(z, pairs[idx], pair_features=pair_features[idx])
        return module.decode(z, pairs[idx], **pair_inputs(history, pairs[idx]))

    return _chunked(decode, pairs.shape[0], chunk)


link_logits = jax.jit(link_scores_chunked, static_argnums=(0, 4))


def corrupt_destinations(key, rows, pos_edges, num_nodes: int, k: int) -> jax.Array:
    """[R, k, 2] pairs (src, random dst != src) for the positives ``pos_edges`` at ``rows``.

    Row ``i``'s destinations are drawn from ``fold_in(key, i)``, so they do not depend on
    which other rows are drawn with it (chunking cannot change them). Collisions with real
    edges are rare and kept.
    """
    dst = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (k,), 0,
                                                num_nodes - 1))(rows)
    src = jnp.broadcast_to(pos_edges[:, :1], dst.shape)
    dst = jnp.where(dst >= src, dst + 1, dst)  # skip the source itself, uniform over the rest
    return jnp.stack([src, dst], axis=-1)


class LinkEvalInputs(NamedTuple):
    """What the evaluation of one part reads besides the parameters (a pytree): derived from
    the pairs, the ranking key and the history alone (:func:`evaluation_inputs`).

    Attributes:
      pairs: ``[P + Q, 2]`` the positives, then the negatives.
      features: ``[P + Q, F]`` their history features, or None without a history.
      negatives: ``[P, k, 2]`` each positive's corrupted pairs (:func:`corrupt_destinations`),
        or None when they exceed the cache budget (then drawn at every call).
      negative_features: ``[P, k, F]`` their history features, or None (no history, or over
        the cache budget: then derived at every call).
    """

    pairs: jax.Array
    features: Any = None
    negatives: Any = None
    negative_features: Any = None


def ranking_cache_bytes(num_positives: int, num_ranking_negatives: int,
                        num_features: int) -> int:
    """Bytes of the ranking pairs (int32) and their float32 features held by
    :class:`LinkEvalInputs`."""
    return num_positives * num_ranking_negatives * 4 * (2 + num_features)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))
def _computed_inputs(pairs, key, history, num_positives: int, num_nodes: int, k: int,
                     chunk: int, negatives: bool, negative_features: bool) -> LinkEvalInputs:
    """:func:`evaluation_inputs` in one program (one compilation per part): ``pairs`` [P + Q, 2]
    with their features (with a ``history``), the [P, k, 2] ranking pairs with ``negatives``
    and their features with ``negative_features``, ``chunk`` pairs at a time (the neighbour-row
    overlap takes ``D`` int32 values per pair while it runs)."""
    out = LinkEvalInputs(pairs)
    if negatives:
        out = out._replace(negatives=_chunked(
            lambda rows: corrupt_destinations(key, rows, pairs[rows], num_nodes, k),
            num_positives, max(1, chunk // k)))
    if history is None:
        return out
    scored = (jnp.concatenate([pairs, out.negatives.reshape(-1, 2)]) if negative_features
              else pairs)
    features = _chunked(lambda idx: history_lib.pair_features(history, scored[idx]),
                        scored.shape[0], chunk)
    out = out._replace(features=features[: pairs.shape[0]])
    if negative_features:
        out = out._replace(negative_features=features[pairs.shape[0]:].reshape(
            num_positives, k, features.shape[-1]))
    return out


def evaluation_inputs(pos_pairs, neg_pairs, num_nodes: int, key: jax.Array, history=None,
                      num_ranking_negatives: int = 100,
                      memory_bytes: int = EVAL_MEMORY_BYTES,
                      cache_bytes: int = RANKING_CACHE_BYTES) -> LinkEvalInputs:
    """The inputs of :func:`evaluate_link` that do not depend on the parameters, computed once.

    Args:
      pos_pairs, neg_pairs: ``[P, 2]``, ``[Q, 2]`` the fixed pairs scored for ROC-AUC / AP.
      num_nodes: N (corrupted destinations are drawn among them).
      key: the ranking key of the evaluation (:func:`corrupt_destinations`).
      history: the ``history.PairHistory`` a decoder's pair features come from, or None.
      num_ranking_negatives: k, the corrupted pairs per positive.
      memory_bytes: bounds the temporaries while the features are computed.
      cache_bytes: largest size of the ranking pairs and their features
        (:func:`ranking_cache_bytes`); what exceeds it is left to each call.

    Returns:
      a :class:`LinkEvalInputs` for ``evaluate_link(..., inputs=...)`` with the same pairs,
      ``key``, ``history`` and ``num_ranking_negatives``.
    """
    pos = np.asarray(pos_pairs, np.int32).reshape(-1, 2)
    pairs = jnp.asarray(np.concatenate([pos, np.asarray(neg_pairs, np.int32).reshape(-1, 2)]))
    k = num_ranking_negatives
    size = functools.partial(ranking_cache_bytes, len(pos), k)
    negatives = len(pos) > 0 and size(0) <= cache_bytes
    negative_features = (negatives and history is not None
                         and size(history_lib.NUM_PAIR_FEATURES) <= cache_bytes)
    if history is None and not negatives:
        return LinkEvalInputs(pairs)
    width = 1 if history is None else history.neighbours.shape[1]
    return _computed_inputs(pairs, key, history, len(pos), num_nodes, k,
                            max(1, memory_bytes // (32 * width)), negatives, negative_features)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _ranking(bound, params, graph, pos_edges, num_nodes: int, num_ranking_negatives: int,
             memory_bytes: int, key, history, inputs: LinkEvalInputs):
    """[P] rank of each positive among its own corrupted destinations, in bounded chunks; the
    pairs and features ``inputs`` hold are read, the others derived here."""
    module = bound.module(params)
    z = module.encode(graph)
    k = num_ranking_negatives
    positives_per_chunk = max(1, pairs_per_chunk(z.shape[-1], memory_bytes) // (k + 1))

    def chunk_ranks(rows):
        pos = pos_edges[rows]
        if inputs.negatives is None:
            neg = corrupt_destinations(key, rows, pos, num_nodes, k).reshape(-1, 2)
        else:
            neg = inputs.negatives[rows].reshape(-1, 2)
        if inputs.negative_features is None:
            # The positives' features are derived here too: a corrupted pair equal to its
            # positive then gets its logit from the same program (the same rounding).
            pos_kw, neg_kw = pair_inputs(history, pos), pair_inputs(history, neg)
        else:
            pos_kw = {"pair_features": inputs.features[rows]}  # the positives come first
            neg_kw = {"pair_features": inputs.negative_features[rows].reshape(neg.shape[0], -1)}
        neg_logits = module.decode(z, neg, **neg_kw).reshape(rows.shape[0], k)
        return metrics.ranks(module.decode(z, pos, **pos_kw), neg_logits)

    return _chunked(chunk_ranks, pos_edges.shape[0], positives_per_chunk)


def _checked(inputs: LinkEvalInputs | None, pos_pairs, neg_pairs, k: int,
             history) -> LinkEvalInputs:
    """``inputs``, or those of nothing computed ahead when None; ValueError when they were
    computed for other pairs, another ``k`` or history."""
    if inputs is None:
        return LinkEvalInputs(jnp.asarray(np.concatenate([pos_pairs, neg_pairs])))
    num_pairs, num_positives = len(pos_pairs) + len(neg_pairs), len(pos_pairs)
    if inputs.pairs.shape[0] != num_pairs:
        raise ValueError(f"evaluate_link: inputs hold {inputs.pairs.shape[0]} pairs, the "
                         f"positives and negatives {num_pairs}: inputs of other pairs")
    if inputs.negatives is not None and inputs.negatives.shape[:2] != (num_positives, k):
        raise ValueError(f"evaluate_link: inputs hold {inputs.negatives.shape[1]} ranking "
                         f"negatives for each of {inputs.negatives.shape[0]} positives, "
                         f"expected num_ranking_negatives={k} for {num_positives}")
    if (inputs.features is None) != (history is None):
        raise ValueError("evaluate_link: inputs were computed "
                         f"{'without' if inputs.features is None else 'with'} a history, "
                         f"history is {'None' if history is None else 'given'}")
    return inputs


def link_ranks(bound, params, graph, pos_pairs, neg_pairs, num_nodes: int, key: jax.Array,
               num_ranking_negatives: int = 100, memory_bytes: int = EVAL_MEMORY_BYTES,
               history=None, inputs: LinkEvalInputs | None = None) -> jax.Array:
    """``[P]`` rank of each positive among its ``num_ranking_negatives`` corrupted pairs
    (:func:`metrics.ranks`: ties count against it), the ranks MRR and Hits@K of
    :func:`evaluate_link` average; arguments as there.

    Raises:
      ValueError: ``inputs`` of other pairs, another ``num_ranking_negatives`` or history.
    """
    pos_pairs, neg_pairs = np.asarray(pos_pairs), np.asarray(neg_pairs)
    inputs = _checked(inputs, pos_pairs, neg_pairs, num_ranking_negatives, history)
    return _ranking(bound, params, graph, jnp.asarray(pos_pairs), num_nodes,
                    num_ranking_negatives, memory_bytes, key, history, inputs)


def evaluate_link(bound, params, graph, pos_pairs, neg_pairs, num_nodes: int,
                  key: jax.Array, seen_nodes=None, num_ranking_negatives: int = 100,
                  hits_k: int = 10, memory_bytes: int = EVAL_MEMORY_BYTES,
                  history=None, inputs: LinkEvalInputs | None = None) -> dict:
    """Link metrics of ``params`` on fixed positive and negative pairs.

    ROC-AUC, AP and accuracy at 0.5 (the paper's metric) score ``pos_pairs`` against
    ``neg_pairs``; MRR and Hits@K rank each positive against ``num_ranking_negatives`` pairs
    that share its source node (destination corrupted, drawn from ``key`` and the positive's
    index: :func:`corrupt_destinations`). With ``seen_nodes`` ([N] bool: the node has training
    history) the same metrics are also given for the pairs whose two nodes are seen
    (``"seen"``: positives and negatives of that group only) and for those touching a new node
    (``"new"``). Pairs are scored in chunks whose activations take about ``memory_bytes``;
    the metrics do not depend on it. ``history`` (a ``history.PairHistory``) is what a
    decoder with pair features reads, for the given pairs and the ranking ones alike.

    Args:
      bound: the ``train.BoundModel`` of ``params``.
      inputs: :func:`evaluation_inputs` of the same pairs, ``num_nodes``, ``key``, ``history``
        and ``num_ranking_negatives``, computed ahead (once for every run evaluated on these
        pairs); None derives every pair's features here, chunk by chunk. The metrics are the
        same either way, but for the tie of a corrupted pair equal to its positive, which
        may fall either way when the two logits come from two programs.

    Returns:
      dict: roc_auc, ap, accuracy, mrr, hits@K (floats) and, with ``seen_nodes``, ``seen`` and
      ``new`` dicts of roc_auc / ap / accuracy / pairs (None where a group lacks a class).

    Raises:
      ValueError: ``inputs`` of other pairs, another ``num_ranking_negatives`` or history.
    """
    pos_pairs, neg_pairs = np.asarray(pos_pairs), np.asarray(neg_pairs)
    inputs = _checked(inputs, pos_pairs, neg_pairs, num_ranking_negatives, history)
    logits = np.asarray(link_logits(bound, params, graph, inputs.pairs, memory_bytes,
                                    history, inputs.features))
    pos, neg = logits[: len(pos_pairs)], logits[len(pos_pairs):]
    out = metrics.pair_metrics(pos, neg)
    del out["pairs"]
    rank = _ranking(bound, params, graph, jnp.asarray(pos_pairs), num_nodes,
                    num_ranking_negatives, memory_bytes, key, history, inputs)
    mrr, hits = metrics.mrr_hits_of_ranks(rank, hits_k)
    out |= {"mrr": float(mrr), f"hits@{hits_k}": float(hits)}
    if seen_nodes is not None:
        seen_nodes = np.asarray(seen_nodes)
        pos_seen = seen_nodes[pos_pairs].all(axis=1)
        neg_seen = seen_nodes[neg_pairs].all(axis=1)
        out["seen"] = metrics.pair_metrics(pos[pos_seen], neg[neg_seen])
        out["new"] = metrics.pair_metrics(pos[~pos_seen], neg[~neg_seen])
    return out
