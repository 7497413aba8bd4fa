"""Node classification on a labelled graph (full-batch GNNs, minibatched paper MLP)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsegnn_jax import data as sg_data
from sparsegnn_jax import graphs, metrics, models, sampled, train
from sparsegnn_jax.config import RunConfig

from .common import (Problem, WithInputs, block_source, dataset_of, edge_leaf_size, encoder,
                     sampling_info, walk_features)


def edge_saliency(bound, params, graph, labels, train_index) -> jax.Array:
    """How much removing each edge would raise a trained node classifier's loss, to first order.

    The loss is the cross-entropy over every node, against the true label on the training
    nodes and against the model's own prediction elsewhere, so every edge is scored, not only
    the edges within reach of a labelled node. An edge's score is ``-dL/dg`` for its gate ``g``
    at 1 (``g -> 0`` removes it): the first-order loss increase of its removal (the Taylor
    criterion of Molchanov et al., ICLR 2017, on edges). No validation or test label is read.

    Args:
      bound: the node classifier (``train.split_model``) with an ``encoder/edge_weight`` leaf.
      params: its parameters, trained (e.g. the dense run of ``--init-from``).
      graph: the message-passing graph.
      labels: ``[N]`` int labels (only the training nodes' are read).
      train_index: the training nodes.

    Returns:
      float32 ``[E]`` scores of the leaf's edges; higher means keep.
    """
    train_index = jnp.asarray(train_index)
    own = jnp.argmax(bound(params, graph), axis=-1)
    targets = own.at[train_index].set(jnp.asarray(labels)[train_index])

    def loss(edge_weight):
        p = dict(params, encoder=dict(params["encoder"], **{models.EDGE_WEIGHT: edge_weight}))
        log_probs = jax.nn.log_softmax(bound(p, graph))
        return -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], axis=1))

    return -jax.grad(loss)(params["encoder"][models.EDGE_WEIGHT])


def warn_if_edgeless(ds) -> None:
    """Warns when no edge joins two distinct nodes: message passing then sees each node alone."""
    if not np.any(np.asarray(ds.senders) != np.asarray(ds.receivers)):
        warnings.warn(f"dataset {ds.name!r} has no edge between two distinct nodes "
                      f"({ds.num_edges} edges, all self-loops): a message-passing model sees "
                      "each node alone", stacklevel=2)


class NodeTask:
    """Node classification on a labelled graph (full-batch GNNs, minibatched paper MLP)."""

    name = "node"
    default_dataset = "synthetic-sbm"
    script = "node_class"
    title = "node classification"
    scores_pairs = False

    def prepare(self, cfg: RunConfig) -> Problem:
        ds, features = dataset_of(cfg)
        if ds.labels is None:
            raise ValueError(f"--dataset={cfg.dataset!r} has no node labels; "
                             "node classification needs a labelled dataset")
        warn_if_edgeless(ds)
        split = ds.split if ds.split is not None else sg_data.node_split(ds.labels, cfg.seed)
        if cfg.model == "mlp":
            features = walk_features(ds, cfg.embedding_dim)
        n = ds.num_nodes
        graph = graphs.from_edges(ds.senders, ds.receivers, n, node_features=features,
                                  symmetric=True, self_loops=True, edge_weights=ds.edge_weights)
        if cfg.edge_sparsity is not None:
            graph = graphs.self_loops_last(graph)  # outside the edge weights (edge_leaf_size)
        if models.sparse_inputs.should_be_sparse(features):
            # Bag-of-words inputs: the first layer then multiplies their nonzeros only.
            graph = graph._replace(nodes=models.sparse_inputs.from_dense(features))
        train_idx = jnp.asarray(split.train)
        blocks = block_source(cfg, graph, min(cfg.batch_size or len(split.train),
                                              len(split.train)), features)
        steps_per_epoch = train.node_steps_per_epoch(int(train_idx.shape[0]), cfg.batch_size)
        inputs = train.NodeInputs(graph, jnp.asarray(ds.labels), train_idx)
        info = dict(num_nodes=n, num_classes=ds.num_classes, train_nodes=len(split.train),
                    val_nodes=len(split.val), test_nodes=len(split.test),
                    steps_per_epoch=steps_per_epoch, steps=steps_per_epoch * cfg.epochs,
                    **sampling_info(blocks))
        return Problem(cfg, graph, features, n, cfg.batch_size, steps_per_epoch, inputs, split,
                       info, labels=ds.labels, num_classes=ds.num_classes, blocks=blocks)

    def build_model(self, problem: Problem, seed: int) -> nnx.Module:
        cfg, features = problem.cfg, problem.features
        rngs = nnx.Rngs(seed)
        in_dim = None if features is None else features.shape[1]
        c = problem.num_classes
        if cfg.model == "mlp":
            return models.NodeClassifier(models.Identity(), models.paper_node_mlp(
                rngs, num_classes=c, in_dim=in_dim))
        return models.NodeClassifier(
            encoder(cfg, in_dim, c, problem.num_nodes, rngs, input_dropout=True,
                    num_edges=edge_leaf_size(cfg, problem.graph)), None)

    def make_epoch(self, problem: Problem, bound, tx, mesh=None, compaction=None) -> Callable:
        if problem.blocks is not None:
            return sampled.make_sampled_node_epoch(bound, tx, problem.batch_size, problem.blocks)
        return train.make_node_epoch(bound, tx, problem.batch_size, mesh, compaction)

    def validation_score(self, problem: Problem, bound) -> None:
        """Node runs report their last epoch (the papers' protocol): no selection."""
        return None

    def search_score(self, problem: Problem, bound) -> WithInputs:
        """``score(params) -> validation accuracy``, a ``WithInputs``: the epoch a lottery
        search takes its next masks from (UGS's best validation epoch); reported metrics
        stay the last epoch's."""
        inputs = (problem.graph, jnp.asarray(problem.labels), jnp.asarray(problem.split.val))

        def score(params, inputs):
            graph, labels, idx = inputs
            return metrics.accuracy(bound(params, graph)[idx], labels[idx])

        return WithInputs(score, inputs)

    def evaluate(self, problem: Problem, bound, params, which: str) -> dict:
        split = problem.split
        idx = split.val if which == "val" else split.test
        return train.evaluate_node(bound, params, problem.graph, problem.labels, idx,
                                   problem.num_classes)

    def flops_inputs(self, problem: Problem) -> tuple[Any, Any]:
        """What one training step's and the test set's forward passes see.

        Message passing sees the whole graph (with ``--fanout`` a step sees a padded block);
        the MLP on embeddings only its minibatch rows.
        """
        graph = problem.graph
        if problem.blocks is not None:
            return problem.blocks.template(), graph
        if problem.cfg.model != "mlp" or problem.steps_per_epoch <= 1:
            return graph, graph
        b = problem.batch_size
        rows = graphs.from_edges(np.zeros(0, np.int32), np.zeros(0, np.int32), b,
                                 node_features=np.zeros((b, problem.features.shape[1]), np.float32),
                                 symmetric=False, self_loops=False)
        return rows, graph
