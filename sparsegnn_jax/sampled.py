"""Training epochs on neighbour-sampled blocks (``--fanout``): the host draws each step's block
(:mod:`sparsegnn_jax.sampling`) on a background thread while the device runs the step before.

An epoch here is a Python loop over jitted steps, not one compiled program: the blocks come
from NumPy. Its signature is the full-graph epoch's, ``epoch(state, inputs) -> (state,
mean_loss)``, so ``train.fit``, its hooks and checkpoints are unchanged; it is marked
``runs_on_host`` so that callers do not wrap it in ``jax.jit``. The batches (shuffle,
negatives, dropout keys) are drawn as the full-graph epoch draws them, and the sampler's
generator of step ``i`` is seeded from the state's key and ``i``: a run is reproducible from
its seed and a resumed run samples what the uninterrupted run sampled.
"""
from __future__ import annotations

import functools
import threading
import weakref
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsegnn_jax import sampling, train


class BlockSource:
    """Draws the blocks of one run: the graph's CSR, the fan-outs and the padded sizes.

    Args:
      graph: the message-passing graph (its stored edges and ``graph.edges`` weights).
      fanouts: in-edges sampled per node at each hop, hop 1 first (one per layer).
      num_seeds: the most seeds a block holds. The padded sizes (:attr:`sizes`) start from the
        largest of a few trial blocks plus a margin, never above :func:`sampling.block_sizes`,
        and grow when a block does not fit (the step then compiles once more).
      node_rows: ``[N, F]`` host node inputs gathered into each block, or None.
      edge_mask: ``[E]`` bool: sample among these stored edges only (pruned graphs).
    """

    def __init__(self, graph, fanouts: Sequence[int], num_seeds: int,
                 node_rows: np.ndarray | None = None, edge_mask=None):
        self.csr = sampling.csr_of(graph, edge_mask)
        self.fanouts = tuple(int(f) for f in fanouts)
        self.bound = sampling.block_sizes(num_seeds, self.fanouts, self.csr.num_nodes)
        self.node_rows = None if node_rows is None else np.asarray(node_rows)
        self._local = threading.local()  # each thread its own id map (sample_block's scratch)
        self.sizes = self.bound
        self.sizes = self._trial_sizes(num_seeds)

    def _trial_sizes(self, num_seeds: int) -> sampling.BlockSizes:
        # The worst case (every hop reaching fan-out-many new nodes) is rarely near: on a
        # 1.1M-node graph with 4096 seeds and 15,10 real blocks held 88k of its 680k nodes, and
        # the step costs what the padded block holds. So the padding is sized from a few trial
        # blocks (high-degree seeds first, the largest blocks) with a margin; a block that does
        # not fit grows it (one more compilation) - see block().
        degree = np.diff(self.csr.indptr)
        top = np.argsort(-degree, kind="stable")[: min(num_seeds, degree.size)]
        rng = np.random.default_rng(0)
        trials = [top] + [rng.integers(0, degree.size, num_seeds) for _ in range(3)]
        largest = [self.block(t, [0, i]) for i, t in enumerate(trials)]
        return self._grown(max(b.num_nodes for b in largest), max(b.num_edges for b in largest))

    def _grown(self, nodes: int, edges: int) -> sampling.BlockSizes:
        margin = 1.25
        return sampling.BlockSizes(min(int(nodes * margin) + 1, self.bound.nodes),
                                   min(int(edges * margin) + 1, self.bound.edges))

    def block(self, seeds, seed: Sequence[int]) -> sampling.Block:
        """The block of ``seeds`` drawn from ``np.random.default_rng(seed)``, padded to
        :attr:`sizes` (grown, for this and later blocks, when it does not fit)."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.full(self.csr.num_nodes, -1, np.int32)
        try:
            return sampling.sample_block(self.csr, seeds, self.fanouts,
                                         np.random.default_rng(list(seed)), self.sizes,
                                         self.node_rows, scratch)
        except sampling.BlockTooSmall as err:
            self.sizes = self._grown(max(err.nodes, self.sizes.nodes),
                                     max(err.edges, self.sizes.edges))
            return self.block(seeds, seed)  # the same generator seed: the same block

    def template(self):
        """A block of the padded sizes (what a sampled step computes on, for FLOPs)."""
        return sampling.template_block(self.sizes, self.node_rows)

    def info(self) -> dict:
        """The record's description of sampled training."""
        return {"fanout": list(self.fanouts),
                "block_nodes": self.sizes.nodes, "block_edges": self.sizes.edges}


#: Folded into an epoch's starting key to seed its sampling: the key chain itself (batches,
#: dropout) stays the full-graph epoch's, so both modes train on the same batches.
SAMPLE_FOLD = 0x5A3D


def _sample_seed(key: jax.Array) -> list[int]:
    bits = jax.random.bits(jax.random.fold_in(key, SAMPLE_FOLD), (2,), jnp.uint32)
    return [int(x) for x in np.asarray(bits)]


def _run(blocks: BlockSource, step: Callable, state, seeds_of: Sequence, extra: Callable,
         base_seed: list[int]):
    """Runs ``step`` over the blocks of ``seeds_of`` (prefetched); mean loss of the steps."""

    def make(i):
        block = blocks.block(seeds_of[i], base_seed + [i])
        return i, jax.device_put(block.graph), jax.device_put(block.seed_index)

    losses = []
    for i, graph, seed_index in sampling.Prefetcher(make, range(len(seeds_of))):
        state, loss = step(state, graph, seed_index, *extra(i))
        losses.append(loss)
    return state, jnp.mean(jnp.stack(losses))


def _once_per_model(build: Callable) -> Callable:
    """``build(bound, tx)`` memoised while ``bound`` lives: every epoch function of a run (a
    benchmark's, a resumed run's) reuses one compiled step, and a finished run's model is not
    kept alive by the cache (it can hold a graph-sized embedding table)."""
    cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @functools.wraps(build)
    def cached(bound, tx):
        steps = cache.setdefault(bound, {})
        if tx not in steps:
            steps[tx] = build(bound, tx)
        return steps[tx]

    return cached


@_once_per_model
def _node_step(bound: train.BoundModel, tx) -> Callable:
    @jax.jit
    def step(state, graph, seed_index, labels):
        key, drop_key = jax.random.split(state.key)

        def loss_fn(p):
            logits = bound(p, graph, dropout_key=drop_key)[seed_index]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return train.optimizer_step(state, tx, loss_fn, key)

    return step


@_once_per_model
def _link_step(bound: train.BoundModel, tx) -> Callable:
    @jax.jit
    def step(state, graph, seed_index, pairs, drop_key, history):
        local = seed_index.reshape(-1, 2)
        half = pairs.shape[0] // 2
        labels = jnp.concatenate([jnp.ones(half), jnp.zeros(pairs.shape[0] - half)])
        enc_key, dec_key = jax.random.split(drop_key)  # as models.LinkPredictor splits it

        def loss_fn(p):
            module = bound.module(p)
            z = module.encode(graph, enc_key)
            logits = module.decode(z, local, dec_key, **train.pair_inputs(history, pairs))
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

        return train.optimizer_step(state, tx, loss_fn, state.key)

    return step


_draw = jax.jit(train.link_epoch_batches, static_argnums=(2, 3, 4))


def make_sampled_node_epoch(bound: train.BoundModel, tx: optax.GradientTransformation,
                            batch_size: int | None, blocks: BlockSource) -> Callable:
    """``epoch(state, inputs: train.NodeInputs) -> (state, mean_loss)`` on sampled blocks.

    The training nodes form minibatches exactly as in ``train.make_node_epoch`` (same keys:
    with fan-outs covering every degree and no dropout both train alike); each step's block
    has the batch's nodes as seeds and the loss is read at them.
    """

    step = _node_step(bound, tx)

    def epoch(state: train.TrainState, inputs: train.NodeInputs):
        train_idx = np.asarray(inputs.train_idx)
        labels = np.asarray(inputs.labels)
        sample_seed = _sample_seed(state.key)
        if batch_size is None or batch_size >= train_idx.size:
            batches = train_idx[None, :]
        else:  # the shuffle of train.make_node_epoch
            key, perm_key = jax.random.split(state.key)
            state = state._replace(key=key)
            steps = train_idx.size // batch_size
            perm = np.asarray(train.shuffle_order(perm_key, train_idx.size))
            batches = train_idx[perm][: steps * batch_size].reshape(steps, batch_size)
        return _run(blocks, step, state, batches,
                    lambda i: (jnp.asarray(labels[batches[i]]),), sample_seed)

    epoch.runs_on_host = True
    return epoch


def make_sampled_link_epoch(bound: train.BoundModel, tx: optax.GradientTransformation,
                            batch_size: int, num_nodes: int, blocks: BlockSource,
                            steps: int | None = None) -> Callable:
    """``epoch(state, inputs: train.LinkInputs) -> (state, mean_loss)`` on sampled blocks.

    The epoch's positives, negatives and dropout keys are ``train.link_epoch_batches``'s (the
    full-graph epoch's); each step's block has both ends of its ``2 * batch_size`` pairs as
    seeds. The encoder runs on the block, the decoder on the pairs' local ids, and the pair
    history features (``inputs.history``) on their global ids.
    """

    step = _link_step(bound, tx)

    def epoch(state: train.TrainState, inputs: train.LinkInputs):
        sample_seed = _sample_seed(state.key)
        key, batches = _draw(state.key, inputs, batch_size, num_nodes, steps)
        pairs = np.concatenate([np.asarray(batches.positives), np.asarray(batches.negatives)],
                               axis=1)  # [S, 2B, 2]: positives first
        seeds = pairs.reshape(pairs.shape[0], -1)
        return _run(blocks, lambda s, g, idx, p, k: step(s, g, idx, p, k, inputs.history),
                    state._replace(key=key), seeds,
                    lambda i: (jnp.asarray(pairs[i]), batches.dropout_keys[i]), sample_seed)

    epoch.runs_on_host = True
    return epoch


def compiled(epoch: Callable) -> Callable:
    """``jax.jit(epoch)``, or ``epoch`` itself when it loops on the host (sampled epochs)."""
    return epoch if getattr(epoch, "runs_on_host", False) else jax.jit(epoch)


__all__ = ["BlockSource", "compiled", "make_sampled_link_epoch", "make_sampled_node_epoch"]
