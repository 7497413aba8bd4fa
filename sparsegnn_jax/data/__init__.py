"""Graph datasets: file parsers, named datasets, synthetic generators, splits and downloads.

Typical use::

    ds = sparsegnn_jax.data.load("email-eu-temporal")          # root from $SPARSEGNN_DATA
    split = sparsegnn_jax.data.temporal_link_split(ds)
    split = sparsegnn_jax.data.random_link_split(ds, seed=0)  # a graph without times
    dyg = sparsegnn_jax.data.dyglib_split(sparsegnn_jax.data.load("enron"))  # DyGLib's protocol
    own = sparsegnn_jax.data.from_networkx(G, labels="club")   # also from_scipy, from_arrays
    keys = sparsegnn_jax.data.edge_keys(split.all_edges, ds.num_nodes)
    neg = sparsegnn_jax.data.sample_negatives(key, ds.num_nodes, 1024, keys)
"""
from .convert import from_arrays, from_networkx, from_pyg, from_scipy
from .dataset import Dataset
from .datasets import DATASET_FILES, available, data_root, load, register
from .dyglib import (
    NEGATIVE_STRATEGIES,
    DyGLibSplit,
    StreamBatch,
    dyglib_split,
    edgebank_scores,
    evaluation_batches,
    mean_batch_metrics,
)
from .parsers import (
    DYGLIB_HEADER,
    CorruptGzipError,
    EdgeList,
    PlanetoidData,
    UnsafePickleError,
    gunzip_chunks,
    load_pickle,
    load_planetoid,
    parse_dense_adjacency,
    parse_edge_list,
    parse_letter_labels,
    parse_node_labels,
    read_text,
    remap_nodes,
)
from .splits import (
    EVAL_PROTOCOLS,
    LINK_SPLITS,
    MAX_NODES,
    LinkSplit,
    NodeSplit,
    check_num_nodes,
    choose_split,
    edge_keys,
    evaluation_pairs,
    known_pairs,
    link_split_of,
    find_pairs,
    node_split,
    pair_codes,
    random_link_split,
    random_pairs,
    sample_negatives,
    temporal_link_split,
)
from .synthetic import sbm, temporal_sbm

__all__ = [
    "CorruptGzipError",
    "DATASET_FILES",
    "DYGLIB_HEADER",
    "DyGLibSplit",
    "EVAL_PROTOCOLS",
    "LINK_SPLITS",
    "Dataset",
    "EdgeList",
    "LinkSplit",
    "MAX_NODES",
    "NEGATIVE_STRATEGIES",
    "NodeSplit",
    "PlanetoidData",
    "StreamBatch",
    "UnsafePickleError",
    "available",
    "check_num_nodes",
    "choose_split",
    "data_root",
    "dyglib_split",
    "edge_keys",
    "edgebank_scores",
    "evaluation_batches",
    "evaluation_pairs",
    "gunzip_chunks",
    "known_pairs",
    "link_split_of",
    "find_pairs",
    "from_arrays",
    "from_networkx",
    "from_pyg",
    "from_scipy",
    "load",
    "load_pickle",
    "load_planetoid",
    "mean_batch_metrics",
    "node_split",
    "parse_dense_adjacency",
    "parse_edge_list",
    "parse_letter_labels",
    "pair_codes",
    "parse_node_labels",
    "random_link_split",
    "random_pairs",
    "read_text",
    "register",
    "remap_nodes",
    "sample_negatives",
    "sbm",
    "temporal_link_split",
    "temporal_sbm",
]
