"""A module of your own for sparsegnn_jax: a method, a dataset and a FLOP counter.

Nothing here edits the package. Importing this module registers

* the method ``mine``: prune whole input rows of each weight matrix, keeping the rows of
  largest norm, as many whole rows as the layer's keep count allows, fixed from the start;
* the dataset ``mine``: 120 nodes in 3 planted communities with noisy 24-d features, for node
  classification;
* a FLOP counter for ``NeighbourSum``, a layer of its own (sum of the neighbours' features,
  then a linear map), so ``sg.flops.forward`` counts its aggregation too.

Use it from the command line (a module name found in the current folder, or a path)::

    python experiments/node_class.py --import=examples/my_extension.py --method=mine \
        --dataset=mine --sparsity=0.7 --epochs=20
    python experiments/sweep.py --import=examples/my_extension.py --task=node --model=gcn \
        --dataset=mine --methods=dense,mine --sparsities=0.5,0.7 --seeds=2 --epochs=20

or from Python: ``import my_extension`` (or ``sg.plugins.import_module(PATH)``), then the
names work everywhere a built-in name does.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import sparsegnn_jax as sg

# ------------------------------------------------------------------------------------------
# A method: two rules on pytrees (sg.sparse_method) and one registry entry.


def keep_whole_rows(ctx: sg.MaskContext):
    """Per prunable weight matrix ``[inputs, outputs]``: keep the ``keep_count // outputs``
    input rows of largest L2 norm, whole, so the layer keeps a multiple of its row length
    (never more than its keep count). Other leaves stay dense."""

    def rule(w, keep, prunable):
        if not prunable or w.ndim != 2:
            return jnp.ones(w.shape, bool)
        rows = keep // w.shape[1]  # keep counts may be traced (a vmapped sweep)
        rank = jnp.argsort(jnp.argsort(-jnp.linalg.norm(w, axis=1)))
        return jnp.broadcast_to((rank < rows)[:, None], w.shape)

    return jax.tree.map(rule, ctx.params, ctx.keep_counts, ctx.prunable)


def row_pruning(inner, sparsity=0.9, distribution="uniform", filter_fn=None):
    """The ``mine`` method: :func:`keep_whole_rows` at init, masks fixed after."""
    return sg.sparse_method(inner, init_masks=keep_whole_rows, sparsity=sparsity,
                            distribution=distribution, filter_fn=filter_fn, name="mine")


METHOD = sg.registry.register(sg.registry.MethodSpec(
    name="mine", factory=row_pruning, label="Whole rows",
    # Not in a sweep's default method list; `--methods=mine` runs it.
    in_sweeps=False))


# ------------------------------------------------------------------------------------------
# A dataset: a loader returning sg.data.Dataset, registered by name.

NUM_NODES, NUM_CLASSES, NUM_FEATURES = 120, 3, 24


def planted_communities(root, seed) -> sg.data.Dataset:
    """3 communities of 40 nodes: an edge inside a community with probability 0.15, across
    with 0.01; features are the community's centre plus noise. The graph is the same for
    every run seed (a run's seed draws the model and the split, not the data)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(NUM_CLASSES), NUM_NODES // NUM_CLASSES).astype(np.int32)
    src, dst = np.triu_indices(NUM_NODES, k=1)
    p = np.where(labels[src] == labels[dst], 0.15, 0.01)
    keep = rng.random(src.size) < p
    centres = rng.normal(size=(NUM_CLASSES, NUM_FEATURES))
    features = centres[labels] + rng.normal(scale=2.0, size=(NUM_NODES, NUM_FEATURES))
    return sg.data.Dataset(name="mine", num_nodes=NUM_NODES, senders=src[keep].astype(np.int32),
                           receivers=dst[keep].astype(np.int32),
                           features=features.astype(np.float32), labels=labels,
                           num_classes=NUM_CLASSES)


sg.data.register("mine", planted_communities, needs_files=False)


# ------------------------------------------------------------------------------------------
# A model layer of its own and its FLOP counter.


class NeighbourSum(nnx.Module):
    """``graph -> Linear(sum over incoming edges of the senders' features)``."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_dim, out_dim, rngs=rngs)

    def __call__(self, graph):
        x = graph.nodes
        summed = jax.ops.segment_sum(x[graph.senders], graph.receivers,
                                     num_segments=x.shape[0])
        return self.linear(summed)


def count_neighbour_sum(module, path, inputs, tally):
    """FLOPs of :class:`NeighbourSum`: one add per edge and input feature for the sum (fixed:
    it does not shrink with the weights' density), then its Linear, counted by the library's
    own counter. ``inputs`` is an ``sg.flops.InputSizes`` (sizes, not the graph)."""
    tally.add(path, inputs.num_edges * inputs.width)
    sg.flops.count(module.linear, sg.flops.join_path(path, "linear"), inputs, tally)


sg.flops.register_counter(NeighbourSum, count_neighbour_sum)
