"""Tests of sparsegnn_jax.data: parsers, named datasets, synthetic graphs and splits."""
import functools
import gzip
import time

import jax
import numpy as np
import pytest

from sparsegnn_jax import data

# ----------------------------------------------------------------------------- parsers


def _write(tmp_path, name, text, gz=False):
    path = tmp_path / name
    raw = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_parse_temporal_edge_list_comments_tabs_spaces(tmp_path, gz):
    text = "# SNAP header\n# FromNodeId\tToNodeId\tTime\n10 20 5\n20\t10\t3\n\n  30  30  7\n10 20 5\n"
    path = _write(tmp_path, "edges.txt.gz" if gz else "edges.txt", text, gz)
    e = data.parse_edge_list(path)
    np.testing.assert_array_equal(e.src, [10, 20, 30, 10])
    np.testing.assert_array_equal(e.dst, [20, 10, 30, 20])
    np.testing.assert_array_equal(e.times, [5, 3, 7, 5])
    assert e.src.dtype == np.int64 and e.times.dtype == np.int64


def test_parse_static_edge_list_and_no_trailing_newline(tmp_path):
    e = data.parse_edge_list(_write(tmp_path, "s.txt", "1 2\n2 3\r\n3 1"))
    np.testing.assert_array_equal(e.src, [1, 2, 3])
    np.testing.assert_array_equal(e.dst, [2, 3, 1])
    assert e.times is None


def test_file_dataset_remaps_ids_keeps_loops_and_duplicates(tmp_path):
    path = _write(tmp_path, "e.txt", "100 7 3\n7 7 1\n100 7 3\n55 100 2\n")
    ds = data.load(f"file:{path}")
    assert ds.num_nodes == 3
    np.testing.assert_array_equal(ds.node_ids, [7, 55, 100])
    np.testing.assert_array_equal(ds.senders, [2, 0, 2, 1])
    np.testing.assert_array_equal(ds.receivers, [0, 0, 0, 2])
    np.testing.assert_array_equal(ds.times, [3, 1, 3, 2])
    assert ds.senders.dtype == np.int32 and ds.labels is None and ds.split is None


@pytest.mark.parametrize(
    "text, lineno, fragment",
    [
        ("1 2 3\n4 5 6\n7 8\n", 3, "expected 3 columns, found 2"),
        ("# c\n1 2 3\n4 5 6 7\n", 3, "expected 3 columns, found 4"),
        ("1 2 3\n\n4 x 6\n", 3, "'x' is not an integer"),
        ("1 2 3\n4 5 6.5\n", 2, "'6.5' is not an integer"),
        ("1 2 3 4\n", 1, "expected 2 (src dst) or 3"),
        ("1\n", 1, "expected 2 (src dst) or 3"),
    ],
)
def test_parse_edge_list_malformed_line(tmp_path, text, lineno, fragment):
    path = _write(tmp_path, "bad_edges.txt", text)
    with pytest.raises(ValueError) as info:
        data.parse_edge_list(path)
    msg = str(info.value)
    assert "bad_edges.txt" in msg and f"line {lineno}" in msg and fragment in msg
    assert repr(text.split("\n")[lineno - 1]) in msg  # the offending line is shown


def test_parse_edge_list_bad_line_in_gz(tmp_path):
    lines = [f"{i} {i + 1} {i}" for i in range(1000)]
    lines[876] = "5 6 seven"
    path = _write(tmp_path, "big.txt.gz", "\n".join(lines), gz=True)
    with pytest.raises(ValueError, match=r"big\.txt\.gz: line 877: 'seven'"):
        data.parse_edge_list(path)


def test_parse_edge_list_forced_columns(tmp_path):
    path = _write(tmp_path, "e.txt", "1 2 3\n")
    with pytest.raises(ValueError, match=r"e\.txt: line 1: expected 2 columns, found 3"):
        data.parse_edge_list(path, columns=2)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n"])
def test_empty_file(tmp_path, text):
    path = _write(tmp_path, "empty.txt", text)
    with pytest.raises(ValueError, match=r"empty\.txt: empty file"):
        data.parse_edge_list(path)
    with pytest.raises(ValueError, match=r"empty\.txt: empty file"):
        data.parse_node_labels(path)


def test_nul_bytes(tmp_path):
    path = _write(tmp_path, "nul.txt", b"1 2 3\n4 5 6\n7 \x00 8 9\n")
    with pytest.raises(ValueError, match=r"nul\.txt: line 3: NUL byte"):
        data.parse_edge_list(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.parse_edge_list(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.load(f"file:{tmp_path / 'nope.txt'}")


def test_bad_gzip(tmp_path):
    path = _write(tmp_path, "fake.txt.gz", "1 2 3\n")
    with pytest.raises(ValueError, match=r"fake\.txt\.gz: not a valid gzip"):
        data.parse_edge_list(path)


def test_parse_node_labels(tmp_path):
    nodes, labels = data.parse_node_labels(_write(tmp_path, "l.txt", "0 1\n5\t3\n2 1\n"))
    np.testing.assert_array_equal(nodes, [0, 5, 2])
    np.testing.assert_array_equal(labels, [1, 3, 1])
    with pytest.raises(ValueError, match=r"lab\.txt: line 2: expected 2 columns, found 3"):
        data.parse_node_labels(_write(tmp_path, "lab.txt", "0 1\n1 2 3\n"))
    with pytest.raises(ValueError, match=r"lab2\.txt: line 1: 'a' is not an integer"):
        data.parse_node_labels(_write(tmp_path, "lab2.txt", "a 1\n"))


def test_parse_letter_labels(tmp_path):
    assert data.parse_letter_labels(_write(tmp_path, "c.csv", "K\nP\n\nO\nI\n")) == \
        ["K", "P", "O", "I"]
    with pytest.raises(ValueError, match=r"c2\.csv: line 2: expected one label"):
        data.parse_letter_labels(_write(tmp_path, "c2.csv", "K\nP O\n"))
    with pytest.raises(ValueError, match=r"c3\.csv: empty file"):
        data.parse_letter_labels(_write(tmp_path, "c3.csv", "\n"))


@pytest.mark.parametrize("sep", [" ", ","])
def test_parse_dense_adjacency(tmp_path, sep):
    rows = [[0, 2, 0], [1, 0, 0], [0, 0, 3]]
    text = "\n".join(sep.join(str(v) for v in r) for r in rows) + "\n"
    adj = data.parse_dense_adjacency(_write(tmp_path, "a.csv", text))
    np.testing.assert_array_equal(adj, rows)


def test_parse_dense_adjacency_errors(tmp_path):
    with pytest.raises(ValueError, match=r"r\.csv: line 2: expected 3 columns, found 2"):
        data.parse_dense_adjacency(_write(tmp_path, "r.csv", "0 1 2\n0 1\n0 0 0\n"))
    with pytest.raises(ValueError, match=r"sq\.csv: adjacency matrix must be square"):
        data.parse_dense_adjacency(_write(tmp_path, "sq.csv", "0 1 2\n0 1 0\n"))
    with pytest.raises(ValueError, match=r"nan\.csv: line 1: 'abc' is not a number"):
        data.parse_dense_adjacency(_write(tmp_path, "nan.csv", "abc 1\n0 1\n"))


def test_remap_nodes():
    ids, (a, b) = data.remap_nodes(np.array([30, 10]), np.array([10, 99]))
    np.testing.assert_array_equal(ids, [10, 30, 99])
    np.testing.assert_array_equal(a, [1, 0])
    np.testing.assert_array_equal(b, [0, 2])


def test_parse_speed_large_gz(tmp_path):
    """The vectorised path parses ~330k lines (the email-eu-temporal size) in well under 1 s."""
    rng = np.random.default_rng(0)
    n = 332_334
    arr = np.stack([rng.integers(0, 1000, n), rng.integers(0, 1000, n),
                    np.sort(rng.integers(0, 7e7, n))], axis=1)
    text = "\n".join(f"{a} {b} {c}" for a, b, c in arr.tolist()) + "\n"
    path = _write(tmp_path, "big.txt.gz", text, gz=True)
    data.parse_edge_list(path)  # warm up
    start = time.perf_counter()
    e = data.parse_edge_list(path)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(np.stack([e.src, e.dst, e.times], 1), arr)
    assert elapsed < 1.0, elapsed


# ----------------------------------------------------------------------------- Planetoid


def _write_planetoid(folder, name, num_classes=3, feat=5, test_ids=(9, 7, 8), n_all=6, n_y=3):
    """Tiny Planetoid files in the reference format (pickled scipy / numpy)."""
    import pickle

    import scipy.sparse as sp

    rng = np.random.default_rng(0)

    def onehot(labels):
        return np.eye(num_classes)[labels]

    allx = sp.csr_matrix(rng.integers(0, 2, (n_all, feat)).astype(np.float32))
    ally = onehot(np.arange(n_all) % num_classes)
    tx = sp.csr_matrix(np.arange(len(test_ids))[:, None] + 1.0 + np.zeros((1, feat)))
    ty = onehot(np.arange(len(test_ids)) % num_classes)
    parts = {"x": allx[:n_y], "y": ally[:n_y], "allx": allx, "ally": ally, "tx": tx, "ty": ty,
             "graph": {0: [1, 2], 1: [0], 2: [0, 2], 10: [0]}}
    for k, v in parts.items():
        with open(folder / f"ind.{name}.{k}", "wb") as f:
            pickle.dump(v, f, protocol=2)
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_ids))
    return parts


def test_planetoid_reorders_and_pads_like_reference(tmp_path):
    # allx holds nodes 0..6; test ids 10, 7, 9 (file order) and id 8 has no row: an isolated
    # node, as in CiteSeer, which the reference pads with a zero feature row.
    parts = _write_planetoid(tmp_path, "toy", test_ids=(10, 7, 9), n_all=7)
    p = data.load_planetoid(tmp_path, "toy")
    assert p.features.shape == (11, 5)
    tx, ty = parts["tx"].toarray(), parts["ty"]
    np.testing.assert_array_equal(p.features[:7], parts["allx"].toarray())
    # Reference: test row j belongs to node test_index[j].
    for j, node in enumerate((10, 7, 9)):
        np.testing.assert_array_equal(p.features[node], tx[j])
        assert p.labels[node] == ty[j].argmax()
    assert not p.features[8].any() and p.labels[8] == 0
    np.testing.assert_array_equal(p.labels[:7], np.arange(7) % 3)
    np.testing.assert_array_equal(p.train, [0, 1, 2])
    np.testing.assert_array_equal(p.val, np.arange(3, 503))
    np.testing.assert_array_equal(p.test, [7, 9, 10])
    assert p.num_classes == 3
    np.testing.assert_array_equal(p.senders, [0, 0, 1, 2, 2, 10])
    np.testing.assert_array_equal(p.receivers, [1, 2, 0, 0, 2, 0])


def test_planetoid_missing_and_corrupt(tmp_path):
    _write_planetoid(tmp_path, "toy")
    with pytest.raises(FileNotFoundError, match="ind.other.x"):
        data.load_planetoid(tmp_path, "other")
    (tmp_path / "ind.toy.graph").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"ind\.toy\.graph: not a readable Planetoid pickle"):
        data.load_planetoid(tmp_path, "toy")


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
    late_keys = late[:, 0].astype(np.int64) * ds.num_nodes + late[:, 1]
    assert np.isin(late_keys, train_keys).mean() > 0.6


def test_synthetic_sbm():
    ds = data.load("synthetic-sbm")
    assert ds.features.shape == (ds.num_nodes, 16) and ds.features.dtype == np.float32
    assert np.all(ds.senders < ds.receivers)  # each undirected edge stored once
    assert np.mean(ds.labels[ds.senders] == ds.labels[ds.receivers]) > 0.6
    assert ds.num_classes == 6 and np.bincount(ds.labels).min() == ds.num_nodes // 6


# ----------------------------------------------------------------------------- splits


def _toy_temporal(times, n=6):
    k = len(times)
    rng = np.random.default_rng(1)
    src = rng.integers(0, n, k).astype(np.int32)
    dst = ((src + 1 + rng.integers(0, n - 1, k)) % n).astype(np.int32)
    return data.Dataset("toy", n, src, dst, times=np.asarray(times, np.int64))


def test_temporal_link_split_chronological():
    rng = np.random.default_rng(0)
    ds = _toy_temporal(rng.permutation(1000) // 3, n=40)  # shuffled, with ties
    split = data.temporal_link_split(ds)
    assert split.train_times.max() <= split.val_times.min()
    assert split.val_times.max() <= split.test_times.min()
    assert split.train_times.max() <= split.test_times.min()
    np.testing.assert_array_equal(split.graph_senders, split.train_edges[:, 0])
    np.testing.assert_array_equal(split.graph_receivers, split.train_edges[:, 1])
    # Reference: stable sort then cut at 70% / 80%, then dedupe keeping the first occurrence.
    order = np.argsort(ds.times, kind="stable")
    e = np.stack([ds.senders[order], ds.receivers[order]], 1)
    for part, (lo, hi) in zip((split.train_edges, split.val_edges, split.test_edges),
                              ((0, 700), (700, 800), (800, 1000))):
        seen, ref = set(), []
        for s, d in e[lo:hi].tolist():
            if (s, d) not in seen:
                seen.add((s, d))
                ref.append((s, d))
        np.testing.assert_array_equal(part, np.array(ref, dtype=np.int32).reshape(-1, 2))


def test_temporal_link_split_exact_counts_no_dupes():
    ds = data.Dataset("toy", 4, np.array([0, 1, 0, 2, 3, 1, 2, 0, 1, 3], np.int32),
                      np.array([1, 2, 1, 3, 0, 2, 0, 1, 3, 2], np.int32),
                      times=np.arange(10, dtype=np.int64)[::-1].copy())
    split = data.temporal_link_split(ds)
    # Reversed times: chronological order is the reverse of file order.
    np.testing.assert_array_equal(split.test_edges, [[1, 2], [0, 1]])
    np.testing.assert_array_equal(split.val_edges, [[0, 1]])
    np.testing.assert_array_equal(split.train_edges,
                                  [[3, 2], [1, 3], [0, 1], [2, 0], [1, 2], [3, 0], [2, 3]])
    np.testing.assert_array_equal(split.test_times, [8, 9])


def test_temporal_link_split_errors():
    ds = _toy_temporal(range(10))
    with pytest.raises(ValueError, match="train"):
        data.temporal_link_split(ds, train=0.9, val=0.2)
    with pytest.raises(ValueError, match="too few"):
        data.temporal_link_split(_toy_temporal(range(2)))


def test_edge_keys():
    keys = data.edge_keys(np.array([[2, 1], [0, 3], [2, 1]]), 4)
    np.testing.assert_array_equal(keys, [3, 9])
    with pytest.raises(ValueError, match="num_nodes"):
        data.edge_keys(np.array([[0, 4]]), 4)


def test_sample_negatives_are_non_edges_and_deterministic():
    n = 30
    rng = np.random.default_rng(0)
    # A dense-ish graph (40% of pairs) so rejection really happens.
    pairs = np.stack([rng.integers(0, n, 500), rng.integers(0, n, 500)], 1)
    keys = data.edge_keys(pairs, n)
    key = jax.random.key(7)
    neg = np.asarray(data.sample_negatives(key, n, 2000, keys))
    assert neg.shape == (2000, 2) and neg.dtype == np.int32
    assert np.all(neg[:, 0] != neg[:, 1])
    assert neg.min() >= 0 and neg.max() < n
    assert not np.isin(neg[:, 0].astype(np.int64) * n + neg[:, 1], keys).any()
    again = np.asarray(data.sample_negatives(key, n, 2000, keys))
    np.testing.assert_array_equal(neg, again)
    other = np.asarray(data.sample_negatives(jax.random.key(8), n, 2000, keys))
    assert not np.array_equal(neg, other)
    jitted = jax.jit(functools.partial(data.sample_negatives, num_nodes=n, num=2000))
    np.testing.assert_array_equal(np.asarray(jitted(key, edge_keys=keys)), neg)
    # Covers all non-edges roughly uniformly (every node appears as a source).
    assert np.unique(neg[:, 0]).size == n


def test_sample_negatives_without_edges_and_errors():
    neg = np.asarray(data.sample_negatives(jax.random.key(0), 5, 100, np.zeros(0, np.int64)))
    assert neg.shape == (100, 2) and np.all(neg[:, 0] != neg[:, 1])
    with pytest.raises(ValueError, match="num_nodes"):
        data.sample_negatives(jax.random.key(0), 1, 3, np.zeros(0, np.int64))


def test_node_split_stratified_and_reproducible():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    labels = np.random.default_rng(0).permutation(labels)
    s = data.node_split(labels, seed=5)
    t = data.node_split(labels, seed=5)
    u = data.node_split(labels, seed=6)
    for a, b in zip((s.train, s.val, s.test), (t.train, t.val, t.test)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(s.train, u.train)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert np.unique(allidx).size == labels.size == allidx.size  # disjoint and complete
    np.testing.assert_array_equal(np.bincount(labels[s.train]), [60, 30, 18, 12])
    np.testing.assert_array_equal(np.bincount(labels[s.val]), [20, 10, 6, 4])
    np.testing.assert_array_equal(np.bincount(labels[s.test]), [20, 10, 6, 4])


def test_node_split_ignores_unlabelled():
    s = data.node_split(np.array([0, 0, -1, 1, 1, -1]), seed=0, train=0.5, val=0.0)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert 2 not in allidx and 5 not in allidx and allidx.size == 4


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
    assert keys.size == 24_929  # SNAP's count of static edges
    split = data.temporal_link_split(ds)
    assert split.train_times.max() <= split.test_times.min()
    assert split.graph_senders.size == split.train_edges.shape[0]
    neg = np.asarray(data.sample_negatives(jax.random.key(0), ds.num_nodes, 4096,
                                           data.edge_keys(split.all_edges, ds.num_nodes)))
    assert not np.isin(neg[:, 0].astype(np.int64) * ds.num_nodes + neg[:, 1], keys).any()


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
