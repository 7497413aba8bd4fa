"""What both tasks share: the :class:`Problem`, which leaves are pruned, node inputs and the
message-passing encoder of a run."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from sparsegnn_jax import data as sg_data
from sparsegnn_jax import features as features_lib
from sparsegnn_jax import models, sampled, sampling, walks
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
    # Link prediction, per part ("val", "test"): the message-passing graph of what is known
    # then (every training edge; and the validation edges for the test), the fixed pairs
    # (pos, neg), which nodes have history then, the baselines' metrics on the same pairs and
    # history {name: metrics}, and the pair histories ("train" too; None without
    # --pair-features=history).
    eval_graphs: dict | None = None
    eval_pairs: dict | None = None
    seen_nodes: dict | None = None
    baselines: dict | None = None
    histories: dict | None = None
    # Streaming evaluation (--eval-protocol=dyglib): {part: streaming.Stream} and
    # inputs_at(known) -> (graph, history) of a prefix of the stream.
    streams: dict | None = None
    stream_inputs: Callable | None = None
    # The input row of a node without history (link ``--model=mlp``): what such a node reads,
    # and the share of rows replaced by it while training (``cold_start_rate``).
    cold_row: np.ndarray | None = None
    cold_start: float = 0.0
    # With --fanout: the sampled.BlockSource training steps draw their blocks from.
    blocks: Any = None
    # Link prediction, per part: the evaluation's inputs that do not depend on the params
    # (link_eval.LinkEvalInputs), filled on first use. Copies made with dataclasses.replace
    # (a sweep's runs) share the dict, so every run reads the same inputs; a copy with other
    # eval_pairs needs eval_inputs={} (evaluate_link refuses inputs of other pairs).
    eval_inputs: dict = dataclasses.field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    def history(self, part: str):
        """The ``history.PairHistory`` known when ``part`` is predicted, or None."""
        return None if self.histories is None else self.histories[part]


@dataclasses.dataclass(frozen=True)
class WithInputs:
    """``params -> fn(params, inputs)``: a function of the parameters whose data (graph, pairs,
    labels, ...) stays an argument.

    A plain closure over graph-sized arrays, once jitted, embeds them in the program as
    constants: XLA then constant-folds whatever it computes from them alone (a GCN's degrees:
    a scatter-add over every edge) at every compilation, a cost that grows with the graph.
    :func:`jit_with_inputs` passes ``inputs`` to the compiled function instead.
    """

    fn: Callable   # fn(params, inputs)
    inputs: Any    # a pytree of arrays

    def __call__(self, params):
        return self.fn(params, self.inputs)


def jit_with_inputs(fn: Callable, transform: Callable = lambda f: f) -> Callable:
    """``jax.jit(transform(fn))`` as a function of the params, with a :class:`WithInputs`'
    data as arguments of the compiled function rather than constants in it.

    Args:
      fn: ``params -> value``, a :class:`WithInputs` or any callable (jitted as it is).
      transform: applied to the params function before jitting (e.g. ``jax.vmap``s over run
        axes of the params).

    Returns:
      ``params -> value``; its ``lower(params)`` gives the lowered program.
    """
    if not isinstance(fn, WithInputs):
        return jax.jit(transform(fn))
    jitted = jax.jit(lambda inputs, params: transform(lambda p: fn.fn(p, inputs))(params))

    class Jitted:
        def __call__(self, params):
            return jitted(fn.inputs, params)

        def lower(self, params):
            return jitted.lower(fn.inputs, params)

    return Jitted()


def weight_matrices(path: str, leaf) -> bool:
    """Prunable leaves of the experiments: every weight matrix, not the node-embedding table.

    A lookup table costs no FLOPs, so pruning it saves nothing the paper counts.
    """
    return leaf.ndim >= 2 and not path.rsplit("/", 1)[-1] == "embedding"


def prunable_params(path: str, leaf) -> bool:
    """What the methods prune: every weight matrix (:func:`weight_matrices`) and the encoder's
    edge-weight leaf (``models.Encoder(num_edges=...)``, present only with ``--edge-sparsity``).
    """
    return weight_matrices(path, leaf) or models.is_edge_weight(path)


def edge_leaf_size(cfg: RunConfig, graph) -> int | None:
    """The encoder's ``num_edges`` when ``cfg.edge_sparsity`` is set, else None (no edge leaf):
    the edges of the message-passing ``graph`` between two distinct nodes, which the tasks store
    before the self loops (``graphs.self_loops_last``). Self loops stay outside the leaf: pruning
    one would take a node's own input away, not a message between nodes.

    Raises:
      ValueError: a self loop stored before another edge.
    """
    if cfg.edge_sparsity is None:
        return None
    loops = np.asarray(graph.senders) == np.asarray(graph.receivers)
    size = int(np.sum(~loops))
    if np.any(loops[:size]):
        raise ValueError("edge_leaf_size: the graph stores a self loop before another edge; "
                         "reorder it with graphs.self_loops_last")
    return size


def row_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (Kipf & Welling's bag-of-words preprocessing); zero rows stay 0."""
    features = np.asarray(features, np.float32)
    sums = np.abs(features).sum(axis=1, keepdims=True)
    return features / np.where(sums == 0, 1.0, sums)


def walk_features(ds, dim: int, edge_index=None, epochs: int = 1) -> np.ndarray:
    """The paper's node inputs: skip-gram embeddings of (temporal) random walks, cached on disk.

    ``edge_index`` restricts the walks to those edges (the training edges for link prediction,
    so no future link shapes the embeddings); ``epochs`` are skip-gram's passes over the walk
    pairs. The walk seed is fixed per dataset, so the seeds of a sweep differ in model init,
    masks and data order, not in their inputs.
    """
    idx = slice(None) if edge_index is None else edge_index
    times = None if ds.times is None else np.asarray(ds.times)[idx]
    return walks.node_embeddings(0, np.asarray(ds.senders)[idx], np.asarray(ds.receivers)[idx],
                                 ds.num_nodes, times, dim=dim, epochs=epochs)


def encoder(cfg: RunConfig, in_dim: int | None, out_dim: int, num_nodes: int, rngs,
            input_dropout: bool = False, num_edges: int | None = None) -> nnx.Module:
    """A message-passing encoder over ``cfg.features`` (link) or the dataset's features.

    Featureless graphs get a learnable embedding table (``ids``) whose nodes without edges
    share one learnt row, structural features of the graph (``struct``), or both.
    ``num_edges`` (:func:`edge_leaf_size`) adds the learnable edge-weight leaf.
    """
    opts: dict[str, Any] = {}
    if num_edges is not None:
        opts["num_edges"] = num_edges
    if input_dropout and in_dim is not None:
        opts["input_dropout"] = cfg.dropout  # Kipf & Welling drop the input features too
    if cfg.features == "ids+struct":
        # graph.nodes = [structure | has-history flag] beside the id table.
        opts.update(num_nodes=num_nodes, cold_start=True,
                    node_features=len(features_lib.STRUCTURE_COLUMNS))
        in_dim = cfg.hidden
    elif cfg.features == "ids":
        opts.update(num_nodes=num_nodes, cold_start=True)  # graph.nodes = [has-history flag]
        in_dim = cfg.hidden
    elif in_dim is None:
        in_dim = cfg.hidden
        opts["num_nodes"] = num_nodes
    return models.build(cfg.model, in_dim, cfg.hidden, out_dim, num_layers=cfg.num_layers,
                        rngs=rngs, dropout=cfg.dropout, **opts)


def block_source(cfg: RunConfig, graph, num_seeds: int, node_rows) -> Any:
    """The ``sampled.BlockSource`` of a run with ``--fanout`` (None without): blocks of at most
    ``num_seeds`` seeds of the message-passing ``graph``, ``node_rows`` gathered into them."""
    if cfg.fanout is None:
        return None
    return sampled.BlockSource(graph, sampling.parse_fanouts(cfg.fanout), num_seeds,
                               None if node_rows is None else np.asarray(node_rows))


def sampling_info(blocks) -> dict:
    """The record's description of sampled training (fan-outs, block sizes); ``{}`` without."""
    return {} if blocks is None else blocks.info()


def dataset_of(cfg: RunConfig):
    ds = sg_data.load(cfg.dataset, root=cfg.data_root, seed=cfg.seed)
    features = None if ds.features is None else row_normalise(ds.features)
    return ds, features
