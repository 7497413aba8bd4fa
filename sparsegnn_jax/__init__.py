"""sparsegnn_jax: sparse training and pruning of graph neural networks in JAX.

Modules: ``graphs`` (GraphsTuple construction, normalisation, padding), ``data`` (loaders, splits,
negatives, evaluation pairs, DyGLib's protocol, downloader), ``features`` (structural node
inputs for link prediction), ``history`` (pair and node history features of link decoders),
``streaming`` (link evaluation batch by batch on everything known before), ``walks`` (temporal random-walk embeddings), ``models`` (Flax NNX GNNs and the
paper's MLPs), ``masks`` / ``distributions`` / ``schedules`` / ``structure`` (pure sparsity
functions; ``structure``: N:M masks), the prune
and regrow methods as optax transformations and their ``registry``, ``flops`` (analytic FLOPs),
``metrics``, ``baselines`` (non-learned link scores), ``config`` (run configuration and defaults),
``tasks`` (link prediction and node classification), ``train`` (jit-compiled steps and the fit
loop), ``link_eval`` (link metrics, the ranking pairs' inputs computed once per split), ``compaction`` (steps over the kept edges while an edge mask stays fixed), ``runs`` (one run end to end), ``sweeps`` (methods x sparsities x seeds), ``distributed``
(several processes and devices: JAX's runtime, meshes, gathering), ``report`` (results tables
and plots of sweep CSVs) and ``plugins`` (loading modules of your own that register methods,
datasets and FLOP counters: ``--import`` and the ``sparsegnn_jax.plugins`` entry points).
"""
from sparsegnn_jax import (
    baselines,
    checkpoint,
    compaction,
    config,
    data,
    distributed,
    features,
    flops,
    graphs,
    history,
    link_eval,
    metrics,
    models,
    plugins,
    report,
    rounds,
    runs,
    streaming,
    sweeps,
    tasks,
    train,
    walks,
)
from sparsegnn_jax.sparsity import (
    admm,
    dense,
    NM,
    MaskContext,
    distributions,
    drop_grow,
    get_masks,
    get_trace,
    gradual_magnitude,
    imp,
    mask_sparsity,
    masks,
    method_errors,
    nm_mask,
    one_shot,
    param_sparsity,
    registry,
    rigl,
    schedules,
    set_,
    slr,
    snip,
    sparse_evolutionary,
    sparse_method,
    sparsifier,
    static_sparse,
    structure,
    ugs,
)

__version__ = "0.1.0"

__all__ = [
    "MaskContext", "NM", "admm", "baselines", "checkpoint", "compaction", "config", "data", "dense",
    "distributed", "distributions", "drop_grow", "features", "flops", "get_masks", "get_trace",
    "gradual_magnitude", "graphs", "history", "imp", "link_eval", "mask_sparsity", "masks",
    "method_errors", "metrics", "models", "nm_mask", "one_shot", "param_sparsity", "plugins",
    "registry", "report", "rigl",
    "runs", "schedules", "set_", "slr", "snip",
    "sparse_evolutionary", "sparse_method", "sparsifier", "static_sparse", "streaming",
    "structure", "sweeps",
    "tasks",
    "train", "ugs", "walks", "rounds",
]
