"""The registry of named datasets and :func:`load`."""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

import numpy as np

from . import parsers
from .dataset import Dataset
from .digests import KNOWN_SHA256, sha256sum
from .splits import NodeSplit, check_num_nodes, check_seed, node_split
from .synthetic import sbm, temporal_sbm

__all__ = ["Dataset", "load", "register", "available", "DATASET_FILES", "data_root"]

ENV_VAR = "SPARSEGNN_DATA"


# Files each named dataset needs, relative to the data root (the downloader writes these).
DATASET_FILES: dict[str, list[str]] = {
    "email-eu-temporal": ["email_eu_core_temporal/email-Eu-core-temporal.txt.gz"],
    "email-eu": ["email_eu_core/email-Eu-core.txt",
                 "email_eu_core/email-Eu-core-department-labels.txt"],
    "stackoverflow-prefix": ["stackoverflow_a2q_prefix/sx-stackoverflow-a2q.first50k.txt"],
    "cora": [f"planetoid/ind.cora.{k}"
             for k in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")],
    "citeseer": [f"planetoid/ind.citeseer.{k}"
                 for k in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")],
    "drosophila-left": ["drosophila/left_adjacency.csv", "drosophila/left_cell_labels.csv"],
    "drosophila-right": ["drosophila/right_adjacency.csv", "drosophila/right_cell_labels.csv"],
    # The temporal-graph benchmarks' graphs (DyGLib / DGB), events in DyGLib's order with
    # node id = DyGLib id - 1, so sparsegnn_jax.data.dyglib_split(ds) replicates its split.
    "uci": ["snap_collegemsg/CollegeMsg.txt.gz"],
    "enron": ["dyglib_enron/enron.txt.gz"],
    "uslegis": ["dyglib_uslegis/uslegis.txt.gz"],
}

_Loader = Callable[[pathlib.Path | None, int], Dataset]
_REGISTRY: dict[str, tuple[_Loader, bool]] = {}


def register(name: str, loader: _Loader | Dataset, needs_files: bool = True) -> None:
    """Add a named dataset: a ``--dataset`` value for :func:`load`, ``runs.run`` and the
    experiment scripts.

    Args:
      name: the name for :func:`load`.
      loader: ``loader(root, seed) -> Dataset``; root is the resolved data root (None when
        ``needs_files`` is False). Or a :class:`Dataset` itself (e.g. from
        ``graphs.from_networkx``): it is loaded under ``name``, needing no files.
      needs_files: whether the loader reads files under the data root.

    Raises:
      ValueError: ``name`` is empty, not a string or starts with ``file:``.
    """
    if not isinstance(name, str) or not name or name.startswith("file:"):
        raise ValueError(f"dataset name must be a non-empty string not starting with 'file:', "
                         f"got {name!r}")
    if isinstance(loader, Dataset):
        named = dataclasses.replace(loader, name=name)
        loader, needs_files = (lambda root, seed: named), False
    _REGISTRY[name] = (loader, needs_files)


def available() -> list[str]:
    """Names accepted by :func:`load` (plus ``"file:PATH"``)."""
    return sorted(_REGISTRY)


def _download_hint(name: str) -> str:
    return (f"set {ENV_VAR} (or pass root=) to the folder holding the datasets; to fetch "
            f"'{name}' run: python -m sparsegnn_jax.data.download {name} --root DIR")


def data_root(root=None, name: str = "DATASET") -> pathlib.Path:
    """Resolve the data root: the argument, else ``$SPARSEGNN_DATA``.

    Raises:
      FileNotFoundError: neither is set, or the folder does not exist (with a hint).
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or None
    if root is None:
        raise FileNotFoundError(f"dataset {name!r} needs data files: {_download_hint(name)}")
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a directory: {_download_hint(name)}")
    return root


def _check_files(root: pathlib.Path, name: str) -> None:
    missing = [str(root / f) for f in DATASET_FILES.get(name, []) if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {name!r}: missing {', '.join(missing)}; "
                                f"{_download_hint(name)}")


def _compact_labels(raw) -> tuple[np.ndarray, tuple]:
    """Map arbitrary label values onto 0..C-1 (sorted order)."""
    names, labels = np.unique(np.asarray(raw), return_inverse=True)
    return labels.astype(np.int32), tuple(names.tolist())


def _edge_dataset(name: str, path, seed: int) -> Dataset:
    """An edge list's graph; ids remapped to 0..N-1 in sorted order (DyGLib's ml_ files:
    id - 1, see :func:`_dyglib_ids`). Events stay in file order."""
    edges = parsers.parse_edge_list(path)
    if edges.header == parsers.DYGLIB_HEADER:
        return _dyglib_ids(name, path, edges)
    node_ids, (src, dst) = parsers.remap_nodes(edges.src, edges.dst)
    return Dataset(name=name, num_nodes=int(node_ids.size), senders=src, receivers=dst,
                   times=edges.times, node_ids=node_ids)


def _dyglib_ids(name: str, path, edges: parsers.EdgeList) -> Dataset:
    """DyGLib's ``ml_<name>.csv``: node = DyGLib id - 1, N = the largest id.

    DyGLib numbers nodes 1..N (preprocess_data.py ``reindex``) and draws its new test nodes
    and historical / inductive negatives in an order set by those ids, so they are shifted
    rather than remapped: a gap in the ids would otherwise shift every later id and
    ``dyglib_split`` (DyGLib id = our id + 1) would no longer replicate DyGLib.
    """
    lo = int(min(edges.src.min(), edges.dst.min()))
    n = int(max(edges.src.max(), edges.dst.max()))
    distinct = np.union1d(edges.src, edges.dst).size
    if lo < 1 or n > 2 * distinct + 1024:
        raise ValueError(f"{path}: a DyGLib ml_ file numbers its {distinct} nodes 1..N, found "
                         f"ids {lo}..{n}")
    check_num_nodes(n)
    return Dataset(name=name, num_nodes=n, senders=(edges.src - 1).astype(np.int32),
                   receivers=(edges.dst - 1).astype(np.int32), times=edges.times,
                   node_ids=np.arange(1, n + 1, dtype=np.int64))


def _load_events(name: str):
    def loader(root, seed):
        return _edge_dataset(name, root / DATASET_FILES[name][0], seed)
    return loader


def _load_email_eu_temporal(root, seed):
    return _edge_dataset("email-eu-temporal", root / DATASET_FILES["email-eu-temporal"][0], seed)


def _load_stackoverflow(root, seed):
    return _edge_dataset("stackoverflow-prefix",
                         root / DATASET_FILES["stackoverflow-prefix"][0], seed)


def _load_email_eu(root, seed):
    edge_path, label_path = (root / f for f in DATASET_FILES["email-eu"])
    edges = parsers.parse_edge_list(edge_path, columns=2)
    lab_nodes, lab_values = parsers.parse_node_labels(label_path)
    # The node set is the union: a labelled node may have no edge.
    node_ids, (src, dst, lab_idx) = parsers.remap_nodes(edges.src, edges.dst, lab_nodes)
    compact, names = _compact_labels(lab_values)
    labels = np.full(node_ids.size, -1, dtype=np.int32)
    labels[lab_idx] = compact
    return Dataset(name="email-eu", num_nodes=int(node_ids.size), senders=src, receivers=dst,
                   labels=labels, num_classes=len(names), split=node_split(labels, seed),
                   node_ids=node_ids, class_names=names)


def _check_published(root: pathlib.Path, name: str) -> None:
    """Raises unless every file of ``name`` with a known digest is the published file.

    Planetoid files are pickles: anything else under their names is refused before it is
    unpickled (the restricted unpickler is the second line of defence).
    """
    for rel in DATASET_FILES[name]:
        expected = KNOWN_SHA256.get(rel)
        if expected is None:
            continue
        digest = sha256sum(root / rel)
        if digest != expected:
            raise ValueError(f"{root / rel}: sha256 {digest} is not that of the published "
                             f"file ({expected}); refusing to read it as dataset {name!r} "
                             f"(fetch it again: python -m sparsegnn_jax.data.download {name} "
                             "--root DIR)")


def _load_planetoid(name):
    def loader(root, seed):
        _check_published(root, name)
        p = parsers.load_planetoid(root / "planetoid", name)
        n = p.features.shape[0]
        return Dataset(name=name, num_nodes=n, senders=p.senders.astype(np.int32),
                       receivers=p.receivers.astype(np.int32), features=p.features,
                       labels=p.labels, num_classes=p.num_classes,
                       split=NodeSplit(p.train, p.val, p.test),
                       node_ids=np.arange(n, dtype=np.int64))
    return loader


def _load_drosophila(side):
    name = f"drosophila-{side}"

    def loader(root, seed):
        adj_path, lab_path = (root / f for f in DATASET_FILES[name])
        adj = parsers.parse_dense_adjacency(adj_path)
        letters = parsers.parse_letter_labels(lab_path)
        if len(letters) != adj.shape[0]:
            raise ValueError(f"{lab_path}: {len(letters)} labels but {adj_path} has "
                             f"{adj.shape[0]} nodes")
        src, dst = np.nonzero(adj > 0)  # row -> column, weight = synapse count
        labels, names = _compact_labels(letters)
        n = adj.shape[0]
        return Dataset(name=name, num_nodes=n, senders=src.astype(np.int32),
                       receivers=dst.astype(np.int32),
                       edge_weights=adj[src, dst].astype(np.float32), labels=labels,
                       num_classes=len(names), split=node_split(labels, seed),
                       node_ids=np.arange(n, dtype=np.int64), class_names=names)
    return loader


def _load_synthetic_temporal(root, seed):
    return temporal_sbm(seed)


def _load_synthetic_arrivals(root, seed):
    # Half the nodes join during the stream: the cold-start case of real interaction graphs.
    return temporal_sbm(seed, new_node_fraction=0.5, name="synthetic-arrivals")


def _load_synthetic_sbm(root, seed):
    return sbm(seed)


register("synthetic-temporal", _load_synthetic_temporal, needs_files=False)
register("synthetic-arrivals", _load_synthetic_arrivals, needs_files=False)
register("synthetic-sbm", _load_synthetic_sbm, needs_files=False)
register("email-eu-temporal", _load_email_eu_temporal)
register("email-eu", _load_email_eu)
register("stackoverflow-prefix", _load_stackoverflow)
register("cora", _load_planetoid("cora"))
register("citeseer", _load_planetoid("citeseer"))
register("drosophila-left", _load_drosophila("left"))
register("drosophila-right", _load_drosophila("right"))
for _name in ("uci", "enron", "uslegis"):
    register(_name, _load_events(_name))


def load(name: str = "synthetic-temporal", root=None, seed: int = 0) -> Dataset:
    """Load a dataset by name.

    Args:
      name: one of :func:`available` (``synthetic-temporal``, ``synthetic-sbm``,
        ``email-eu-temporal``, ``email-eu``, ``stackoverflow-prefix``, ``cora``, ``citeseer``,
        ``drosophila-left``, ``drosophila-right``, and the temporal-graph benchmarks' ``uci``
        (SNAP CollegeMsg), ``enron`` and ``uslegis``) or ``"file:PATH"`` for any edge list
        (``src dst t`` or ``src dst``; plain or .gz; whitespace or commas; optionally a
        header naming the columns, see :func:`parsers.parse_edge_list`). DyGLib's own
        ``ml_<name>.csv`` (header ``,u,i,ts,label,idx``) loads with node = DyGLib id - 1.
      root: data root holding the dataset folders; default ``$SPARSEGNN_DATA``. Not needed for
        the synthetic datasets and ``file:PATH``.
      seed: seed of the synthetic generators and of stratified node splits.

    Returns:
      Dataset.

    Raises:
      ValueError: unknown name (lists the known ones), a negative seed or a malformed file.
      FileNotFoundError: data root or files missing (with the download command).
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    seed = check_seed(seed)
    if name.startswith("file:"):
        if not name[len("file:"):]:
            raise ValueError("dataset 'file:' names no file: use file:PATH with the path of "
                             "an edge list")
        path = pathlib.Path(name[len("file:"):]).expanduser()
        if path.is_dir():
            raise ValueError(f"dataset {name!r}: {path} is a folder, not an edge-list file")
        if not path.is_file():
            raise FileNotFoundError(f"dataset {name!r}: file not found: {path}")
        return _edge_dataset(name, path, seed)
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(available())}, "
                         "or file:PATH for an edge list (SNAP, CSV, DyGLib's ml_<name>.csv)")
    loader, needs_files = _REGISTRY[name]
    if not needs_files:
        return loader(None, seed)
    resolved = data_root(root, name)
    _check_files(resolved, name)
    return loader(resolved, seed)
