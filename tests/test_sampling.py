"""Neighbour sampling: fan-out bounds, uniformity, determinism, padded shapes, and sampled
message passing equal to the full graph's when the fan-outs cover every degree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsegnn_jax import graphs, models, sampling


def random_graph(n=60, e=400, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    w = rng.uniform(0.5, 2.0, e) if weights else None
    return graphs.from_edges(src, dst, n, symmetric=True, self_loops=True, edge_weights=w)


def in_neighbours(graph, node):
    s, r = np.asarray(graph.senders), np.asarray(graph.receivers)
    return set(s[(r == node) & (s != node)].tolist())


def test_csr_holds_every_in_edge_but_self_loops():
    g = random_graph()
    csr = sampling.csr_of(g)
    for node in range(csr.num_nodes):
        got = csr.neighbours[csr.indptr[node]:csr.indptr[node + 1]]
        assert sorted(got.tolist()) == sorted(in_neighbours(g, node))
    assert np.all(csr.loop_weight == 1.0)
    np.testing.assert_allclose(csr.degree, np.bincount(np.asarray(g.receivers), minlength=60))


def test_fanout_is_exact_bound_without_duplicates():
    g = random_graph(n=80, e=300)
    csr = sampling.csr_of(g)
    nodes = np.arange(80)
    degree = np.diff(csr.indptr)
    assert degree.max() > 7 > degree.min()  # both cases occur
    edge, valid = sampling.sample_neighbours(csr, nodes, 7, np.random.default_rng(0))
    assert edge.shape == valid.shape == (80, 7)
    np.testing.assert_array_equal(valid.sum(axis=1), np.minimum(degree, 7))
    for i in nodes:
        picked = edge[i][valid[i]]
        assert len(set(picked.tolist())) == picked.size  # no edge twice
        assert np.all((picked >= csr.indptr[i]) & (picked < csr.indptr[i + 1]))


def test_sampling_is_uniform_over_neighbours():
    # A star: node 0 has 10 in-neighbours; 3 of them drawn 20000 times, each ~3/10 of draws.
    g = graphs.from_edges(np.arange(1, 11), np.zeros(10, int), 11, symmetric=False)
    csr = sampling.csr_of(g)
    edge, valid = sampling.sample_neighbours(csr, np.zeros(20000, int), 3,
                                             np.random.default_rng(1))
    assert valid.all()
    counts = np.bincount(csr.neighbours[edge].ravel(), minlength=11)[1:]
    np.testing.assert_allclose(counts / 20000, 0.3, atol=0.015)


def test_blocks_are_reproducible_by_seed_and_fixed_in_shape():
    g = random_graph(n=200, e=2000)
    csr = sampling.csr_of(g)
    sizes = sampling.block_sizes(16, (4, 3), 200)
    rows = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)

    def draw(seed, seeds):
        return sampling.sample_block(csr, seeds, (4, 3), np.random.default_rng(seed), sizes, rows)

    seeds = np.arange(16) * 7
    a, b, c = draw(3, seeds), draw(3, seeds), draw(4, seeds)
    for x, y in zip(jax.tree.leaves(a.graph), jax.tree.leaves(b.graph)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.graph.senders, c.graph.senders)
    other = draw(5, np.arange(16) + 100)
    shapes = [x.shape for x in jax.tree.leaves(a.graph)]
    assert shapes == [x.shape for x in jax.tree.leaves(other.graph)]
    assert a.graph.senders.shape == (sizes.edges,) and a.graph.nodes.shape == (sizes.nodes, 5)
    # Seeds first; node rows are the global rows; padding edges join the padding node only.
    ids = a.graph.globals[graphs.NODE_IDS]
    np.testing.assert_array_equal(ids[:16], seeds)
    np.testing.assert_array_equal(a.seed_index, np.arange(16))
    np.testing.assert_array_equal(a.graph.nodes[: a.num_nodes], rows[ids[: a.num_nodes]])
    assert np.all(a.graph.senders[a.num_edges:] == sizes.nodes - 1)
    assert np.all(a.graph.receivers[a.num_edges:] == sizes.nodes - 1)
    # Every real edge is an edge of the graph (self loops aside, which the block adds).
    full = set(zip(np.asarray(g.senders).tolist(), np.asarray(g.receivers).tolist()))
    s, r = a.graph.senders[: a.num_edges], a.graph.receivers[: a.num_edges]
    assert all((ids[i], ids[j]) in full for i, j in zip(s, r) if i != j)


def test_repeated_seeds_map_to_one_node():
    csr = sampling.csr_of(random_graph())
    sizes = sampling.block_sizes(6, (2,), 60)
    block = sampling.sample_block(csr, [5, 9, 5, 9, 1, 5], (2,), np.random.default_rng(0), sizes)
    np.testing.assert_array_equal(block.seed_index, [0, 1, 0, 1, 2, 0])
    np.testing.assert_array_equal(block.graph.globals[graphs.NODE_IDS][:3], [5, 9, 1])


def test_edge_mask_samples_kept_edges_only():
    g = random_graph(n=50, e=500)
    keep = np.random.default_rng(2).random(g.senders.shape[0]) < 0.3
    csr = sampling.csr_of(g, keep)
    kept = set(zip(np.asarray(g.senders)[keep].tolist(), np.asarray(g.receivers)[keep].tolist()))
    sizes = sampling.block_sizes(50, (50,), 50)
    block = sampling.sample_block(csr, np.arange(50), (50,), np.random.default_rng(0), sizes)
    ids = block.graph.globals[graphs.NODE_IDS]
    s, r = block.graph.senders[: block.num_edges], block.graph.receivers[: block.num_edges]
    pairs = [(ids[i], ids[j]) for i, j in zip(s, r) if i != j]
    assert pairs and all(p in kept for p in pairs)
    assert len(pairs) == sum(1 for a, b in kept if a != b)


@pytest.mark.parametrize("kind", ["gcn", "sage", "gat", "gin"])
@pytest.mark.parametrize("table", [False, True])
def test_sampled_encoder_equals_full_graph_when_fanout_covers_degrees(kind, table):
    g = random_graph(n=70, e=300, seed=1, weights=kind == "gcn")
    n = 70
    rows = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    opts = dict(num_nodes=n) if table else {}
    model = models.build(kind, 6, 8, 4, num_layers=2, rngs=nnx.Rngs(0), **opts)
    full_graph = g._replace(nodes=None if table else jnp.asarray(rows))
    full = np.asarray(model(full_graph))
    csr = sampling.csr_of(g)
    fan = int(np.diff(csr.indptr).max())
    seeds = np.array([3, 17, 40, 3, 66])
    sizes = sampling.block_sizes(seeds.size, (fan, fan), n)
    block = sampling.sample_block(csr, seeds, (fan, fan), np.random.default_rng(0), sizes,
                                  None if table else rows)
    out = np.asarray(jax.jit(lambda b: model(b))(jax.tree.map(jnp.asarray, block.graph)))
    np.testing.assert_allclose(out[block.seed_index], full[seeds], rtol=1e-5, atol=1e-5)


def test_small_fanout_scales_gcn_weights_to_full_degrees():
    g = random_graph(n=40, e=400, weights=True)
    csr = sampling.csr_of(g)
    sizes = sampling.block_sizes(40, (2,), 40)
    block = sampling.sample_block(csr, np.arange(40), (2,), np.random.default_rng(0), sizes)
    deg = np.bincount(block.graph.receivers, weights=block.graph.edges,
                      minlength=sizes.nodes)[: block.num_nodes]
    ids = block.graph.globals[graphs.NODE_IDS][: block.num_nodes]
    np.testing.assert_allclose(deg, csr.degree[ids], rtol=1e-5)


def test_parse_fanouts_names_the_flag():
    assert sampling.parse_fanouts("15,10") == (15, 10)
    assert sampling.parse_fanouts(None) is None and sampling.parse_fanouts("") is None
    with pytest.raises(ValueError, match="--fanout"):
        sampling.parse_fanouts("15,x")
    with pytest.raises(ValueError, match="--fanout"):
        sampling.parse_fanouts("15,0")


def test_block_too_small_is_an_error():
    csr = sampling.csr_of(random_graph())
    with pytest.raises(ValueError, match="block_sizes"):
        sampling.sample_block(csr, np.arange(10), (3,), np.random.default_rng(0),
                              sampling.BlockSizes(5, 100))


def test_prefetcher_keeps_order_and_raises_in_the_consumer():
    assert list(sampling.Prefetcher(lambda x: x * x, range(20), depth=3)) == [
        x * x for x in range(20)]

    def fail(x):
        if x == 4:
            raise RuntimeError("bad item 4")
        return x

    got = []
    with pytest.raises(RuntimeError, match="bad item 4"):
        for x in sampling.Prefetcher(fail, range(10)):
            got.append(x)
    assert got == [0, 1, 2, 3]
