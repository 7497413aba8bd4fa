"""Temporal link prediction: chronological (or DyGLib's, or for a graph without timestamps a
random) split, pairs scored by an encoder and a decoder that also reads each pair's history."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsegnn_jax import data as sg_data
from sparsegnn_jax import baselines, graphs, metrics, models, sampled, streaming, train, walks
from sparsegnn_jax import features as features_lib
from sparsegnn_jax import history as history_lib
from sparsegnn_jax.config import RunConfig

from .common import (Problem, WithInputs, block_source, dataset_of, edge_leaf_size, encoder,
                     sampling_info, walk_features)


def link_decoder(cfg: RunConfig, width: int, rngs, init: str = "glorot") -> nnx.Module:
    """The pair decoder ``cfg.decoder`` on node embeddings of ``width`` (MLP hidden
    ``cfg.hidden``), reading the pair history's columns too with ``--pair-features=history``."""
    if cfg.decoder == "dot":
        return models.DotDecoder()
    extra = history_lib.NUM_PAIR_FEATURES if cfg.pair_features == "history" else 0
    return models.MLPDecoder(width, cfg.hidden, mode=cfg.decoder.removeprefix("mlp_"),
                             init=init, pair_features=extra, rngs=rngs)


def time_scale(times, index) -> float:
    """The time unit of recencies and ages: a hundredth of the period ``times[index]`` spans
    (the training period), at least 1; 1 without times."""
    if times is None or not len(index):
        return 1.0
    t = np.asarray(times)[index]
    return max(float(t.max()) - float(t.min()), 1.0) / 100.0


def _distinct_pairs(senders, receivers, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (src, dst) pairs of an event list (what the heuristics count once)."""
    codes = np.unique(sg_data.pair_codes(senders, receivers, num_nodes))
    return (codes // num_nodes).astype(np.int32), (codes % num_nodes).astype(np.int32)


EVAL_SEED = 0
#: Seed of the key the ranking evaluation corrupts destinations with (``train.evaluate_link``).
RANKING_SEED = EVAL_SEED + 10_000
#: Seed of the random link split of a graph without timestamps (``data.random_link_split``).
SPLIT_SEED = 0
#: Fewest optimizer steps of a link epoch (the targets are cycled with fresh negatives).
MIN_STEPS_PER_EPOCH = 16


def cold_start_rate(has_history: np.ndarray, targets: np.ndarray,
                    val_positives: np.ndarray) -> float:
    """The share of node rows ``models.ColdStartDropout`` replaces at each training step.

    Training targets show a share ``t`` of endpoints without history; the validation pairs,
    like the test pairs after them, usually more (nodes keep arriving). Replacing each other
    row with probability ``r`` shows ``t + (1 - t) r`` such endpoints, so
    ``r = (v - t) / (1 - t)`` matches the share ``v`` of the validation positives' endpoints;
    0 when the validation pairs hold no more of them than the targets.

    Args:
      has_history: ``[N]`` bool, whether a node has an edge in the message-passing graph.
      targets: ``[T, 2]`` training target pairs.
      val_positives: ``[V, 2]`` validation positive pairs.

    Returns:
      a rate in ``[0, 1)``.
    """
    has_history = np.asarray(has_history, bool)
    t = float(np.mean(~has_history[np.asarray(targets)])) if len(targets) else 0.0
    v = float(np.mean(~has_history[np.asarray(val_positives)])) if len(val_positives) else 0.0
    if v <= t or t >= 1.0:
        return 0.0
    # Below 1 so that some rows keep their own inputs (ColdStartDropout's contract).
    return min((v - t) / (1.0 - t), 0.99)


def check_link_graph(ds) -> None:
    """Refuses a graph on which link prediction measures nothing.

    Raises:
      ValueError: every edge is a self-loop (no link between two nodes to learn), or the
        graph has 2 nodes (no pair of distinct nodes is left to be a negative). Fewer than 2
        nodes is left to the split, which names it.
    """
    if ds.num_nodes < 2:
        return
    if np.all(np.asarray(ds.senders) == np.asarray(ds.receivers)):
        raise ValueError(f"dataset {ds.name!r}: all {ds.num_edges} edges are self-loops: no "
                         "link between two nodes to learn or predict")
    if ds.num_nodes < 3:
        raise ValueError(f"dataset {ds.name!r} has {ds.num_nodes} nodes: link prediction needs "
                         "at least 3 (with two, no pair of distinct nodes is left to be a "
                         "negative)")


def _grouped_auc_ap(seen_pair: np.ndarray) -> Callable:
    """Baseline metrics on all pairs and on the ``seen`` / ``new`` groups of pairs."""

    def group(scores, labels, mask):
        if mask.sum() == 0 or labels[mask].min() == labels[mask].max():
            return {"roc_auc": None, "ap": None, "pairs": int(mask.sum())}
        return baselines.auc_ap(scores[mask], labels[mask]) | {"pairs": int(mask.sum())}

    def metrics_fn(scores, labels):
        return (baselines.auc_ap(scores, labels)
                | {"seen": group(scores, labels, seen_pair),
                   "new": group(scores, labels, ~seen_pair)})

    return metrics_fn


class LinkTask:
    """Link prediction: chronological split (a seeded random one for a graph without
    timestamps, ``--split``), pairs scored by an encoder + decoder.

    Training: the latest ``target_fraction`` of the training edges are the targets and the
    earlier ones the message-passing graph, so the model predicts links it cannot see and
    learns how nodes without history link (they are targets too, not only negatives).
    With ``--edge-sparsity`` the encoder's edge weights cover the training-time graph's edges
    (never the targets); the evaluation graph lists those edges first, so each keeps its learnt
    weight (0 when pruned), and the edges it adds (the targets' links) get weight 1: always kept.
    Evaluation: the message-passing graph holds every training edge; validation and test pairs
    are fixed per seed (``data.evaluation_pairs``), scored by the model and by the
    non-learned baselines alike, overall and split into pairs of two seen nodes (``seen``)
    and pairs touching a node without training history (``new``).
    """

    name = "link"
    default_dataset = "synthetic-temporal"
    script = "link_pred"
    title = "temporal link prediction"
    scores_pairs = True  # takes the link flags (decoder, targets, features, protocol, ...)

    def prepare(self, cfg: RunConfig) -> Problem:
        ds, _ = dataset_of(cfg)
        check_link_graph(ds)
        streams = None
        if cfg.eval_protocol == "dyglib":
            dyglib = sg_data.dyglib_split(ds)
            split = sg_data.link_split_of(ds, dyglib.train, dyglib.val, dyglib.test,
                                          cfg.target_fraction)
            streams = streaming.dyglib_streams(ds, dyglib, cfg.dyglib_setting,
                                               cfg.dyglib_negatives)
            how = "dyglib"
        else:
            how = sg_data.choose_split(ds, cfg.split)
            if how == "random":
                # Seeded per dataset, not per run: every seed and method of a sweep, and the
                # baselines, see the same parts (as the evaluation pairs, EVAL_SEED).
                split = sg_data.random_link_split(ds, seed=SPLIT_SEED,
                                                  target_fraction=cfg.target_fraction)
            else:
                split = sg_data.temporal_link_split(ds, target_fraction=cfg.target_fraction)
        n = split.num_nodes
        src, dst = np.asarray(ds.senders), np.asarray(ds.receivers)
        times = None if ds.times is None else np.asarray(ds.times)
        # What is known when each part is predicted, as indices of the time-ordered events:
        # training steps see the history before the targets, validation every training event,
        # the test every training and validation event.
        known = {"train": split.history_index, "val": split.train_index,
                 "test": np.sort(np.concatenate([split.train_index, split.val_index]))}
        scale = time_scale(times, split.train_index)
        history_degree = graphs.degrees(split.history_senders, split.history_receivers, n)
        rows, cold_row = self._node_inputs(cfg, ds, history_degree > 0, known, scale)
        graph = {part: graphs.from_edges(src[idx], dst[idx], n, node_features=rows[part],
                                         symmetric=True, self_loops=True)
                 for part, idx in known.items()}
        if cfg.edge_sparsity is not None:
            # The edge weights are learnt on the training-time graph's edges (self loops last,
            # outside them): they come first in the evaluation graphs too, and the edges those
            # add (the targets' and validation's links) keep weight 1 (never pruned).
            graph["train"] = graphs.self_loops_last(graph["train"])
            for part in ("val", "test"):
                graph[part] = graphs.with_edges_first(graph["train"], graph[part])
        histories = None
        if cfg.pair_features == "history":
            train_history = history_lib.build(src[known["train"]], dst[known["train"]],
                                              None if times is None else times[known["train"]],
                                              n, scale)
            histories = {part: history_lib.build(
                src[idx], dst[idx], None if times is None else times[idx], n, scale,
                history_lib.scales_of(train_history)) for part, idx in known.items()
                if part != "train"} | {"train": train_history}
        targets = jnp.asarray(split.target_edges)
        batch_size = min(cfg.batch_size, int(targets.shape[0]))
        # An epoch keeps the step budget of one pass over every training pair: holding targets
        # out must not shrink training five-fold (it cycles through the targets instead). And
        # at least MIN_STEPS_PER_EPOCH: a repetitive graph has few distinct pairs (Enron: 125k
        # events, 3k pairs, one step an epoch), and 20 steps in all left models still
        # improving at the last epoch; RigL, starting sparse, furthest behind.
        steps_per_epoch = max(MIN_STEPS_PER_EPOCH, len(split.train_edges) // batch_size)
        negative_nodes = (np.flatnonzero(history_degree > 0)
                          if cfg.train_negatives == "history" else np.arange(n))
        if negative_nodes.size < 2:
            negative_nodes = np.arange(n)
        inputs = train.LinkInputs(graph["train"], targets,
                                  jnp.asarray(sg_data.edge_keys(split.train_edges, n)),
                                  jnp.asarray(negative_nodes, jnp.int32),
                                  None if histories is None else histories["train"])
        # The evaluation pairs belong to the dataset's split, not to a training seed: every
        # run and seed of a sweep is scored on the same pairs, as the baselines are, on the
        # same history as the model.
        if streams is None:
            eval_pairs = {part: sg_data.evaluation_pairs(split, part, EVAL_SEED)
                          for part in ("val", "test")}
        else:  # model selection scores every validation batch on the training events
            eval_pairs = {part: stream.pairs() for part, stream in streams.items()}
        seen, base = {}, {}
        for part, (pos, neg) in eval_pairs.items():
            known_src, known_dst = _distinct_pairs(src[known[part]], dst[known[part]], n)
            seen[part] = graphs.degrees(known_src, known_dst, n) > 0
            seen_pair = seen[part][np.concatenate([pos, neg])].all(axis=1)
            base[part] = (baselines.evaluate(known_src, known_dst, n, pos, neg,
                                             metrics_fn=_grouped_auc_ap(seen_pair))
                          if streams is None
                          else streaming.baseline_scores(ds, dyglib, streams[part]))
        stream_inputs = None
        if streams is not None:
            stream_inputs = self._stream_inputs(cfg, ds, graph["train"], history_degree > 0,
                                                known["train"], streams["test"].known, scale,
                                                histories)
        cold_start = (cold_start_rate(history_degree > 0, split.target_edges,
                                      eval_pairs["val"][0])
                      if cfg.model == "mlp" and cfg.features == "walks+struct" else 0.0)
        test_pos = eval_pairs["test"][0]
        info = dict(num_nodes=n, split=how, train_edges=len(split.train_edges),
                    target_edges=len(split.target_edges),
                    history_edges=len(split.history_senders),
                    val_edges=len(eval_pairs["val"][0]), test_edges=len(test_pos),
                    new_node_share_test=float(1.0 - seen["test"][test_pos].all(axis=1).mean()),
                    cold_start_rate=cold_start,
                    steps_per_epoch=steps_per_epoch, steps=steps_per_epoch * cfg.epochs)
        # A step's seeds: both ends of its batch_size positives and as many negatives.
        blocks = block_source(cfg, graph["train"], 4 * batch_size, rows["train"])
        info |= sampling_info(blocks)
        return Problem(cfg, graph["train"], rows["train"], n, batch_size, steps_per_epoch,
                       inputs, split, info, labels=ds.labels, num_classes=ds.num_classes,
                       eval_graphs={p: graph[p] for p in ("val", "test")},
                       eval_pairs=eval_pairs, seen_nodes=seen, baselines=base,
                       histories=histories, streams=streams, stream_inputs=stream_inputs,
                       cold_row=cold_row, cold_start=cold_start, blocks=blocks)

    def _stream_inputs(self, cfg: RunConfig, ds, train_graph, has_history, history_index,
                       all_known, scale: float, histories) -> Callable:
        """``inputs_at(known) -> (graph, history)`` for streaming evaluation: the padded
        message-passing graph and the pair history of the given stream events, built as the
        evaluation graphs are (one shape for every prefix of ``all_known``)."""
        src, dst = np.asarray(ds.senders), np.asarray(ds.receivers)
        times = None if ds.times is None else np.asarray(ds.times)
        n = ds.num_nodes

        def graph_of(idx, rows):
            g = graphs.from_edges(src[idx], dst[idx], n, node_features=rows, symmetric=True,
                                  self_loops=True)
            return g if cfg.edge_sparsity is None else graphs.with_edges_first(train_graph, g)

        max_edges = int(graph_of(all_known, None).senders.shape[0])
        max_pairs = int(np.unique(sg_data.pair_codes(src[all_known], dst[all_known], n)).size)
        scales = None if histories is None else history_lib.scales_of(histories["train"])

        def inputs_at(idx):
            rows, _ = self._node_inputs(cfg, ds, has_history,
                                        {"train": history_index, "now": idx}, scale)
            graph = streaming.padded(graph_of(idx, rows["now"]), n, max_edges)
            history = (None if scales is None else history_lib.build(
                src[idx], dst[idx], None if times is None else times[idx], n, scale, scales,
                num_pairs=max_pairs))
            return graph, history

        return inputs_at

    @staticmethod
    def _node_inputs(cfg: RunConfig, ds, has_history: np.ndarray, known: dict, scale: float):
        """``graph.nodes`` of each message-passing graph ``{part: rows}`` (None: no inputs),
        and the row a node without history reads (None unless ``--model=mlp``).

        ``known[part]`` indexes the events the part's graph holds (in time order); structure
        is computed from them at the time of the last one. Whether a node has history (its id
        row or walk embedding was trained) is the training-time fact in every graph.
        ``walks+struct`` ends with that fact as a column: a node whose first edges fall
        among the targets has structure at evaluation but the zero walk row of a node
        without history, an input training never showed.
        """
        n = ds.num_nodes
        flag = has_history.astype(np.float32)[:, None]
        parts = {part: [] for part in known}
        parts_cold = []
        if cfg.model == "mlp":
            # Walks see the training-time graph only; nodes without a history walk get a zero
            # row (not skip-gram's random init), the same for every such node.
            emb = walk_features(ds, cfg.embedding_dim, known["train"],
                                epochs=walks.LINK_PREDICTION_EPOCHS)
            emb = np.where(has_history[:, None], emb, 0.0).astype(np.float32)
            for rows in parts.values():
                rows.append(emb)
            parts_cold.append(np.zeros(cfg.embedding_dim, np.float32))
        if cfg.features.endswith("struct"):
            times = None if ds.times is None else np.asarray(ds.times)
            src, dst = np.asarray(ds.senders), np.asarray(ds.receivers)
            struct = {}
            for part, idx in known.items():
                t = None if times is None else times[idx]
                end = 0.0 if t is None or not t.size else float(t.max())
                struct[part] = features_lib.temporal_structure(src[idx], dst[idx], t, n, end,
                                                               scale)
            cold_struct = features_lib.temporal_structure([], [], None, 1, 0.0, scale)[0]
            # Standardised with the training-time statistics (raw log-degrees of ~10 beside
            # unit-scale id rows slow training several-fold).
            mean, std = struct["train"].mean(axis=0), struct["train"].std(axis=0)
            std = np.where(std > 0, std, 1.0)
            for part, rows in parts.items():
                rows.append((struct[part] - mean) / std)
            parts_cold.append((cold_struct - mean) / std)
        if cfg.features.startswith("ids") or cfg.features == "walks+struct":
            for rows in parts.values():
                rows.append(flag)
            parts_cold.append(np.zeros(1, np.float32))
        if not parts["train"]:
            return {part: None for part in known}, None
        cold_row = np.concatenate(parts_cold).astype(np.float32) if cfg.model == "mlp" else None
        return ({part: np.concatenate(rows, axis=1).astype(np.float32)
                 for part, rows in parts.items()}, cold_row)

    def build_model(self, problem: Problem, seed: int) -> nnx.Module:
        cfg, features = problem.cfg, problem.features
        rngs = nnx.Rngs(seed)
        if cfg.model == "mlp":
            # The paper's link model on its node inputs (d = walk width, plus the structure
            # and has-history columns with walks+struct): mlp_concat is its
            # Linear(2d, 128) -> ReLU -> Linear(128, 1), mlp_pair reads 4d.
            enc = models.ColdStartDropout(problem.cold_row, problem.cold_start)
            return models.LinkPredictor(enc, link_decoder(cfg, features.shape[1], rngs, "torch"))
        in_dim = None if cfg.features.startswith("ids") or features is None else features.shape[1]
        enc = encoder(cfg, in_dim, cfg.hidden, problem.num_nodes, rngs,
                      num_edges=edge_leaf_size(cfg, problem.graph))
        return models.LinkPredictor(enc, link_decoder(cfg, cfg.hidden, rngs))

    def make_epoch(self, problem: Problem, bound, tx, mesh=None, compaction=None) -> Callable:
        if problem.blocks is not None:
            return sampled.make_sampled_link_epoch(bound, tx, problem.batch_size,
                                                   problem.num_nodes, problem.blocks,
                                                   steps=problem.steps_per_epoch)
        return train.make_link_epoch(bound, tx, problem.batch_size, problem.num_nodes, mesh,
                                     steps=problem.steps_per_epoch, compaction=compaction)

    def evaluate(self, problem: Problem, bound, params, which: str) -> dict:
        if problem.streams is not None:
            return streaming.score(bound, params, problem.streams[which], problem.stream_inputs)
        pos, neg = problem.eval_pairs[which]
        return train.evaluate_link(bound, params, problem.eval_graphs[which], pos, neg,
                                   problem.num_nodes, jax.random.key(RANKING_SEED),
                                   seen_nodes=problem.seen_nodes[which],
                                   history=problem.history(which),
                                   inputs=self.evaluation_inputs(problem, which))

    def evaluation_inputs(self, problem: Problem, which: str) -> train.LinkEvalInputs:
        """The inputs of ``which``'s evaluation that do not depend on the params (the pairs'
        and the ranking pairs' history features), computed on first use and kept on
        ``problem``: every run of a sweep and every later call reads them."""
        if which not in problem.eval_inputs:
            pos, neg = problem.eval_pairs[which]
            problem.eval_inputs[which] = train.evaluation_inputs(
                pos, neg, problem.num_nodes, jax.random.key(RANKING_SEED),
                problem.history(which),
                # Streaming evaluation ranks nothing here (validation_score reads the pairs).
                cache_bytes=0 if problem.streams is not None else train.RANKING_CACHE_BYTES)
        return problem.eval_inputs[which]

    def validation_score(self, problem: Problem, bound) -> Callable:
        """``score(params) -> validation ROC-AUC`` (vmappable over params), a
        ``WithInputs``: jit it with ``jit_with_inputs``, which passes the validation graph
        and pairs as arguments (not constants of the program)."""
        pos, neg = problem.eval_pairs["val"]
        labels = jnp.concatenate([jnp.ones(len(pos)), jnp.zeros(len(neg))])
        # The pairs' history features do not depend on the params: computed once, not at
        # every epoch of every run (they cost more than the MLP's scoring itself).
        val = self.evaluation_inputs(problem, "val")
        inputs = (problem.eval_graphs["val"], val.pairs, labels, val.features)

        def score(params, inputs):
            graph, pairs, labels, features = inputs
            return metrics.roc_auc(train.link_scores_chunked(bound, params, graph, pairs,
                                                             pair_features=features), labels)

        return WithInputs(score, inputs)

    def search_score(self, problem: Problem, bound) -> Callable:
        """What a lottery search takes its next masks by: :meth:`validation_score`."""
        return self.validation_score(problem, bound)

    def flops_inputs(self, problem: Problem) -> tuple[Any, Any]:
        """What one training step's and the test set's forward passes see.

        A step scores ``batch_size`` positives and as many negatives over the training-time
        graph; inference scores the test pairs over the whole training graph.
        """
        test_pairs = sum(len(x) for x in problem.eval_pairs["test"])
        if problem.blocks is not None:  # a sampled step encodes its padded block
            return ((problem.blocks.template(), 2 * problem.batch_size),
                    (problem.eval_graphs["test"], test_pairs))
        return ((problem.graph, 2 * problem.batch_size), (problem.eval_graphs["test"], test_pairs))
