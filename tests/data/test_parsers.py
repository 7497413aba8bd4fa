"""sparsegnn_jax.data parsers: edge lists, label files, dense adjacency, Planetoid."""
import builtins
import gzip
import os
import pickle
import time
import warnings

import numpy as np
import pytest

from sparsegnn_jax import data
from sparsegnn_jax.data import parsers

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


# A gzip header, then bytes that are no deflate stream: zlib.error, not an OSError, inside.
CORRUPT_GZIP = gzip.compress(b"1 2 3\n" * 100)[:10] + b"garbage" * 20


def test_corrupt_gzip_data_after_a_valid_header(tmp_path):
    path = _write(tmp_path, "corrupt.txt.gz", CORRUPT_GZIP)
    with pytest.raises(parsers.CorruptGzipError,
                       match=r"corrupt\.txt\.gz: not a valid gzip file \(Error -3 ") as err:
        data.parse_edge_list(path)
    assert not err.value.truncated
    cut = _write(tmp_path, "cut.txt.gz", gzip.compress(b"1 2 3\n" * 100)[:-12])
    with pytest.raises(parsers.CorruptGzipError, match=r"cut\.txt\.gz: .*cut short") as err:
        data.parse_edge_list(cut)
    assert err.value.truncated


def test_decompressed_size_is_capped(tmp_path, monkeypatch):
    path = _write(tmp_path, "bomb.txt.gz", b"1 2 3\n" * 20_000, gz=True)  # 120 kB from ~300 B
    monkeypatch.setattr(parsers, "MAX_DECOMPRESSED_BYTES", 100_000)
    with pytest.raises(parsers.CorruptGzipError,
                       match=r"bomb\.txt\.gz: decompresses to more than 100000 bytes"):
        data.parse_edge_list(path)
    assert len(b"".join(parsers.gunzip_chunks(path, max_bytes=120_000))) == 120_000


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


class _Payload:
    """Pickles as a call of ``func(*args)``: what a crafted Planetoid file would hold."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func, args, shown", [
    (os.system, ("touch {marker}",), f"{os.system.__module__}.system"),
    # Protocol 2 spells the builtins module the Python-2 way.
    (builtins.exec, ("open({marker!r}, 'w').close()",), "__builtin__.exec"),
])
def test_malicious_planetoid_pickle_runs_nothing(tmp_path, func, args, shown):
    marker = tmp_path / "marker"
    _write_planetoid(tmp_path, "toy")
    payload = pickle.dumps(_Payload(func, *(a.format(marker=str(marker)) for a in args)),
                           protocol=2)
    # The payload is live: plain pickle runs it.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    (tmp_path / "ind.toy.x").write_bytes(payload)
    with pytest.raises(parsers.UnsafePickleError) as err:
        data.load_planetoid(tmp_path, "toy")
    assert not marker.exists()
    assert str(err.value).startswith(f"{tmp_path / 'ind.toy.x'}: refusing to load {shown}: ")


def test_planetoid_pickle_of_the_wrong_kind(tmp_path):
    """Allowed globals only, but a list where an array belongs: named, not a traceback."""
    _write_planetoid(tmp_path, "toy")
    (tmp_path / "ind.toy.tx").write_bytes(pickle.dumps({0: [1]}, protocol=2))
    with pytest.raises(ValueError, match=r"ind\.toy\.tx: holds a dict, expected an array"):
        data.load_planetoid(tmp_path, "toy")


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_restricted_unpickler_reads_every_real_planetoid_file(data_root, name):
    """The allow-list is enough for the published files, and reads them as pickle does."""
    for part in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        path = data_root / "planetoid" / f"ind.{name}.{part}"
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy's old module paths
            trusted = pickle.load(f, encoding="latin1")  # published files: known digests
        ours = parsers.load_pickle(path)
        assert type(ours) is type(trusted)
        if part == "graph":
            assert ours == trusted
        else:
            a = ours.toarray() if hasattr(ours, "toarray") else ours
            b = trusted.toarray() if hasattr(trusted, "toarray") else trusted
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype


# ----------------------------------------------------------------------------- CSV headers


@pytest.mark.parametrize("header", ["src,dst,t", "u,i,ts", "Source, Destination, Timestamp",
                                    "src dst time"])
def test_edge_list_with_a_header(tmp_path, header):
    sep = "," if "," in header else " "
    rows = [[10, 20, 5], [20, 10, 7], [30, 30, 9]]
    text = header + "\n" + "".join(sep.join(map(str, r)) + "\n" for r in rows)
    e = data.parse_edge_list(_write(tmp_path, "h.csv", text))
    np.testing.assert_array_equal(np.stack([e.src, e.dst, e.times], 1), rows)
    assert e.header == tuple(n.strip().lower() for n in header.replace(",", " ").split())
    ds = data.load(f"file:{tmp_path / 'h.csv'}")
    np.testing.assert_array_equal(ds.node_ids, [10, 20, 30])  # remapped as any file
    np.testing.assert_array_equal(ds.senders, [0, 1, 2])


def test_header_columns_in_any_order_and_extra_columns(tmp_path):
    text = "# a comment\nweight,timestamp,destination,source\n0.5,3,2,1\n1.5,4,1,2\n"
    e = data.parse_edge_list(_write(tmp_path, "o.csv", text))
    assert e.src.tolist() == [1, 2] and e.dst.tolist() == [2, 1] and e.times.tolist() == [3, 4]
    e = data.parse_edge_list(_write(tmp_path, "s.csv", "src,dst\n1,2\n2,3\n"))
    assert e.times is None and e.src.tolist() == [1, 2]
    assert data.parse_edge_list(_write(tmp_path, "c.csv", "1,2,3\n4,5,6\n")).times.tolist() == \
        [3, 6]  # commas without a header


def test_dyglib_ml_csv_loads_with_dyglib_ids_minus_one(tmp_path):
    # DyGLib's processed file: pandas' index column, ids from 1, float times. Node 4 has no
    # event: ids are shifted, not remapped, so DyGLib id = node + 1 still holds.
    text = (",u,i,ts,label,idx\n0,1,2,0.0,0,1\n1,2,3,36.0,0,2\n2,5,1,36.0,1.0,3\n")
    path = _write(tmp_path, "ml_toy.csv", text)
    e = data.parse_edge_list(path)
    assert e.header == data.DYGLIB_HEADER and e.times.dtype == np.int64
    ds = data.load(f"file:{path}")
    assert ds.num_nodes == 5
    np.testing.assert_array_equal(ds.senders, [0, 1, 4])
    np.testing.assert_array_equal(ds.receivers, [1, 2, 0])
    np.testing.assert_array_equal(ds.times, [0, 36, 36])
    np.testing.assert_array_equal(ds.node_ids, [1, 2, 3, 4, 5])
    bad = _write(tmp_path, "ml_bad.csv", ",u,i,ts,label,idx\n0,0,2,0.0,0,1\n")
    with pytest.raises(ValueError, match=r"ml_bad\.csv: a DyGLib ml_ file numbers its 2 nodes"):
        data.load(f"file:{bad}")


@pytest.mark.parametrize(
    "text, lineno, fragment",
    [
        ("a,b,c\n1,2,3\n", 1, "expected numbers or a header naming the source and destination"),
        ("# c\n\nfoo bar\n1 2\n", 3, "e.g. 'src,dst,t' or DyGLib's ',u,i,ts,label,idx'"),
        ("src,u,dst\n1,2,3\n", 1, "the header names two src columns ('src' and 'u')"),
        ("src,dst,t\n1,2,3\n4,5\n", 3, "expected 3 columns, found 2"),
        ("src,dst,t\n1,2,3\n4,5,6.5\n", 3, "time '6.5' is not a whole number"),
        ("src,dst,t\n1.5,2,3.0\n", 2, "node id '1.5' is not a whole number"),
        ("src,dst,t\n1,2,3\n4,x,6\n", 3, "'x' is not an integer"),
        ("src,dst,t\n1,2,3.0\n4,x,6\n", 3, "'x' is not a number"),
    ],
)
def test_bad_header_or_csv_line(tmp_path, text, lineno, fragment):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(ValueError) as info:
        data.load(f"file:{path}")
    msg = str(info.value)
    assert "bad.csv" in msg and f"line {lineno}:" in msg and fragment in msg, msg


def test_header_only_and_forced_time_column(tmp_path):
    with pytest.raises(ValueError, match=r"h\.csv: empty file"):
        data.parse_edge_list(_write(tmp_path, "h.csv", "src,dst,t\n"))
    path = _write(tmp_path, "s.csv", "src,dst\n1,2\n")
    with pytest.raises(ValueError, match=r"s\.csv: line 1: expected a time column"):
        data.parse_edge_list(path, columns=3)
    assert data.parse_edge_list(_write(tmp_path, "t.csv", "u,i,ts\n1,2,3\n"), 2).times is None
