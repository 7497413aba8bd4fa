"""sparsegnn_jax.data synthetic graphs: deterministic per seed and learnable."""
import time

import numpy as np
import pytest

from sparsegnn_jax import data

# ----------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", ["synthetic-temporal", "synthetic-sbm"])
def test_synthetic_deterministic_per_seed(name):
    a, b, c = data.load(name, seed=3), data.load(name, seed=3), data.load(name, seed=4)
    for field in ("senders", "receivers", "times", "labels", "features"):
        x, y = getattr(a, field), getattr(b, field)
        if x is None:
            assert y is None
            continue
        np.testing.assert_array_equal(x, y)
    assert not (a.senders.size == c.senders.size and np.array_equal(a.senders, c.senders))
    np.testing.assert_array_equal(a.split.train, b.split.train)


def test_synthetic_temporal_shape_and_learnability():
    start = time.perf_counter()
    ds = data.load("synthetic-temporal")
    assert time.perf_counter() - start < 0.5
    assert 400 <= ds.num_nodes <= 600 and 20_000 <= ds.num_edges <= 30_000
    assert 4 <= ds.num_classes <= 8
    assert np.all(ds.senders != ds.receivers)
    assert np.all(np.diff(ds.times) >= 0)
    assert ds.senders.min() >= 0 and ds.receivers.max() < ds.num_nodes
    # In-community preference.
    same = np.mean(ds.labels[ds.senders] == ds.labels[ds.receivers])
    assert same > 0.7
    # Future edges are predictable from past ones: most test events repeat a training pair.
    split = data.temporal_link_split(ds)
    train_keys = data.edge_keys(split.train_edges, ds.num_nodes)
    n = ds.num_edges
    late = np.stack([ds.senders[int(0.8 * n):], ds.receivers[int(0.8 * n):]], 1)
    late_keys = data.pair_codes(late[:, 0], late[:, 1], ds.num_nodes)
    train_codes = data.pair_codes(train_keys[:, 0], train_keys[:, 1], ds.num_nodes)
    assert np.isin(late_keys, train_codes).mean() > 0.6


def test_synthetic_sbm():
    ds = data.load("synthetic-sbm")
    assert ds.features.shape == (ds.num_nodes, 16) and ds.features.dtype == np.float32
    assert np.all(ds.senders < ds.receivers)  # each undirected edge stored once
    assert np.mean(ds.labels[ds.senders] == ds.labels[ds.receivers]) > 0.6
    assert ds.num_classes == 6 and np.bincount(ds.labels).min() == ds.num_nodes // 6
