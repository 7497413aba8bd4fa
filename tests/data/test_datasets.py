"""sparsegnn_jax.data datasets: the named registry, the data root, the real graphs."""
import time

import jax
import numpy as np
import pytest

from sparsegnn_jax import data

# ----------------------------------------------------------------------------- load / registry


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError) as info:
        data.load("no-such-graph")
    msg = str(info.value)
    for name in ("synthetic-temporal", "email-eu-temporal", "cora", "drosophila-left", "file:"):
        assert name in msg


def test_missing_root_and_files_give_download_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEGNN_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        data.load("cora")
    assert "SPARSEGNN_DATA" in str(info.value)
    assert "python -m sparsegnn_jax.data.download cora --root DIR" in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        data.load("email-eu", root=tmp_path)
    msg = str(info.value)
    assert "email-Eu-core.txt" in msg and "SPARSEGNN_DATA" in msg
    assert "python -m sparsegnn_jax.data.download email-eu --root DIR" in msg
    monkeypatch.setenv("SPARSEGNN_DATA", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        data.load("drosophila-left")


def test_root_from_env(tmp_path, monkeypatch):
    (tmp_path / "email_eu_core").mkdir()
    (tmp_path / "email_eu_core/email-Eu-core.txt").write_text("0 1\n1 2\n")
    (tmp_path / "email_eu_core/email-Eu-core-department-labels.txt").write_text(
        "0 4\n1 4\n2 9\n3 9\n")
    monkeypatch.setenv("SPARSEGNN_DATA", str(tmp_path))
    ds = data.load("email-eu")
    assert ds.num_nodes == 4  # node 3 has a label but no edge
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    assert ds.num_classes == 2 and ds.class_names == (4, 9)


# ----------------------------------------------------------------------------- real data


def test_email_eu_temporal(data_root):
    start = time.perf_counter()
    ds = data.load("email-eu-temporal", root=data_root)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed
    assert ds.num_nodes == 986 and ds.num_edges == 332_334
    assert ds.times.dtype == np.int64 and ds.times.min() == 0
    assert (ds.times.max() - ds.times.min()) / 86400 == pytest.approx(803, abs=1)
    keys = data.edge_keys((ds.senders, ds.receivers), ds.num_nodes)
    assert keys.shape == (24_929, 2)  # SNAP's count of static edges
    split = data.temporal_link_split(ds)
    assert split.train_times.max() <= split.test_times.min()
    assert split.graph_senders.size == split.train_edges.shape[0]
    neg = np.asarray(data.sample_negatives(jax.random.key(0), ds.num_nodes, 4096,
                                           data.edge_keys(split.all_edges, ds.num_nodes)))
    n = ds.num_nodes
    assert not np.isin(data.pair_codes(neg[:, 0], neg[:, 1], n),
                       data.pair_codes(keys[:, 0], keys[:, 1], n)).any()


def test_email_eu_static(data_root):
    ds = data.load("email-eu", root=data_root)
    assert ds.num_nodes == 1005 and ds.num_edges == 25_571
    assert ds.times is None and ds.num_classes == 42 and ds.labels.min() >= 0
    np.testing.assert_array_equal(ds.node_ids, np.arange(1005))
    s = ds.split
    assert s.train.size + s.val.size + s.test.size == 1005


def test_email_eu_temporal_nodes_all_labelled(data_root):
    temporal = data.load("email-eu-temporal", root=data_root)
    static = data.load("email-eu", root=data_root)
    assert np.isin(temporal.node_ids, static.node_ids).all()


def test_stackoverflow_prefix(data_root):
    ds = data.load("stackoverflow-prefix", root=data_root)
    assert ds.num_nodes == 7876 and ds.num_edges == 50_000
    assert np.all(np.diff(ds.times) >= 0)


@pytest.mark.parametrize("name, n, f, c, sizes", [
    ("cora", 2708, 1433, 7, (140, 500, 1000)),
    ("citeseer", 3327, 3703, 6, (120, 500, 1000)),
])
def test_planetoid_real(data_root, name, n, f, c, sizes):
    ds = data.load(name, root=data_root)
    assert ds.num_nodes == n and ds.features.shape == (n, f) and ds.num_classes == c
    assert (ds.split.train.size, ds.split.val.size, ds.split.test.size) == sizes
    np.testing.assert_array_equal(np.bincount(ds.labels[ds.split.train], minlength=c),
                                  [20] * c)  # the standard "20 per class"
    assert set(np.unique(ds.features)) <= {0.0, 1.0}
    assert np.intersect1d(ds.split.train, ds.split.test).size == 0
    assert ds.senders.max() < n and ds.receivers.max() < n
    if name == "citeseer":
        # The 15 isolated ids missing from test.index are zero-padded rows.
        missing = np.setdiff1d(np.arange(ds.split.test.min(), n), ds.split.test)
        assert missing.size == 15
        assert not ds.features[missing].any()
    else:
        assert ds.features.sum(1).min() > 0


@pytest.mark.parametrize("side, n", [("left", 209), ("right", 213)])
def test_drosophila(data_root, side, n):
    ds = data.load(f"drosophila-{side}", root=data_root)
    adj = data.parse_dense_adjacency(data_root / f"drosophila/{side}_adjacency.csv")
    assert ds.num_nodes == n and ds.num_classes == 4 and ds.class_names == ("I", "K", "O", "P")
    assert ds.num_edges == int((adj > 0).sum())
    np.testing.assert_array_equal(ds.edge_weights, adj[ds.senders, ds.receivers])
    assert ds.edge_weights.min() >= 1 and ds.edge_weights.dtype == np.float32
    assert ds.labels.shape == (n,)
