"""Your own graph as a Dataset: from NumPy edge arrays, a SciPy adjacency, networkx, PyG."""
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import REPO, TIMEOUT, ring_of_communities

from sparsegnn_jax import data, graphs

# ----------------------------------------------------------------------------- from_arrays


def test_from_arrays_keeps_ids_counts_and_compacts_labels():
    ds = graphs.from_arrays([0, 1, 2], [1, 2, 0], num_nodes=5, labels=["b", "a", "b", None, "c"],
                            times=[3, 1, 2], features=np.eye(5))
    assert (ds.num_nodes, ds.num_edges) == (5, 3)
    np.testing.assert_array_equal(ds.senders, [0, 1, 2])
    assert ds.senders.dtype == ds.receivers.dtype == np.int32
    # Class ids in sorted order of the values; a missing label is -1 (left out of splits).
    np.testing.assert_array_equal(ds.labels, [1, 0, 1, -1, 2])
    assert ds.class_names == ("a", "b", "c") and ds.num_classes == 3
    assert ds.times.dtype == np.int64 and ds.features.dtype == np.float32
    assert ds.features.shape == (5, 5) and ds.split is None


def test_from_arrays_integer_labels_keep_their_values_as_names():
    ds = graphs.from_arrays([0], [1], labels=np.array([7, 3]))
    np.testing.assert_array_equal(ds.labels, [1, 0])
    assert ds.class_names == (3, 7) and ds.num_nodes == 2
    # Negative integers mean "no label".
    ds = graphs.from_arrays([0, 1], [1, 2], labels=[0, -1, 1])
    np.testing.assert_array_equal(ds.labels, [0, -1, 1])
    assert ds.num_classes == 2


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(senders=[0, 1], receivers=[1]), "senders and receivers"),
    (dict(senders=[0, -1], receivers=[1, 0]), "senders"),
    (dict(senders=[0, 1.5], receivers=[1, 0]), "senders"),
    (dict(senders=[0, 4], receivers=[1, 0], num_nodes=3), "num_nodes=3"),
    (dict(senders=[0, 1], receivers=[1, 0], times=[1]), "times"),
    (dict(senders=[0, 1], receivers=[1, 0], times=[1.5, 2]), "times"),
    (dict(senders=[0, 1], receivers=[1, 0], edge_weights=[1, np.nan]), "edge_weights"),
    (dict(senders=[0, 1], receivers=[1, 0], features=np.ones((3, 2))), "features"),
    (dict(senders=[0, 1], receivers=[1, 0], labels=[0]), "labels"),
    (dict(senders=[0, 1], receivers=[1, 0], labels=[-1, -1]), "labels"),
    (dict(senders=[], receivers=[]), "no nodes"),
])
def test_from_arrays_bad_input_names_the_argument(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        graphs.from_arrays(**kwargs)


def test_from_arrays_node_split_from_masks_or_indices():
    masks = [np.array([1, 1, 0, 0, 0], bool), np.array([0, 0, 1, 0, 0], bool),
             np.array([0, 0, 0, 1, 1], bool)]
    ds = graphs.from_arrays([0, 1], [1, 2], num_nodes=5, labels=[0, 1, 0, 1, 0], split=masks)
    np.testing.assert_array_equal(ds.split.train, [0, 1])
    np.testing.assert_array_equal(ds.split.test, [3, 4])
    ds = graphs.from_arrays([0, 1], [1, 2], num_nodes=5, labels=[0, 1, 0, 1, 0],
                            split=([4, 0], [2], [1, 3]))
    np.testing.assert_array_equal(ds.split.train, [0, 4])
    with pytest.raises(ValueError, match="split"):
        graphs.from_arrays([0, 1], [1, 2], num_nodes=5, labels=[0, 1, 0, 1, 0],
                           split=([0, 9], [2], [3]))


# ----------------------------------------------------------------------------- from_scipy


def test_from_scipy_symmetric_adjacency_is_one_edge_per_pair():
    src, dst, n = ring_of_communities(communities=4, size=10)
    a = sp.coo_array((np.ones(2 * src.size), (np.r_[src, dst], np.r_[dst, src])), shape=(n, n))
    ds = graphs.from_scipy(a.tocsr(), labels=np.arange(n) // 10)
    assert ds.num_nodes == n and ds.num_edges == src.size
    assert np.all(ds.senders < ds.receivers) and ds.edge_weights is None
    assert {(u, v) for u, v in zip(src.tolist(), dst.tolist())} == set(
        zip(ds.senders.tolist(), ds.receivers.tolist()))
    assert ds.num_classes == 4
    # directed=True keeps both stored directions.
    assert graphs.from_scipy(a, directed=True).num_edges == 2 * src.size


def test_from_scipy_directed_and_weighted():
    a = sp.csr_array(np.array([[0, 2, 0], [0, 0, 0], [5, 0, 1]], np.float64))
    ds = graphs.from_scipy(a)
    np.testing.assert_array_equal(ds.senders, [0, 2, 2])
    np.testing.assert_array_equal(ds.receivers, [1, 0, 2])
    np.testing.assert_array_equal(ds.edge_weights, [2, 5, 1])
    # A dense NumPy adjacency and the legacy spmatrix work the same.
    for same in (a.toarray(), sp.csr_matrix(a.toarray())):
        d2 = graphs.from_scipy(same)
        np.testing.assert_array_equal(d2.senders, ds.senders)
        np.testing.assert_array_equal(d2.edge_weights, ds.edge_weights)


@pytest.mark.parametrize("adjacency, kwargs, fragment", [
    (np.ones((2, 3)), {}, "square"),
    (np.array([[0, -1], [1, 0]]), {}, "negative"),
    (np.array([[0, 1], [0, 0]]), dict(directed=False), "not symmetric"),
    ([[0, 1], [1, 0]], {}, "A must be"),
])
def test_from_scipy_bad_input_names_the_argument(adjacency, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        graphs.from_scipy(adjacency, **kwargs)


# ----------------------------------------------------------------------------- from_networkx


def test_from_networkx_maps_ids_in_node_order_and_reads_attributes():
    nx = pytest.importorskip("networkx")
    g = nx.Graph()
    g.add_node("x", club="A", emb=[1.0, 2.0])
    g.add_node(("tuple", 1), club="B", emb=[3.0, 4.0])
    g.add_node(7, emb=[5.0, 6.0])  # no label
    g.add_edge("x", 7, t=30, w=2.0)
    g.add_edge(7, ("tuple", 1), t=10)
    ds = graphs.from_networkx(g, labels="club", features="emb", times="t", weight="w")
    assert ds.num_nodes == 3 and ds.num_edges == 2
    assert list(ds.node_ids) == ["x", ("tuple", 1), 7]  # node i is the i-th node of G.nodes
    # networkx lists an undirected edge from the endpoint it meets first in node order.
    np.testing.assert_array_equal(ds.senders, [0, 1])
    np.testing.assert_array_equal(ds.receivers, [2, 2])
    np.testing.assert_array_equal(ds.times, [30, 10])
    np.testing.assert_array_equal(ds.edge_weights, [2.0, 1.0])  # networkx's default weight
    np.testing.assert_array_equal(ds.labels, [0, 1, -1])
    np.testing.assert_array_equal(ds.features, [[1, 2], [3, 4], [5, 6]])
    # Without attributes asked for: no features; integer node ids stay int64.
    cols = graphs.from_networkx(nx.path_graph(3))
    assert cols.features is None and cols.num_edges == 2
    np.testing.assert_array_equal(cols.node_ids, [0, 1, 2])
    assert cols.node_ids.dtype == np.int64


def test_from_networkx_directed_multigraph_keeps_every_edge():
    nx = pytest.importorskip("networkx")
    g = nx.MultiDiGraph()
    g.add_edges_from([(0, 1, {"t": 1}), (0, 1, {"t": 2}), (1, 0, {"t": 3})])
    ds = graphs.from_networkx(g, times="t")
    np.testing.assert_array_equal(ds.senders, [0, 0, 1])
    np.testing.assert_array_equal(ds.times, [1, 2, 3])


def test_from_networkx_of_a_community_graph_has_its_blocks_as_labels():
    nx = pytest.importorskip("networkx")
    g = nx.stochastic_block_model([20, 30], [[0.3, 0.02], [0.02, 0.3]], seed=1)
    ds = graphs.from_networkx(g, labels="block", features=["block"])
    assert ds.num_edges == g.number_of_edges() and ds.num_nodes == 50
    np.testing.assert_array_equal(np.bincount(ds.labels), [20, 30])
    np.testing.assert_array_equal(ds.features[:, 0], ds.labels)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(labels="nope"), "labels='nope'"),
    (dict(times="nope"), "times='nope'"),
    (dict(features="nope"), "features"),
    (dict(features=["emb", "nope"]), "nope"),
])
def test_from_networkx_missing_attributes_name_the_argument(kwargs, fragment):
    nx = pytest.importorskip("networkx")
    g = nx.path_graph(3)
    nx.set_node_attributes(g, 1.0, "emb")
    with pytest.raises(ValueError, match=fragment):
        graphs.from_networkx(g, **kwargs)


def test_from_networkx_refuses_what_is_not_a_graph():
    with pytest.raises(ValueError, match="G must be a networkx graph"):
        graphs.from_networkx([(0, 1)])


# ----------------------------------------------------------------------------- from_pyg


def test_from_pyg_reads_a_data_like_object_without_torch():
    # PyG's Data, duck-typed: what from_pyg reads are these attributes (torch tensors convert
    # through .numpy()). PyG stores an undirected graph as both directions.
    edge_index = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])
    pyg = types.SimpleNamespace(edge_index=edge_index, x=np.ones((4, 3), np.float32),
                                y=np.array([0, 1, 0, 1]), num_nodes=4,
                                train_mask=np.array([1, 1, 0, 0], bool),
                                val_mask=np.array([0, 0, 1, 0], bool),
                                test_mask=np.array([0, 0, 0, 1], bool))
    ds = graphs.from_pyg(pyg)
    assert ds.num_nodes == 4 and ds.num_edges == 2  # node 3 has no edge, and counts
    np.testing.assert_array_equal(np.c_[ds.senders, ds.receivers], [[0, 1], [1, 2]])
    assert ds.features.shape == (4, 3) and ds.num_classes == 2
    np.testing.assert_array_equal(ds.split.val, [2])
    assert graphs.from_pyg(pyg, directed=True).num_edges == 4


def test_from_pyg_temporal_data_events():
    events = types.SimpleNamespace(src=np.array([0, 2, 1]), dst=np.array([1, 0, 2]),
                                   t=np.array([5, 6, 7]))
    ds = graphs.from_pyg(events)
    np.testing.assert_array_equal(ds.times, [5, 6, 7])
    assert ds.num_nodes == 3 and ds.num_edges == 3


def test_from_pyg_of_a_real_data_object():
    torch = pytest.importorskip("torch")
    pyg_data = pytest.importorskip("torch_geometric.data")
    d = pyg_data.Data(edge_index=torch.tensor([[0, 1], [1, 2]]), x=torch.ones(3, 2),
                      y=torch.tensor([0, 1, 1]))
    ds = graphs.from_pyg(d)
    assert (ds.num_nodes, ds.num_edges, ds.num_classes) == (3, 2, 2)


def test_from_pyg_refuses_what_has_no_edges():
    with pytest.raises(ValueError, match="edge_index"):
        graphs.from_pyg(types.SimpleNamespace(x=np.ones((3, 2))))


# ----------------------------------------------------------------------------- register


def test_a_dataset_registers_under_its_name_and_loads():
    ds = graphs.from_arrays([0, 1], [1, 2], labels=[0, 1, 0], name="mine")
    data.register("test-convert-own", ds)
    loaded = data.load("test-convert-own")
    assert loaded.name == "test-convert-own" and loaded.num_edges == 2
    assert "test-convert-own" in data.available()
    with pytest.raises(ValueError, match="name"):
        data.register("file:x", ds)


def test_importing_the_package_imports_neither_networkx_nor_torch():
    code = ("import sys, sparsegnn_jax; "
            "print(sorted(m for m in ('networkx', 'torch', 'torch_geometric') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=TIMEOUT, check=True).stdout
    assert out.strip() == "[]"
