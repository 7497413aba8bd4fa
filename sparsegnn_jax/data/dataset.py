"""The Dataset type: a graph as NumPy arrays (shared by the loaders and the generators)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .splits import NodeSplit

__all__ = ["Dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A graph dataset, as NumPy arrays with nodes numbered 0..N-1.

    Attributes:
      name: registry name (or ``"file:PATH"``).
      num_nodes: N.
      senders, receivers: [E] int32 raw directed edges (self-loops and repeats kept).
      times: [E] int64 timestamps or None (static graph).
      edge_weights: [E] float32 or None.
      features: [N, F] float32 or None (models then learn an embedding table).
      labels: [N] int32 class ids or None.
      num_classes: number of classes (0 without labels).
      split: NodeSplit; Planetoid's standard split, a stratified ``node_split(labels, seed)``
        for other labelled datasets, None without labels.
      node_ids: [N] original id of each node (the remapping): int64, or an object array of
        networkx node ids that are not all integers; or None.
      class_names: original label names by class id, or None.
    """

    name: str
    num_nodes: int
    senders: np.ndarray
    receivers: np.ndarray
    times: np.ndarray | None = None
    edge_weights: np.ndarray | None = None
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    num_classes: int = 0
    split: NodeSplit | None = None
    node_ids: np.ndarray | None = None
    class_names: tuple | None = None

    @property
    def num_edges(self) -> int:
        """Number of raw edges E."""
        return int(self.senders.size)

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"num_nodes={self.num_nodes}", f"num_edges={self.num_edges}"]
        if self.times is not None:
            parts.append("temporal")
        if self.features is not None:
            parts.append(f"features={self.features.shape[1]}")
        if self.labels is not None:
            parts.append(f"num_classes={self.num_classes}")
        return f"Dataset({', '.join(parts)})"
