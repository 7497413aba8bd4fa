"""One training run, end to end: data -> graph -> model -> sparsifier -> fit -> metrics -> FLOPs.

``experiments/link_pred.py`` and ``experiments/node_class.py`` are thin command lines over
``run``; ``sweeps`` (and ``experiments/sweep.py``) reuse the same building blocks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sparsegnn_jax import data as sg_data
from sparsegnn_jax import flops as sg_flops
from sparsegnn_jax import graphs, models, sparsity, train

METHODS = ("dense", "static", "one_shot", "gmp", "admm", "slr", "set", "rigl")
GNN_MODELS = ("gcn", "sage", "gat", "gin")
MODELS = GNN_MODELS + ("mlp",)

# The paper's mask-update period dT for RigL / SET, per task.
PAPER_UPDATE_EVERY = {"link": 500, "node": 1000}
# The paper's ADMM / SLR penalty weight, per task.
PAPER_RHO = {"link": 0.01, "node": 0.02}


@dataclasses.dataclass
class RunConfig:
    """Everything that defines one run; defaults follow the paper where it gives a value.

    Fields left as ``None`` are filled by :func:`resolve` from the task and model (the paper's
    hyper-parameters for ``model="mlp"``, Kipf & Welling's for GNNs).
    """

    task: str = "link"                     # "link" | "node"
    dataset: str = "synthetic-temporal"
    model: str = "gcn"
    method: str = "rigl"
    sparsity: float = 0.9
    distribution: str = "uniform"
    update_every: int | None = None        # dT for RigL / SET, multiplier period for ADMM / SLR
    drop_fraction: float | None = None     # None: the paper's cosine 0.5 -> 0.005
    end_fraction: float = 1.0              # fraction of training after which masks stop changing
    epochs: int | None = None
    hidden: int | None = None
    num_layers: int = 2
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None           # "sgd" (nesterov, cosine lr) | "adam"
    batch_size: int | None = None
    dropout: float | None = None
    decoder: str = "mlp_hadamard"          # link decoder for GNNs: dot | mlp_hadamard | mlp_concat
    embedding_dim: int | None = None       # walk-embedding width for model="mlp" (8 link, 64 node)
    rho: float | None = None
    seed: int = 0
    data_root: str | None = None
    checkpoint_dir: str | None = None      # where checkpoints go (None: no checkpoints)
    checkpoint_every: int = 0              # epochs between checkpoints (0: only the final one)
    resume: bool = False                   # continue from the latest checkpoint in checkpoint_dir
    devices: int = 1                       # data-parallel devices (minibatches split over them)
    progress: bool = True


def resolve(cfg: RunConfig) -> RunConfig:
    """Fills the ``None`` fields and validates the choices, naming the bad argument."""
    cfg = dataclasses.replace(cfg)
    if cfg.task not in ("link", "node"):
        raise ValueError(f"task must be 'link' or 'node', got {cfg.task!r}")
    if cfg.method not in METHODS:
        raise ValueError(f"unknown --method={cfg.method!r}; known methods: {', '.join(METHODS)}")
    if cfg.model not in MODELS:
        raise ValueError(f"unknown --model={cfg.model!r}; known models: {', '.join(MODELS)}")
    if not 0.0 <= cfg.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {cfg.sparsity}")
    known = sparsity.distributions.DISTRIBUTIONS
    if cfg.distribution not in known:
        raise ValueError(f"unknown --distribution={cfg.distribution!r}; known: {', '.join(known)}")
    if not 0.0 < cfg.end_fraction <= 1.0:
        raise ValueError(f"--end-fraction must be in (0, 1], got {cfg.end_fraction}")
    paper_mlp = cfg.model == "mlp"
    link = cfg.task == "link"
    if paper_mlp:
        defaults = dict(epochs=50 if link else 40, hidden=128 if link else 256,
                        lr=0.1, weight_decay=5e-4 if link else 1e-3,
                        optimizer="sgd" if link else "adam", batch_size=1024 if link else 128,
                        dropout=0.0 if link else 0.1, embedding_dim=8 if link else 64)
    else:
        # No weight decay for link prediction: the initial pair logits of a GCN on random
        # embeddings are ~1e-3, and an L2 term fed through Adam outweighs such gradients and
        # collapses sparse models to a constant predictor.
        defaults = dict(epochs=20 if link else 200, hidden=64 if link else 16, lr=0.01,
                        weight_decay=0.0 if link else 5e-4, optimizer="adam", batch_size=1024 if link else None,
                        dropout=0.0 if link else 0.5, embedding_dim=None)
    for name, value in defaults.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    if cfg.rho is None:
        cfg.rho = PAPER_RHO[cfg.task]
    if cfg.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {cfg.seed}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"--lr must be a positive finite number, got {cfg.lr}")
    if cfg.weight_decay < 0 or not math.isfinite(cfg.weight_decay):
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {cfg.weight_decay}")
    for name in ("epochs", "hidden", "num_layers"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.batch_size is not None and cfg.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {cfg.batch_size}")
    if cfg.devices < 1:
        raise ValueError(f"--devices must be >= 1, got {cfg.devices}")
    if cfg.devices > 1 and cfg.batch_size is not None and cfg.batch_size % cfg.devices:
        raise ValueError(f"--batch-size={cfg.batch_size} must be divisible by --devices={cfg.devices}")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
    if cfg.update_every is not None and cfg.update_every <= 0:
        raise ValueError(f"--update-every must be positive, got {cfg.update_every}")
    if cfg.drop_fraction is not None and not 0.0 < cfg.drop_fraction <= 1.0:
        raise ValueError(f"--drop-fraction must be in (0, 1], got {cfg.drop_fraction}")
    if cfg.optimizer not in ("sgd", "adam"):
        raise ValueError(f"--optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    return cfg


def inner_optimizer(cfg: RunConfig, total_steps: int) -> optax.GradientTransformation:
    """The dense optimizer the sparsifier wraps: the paper's SGD or Adam, with weight decay."""
    if cfg.optimizer == "sgd":
        lr = optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1))
        opt = optax.sgd(lr, momentum=0.9, nesterov=True)
    else:
        opt = optax.adam(cfg.lr)
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)


def weight_matrices(path: str, leaf) -> bool:
    """Prunable leaves of the experiments: every weight matrix, not the node-embedding table.

    A lookup table costs no FLOPs, so pruning it saves nothing the paper counts.
    """
    return leaf.ndim >= 2 and not path.rsplit("/", 1)[-1] == "embedding"


def method_schedule(cfg: RunConfig, total_steps: int, steps_per_epoch: int) -> dict:
    """Keyword arguments of ``sparsity.sparsifier`` for ``cfg.method`` over ``total_steps``.

    Phases follow the paper's SLR budget scaled to the run: half dense, a quarter penalty, a
    quarter masked retraining (20 / 10 / 10 of 40 epochs). One-shot prunes where SLR does; gradual
    magnitude pruning ramps from 10% to 50% of the run, then retrains.
    """
    method = cfg.method
    if method == "dense":
        return dict(filter_fn=weight_matrices)
    kw: dict[str, Any] = dict(sparsity=cfg.sparsity, distribution=cfg.distribution,
                              filter_fn=weight_matrices)
    if method == "static":
        return kw
    dense_steps = total_steps // 2
    penalty_steps = total_steps // 4
    if method == "one_shot":
        return kw | dict(prune_step=dense_steps + penalty_steps)
    if method == "gmp":
        every = cfg.update_every or max(1, steps_per_epoch)
        return kw | dict(begin_step=total_steps // 10, end_step=total_steps // 2, every=every)
    if method in ("admm", "slr"):
        every = cfg.update_every or max(1, steps_per_epoch)
        return kw | dict(rho=cfg.rho, dense_steps=dense_steps, penalty_steps=penalty_steps,
                         update_every=every)
    # set / rigl
    end_step = None if cfg.end_fraction >= 1.0 else max(1, int(cfg.end_fraction * total_steps))
    horizon = end_step or total_steps
    update_every = cfg.update_every or default_update_every(cfg.task, horizon)
    drop = (sparsity.schedules.paper_drop(horizon) if cfg.drop_fraction is None
            else sparsity.schedules.cosine_drop(cfg.drop_fraction, horizon))
    return kw | dict(update_every=update_every, drop_fraction=drop, end_step=end_step)


def default_update_every(task: str, horizon: int) -> int:
    """The paper's dT, shortened on small runs so that masks change at least ten times."""
    return max(1, min(PAPER_UPDATE_EVERY[task], horizon // 10))


# ----------------------------------------------------------------------------------------------


def _walk_features(ds, dim: int, edge_index=None) -> np.ndarray:
    """The paper's node inputs: skip-gram embeddings of (temporal) random walks, cached on disk.

    ``edge_index`` restricts the walks to those edges (the training edges for link prediction,
    so no future link shapes the embeddings). The walk seed is fixed per dataset.
    """
    from sparsegnn_jax import walks

    idx = slice(None) if edge_index is None else edge_index
    times = None if ds.times is None else np.asarray(ds.times)[idx]
    return walks.node_embeddings(0, np.asarray(ds.senders)[idx], np.asarray(ds.receivers)[idx],
                                 ds.num_nodes, times, dim=dim)


def row_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (Kipf & Welling's bag-of-words preprocessing); zero rows stay 0."""
    features = np.asarray(features, np.float32)
    sums = np.abs(features).sum(axis=1, keepdims=True)
    return features / np.where(sums == 0, 1.0, sums)


def _encoder(cfg: RunConfig, in_dim: int | None, out_dim: int, num_nodes: int, rngs):
    """A message-passing encoder; featureless graphs get a learnable embedding table."""
    opts: dict[str, Any] = {}
    if cfg.task == "node" and in_dim is not None:
        opts["input_dropout"] = cfg.dropout  # Kipf & Welling drop the input features too
    if in_dim is None:
        in_dim = cfg.hidden
        opts["num_nodes"] = num_nodes
    return models.build(cfg.model, in_dim, cfg.hidden, out_dim, num_layers=cfg.num_layers,
                        rngs=rngs, dropout=cfg.dropout, **opts)


def progress_bar(iterable, enabled: bool, desc: str):
    """A tqdm bar over ``iterable`` when ``enabled``, else the iterable itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


@dataclasses.dataclass
class Problem:
    """The data side of a run, shared by every seed and sparsity of a sweep.

    ``epoch_args`` are the arguments after the state of the task's epoch function
    (``train.make_link_epoch`` or ``train.make_node_epoch``).
    """

    cfg: RunConfig
    graph: Any
    features: np.ndarray | None
    num_nodes: int
    batch_size: int | None
    steps_per_epoch: int
    epoch_args: tuple
    split: Any
    info: dict
    labels: np.ndarray | None = None
    num_classes: int = 0

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def prepare(cfg: RunConfig) -> Problem:
    """Loads the dataset and builds the graph, split and training arrays of ``cfg``.

    Walk embeddings (``model="mlp"``) use one fixed walk seed per dataset so that the
    seeds of a sweep differ in model init, masks and data order, not in their inputs.
    """
    ds = sg_data.load(cfg.dataset, root=cfg.data_root, seed=cfg.seed)
    features = None if ds.features is None else row_normalise(ds.features)
    if cfg.task == "link":
        split = sg_data.temporal_link_split(ds)
        if cfg.model == "mlp":
            features = _walk_features(ds, cfg.embedding_dim, split.train_index)
        n = split.num_nodes
        graph = graphs.from_edges(split.graph_senders, split.graph_receivers, n,
                                  node_features=features, symmetric=True, self_loops=True)
        train_edges = jnp.asarray(split.train_edges)
        batch_size = min(cfg.batch_size, int(train_edges.shape[0]))
        steps_per_epoch = int(train_edges.shape[0]) // batch_size
        epoch_args = (graph, train_edges, jnp.asarray(sg_data.edge_keys(split.train_edges, n)))
        info = dict(num_nodes=n, train_edges=int(train_edges.shape[0]),
                    val_edges=len(split.val_edges), test_edges=len(split.test_edges))
    else:
        if ds.labels is None:
            raise ValueError(f"--dataset={cfg.dataset!r} has no node labels; "
                             "node classification needs a labelled dataset")
        split = ds.split if ds.split is not None else sg_data.node_split(ds.labels, cfg.seed)
        if cfg.model == "mlp":
            features = _walk_features(ds, cfg.embedding_dim)
        n = ds.num_nodes
        graph = graphs.from_edges(ds.senders, ds.receivers, n, node_features=features,
                                  symmetric=True, self_loops=True, edge_weights=ds.edge_weights)
        train_idx = jnp.asarray(split.train)
        batch_size = cfg.batch_size
        steps_per_epoch = train.node_steps_per_epoch(int(train_idx.shape[0]), batch_size)
        epoch_args = (graph, jnp.asarray(ds.labels), train_idx)
        info = dict(num_nodes=n, num_classes=ds.num_classes, train_nodes=len(split.train),
                    val_nodes=len(split.val), test_nodes=len(split.test))
    info |= dict(steps_per_epoch=steps_per_epoch, steps=steps_per_epoch * cfg.epochs)
    return Problem(cfg, graph, features, n, batch_size, steps_per_epoch, epoch_args, split, info,
                   labels=ds.labels, num_classes=ds.num_classes)


def build_model(problem: Problem, seed: int) -> nnx.Module:
    """The model of ``problem.cfg`` initialised from ``seed``."""
    cfg, features = problem.cfg, problem.features
    rngs = nnx.Rngs(seed)
    in_dim = None if features is None else features.shape[1]
    if cfg.task == "link":
        if cfg.model == "mlp":
            # The paper's link model: concat of two embeddings -> Linear(2d, 128) -> ReLU -> 1.
            return models.LinkPredictor(models.Identity(), models.MLPDecoder(
                cfg.embedding_dim, cfg.hidden, mode="concat", init="torch", rngs=rngs))
        encoder = _encoder(cfg, in_dim, cfg.hidden, problem.num_nodes, rngs)
        if cfg.decoder == "dot":
            decoder = models.DotDecoder()
        else:
            decoder = models.MLPDecoder(cfg.hidden, cfg.hidden,
                                        mode=cfg.decoder.removeprefix("mlp_"), rngs=rngs)
        return models.LinkPredictor(encoder, decoder)
    c = problem.num_classes
    if cfg.model == "mlp":
        return models.NodeClassifier(models.Identity(), models.paper_node_mlp(
            rngs, num_classes=c, in_dim=in_dim))
    return models.NodeClassifier(_encoder(cfg, in_dim, c, problem.num_nodes, rngs), None)


def build_optimizer(problem: Problem, sparsity_value=None, key=None):
    """The sparsifier of ``problem.cfg`` around its inner optimizer.

    ``sparsity_value`` and ``key`` default to the config's; a sweep passes traced values.
    """
    cfg = problem.cfg
    kw = method_schedule(cfg, problem.total_steps, problem.steps_per_epoch)
    if sparsity_value is not None and "sparsity" in kw:
        kw["sparsity"] = sparsity_value
    if cfg.method in ("static", "set", "rigl"):
        kw["key"] = jax.random.key(cfg.seed) if key is None else key
    return sparsity.sparsifier(cfg.method, inner_optimizer(cfg, problem.total_steps), **kw)


def make_epoch(problem: Problem, bound, tx, mesh=None) -> Callable:
    """The task's epoch function: ``epoch(state, *problem.epoch_args) -> (state, loss)``."""
    if problem.cfg.task == "link":
        return train.make_link_epoch(bound, tx, problem.batch_size, problem.num_nodes, mesh)
    return train.make_node_epoch(bound, tx, problem.batch_size, mesh)


def evaluate(problem: Problem, bound, params, which: str) -> dict:
    """Metrics of ``params`` on the "val" or "test" part of the split."""
    split = problem.split
    if problem.cfg.task == "link":
        all_keys = sg_data.edge_keys(split.all_edges, problem.num_nodes)
        edges = split.val_edges if which == "val" else split.test_edges
        return train.evaluate_link(bound, params, problem.graph, edges, problem.num_nodes,
                                   all_keys, jax.random.key(problem.cfg.seed + 10_000))
    idx = split.val if which == "val" else split.test
    return train.evaluate_node(bound, params, problem.graph, problem.labels, idx,
                               problem.num_classes)


def flops_summary(problem: Problem, model, masks, trace) -> dict:
    """Training and inference FLOPs of a run, absolute and relative to dense training.

    One step's forward pass sees the minibatch (pairs or nodes; with the whole graph for message
    passing); inference scores the test set. Training FLOPs integrate the recorded per-layer
    densities of every step.
    """
    cfg, graph = problem.cfg, problem.graph
    if cfg.task == "link":
        # A step scores batch_size positives and as many negatives.
        step_inputs = (graph, 2 * problem.batch_size)
        eval_inputs = (graph, len(problem.split.test_edges))
    else:
        step_inputs = eval_inputs = graph
        if cfg.model == "mlp" and problem.steps_per_epoch > 1:
            # The MLP on embeddings only sees the minibatch rows in a step.
            b = problem.batch_size
            step_inputs = graphs.from_edges(
                np.zeros(0, np.int32), np.zeros(0, np.int32), b,
                node_features=np.zeros((b, problem.features.shape[1]), np.float32),
                symmetric=False, self_loops=False)
    dense_step = sg_flops.forward(model, step_inputs)
    training = float(sg_flops.training_from_trace(dense_step, trace))
    dense_training = 3.0 * dense_step.total * problem.total_steps
    inference = sg_flops.forward(model, eval_inputs, masks).total
    inference_dense = sg_flops.forward(model, eval_inputs).total
    return {
        "training": training,
        "training_dense": dense_training,
        "training_relative": training / dense_training,
        "inference": inference,
        "inference_dense": inference_dense,
        "inference_relative": inference / inference_dense,
        "forward_step_dense": dense_step.total,
    }


def check_finite(loss: float, step: int, method: str) -> None:
    """Raises FloatingPointError naming the step and method when the loss is NaN or Inf."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss} at step {step} "
                                 f"(method {method})")


def run(cfg: RunConfig) -> dict:
    """Trains and evaluates one run of ``cfg`` (task "link" or "node"); returns its record.

    With ``cfg.checkpoint_dir`` the whole training state (params, masks, optimizer state,
    counters, key - hence the data order) is saved every ``checkpoint_every`` epochs and at the
    end; ``cfg.resume`` continues from the latest one and ends bitwise equal to an uninterrupted
    run. A non-finite loss stops the run before it is checkpointed, so the last checkpoint is
    the last good state.
    """
    from sparsegnn_jax import checkpoint

    cfg = resolve(cfg)
    start = time.perf_counter()
    problem = prepare(cfg)
    model = build_model(problem, cfg.seed)
    bound, params = train.split_model(model)
    tx = build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(cfg.seed))
    first_epoch = 0
    if cfg.resume:
        if cfg.checkpoint_dir is None:
            raise ValueError("--resume needs a checkpoint folder (--checkpoint-dir)")
        if checkpoint.latest_step(cfg.checkpoint_dir) is not None:
            state, meta = checkpoint.restore(cfg.checkpoint_dir, state)
            first_epoch = int(meta["epoch"])
    mesh = train.data_mesh(cfg.devices) if cfg.devices > 1 else None
    state = train.replicate(state, mesh)
    epoch_args = train.replicate(problem.epoch_args, mesh)
    epoch_fn = jax.jit(make_epoch(problem, bound, tx, mesh))
    loss = float("nan")
    bar = progress_bar(range(first_epoch, cfg.epochs), cfg.progress,
                       f"{cfg.method} {cfg.dataset}")
    for epoch in bar:
        state, loss = epoch_fn(state, *epoch_args)
        loss = float(loss)
        check_finite(loss, int(state.step), cfg.method)
        # A finite loss can still be followed by an update that makes the params NaN / Inf;
        # such a state must not become the "last good" checkpoint.
        if not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state.params)):
            raise FloatingPointError(f"non-finite parameters after step {int(state.step)} "
                                     f"(method {cfg.method})")
        if cfg.progress:
            bar.set_postfix(loss=f"{loss:.4f}")
        done = epoch + 1
        if cfg.checkpoint_dir and (done == cfg.epochs or (
                cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            checkpoint.save(cfg.checkpoint_dir, done, state,
                            {"epoch": done, "loss": loss, "config": dataclasses.asdict(cfg)})
    val = evaluate(problem, bound, state.params, "val")
    test = evaluate(problem, bound, state.params, "test")
    masks = sparsity.get_masks(state.opt_state)
    flops = flops_summary(problem, model, masks, sparsity.get_trace(state.opt_state))
    return record(cfg, time.perf_counter() - start, loss, val, test, masks, flops, problem.info)


def record(cfg, wall_time, loss, val, test, masks, flops, data_info) -> dict:
    """The results record of one run (what the CLI writes as JSON)."""
    return {
        "config": dataclasses.asdict(cfg),
        "data": data_info,
        "final_train_loss": loss,
        "val": val,
        "test": test,
        "sparsity": float(sparsity.masks.sparsity(masks, weight_matrices)),
        "layer_sparsity": {k: float(v) for k, v in
                           sparsity.masks.layer_sparsity(masks, weight_matrices).items()},
        "flops": flops,
        "wall_time_s": wall_time,
    }


def write_json_atomic(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Writes ``obj`` as JSON via a temp file and rename, so a reader never sees half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
