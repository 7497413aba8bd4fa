"""Temporal random walks and skip-gram embeddings: validity, sampling law, SBM probe, cache."""
import gzip
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsegnn_jax import walks


def _random_temporal_graph(seed=0, n=30, e=400, t_max=40):
    rng = np.random.default_rng(seed)
    senders = rng.integers(0, n, e)
    receivers = rng.integers(0, n, e)
    times = rng.integers(0, t_max, e)  # few distinct times: many ties on purpose
    return senders, receivers, times, n


def _check_walks(walks_, edges, senders, receivers, times, directed, strict):
    """Every step uses an existing edge out of the current node, later than the previous one;
    a walk only stops when no valid edge remains."""
    walks_, edges = np.asarray(walks_), np.asarray(edges)
    w, length = walks_.shape
    assert edges.shape == (w, length - 1)
    assert np.all(walks_[:, 0] >= 0)
    for row in range(w):
        prev_t = -np.inf
        for i in range(length - 1):
            u, v, e = walks_[row, i], walks_[row, i + 1], edges[row, i]
            if u < 0:
                assert v < 0 and e < 0, "padding must continue to the end"
                continue
            if v < 0:
                assert e < 0
                # Stopped: no edge out of u (either direction if undirected) is valid.
                later = times > prev_t if strict else times >= prev_t
                out = senders == u if directed else (senders == u) | (receivers == u)
                assert not np.any(out & later), f"walk {row} stopped at step {i} with valid edges"
                continue
            forward = senders[e] == u and receivers[e] == v
            backward = senders[e] == v and receivers[e] == u
            assert forward or (not directed and backward), f"walk {row} step {i}: not an edge"
            if i > 0:
                if strict:
                    assert times[e] > prev_t, f"walk {row} step {i} goes back in time"
                else:
                    assert times[e] >= prev_t
            prev_t = times[e]


def _check_pairs_in_edge_set(walks_, senders, receivers, times, directed):
    """Independently of returned edge ids: each consecutive pair has an edge at a time no earlier
    than the earliest time at which the previous pair could have been taken."""
    by_pair = {}
    for s, r, t in zip(senders, receivers, times):
        by_pair.setdefault((s, r), []).append(t)
        if not directed:
            by_pair.setdefault((r, s), []).append(t)
    for row in np.asarray(walks_):
        earliest = -np.inf
        for u, v in zip(row[:-1], row[1:]):
            if v < 0:
                break
            assert (u, v) in by_pair, f"({u}, {v}) is not an edge"
            valid = [t for t in by_pair[(u, v)] if t > earliest]
            assert valid, f"no edge ({u}, {v}) later than {earliest}"
            earliest = min(valid)


@pytest.mark.parametrize("bias", ["uniform", "exponential", "linear"])
@pytest.mark.parametrize("directed", [True, False])
def test_temporal_walks_respect_time_and_edges(bias, directed):
    senders, receivers, times, n = _random_temporal_graph()
    w, e = walks.temporal_walks(
        jax.random.key(0), senders, receivers, times, n, 4, 8, bias=bias, directed=directed,
        return_edges=True,
    )
    assert w.shape == (4 * n, 8) and w.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(w[:n, 0]), np.arange(n))
    _check_walks(w, e, senders, receivers, times, directed, strict=True)
    _check_pairs_in_edge_set(w, senders, receivers, times, directed)
    # The graph is rich enough that walks do get long.
    assert np.mean(np.asarray(w) >= 0) > 0.3


def test_non_strict_walks_may_chain_same_time_events():
    senders, receivers, times, n = _random_temporal_graph(seed=1)
    w, e = walks.temporal_walks(
        jax.random.key(1), senders, receivers, times, n, 4, 8, strict=False, return_edges=True
    )
    _check_walks(w, e, senders, receivers, times, directed=True, strict=False)
    # 0 -> 1 at t=5, then 1 -> 2 at t=5 too: strict stops at 1, non-strict continues.
    s, r, t = np.array([0, 1]), np.array([1, 2]), np.array([5, 5])
    strict_walk = walks.temporal_walks(jax.random.key(0), s, r, t, 3, 1, 3)
    loose_walk = walks.temporal_walks(jax.random.key(0), s, r, t, 3, 1, 3, strict=False)
    np.testing.assert_array_equal(np.asarray(strict_walk[0]), [0, 1, -1])
    np.testing.assert_array_equal(np.asarray(loose_walk[0]), [0, 1, 2])


@pytest.mark.parametrize(
    "bias, weights",
    [
        ("uniform", [1, 1, 1, 1]),
        ("linear", [4, 3, 2, 1]),
        ("exponential", list(np.exp(-np.arange(4.0) / 1.5))),
    ],
)
def test_choice_law_among_valid_edges(bias, weights):
    # 0 -> 1 at t=1; 1 -> 2, 3, 4, 5 at t=2, 3, 4, 5 plus an edge 1 -> 6 at t=0 that is too early.
    s = np.array([0, 1, 1, 1, 1, 1])
    r = np.array([1, 2, 3, 4, 5, 6])
    t = np.array([1, 2, 3, 4, 5, 0])
    n, reps = 7, 6000
    w = np.asarray(
        walks.temporal_walks(jax.random.key(3), s, r, t, n, reps, 3, bias=bias, time_scale=1.5)
    )
    from_zero = w[np.arange(reps) * n]  # rows r * N + 0 start at node 0
    assert np.all(from_zero[:, 1] == 1)
    freq = np.bincount(from_zero[:, 2], minlength=n)[2:6] / reps
    expected = np.asarray(weights) / np.sum(weights)
    np.testing.assert_allclose(freq, expected, atol=0.025)
    assert not np.any(from_zero[:, 2] == 6)


def test_static_walks_follow_edges_and_never_stop():
    rng = np.random.default_rng(4)
    n = 40
    # A ring guarantees every node an out-edge; random chords on top.
    s = np.concatenate([np.arange(n), rng.integers(0, n, 100)])
    r = np.concatenate([(np.arange(n) + 1) % n, rng.integers(0, n, 100)])
    w = np.asarray(walks.temporal_walks(jax.random.key(5), s, r, None, n, 3, 12))
    assert w.shape == (3 * n, 12)
    assert np.all(w >= 0)
    edge_set = set(zip(s.tolist(), r.tolist()))
    for row in w:
        for u, v in zip(row[:-1], row[1:]):
            assert (u, v) in edge_set
    # A sink stops a static walk too.
    w = np.asarray(walks.temporal_walks(jax.random.key(0), [0], [1], None, 2, 1, 4))
    np.testing.assert_array_equal(w, [[0, 1, -1, -1], [1, -1, -1, -1]])


def test_walks_deterministic_per_key():
    senders, receivers, times, n = _random_temporal_graph(seed=2)
    a = walks.temporal_walks(jax.random.key(7), senders, receivers, times, n, 2, 6)
    b = walks.temporal_walks(jax.random.key(7), senders, receivers, times, n, 2, 6)
    c = walks.temporal_walks(jax.random.key(8), senders, receivers, times, n, 2, 6)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_walk_argument_errors():
    with pytest.raises(ValueError, match="bias"):
        walks.temporal_walks(jax.random.key(0), [0], [1], [0], 2, 1, 3, bias="gaussian")
    with pytest.raises(ValueError, match="receivers"):
        walks.temporal_walks(jax.random.key(0), [0], [5], [0], 2, 1, 3)
    with pytest.raises(ValueError, match="times"):
        walks.temporal_walks(jax.random.key(0), [0, 1], [1, 0], [0], 2, 1, 3)


def test_skipgram_pairs_hand():
    pairs = walks.skipgram_pairs(np.array([[0, 1, 2, -1]]), window=1)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    pairs = walks.skipgram_pairs(np.array([[0, 1, 2, -1]]), window=5)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def _sbm(seed=0, block=100, p_in=0.1, p_out=0.005):
    rng = np.random.default_rng(seed)
    n = 2 * block
    labels = np.repeat([0, 1], block)
    prob = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    adj = np.triu(rng.random((n, n)) < prob, 1)
    s, r = np.nonzero(adj)
    return s, r, n, labels


def _linear_probe_accuracy(x, labels, seed=0, steps=300, lr=0.5):
    """Logistic regression by gradient descent on half the nodes, accuracy on the other half."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    train, test = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    x, y = jnp.asarray(x), jnp.asarray(labels, jnp.float32)

    def loss(params):
        logits = x[train] @ params[0] + params[1]
        return jnp.mean(jnp.logaddexp(0.0, logits) - y[train] * logits)

    params = (jnp.zeros(x.shape[1]), jnp.zeros(()))
    grad = jax.jit(jax.grad(loss))
    for _ in range(steps):
        g = grad(params)
        params = (params[0] - lr * g[0], params[1] - lr * g[1])
    pred = (x[test] @ params[0] + params[1]) > 0
    return float(np.mean(np.asarray(pred) == labels[test]))


def test_skipgram_embeddings_separate_sbm_communities():
    s, r, n, labels = _sbm()
    w = walks.temporal_walks(jax.random.key(0), s, r, None, n, 10, 20, directed=False)
    emb = walks.skipgram_embeddings(jax.random.key(1), w, n, 8, window=5, negatives=5, epochs=1)
    assert emb.shape == (n, 8) and emb.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(emb)))
    acc = _linear_probe_accuracy(np.asarray(emb), labels)
    assert acc >= 0.9, f"linear probe accuracy {acc:.3f}"
    # Random initial vectors (no training) must not pass the same probe: the test has teeth.
    untrained = walks.skipgram_embeddings(jax.random.key(1), w[:, :1], n, 8)
    assert _linear_probe_accuracy(np.asarray(untrained), labels) < 0.75


def test_skipgram_deterministic_per_key():
    senders, receivers, times, n = _random_temporal_graph(seed=3)
    w = walks.temporal_walks(jax.random.key(0), senders, receivers, times, n, 2, 6)
    a = walks.skipgram_embeddings(jax.random.key(2), w, n, 4)
    b = walks.skipgram_embeddings(jax.random.key(2), w, n, 4)
    c = walks.skipgram_embeddings(jax.random.key(3), w, n, 4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    # Word2vec's SGD trains too: the vectors move away from their (key-determined) start.
    untrained = np.asarray(walks.skipgram_embeddings(jax.random.key(2), w[:, :1], n, 4))
    sgd = np.asarray(
        walks.skipgram_embeddings(jax.random.key(2), w, n, 4, optimizer="sgd", epochs=30)
    )
    assert np.all(np.isfinite(sgd)) and np.abs(sgd - untrained).max() > 1e-2


def test_node_embeddings_cache(tmp_path, monkeypatch):
    senders, receivers, times, n = _random_temporal_graph(seed=3)
    calls = []
    real_walks = walks.temporal_walks

    def counting_walks(*args, **kwargs):
        calls.append(1)
        return real_walks(*args, **kwargs)

    monkeypatch.setattr(walks, "temporal_walks", counting_walks)
    kw = dict(dim=4, num_walks_per_node=2, walk_length=6, cache_dir=tmp_path)
    first = walks.node_embeddings(0, senders, receivers, n, times, **kw)
    assert len(calls) == 1 and first.shape == (n, 4) and first.dtype == np.float32
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("walk_sgns_") and files[0].endswith(".npy")

    again = walks.node_embeddings(0, senders, receivers, n, times, **kw)
    assert len(calls) == 1, "cache hit must not recompute"
    np.testing.assert_array_equal(again, first)
    # The same seed as a typed key hits the same entry.
    walks.node_embeddings(jax.random.key(0), senders, receivers, n, times, **kw)
    assert len(calls) == 1

    # Any change of configuration, seed or edges misses.
    walks.node_embeddings(0, senders, receivers, n, times, **{**kw, "window": 3})
    assert len(calls) == 2
    walks.node_embeddings(1, senders, receivers, n, times, **kw)
    assert len(calls) == 3
    walks.node_embeddings(0, senders, receivers, n, times + 1, **kw)
    assert len(calls) == 4
    walks.node_embeddings(0, senders, receivers, n, None, **kw)
    assert len(calls) == 5
    assert len(list(tmp_path.glob("walk_sgns_*.npy"))) == 5
    assert not list(tmp_path.glob(".tmp-*")), "temporary files must be renamed or removed"

    # cache=False never touches the folder; a corrupt entry is recomputed and replaced.
    walks.node_embeddings(0, senders, receivers, n, times, **{**kw, "cache": False})
    assert len(calls) == 6
    (tmp_path / files[0]).write_bytes(b"truncated")
    repaired = walks.node_embeddings(0, senders, receivers, n, times, **kw)
    assert len(calls) == 7
    np.testing.assert_array_equal(repaired, first)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGNN_CACHE", str(tmp_path / "env_cache"))
    assert walks.default_cache_dir() == tmp_path / "env_cache"
    senders, receivers, times, n = _random_temporal_graph(seed=3)
    walks.node_embeddings(5, senders, receivers, n, times, dim=4, num_walks_per_node=2,
                          walk_length=6)
    assert len(list((tmp_path / "env_cache").glob("walk_sgns_*.npy"))) == 1


def test_email_eu_temporal_embeddings_fast(data_root):
    path = data_root / "email_eu_core_temporal" / "email-Eu-core-temporal.txt.gz"
    with gzip.open(path) as f:
        edges = np.loadtxt(f, dtype=np.int64)
    s, r, t = edges[:, 0], edges[:, 1], edges[:, 2]
    n = int(max(s.max(), r.max())) + 1
    start = time.perf_counter()
    emb = walks.node_embeddings(0, s, r, n, t, dim=8, num_walks_per_node=10, walk_length=20,
                                cache=False)
    elapsed = time.perf_counter() - start
    assert emb.shape == (n, 8) and np.all(np.isfinite(emb))
    assert elapsed < 60, f"email-eu-temporal embeddings took {elapsed:.1f}s"


def test_segmented_suffix_logsumexp_matches_loop():
    rng = np.random.default_rng(6)
    segment = np.sort(rng.integers(0, 8, 60))
    x = rng.normal(scale=20.0, size=60)
    got = np.asarray(walks._segmented_suffix_logsumexp(jnp.asarray(x, jnp.float32),
                                                       jnp.asarray(segment, jnp.int32)))
    expected = [np.logaddexp.reduce(x[i:][segment[i:] == segment[i]]) for i in range(60)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
