"""The two tasks: temporal link prediction and node classification.

A task turns a resolved :class:`~sparsegnn_jax.config.RunConfig` into a :class:`Problem` (data,
graph, split, the epoch's inputs), builds the model, makes the epoch function, evaluates, and
says what one step's forward pass sees (for FLOPs). Everything that differs between the tasks
lives here; runs and sweeps call :func:`get` and never switch on the task name.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsegnn_jax import data as sg_data
from sparsegnn_jax import graphs, models, train, walks
from sparsegnn_jax.config import RunConfig


@dataclasses.dataclass
class Problem:
    """The data side of a run, shared by every seed and sparsity of a sweep."""

    cfg: RunConfig
    graph: Any                 # the message-passing graph (jraph.GraphsTuple)
    features: np.ndarray | None
    num_nodes: int
    batch_size: int | None
    steps_per_epoch: int
    inputs: Any                # what the epoch reads: train.LinkInputs / train.NodeInputs
    split: Any
    info: dict                 # data sizes for the record
    labels: np.ndarray | None = None
    num_classes: int = 0

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def weight_matrices(path: str, leaf) -> bool:
    """Prunable leaves of the experiments: every weight matrix, not the node-embedding table.

    A lookup table costs no FLOPs, so pruning it saves nothing the paper counts.
    """
    return leaf.ndim >= 2 and not path.rsplit("/", 1)[-1] == "embedding"


def row_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (Kipf & Welling's bag-of-words preprocessing); zero rows stay 0."""
    features = np.asarray(features, np.float32)
    sums = np.abs(features).sum(axis=1, keepdims=True)
    return features / np.where(sums == 0, 1.0, sums)


def walk_features(ds, dim: int, edge_index=None) -> np.ndarray:
    """The paper's node inputs: skip-gram embeddings of (temporal) random walks, cached on disk.

    ``edge_index`` restricts the walks to those edges (the training edges for link prediction,
    so no future link shapes the embeddings). The walk seed is fixed per dataset, so the seeds
    of a sweep differ in model init, masks and data order, not in their inputs.
    """
    idx = slice(None) if edge_index is None else edge_index
    times = None if ds.times is None else np.asarray(ds.times)[idx]
    return walks.node_embeddings(0, np.asarray(ds.senders)[idx], np.asarray(ds.receivers)[idx],
                                 ds.num_nodes, times, dim=dim)


def encoder(cfg: RunConfig, in_dim: int | None, out_dim: int, num_nodes: int, rngs,
            input_dropout: bool = False) -> nnx.Module:
    """A message-passing encoder; featureless graphs get a learnable embedding table."""
    opts: dict[str, Any] = {}
    if input_dropout and in_dim is not None:
        opts["input_dropout"] = cfg.dropout  # Kipf & Welling drop the input features too
    if in_dim is None:
        in_dim = cfg.hidden
        opts["num_nodes"] = num_nodes
    return models.build(cfg.model, in_dim, cfg.hidden, out_dim, num_layers=cfg.num_layers,
                        rngs=rngs, dropout=cfg.dropout, **opts)


def _dataset(cfg: RunConfig):
    ds = sg_data.load(cfg.dataset, root=cfg.data_root, seed=cfg.seed)
    features = None if ds.features is None else row_normalise(ds.features)
    return ds, features


class LinkTask:
    """Temporal link prediction: chronological split, pairs scored by an encoder + decoder."""

    name = "link"
    default_dataset = "synthetic-temporal"

    def prepare(self, cfg: RunConfig) -> Problem:
        ds, features = _dataset(cfg)
        split = sg_data.temporal_link_split(ds)
        if cfg.model == "mlp":
            features = walk_features(ds, cfg.embedding_dim, split.train_index)
        n = split.num_nodes
        graph = graphs.from_edges(split.graph_senders, split.graph_receivers, n,
                                  node_features=features, symmetric=True, self_loops=True)
        train_edges = jnp.asarray(split.train_edges)
        batch_size = min(cfg.batch_size, int(train_edges.shape[0]))
        steps_per_epoch = int(train_edges.shape[0]) // batch_size
        inputs = train.LinkInputs(graph, train_edges,
                                  jnp.asarray(sg_data.edge_keys(split.train_edges, n)))
        info = dict(num_nodes=n, train_edges=int(train_edges.shape[0]),
                    val_edges=len(split.val_edges), test_edges=len(split.test_edges),
                    steps_per_epoch=steps_per_epoch, steps=steps_per_epoch * cfg.epochs)
        return Problem(cfg, graph, features, n, batch_size, steps_per_epoch, inputs, split, info,
                       labels=ds.labels, num_classes=ds.num_classes)

    def build_model(self, problem: Problem, seed: int) -> nnx.Module:
        cfg, features = problem.cfg, problem.features
        rngs = nnx.Rngs(seed)
        if cfg.model == "mlp":
            # The paper's link model: concat of two embeddings -> Linear(2d, 128) -> ReLU -> 1.
            return models.LinkPredictor(models.Identity(), models.MLPDecoder(
                cfg.embedding_dim, cfg.hidden, mode="concat", init="torch", rngs=rngs))
        in_dim = None if features is None else features.shape[1]
        enc = encoder(cfg, in_dim, cfg.hidden, problem.num_nodes, rngs)
        if cfg.decoder == "dot":
            decoder = models.DotDecoder()
        else:
            decoder = models.MLPDecoder(cfg.hidden, cfg.hidden,
                                        mode=cfg.decoder.removeprefix("mlp_"), rngs=rngs)
        return models.LinkPredictor(enc, decoder)

    def make_epoch(self, problem: Problem, bound, tx, mesh=None) -> Callable:
        return train.make_link_epoch(bound, tx, problem.batch_size, problem.num_nodes, mesh)

    def evaluate(self, problem: Problem, bound, params, which: str) -> dict:
        split = problem.split
        all_keys = sg_data.edge_keys(split.all_edges, problem.num_nodes)
        edges = split.val_edges if which == "val" else split.test_edges
        return train.evaluate_link(bound, params, problem.graph, edges, problem.num_nodes,
                                   all_keys, jax.random.key(problem.cfg.seed + 10_000))

    def flops_inputs(self, problem: Problem) -> tuple[Any, Any]:
        """What one training step's and the test set's forward passes see.

        A step scores ``batch_size`` positives and as many negatives.
        """
        return ((problem.graph, 2 * problem.batch_size),
                (problem.graph, len(problem.split.test_edges)))


class NodeTask:
    """Node classification on a labelled graph (full-batch GNNs, minibatched paper MLP)."""

    name = "node"
    default_dataset = "synthetic-sbm"

    def prepare(self, cfg: RunConfig) -> Problem:
        ds, features = _dataset(cfg)
        if ds.labels is None:
            raise ValueError(f"--dataset={cfg.dataset!r} has no node labels; "
                             "node classification needs a labelled dataset")
        split = ds.split if ds.split is not None else sg_data.node_split(ds.labels, cfg.seed)
        if cfg.model == "mlp":
            features = walk_features(ds, cfg.embedding_dim)
        n = ds.num_nodes
        graph = graphs.from_edges(ds.senders, ds.receivers, n, node_features=features,
                                  symmetric=True, self_loops=True, edge_weights=ds.edge_weights)
        train_idx = jnp.asarray(split.train)
        steps_per_epoch = train.node_steps_per_epoch(int(train_idx.shape[0]), cfg.batch_size)
        inputs = train.NodeInputs(graph, jnp.asarray(ds.labels), train_idx)
        info = dict(num_nodes=n, num_classes=ds.num_classes, train_nodes=len(split.train),
                    val_nodes=len(split.val), test_nodes=len(split.test),
                    steps_per_epoch=steps_per_epoch, steps=steps_per_epoch * cfg.epochs)
        return Problem(cfg, graph, features, n, cfg.batch_size, steps_per_epoch, inputs, split,
                       info, labels=ds.labels, num_classes=ds.num_classes)

    def build_model(self, problem: Problem, seed: int) -> nnx.Module:
        cfg, features = problem.cfg, problem.features
        rngs = nnx.Rngs(seed)
        in_dim = None if features is None else features.shape[1]
        c = problem.num_classes
        if cfg.model == "mlp":
            return models.NodeClassifier(models.Identity(), models.paper_node_mlp(
                rngs, num_classes=c, in_dim=in_dim))
        return models.NodeClassifier(
            encoder(cfg, in_dim, c, problem.num_nodes, rngs, input_dropout=True), None)

    def make_epoch(self, problem: Problem, bound, tx, mesh=None) -> Callable:
        return train.make_node_epoch(bound, tx, problem.batch_size, mesh)

    def evaluate(self, problem: Problem, bound, params, which: str) -> dict:
        split = problem.split
        idx = split.val if which == "val" else split.test
        return train.evaluate_node(bound, params, problem.graph, problem.labels, idx,
                                   problem.num_classes)

    def flops_inputs(self, problem: Problem) -> tuple[Any, Any]:
        """What one training step's and the test set's forward passes see.

        Message passing sees the whole graph; the MLP on embeddings only its minibatch rows.
        """
        graph = problem.graph
        if problem.cfg.model != "mlp" or problem.steps_per_epoch <= 1:
            return graph, graph
        b = problem.batch_size
        rows = graphs.from_edges(np.zeros(0, np.int32), np.zeros(0, np.int32), b,
                                 node_features=np.zeros((b, problem.features.shape[1]), np.float32),
                                 symmetric=False, self_loops=False)
        return rows, graph


TASKS = {"link": LinkTask(), "node": NodeTask()}


def get(name: str):
    """The task object called ``name`` ("link" or "node")."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}") from None
