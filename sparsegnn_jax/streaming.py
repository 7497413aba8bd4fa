"""Streaming link evaluation: each batch scored on everything known before it.

The temporal-graph benchmarks (DyGLib, TGB) score the events of a part in batches of 200, in
time order, and every earlier event - earlier batches of the same part included - is known
when a batch is scored. Here a batch's message-passing graph, node inputs and pair history are
built from that prefix of the stream, and the baselines see exactly the same prefix. Metrics
are DyGLib's: AP and ROC-AUC per batch, averaged (``data.mean_batch_metrics``); the pooled
metrics over every pair of the part come beside them.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from sparsegnn_jax import baselines, graphs, metrics, train
from sparsegnn_jax import data as sg_data


class Stream(NamedTuple):
    """The batches of one part and the stream events a history may hold.

    Attributes:
      batches: ``data.StreamBatch`` list, in order (``history_end``: the batch's first event).
      known: sorted stream indices that may enter a history (DyGLib leaves the training
        period's events of its "new test nodes" out of every history).
    """

    batches: list
    known: np.ndarray

    def prefix(self, batch) -> np.ndarray:
        """Stream indices known when ``batch`` is scored."""
        return self.known[: np.searchsorted(self.known, batch.history_end)]

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every batch's positives and negatives, concatenated."""
        return (np.concatenate([b.positives for b in self.batches]),
                np.concatenate([b.negatives for b in self.batches]))


def dyglib_streams(ds, split, setting: str, negatives: str) -> dict:
    """``{"val": Stream, "test": Stream}`` of DyGLib's protocol on ``split``
    (``data.dyglib_split``)."""
    known = np.setdiff1d(np.arange(split.src.size), split.hidden)
    return {part: Stream(sg_data.evaluation_batches(split, part, setting, negatives), known)
            for part in ("val", "test")}


def padded(graph, num_nodes: int, num_edges: int):
    """``graph`` padded to ``num_nodes + 1`` nodes and ``num_edges`` edges: one shape for every
    prefix of a stream, so the scoring function compiles once."""
    return graphs.pad_to_bucket(graph, num_nodes + 1, num_edges).graph


def score(bound, params, stream: Stream, inputs_at: Callable, progress=None) -> dict:
    """The model's metrics on a stream.

    Args:
      bound, params: a link predictor (``train.split_model``) and its parameters.
      stream: the part's :class:`Stream`.
      inputs_at: ``inputs_at(known_indices) -> (graph, history)``: the message-passing graph
        (one shape for every prefix, e.g. :func:`padded`) and the ``history.PairHistory``
        (or None) of the given stream events.
      progress: optional wrapper of the batch iterator (a progress bar).

    Returns:
      ``{"ap", "roc_auc"}`` averaged over batches (DyGLib's), ``num_batches``, ``pooled``:
      ROC-AUC / AP / accuracy over every pair of the part, and that ``accuracy``.
    """
    pos_scores, neg_scores = [], []
    batches = stream.batches if progress is None else progress(stream.batches)
    for batch in batches:
        graph, history = inputs_at(stream.prefix(batch))
        pairs = jnp.asarray(np.concatenate([batch.positives, batch.negatives]))
        logits = np.asarray(train.link_logits(bound, params, graph, pairs,
                                              train.EVAL_MEMORY_BYTES, history))
        pos_scores.append(logits[: len(batch.positives)])
        neg_scores.append(logits[len(batch.positives):])
    out = sg_data.mean_batch_metrics(pos_scores, neg_scores)
    pooled = metrics.pair_metrics(np.concatenate(pos_scores), np.concatenate(neg_scores))
    del pooled["pairs"]
    # Accuracy at 0.5 (the paper's metric) has no per-batch form here: the pooled one.
    return out | {"accuracy": pooled["accuracy"], "pooled": pooled}


def baseline_scores(ds, split, stream: Stream) -> dict:
    """Every baseline's DyGLib metrics on the stream, each batch on the same prefix as the
    model: the heuristics of ``baselines.BASELINES`` on the prefix's distinct pairs, and
    EdgeBank as DyGLib runs it (directed; ``edgebank``: unlimited memory, ``edgebank_tw``:
    the last 15% of the history's time), in place of the package's undirected EdgeBank."""
    src, dst = np.asarray(ds.senders), np.asarray(ds.receivers)
    n = ds.num_nodes
    per_batch = {name: ([], []) for name in baselines.BASELINES if name != "edgebank"}
    for batch in stream.batches:
        idx = stream.prefix(batch)
        codes = np.unique(sg_data.pair_codes(src[idx], dst[idx], n))
        hist_src, hist_dst = codes // n, codes % n
        pairs = np.concatenate([batch.positives, batch.negatives])
        for name, lists in per_batch.items():
            s = baselines.BASELINES[name](hist_src, hist_dst, n, pairs)
            lists[0].append(s[: len(batch.positives)])
            lists[1].append(s[len(batch.positives):])
    out = {name: sg_data.mean_batch_metrics(*lists) for name, lists in per_batch.items()}
    out["edgebank"] = sg_data.mean_batch_metrics(
        *sg_data.edgebank_scores(split, stream.batches, memory="unlimited"))
    out["edgebank_tw"] = sg_data.mean_batch_metrics(
        *sg_data.edgebank_scores(split, stream.batches, memory="tw"))
    return out
