"""Jit-compiled train and eval steps for link prediction and node classification.

The model is split once into ``(graphdef, params, rest)`` with ``nnx.split``; every step below is a
pure function of ``TrainState`` so it can be jitted, scanned over an epoch, vmapped over seeds or
sparsities, and sharded across devices. One epoch is one compiled call: minibatches are a
``lax.scan`` over a device-side permutation, so there is no Python work per edge or per batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
from flax import nnx

from sparsegnn_jax import checkpoint, distributed, metrics, sparsity
from sparsegnn_jax import compaction as compaction_lib
from sparsegnn_jax.data import splits as data_splits
# Link evaluation lives in its own module; its names stay readable as ``train.<name>``.
from sparsegnn_jax.link_eval import (  # noqa: F401
    EVAL_MEMORY_BYTES, RANKING_CACHE_BYTES, LinkEvalInputs, corrupt_destinations, evaluate_link,
    evaluation_inputs, link_logits, link_ranks, link_scores, link_scores_chunked, pair_inputs,
    pairs_per_chunk)


class TrainState(NamedTuple):
    """Everything a training run carries from step to step."""

    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


# eq=False: hashed by identity, so jit can take it as a static argument (compiled once per model).
@dataclasses.dataclass(frozen=True, eq=False)
class BoundModel:
    """A model split into its static graph definition, a parameter template and other state.

    Training carries the parameters as a plain nested dict of arrays (``nnx.State``'s pure
    form): the simplest pytree to mask, vmap, shard and checkpoint.
    """

    graphdef: Any
    template: Any
    rest: Any

    def module(self, params) -> nnx.Module:
        """The NNX module with ``params`` (a pure dict) as its parameters."""
        state = jax.tree.map(lambda x: x, self.template)  # a fresh copy; the template stays
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state, self.rest)

    def __call__(self, params, *args, **kwargs):
        return self.module(params)(*args, **kwargs)


def split_model(model: nnx.Module) -> tuple[BoundModel, Any]:
    """Splits an NNX model into ``(bound, params)``; ``bound(params, ...)`` calls the model.

    ``params`` is a nested dict of arrays with the model's parameter paths
    (e.g. ``params["encoder"]["layers"][0]["kernel"]``).
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return BoundModel(graphdef, params, rest), nnx.to_pure_dict(params)


def init_state(params, tx: optax.GradientTransformation, key: jax.Array,
               rescale: bool = True) -> TrainState:
    """Initial training state; the optimizer (and its masks) is initialised from ``params``.

    The params are masked right away, so the very first forward pass is already sparse. With
    ``rescale`` (fresh initialisations) each weight matrix the initial mask thins keeps its
    dense norm (:func:`sparsity.masks.apply_norm_preserving`): without it a 90%-sparse model
    starts with near-constant outputs. Pass ``rescale=False`` for trained (warm-start) params.
    Dense methods and those that start dense (all-True masks) are unaffected either way.
    """
    opt_state = tx.init(params)
    apply = sparsity.masks.apply_norm_preserving if rescale else sparsity.masks.apply
    try:
        params = apply(params, sparsity.get_masks(opt_state))
    except ValueError:  # a plain optax optimizer: nothing to mask
        pass
    return TrainState(params, opt_state, key, jnp.zeros((), jnp.int32))


def optimizer_step(state: TrainState, tx: optax.GradientTransformation, loss_fn: Callable,
                   key: jax.Array) -> tuple[TrainState, jax.Array]:
    """One step: ``loss_fn(params)`` and its gradient, the (sparsity) update, the new state.

    The loss goes to ``tx.update`` as ``value`` (SLR's surrogate-optimality test reads it).
    """
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, key, state.step + 1), loss


def shuffle_order(key: jax.Array, n: int) -> jax.Array:
    """A random permutation of ``range(n)``: argsort of 32-bit random words."""
    # Not jax.random.permutation: under vmap on CPU it measured ~100x slower (36 runs: 0.9 s
    # against 9 ms for one run); one batched sort of random bits costs what a sort costs.
    return jnp.argsort(jax.random.bits(key, (n,), jnp.uint32), stable=True)


# ----------------------------------------------------------------------------------------------
# The fit loop: one compiled epoch per iteration, hooks between epochs.

#: ``hook(epochs_done, state, loss)`` runs after every epoch; it may raise to stop training.
Hook = Callable[[int, TrainState, jax.Array], None]


def fit(epoch_fn: Callable, state: TrainState, inputs, epochs: int, *, start: int = 0,
        hooks: Sequence[Hook] = (), progress: str | None = None) -> tuple[TrainState, jax.Array]:
    """Trains from epoch ``start`` to ``epochs``: ``state, loss = epoch_fn(state, inputs)``.

    The one training loop of runs, sweeps and benchmarks. A sweep passes a vmapped epoch whose
    state and loss carry leading run axes; hooks see them as they are.

    Args:
      epoch_fn: ``epoch_fn(state, inputs) -> (state, mean_loss)``, usually jitted.
      state: the state after ``start`` epochs.
      inputs: the epoch's data (``LinkInputs`` / ``NodeInputs``).
      epochs: the last epoch (exclusive bound of the loop).
      start: epochs already done (a resumed run).
      hooks: called in order after every epoch (see :data:`Hook`).
      progress: description of a tqdm progress bar; ``None`` for no bar.

    Returns:
      The final state and the last epoch's loss (NaN when no epoch ran).

    Raises:
      sparsity.MethodError: a sparsity method's check failed in an epoch
        (:func:`sparsity.method_errors`).
    """
    loss = jnp.full((), jnp.nan)
    bar = progress_bar(range(start, epochs), progress)
    # A sparsity method's failed check inside the jitted epoch raises its own error.
    with sparsity.method_errors():
        for epoch in bar:
            state, loss = epoch_fn(state, inputs)
            for hook in hooks:
                hook(epoch + 1, state, loss)
            # Every process reads the loss, bar or not: a loss split over processes (a sweep's
            # run axis) is all-gathered, a collective; on process 0 alone (the only one with a
            # bar) it would meet the other processes' next collective instead and abort the run.
            shown = distributed.gather(loss)
            if progress is not None:
                bar.set_postfix(loss=f"{float(np.mean(np.asarray(shown))):.4f}")
    return state, loss


def progress_bar(iterable, desc: str | None):
    """A tqdm bar over ``iterable`` titled ``desc``; the iterable itself when ``desc`` is None."""
    if desc is None:
        return iterable
    # Imported on first use: runs without a bar (sweeps, tests, benchmarks) need not load it.
    import tqdm.auto

    return tqdm.auto.tqdm(iterable, desc=desc, leave=False)


def _first(x) -> int:
    return int(np.asarray(x).reshape(-1)[0])


@functools.partial(jax.jit, static_argnums=1)
def _finite_per_run(params, run_ndim: int) -> jax.Array:
    """Whether every parameter of each run is finite, reduced on device (only the flags of
    the runs travel to the host, not the parameters)."""
    flags = [jnp.isfinite(x).reshape(x.shape[:run_ndim] + (-1,)).all(-1)
             for x in jax.tree.leaves(params)]
    return jnp.stack(flags).all(0) if flags else jnp.asarray(True)


def finite_guard(method: str, run_names: Sequence[str] | None = None) -> Hook:
    """A hook raising ``FloatingPointError`` when a loss or a parameter is NaN or Inf.

    The message names the step, the method and, for a sweep (``run_names`` in the flattened
    order of the run axes), the first failing run. A finite loss can still be followed by an
    update that makes the params NaN / Inf, so both are checked: a state that fails is never
    handed to the hooks after this one (e.g. checkpointing), so the last checkpoint stays good.
    """

    def where(bad: np.ndarray) -> str:
        if run_names is None or bad.size <= 1:
            return f"(method {method})"
        return f"(method {method}, run {run_names[int(np.argmax(bad.reshape(-1)))]})"

    def hook(epochs_done: int, state: TrainState, loss) -> None:
        losses = np.asarray(distributed.gather(loss))
        if not np.all(np.isfinite(losses)):
            bad = ~np.isfinite(losses)
            value = losses.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
            raise FloatingPointError(f"non-finite training loss {value} at step "
                                     f"{_first(state.step)} {where(bad)}")
        ok = np.asarray(distributed.gather(_finite_per_run(state.params, losses.ndim)))
        if not np.all(ok):
            raise FloatingPointError(f"non-finite parameters after step {_first(state.step)} "
                                     f"{where(~ok)}")

    return hook


def checkpoint_hook(directory, epochs: int, every: int, metadata: dict,
                    extra: Callable[[], Any] | None = None) -> Hook:
    """A hook saving the whole state every ``every`` epochs (0: never) and after the last one.

    ``metadata`` (JSON) is stored beside it with ``epoch`` and ``loss`` added. With ``extra``
    the saved tree is ``(state, extra())`` (e.g. a :class:`BestOnValidation` selection), so a
    resumed run continues exactly.
    """

    def hook(epochs_done: int, state: TrainState, loss) -> None:
        if epochs_done == epochs or (every and epochs_done % every == 0):
            tree = state if extra is None else (state, extra())
            checkpoint.save(directory, epochs_done, tree,
                            {"epoch": epochs_done, "loss": float(loss)} | metadata)

    return hook


class Selection(NamedTuple):
    """The parameters of the best epoch so far, by a validation score (higher is better)."""

    params: Any
    score: jax.Array   # best score so far; -inf before any epoch (per run in a sweep)
    epoch: jax.Array   # the epoch that reached it (0: none yet)


def no_selection(params, run_shape: tuple[int, ...] = ()) -> Selection:
    """The selection before training: the initial parameters, score -inf, epoch 0."""
    return Selection(params, jnp.full(run_shape, -jnp.inf, jnp.float32),
                     jnp.zeros(run_shape, jnp.int32))


@jax.jit
def _keep_better(selection: Selection, params, score, epoch) -> Selection:
    better = score > selection.score  # NaN scores never win

    def pick(new, old):
        return jnp.where(better.reshape(better.shape + (1,) * (new.ndim - better.ndim)), new, old)

    return Selection(jax.tree.map(pick, params, selection.params),
                     jnp.where(better, score, selection.score),
                     jnp.where(better, jnp.asarray(epoch, jnp.int32), selection.epoch))


class BestOnValidation:
    """A hook keeping the parameters of the epoch with the best ``score_fn(params)``.

    ``score_fn`` maps the state's params to a score per run (a scalar for one run, the run
    axes' shape for a vmapped sweep). :attr:`selection` holds the result; pass a restored one
    to continue a resumed run exactly. Epochs before ``first_epoch`` are not candidates: a
    method that trains dense first (SLR, ADMM, GMP, one-shot) must be judged on its sparse
    parameters only.
    """

    def __init__(self, score_fn: Callable, selection: Selection, first_epoch: int = 1):
        self.score_fn, self.selection, self.first_epoch = score_fn, selection, first_epoch

    def __call__(self, epochs_done: int, state: TrainState, loss) -> None:
        if epochs_done < self.first_epoch:
            return
        self.selection = _keep_better(self.selection, state.params,
                                      self.score_fn(state.params), epochs_done)


# ----------------------------------------------------------------------------------------------
# Data parallelism: minibatches split over a 1-D device mesh, everything else replicated.

DATA_AXIS = "data"


def data_mesh(num_devices: int) -> jax.sharding.Mesh:
    """A 1-D mesh of ``num_devices`` devices, axis name ``"data"``; it may span processes.

    Raises:
      ValueError: see :func:`distributed.device_mesh`.
    """
    return distributed.device_mesh(num_devices, DATA_AXIS)


def replicate(tree, mesh: jax.sharding.Mesh | None):
    """Places every array of ``tree`` on all devices of ``mesh`` (no-op without a mesh)."""
    return distributed.replicate(tree, mesh)


def _shard_batch(x, mesh, batch_axis: int):
    """Splits ``x`` along ``batch_axis`` over the mesh; XLA then all-reduces the gradients."""
    if mesh is None:
        return x
    spec = [None] * x.ndim
    spec[batch_axis] = DATA_AXIS
    return jax.lax.with_sharding_constraint(
        x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))


# ----------------------------------------------------------------------------------------------
# Link prediction.


def link_loss(bound: BoundModel, params, graph: jraph.GraphsTuple, pairs, labels, dropout_key,
              history=None, edges=None):
    """Mean binary cross-entropy of the pair logits (pair features read from ``history``;
    messages over ``edges``, ``models.CompactEdges``, when given)."""
    logits = bound(params, graph, pairs, dropout_key=dropout_key, **pair_inputs(history, pairs),
                   **_edges_kw(edges))
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def _edges_kw(edges) -> dict:
    return {} if edges is None else {"edges": edges}


class LinkInputs(NamedTuple):
    """What a link-prediction epoch reads besides the state (a pytree: jit and vmap take it)."""

    graph: jraph.GraphsTuple   # the message-passing graph
    train_edges: jax.Array     # [E, 2] positive training pairs
    edge_keys: jax.Array       # [U, 2] sorted (src, dst) rows of the true edges
                               # (``data.edge_keys``): no negative is one of them
    negative_nodes: jax.Array  # [M] the nodes training negatives are drawn from
    history: Any = None        # history.PairHistory the pairs' features come from, or None


class LinkBatches(NamedTuple):
    """An epoch's minibatches, drawn ahead of its steps (a pytree; leading axis: steps)."""

    positives: jax.Array     # [S, B, 2] shuffled training pairs
    negatives: jax.Array     # [S, B, 2] sampled non-edges
    dropout_keys: jax.Array  # [S] one dropout key per step


def link_epoch_batches(key: jax.Array, inputs: LinkInputs, batch_size: int, num_nodes: int,
                       steps: int | None = None) -> tuple[jax.Array, LinkBatches]:
    """The minibatches of one epoch drawn from ``key``, and the key the next epoch starts from.

    A pure function of ``key`` and the data: every run that holds the same key (the runs of
    one seed in a sweep) sees exactly these batches. ``steps`` as in :func:`make_link_epoch`.
    """
    train_edges, edge_keys, negative_nodes = (inputs.train_edges, inputs.edge_keys,
                                              inputs.negative_nodes)
    key, perm_key = jax.random.split(key)
    num_batches = train_edges.shape[0] // batch_size if steps is None else steps
    perm = shuffle_order(perm_key, train_edges.shape[0])
    if num_batches * batch_size <= perm.shape[0]:
        perm = perm[: num_batches * batch_size]
    else:
        perm = perm[jnp.arange(num_batches * batch_size) % perm.shape[0]]
    positives = train_edges[perm].reshape(num_batches, batch_size, 2)

    def step_keys(k, _):
        k, neg_key, drop_key = jax.random.split(k, 3)
        return k, (neg_key, drop_key)

    key, (neg_keys, drop_keys) = jax.lax.scan(step_keys, key, None, length=num_batches)
    negatives = jax.vmap(lambda k: data_splits.sample_negatives(
        k, num_nodes, batch_size, edge_keys, nodes=negative_nodes))(neg_keys)
    return key, LinkBatches(positives, negatives, drop_keys)


def make_link_epoch(bound: BoundModel, tx: optax.GradientTransformation, batch_size: int,
                    num_nodes: int, mesh: jax.sharding.Mesh | None = None,
                    steps: int | None = None, compaction=None) -> Callable:
    """Builds ``epoch(state, inputs: LinkInputs) -> (state, mean_loss)``.

    With ``compaction`` (a ``compaction.Plan``) the epoch is ``epoch(state, inputs, cache) ->
    (state, mean_loss, cache)`` and its steps pass messages over the compacted kept edges
    where the plan allows (``compaction.CompactedEpoch`` carries the cache for ``fit``).

    Each minibatch holds ``batch_size`` positive training edges and as many sampled non-edges.
    The training edges are shuffled on device; a remainder smaller than a batch is dropped for the
    epoch (a different one each epoch). ``steps`` (default: one pass, ``E // batch_size``) sets
    the steps of an epoch; more than one pass cycles through the shuffled edges, so a run on a
    small target set keeps the optimizer budget of a run on every training edge. With a
    ``mesh`` the pairs of every minibatch are split over its devices and the (replicated) state
    sees gradients all-reduced by XLA, so params and masks stay identical on every device.

    The epoch's batches are drawn first from the state's key (:func:`link_epoch_batches`) and
    the steps then only read them: vmapped over runs whose key is shared (not batched), the
    shuffle and the negatives are drawn once for all of them, and only params, optimizer state
    and masks carry the run axis.
    """

    def train_step(state: TrainState, batch, graph, history, edges):
        pos, neg, drop_key = batch
        pairs = _shard_batch(jnp.concatenate([pos, neg], axis=0), mesh, 0)
        labels = _shard_batch(jnp.concatenate([jnp.ones(pos.shape[0]), jnp.zeros(neg.shape[0])]),
                              mesh, 0)
        return optimizer_step(
            state, tx,
            lambda p: link_loss(bound, p, graph, pairs, labels, drop_key, history, edges),
            state.key)

    def epoch(state: TrainState, inputs: LinkInputs, cache=None):
        key, batches = link_epoch_batches(state.key, inputs, batch_size, num_nodes, steps)
        batches = batches._replace(positives=_shard_batch(batches.positives, mesh, 1))
        state, losses, cache = compaction_lib.scan_steps(
            compaction, lambda s, b, edges: train_step(s, b, inputs.graph, inputs.history, edges),
            state._replace(key=key), batches, inputs.graph, cache)
        return compaction_lib.epoch_out(compaction, state, losses.mean(), cache)

    return epoch


# ----------------------------------------------------------------------------------------------
# Node classification.


def node_loss(bound: BoundModel, params, graph, labels, node_idx, dropout_key, edges=None):
    """Mean cross-entropy over the nodes in ``node_idx`` (messages over ``edges`` if given)."""
    logits = bound(params, graph, dropout_key=dropout_key, **_edges_kw(edges))[node_idx]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels[node_idx]).mean()


class NodeInputs(NamedTuple):
    """What a node-classification epoch reads besides the state (a pytree)."""

    graph: jraph.GraphsTuple
    labels: jax.Array          # [N] integer class of every node
    train_idx: jax.Array       # [T] the training nodes


def make_node_epoch(bound: BoundModel, tx: optax.GradientTransformation,
                    batch_size: int | None, mesh: jax.sharding.Mesh | None = None,
                    compaction=None) -> Callable:
    """Builds ``epoch(state, inputs: NodeInputs) -> (state, mean_loss)``.

    ``batch_size=None`` is full-batch training (one step per epoch, as for GCN on Planetoid);
    otherwise the training nodes are shuffled into minibatches (the paper's MLP, batch 128).
    With a ``mesh`` the nodes of every minibatch are split over its devices. ``compaction``
    as in :func:`make_link_epoch`.
    """

    def train_step(state: TrainState, idx, graph, labels, edges):
        key, drop_key = jax.random.split(state.key)
        return optimizer_step(
            state, tx, lambda p: node_loss(bound, p, graph, labels, idx, drop_key, edges), key)

    def epoch(state: TrainState, inputs: NodeInputs, cache=None):
        graph, labels, train_idx = inputs

        def step(s, idx, edges):
            return train_step(s, idx, graph, labels, edges)

        if batch_size is None or batch_size >= train_idx.shape[0]:
            if compaction is None:
                return step(state, train_idx, None)
            state, losses, cache = compaction_lib.scan_steps(compaction, step, state,
                                                             train_idx[None], graph, cache)
            return state, losses[0], cache
        key, perm_key = jax.random.split(state.key)
        state = state._replace(key=key)
        num_batches = train_idx.shape[0] // batch_size
        perm = train_idx[shuffle_order(perm_key, train_idx.shape[0])][: num_batches * batch_size]
        state, losses, cache = compaction_lib.scan_steps(
            compaction, step, state, _shard_batch(perm.reshape(num_batches, batch_size), mesh, 1),
            graph, cache)
        return compaction_lib.epoch_out(compaction, state, losses.mean(), cache)

    return epoch


def node_steps_per_epoch(num_train: int, batch_size: int | None) -> int:
    """Optimizer steps in one node-classification epoch."""
    if batch_size is None or batch_size >= num_train:
        return 1
    return num_train // batch_size


@functools.partial(jax.jit, static_argnums=(0, 5))
def _node_metrics(bound: BoundModel, params, graph, labels, idx, num_classes: int):
    logits = bound(params, graph)[idx]
    y = labels[idx]
    return {"accuracy": metrics.accuracy(logits, y),
            "macro_f1": metrics.macro_f1(logits, y, num_classes)}


def evaluate_node(bound: BoundModel, params, graph, labels, idx, num_classes: int) -> dict:
    """Accuracy and macro-F1 on the nodes in ``idx`` (dropout off)."""
    out = _node_metrics(bound, params, graph, jnp.asarray(labels), jnp.asarray(idx), num_classes)
    return {k: float(v) for k, v in out.items()}
