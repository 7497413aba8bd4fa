"""sparsegnn_jax: sparse training and pruning of graph neural networks in JAX.

Modules: ``graphs`` (GraphsTuple construction, normalisation, padding), ``data`` (loaders, splits,
negatives, downloader), ``models`` (Flax NNX GNNs and the paper's MLPs), ``masks`` /
``distributions`` / ``schedules`` (pure sparsity functions), the prune and regrow methods as optax
transformations, ``flops`` (analytic FLOPs), ``metrics``, ``walks`` (temporal random-walk
embeddings), ``train`` (jit-compiled steps), ``runs`` (one experiment end to end) and ``report``
(results tables and plots of sweep CSVs).
"""
from sparsegnn_jax import (
    baselines, checkpoint, data, flops, graphs, metrics, models, report, train, walks,
)
from sparsegnn_jax.sparsity import (
    admm,
    dense,
    distributions,
    get_masks,
    get_trace,
    gradual_magnitude,
    masks,
    one_shot,
    rigl,
    schedules,
    set_,
    slr,
    sparsifier,
    static_sparse,
)

__version__ = "0.1.0"

__all__ = [
    "admm", "baselines", "checkpoint", "data", "dense", "distributions", "flops", "get_masks", "get_trace", "graphs",
    "gradual_magnitude", "masks", "metrics", "models", "one_shot", "report", "rigl", "schedules", "set_",
    "slr", "sparsifier", "static_sparse", "train", "walks",
]
