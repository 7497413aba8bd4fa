"""Non-learned link scores: hand-computed values, simple-graph reading, metrics, scale."""
import math

import numpy as np
import pytest

from sparsegnn_jax import baselines, metrics

# The history graph (6 nodes):
#
#     0 ------ 1
#     | \      |
#     |   \    |
#     |     \  |
#     3 ------ 2 ------ 4        5 (isolated)
#
# Edges 0-1, 0-2, 0-3, 1-2, 2-3, 2-4.
# N(0) = {1, 2, 3}     deg 3
# N(1) = {0, 2}        deg 2
# N(2) = {0, 1, 3, 4}  deg 4
# N(3) = {0, 2}        deg 2
# N(4) = {2}           deg 1
# N(5) = {}            deg 0
EDGES = [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3), (2, 4)]
# The same graph as given to the scores: a reversed duplicate (1, 0), a repeat of (0, 1) and the
# self-loops (2, 2) and (5, 5), none of which may change a degree or a neighbourhood.
NOISY = EDGES + [(1, 0), (0, 1), (2, 2), (5, 5)]
SENDERS = np.array([s for s, _ in NOISY])
RECEIVERS = np.array([r for _, r in NOISY])
N = 6

PAIRS = np.array([(1, 3), (0, 2), (0, 4), (4, 5), (5, 5), (1, 4), (2, 2)])
L2, L3, L4 = math.log(2), math.log(3), math.log(4)
EXPECTED = {
    # deg u * deg v
    "preferential_attachment": [2 * 2, 3 * 4, 3 * 1, 1 * 0, 0 * 0, 2 * 1, 4 * 4],
    # deg u + deg v
    "degree_sum": [2 + 2, 3 + 4, 3 + 1, 1 + 0, 0 + 0, 2 + 1, 4 + 4],
    # (1,3): {0,2}; (0,2): {1,3}; (0,4): {2}; (4,5): {}; (5,5): {}; (1,4): {2};
    # (2,2): N(2) = {0,1,3,4}
    "common_neighbours": [2, 2, 1, 0, 0, 1, 4],
    # 1/log(deg w) over the common neighbours; node 4 (deg 1) in (2,2) weighs 0, not 1/log 1.
    "adamic_adar": [1 / L3 + 1 / L4, 1 / L2 + 1 / L2, 1 / L4, 0, 0, 1 / L4,
                    1 / L3 + 1 / L2 + 1 / L2 + 0],
    # unions: (1,3): {0,2}; (0,2): {0,1,2,3,4}; (0,4): {1,2,3}; (4,5): {2}; (5,5): {} -> 0;
    # (1,4): {0,2}; (2,2): {0,1,3,4}
    "jaccard": [2 / 2, 2 / 5, 1 / 3, 0 / 1, 0, 1 / 2, 4 / 4],
    # (0,2) is an edge; (5,5) and (2,2) occurred as self-loops; the rest never occurred.
    "edgebank": [0, 1, 0, 0, 1, 0, 1],
}


def _all_pairs(n):
    return np.array([(u, v) for u in range(n) for v in range(n)])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_score_matches_hand_computed_values(name):
    got = baselines.BASELINES[name](SENDERS, RECEIVERS, N, PAIRS)
    assert got.shape == (len(PAIRS),) and got.dtype == np.float64
    np.testing.assert_allclose(got, EXPECTED[name], rtol=1e-12, atol=0)


def test_registry_names_the_six_scores():
    assert set(baselines.BASELINES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_duplicates_and_self_loops_do_not_count(name):
    clean_s, clean_r = np.array(EDGES).T
    # 300 copies of one edge: a count kept in a small integer type would wrap around.
    many_s = np.concatenate([SENDERS, np.full(300, 3)])
    many_r = np.concatenate([RECEIVERS, np.full(300, 0)])
    # Pairs that are not self-loops, so that edgebank too must ignore the extra edges.
    pairs = np.array([(u, v) for u in range(N) for v in range(N) if u != v])
    score = baselines.BASELINES[name]
    reference = score(clean_s, clean_r, N, pairs)
    np.testing.assert_array_equal(score(SENDERS, RECEIVERS, N, pairs), reference)
    np.testing.assert_array_equal(score(many_s, many_r, N, pairs), reference)


def test_adjacency_is_the_simple_undirected_graph():
    adj = baselines.adjacency(SENDERS, RECEIVERS, N).toarray()
    expected = np.zeros((N, N), bool)
    for u, v in EDGES:
        expected[u, v] = expected[v, u] = True
    np.testing.assert_array_equal(adj, expected)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scores_are_symmetric_in_u_and_v(name):
    pairs = _all_pairs(N)
    score = baselines.BASELINES[name]
    np.testing.assert_array_equal(score(SENDERS, RECEIVERS, N, pairs),
                                  score(SENDERS, RECEIVERS, N, pairs[:, ::-1]))


def test_edgebank_matches_either_direction():
    # History holds (2, 4) and (2, 3) only in that direction, (0, 1) in both.
    pairs = np.array([(2, 4), (4, 2), (2, 3), (3, 2), (0, 1), (1, 0), (1, 3), (3, 1)])
    got = baselines.edgebank(SENDERS, RECEIVERS, N, pairs)
    np.testing.assert_array_equal(got, [1, 1, 1, 1, 1, 1, 0, 0])


def test_edgebank_of_an_empty_history_is_zero():
    got = baselines.edgebank(np.zeros(0, int), np.zeros(0, int), 3, [(0, 1), (2, 2)])
    np.testing.assert_array_equal(got, [0, 0])


def test_evaluate_hand_computed_auc_and_ap():
    pos = [(0, 2), (2, 4)]
    neg = [(1, 3), (4, 5)]
    got = baselines.evaluate(SENDERS, RECEIVERS, N, pos, neg)
    # Scores (pos | neg), AUC over the 4 (pos, neg) pairs with ties = 1/2, AP by thresholds:
    expected = {
        # (1, 1 | 0, 0): perfect.
        "edgebank": (1, 1),
        # (7, 5 | 4, 1): perfect.
        "degree_sum": (1, 1),
        # (12, 4 | 4, 0): 12>4, 12>0, 4=4, 4>0 -> 3.5/4. AP: at 12 P=1 R=1/2; at 4 P=2/3 R=1.
        "preferential_attachment": (7 / 8, 1 / 2 * 1 + 1 / 2 * 2 / 3),
        # (2, 0 | 2, 0): 1/2 + 1 + 0 + 1/2 -> 2/4. AP: at 2 P=1/2 R=1/2; at 0 P=2/4 R=1.
        "common_neighbours": (1 / 2, 1 / 2 * 1 / 2 + 1 / 2 * 1 / 2),
        # (2/log2, 0 | 1/log3 + 1/log4, 0): 1 + 1 + 0 + 1/2 -> 2.5/4. AP: 1/2 * 1 + 1/2 * 2/4.
        "adamic_adar": (5 / 8, 1 / 2 * 1 + 1 / 2 * 1 / 2),
        # (2/5, 0 | 1, 0): 0 + 1 + 0 + 1/2 -> 1.5/4. AP: at 2/5 P=1/2; at 0 P=2/4.
        "jaccard": (3 / 8, 1 / 2 * 1 / 2 + 1 / 2 * 1 / 2),
    }
    assert set(got) == set(expected)
    for name, (auc, ap) in expected.items():
        assert got[name]["roc_auc"] == pytest.approx(auc, rel=1e-6), name
        assert got[name]["ap"] == pytest.approx(ap, rel=1e-6), name


def test_constant_score_has_auc_one_half():
    # degree_sum is 4 for both pairs: one tie, counted 1/2.
    got = baselines.evaluate(SENDERS, RECEIVERS, N, [(1, 3)], [(0, 4)])
    assert got["degree_sum"] == {"roc_auc": 0.5, "ap": 0.5}
    assert baselines.auc_ap(np.full(6, 3.0), [1, 0, 1, 0, 0, 1]) == {"roc_auc": 0.5, "ap": 0.5}


def test_perfect_score_has_auc_one():
    assert baselines.auc_ap([0.1, 5.0, 0.0, 7.0], [0, 1, 0, 1]) == {"roc_auc": 1.0, "ap": 1.0}


def test_float64_scores_that_float32_would_tie_stay_ordered():
    # Nodes 0 and 1 have 4097 leaves each, node 2 has 4096 and node 3 has 4098:
    # PA(0, 1) = 4097**2 = 16785409 > PA(2, 3) = 4096 * 4098 = 16785408, equal in float32.
    assert np.float32(4097 ** 2) == np.float32(4096 * 4098)
    senders, receivers, next_leaf = [], [], 4
    for hub, leaves in [(0, 4097), (1, 4097), (2, 4096), (3, 4098)]:
        senders += [hub] * leaves
        receivers += range(next_leaf, next_leaf + leaves)
        next_leaf += leaves
    got = baselines.evaluate(np.array(senders), np.array(receivers), next_leaf, [(0, 1)], [(2, 3)])
    assert got["preferential_attachment"] == {"roc_auc": 1.0, "ap": 1.0}


def test_evaluate_uses_the_given_metrics_fn():
    def count_positives(scores, labels):
        return {"n": len(scores), "pos": int(np.sum(labels)), "top": float(np.max(scores))}

    got = baselines.evaluate(SENDERS, RECEIVERS, N, [(0, 2)], [(1, 3), (4, 5)],
                             metrics_fn=count_positives)
    assert got["common_neighbours"] == {"n": 3, "pos": 1, "top": 2.0}
    assert got["preferential_attachment"] == {"n": 3, "pos": 1, "top": 12.0}


def test_ranking_hand_computed_mrr_and_hits():
    pos = [(0, 2), (1, 4)]
    neg = [[(1, 3), (0, 4), (4, 5)], [(4, 5), (5, 5), (1, 3)]]
    got = baselines.ranking(SENDERS, RECEIVERS, N, pos, neg, k=1)
    # rank = 1 + #{negatives scoring >= the positive}, per positive (first, second):
    expected_ranks = {
        "preferential_attachment": (1, 2),  # 12 vs 4, 3, 0;  2 vs 0, 0, 4
        "common_neighbours": (2, 2),  # 2 vs 2, 1, 0;  1 vs 0, 0, 2
        "adamic_adar": (1, 2),  # 2/log2 vs 1/log3 + 1/log4, 1/log4, 0;  1/log4 vs 0, 0, 1.63
        "jaccard": (2, 2),  # 2/5 vs 1, 1/3, 0;  1/2 vs 0, 0, 1
        "degree_sum": (1, 2),  # 7 vs 4, 4, 1;  3 vs 1, 0, 4
        "edgebank": (1, 4),  # 1 vs 0, 0, 0;  0 vs 0, 1 (self-loop (5, 5)), 0
    }
    assert set(got) == set(expected_ranks)
    for name, (r1, r2) in expected_ranks.items():
        assert got[name]["mrr"] == pytest.approx((1 / r1 + 1 / r2) / 2, rel=1e-6), name
        assert got[name]["hits@1"] == ((r1 == 1) + (r2 == 1)) / 2, name


def _set_reference(senders, receivers, n, pairs):
    """CN, AA and Jaccard from Python sets, for comparison."""
    nbrs = [set() for _ in range(n)]
    for s, r in zip(senders, receivers):
        if s != r:
            nbrs[s].add(r)
            nbrs[r].add(s)
    cn, aa, jac = [], [], []
    for u, v in pairs:
        common, union = nbrs[u] & nbrs[v], nbrs[u] | nbrs[v]
        cn.append(len(common))
        aa.append(sum(1 / math.log(len(nbrs[w])) for w in common if len(nbrs[w]) > 1))
        jac.append(len(common) / len(union) if union else 0.0)
    return {"common_neighbours": cn, "adamic_adar": aa, "jaccard": jac}


@pytest.mark.parametrize("name", ["common_neighbours", "adamic_adar", "jaccard"])
def test_chunking_does_not_change_the_result(name):
    rng = np.random.default_rng(0)
    n = 60
    senders, receivers = rng.integers(0, n, 400), rng.integers(0, n, 400)
    pairs = rng.integers(0, n, (300, 2))
    score = baselines.BASELINES[name]
    one_chunk = score(senders, receivers, n, pairs, max_entries=10**9)
    for max_entries in (1, 7, 100):
        np.testing.assert_array_equal(score(senders, receivers, n, pairs, max_entries=max_entries),
                                      one_chunk)
    reference = _set_reference(senders, receivers, n, pairs)[name]
    np.testing.assert_allclose(one_chunk, reference, rtol=1e-12)


def test_large_sparse_graph_runs_without_a_dense_matrix():
    # A dense 200k x 200k matrix would need 40 GB even as bool; the scores must stay sparse.
    rng = np.random.default_rng(1)
    n, e, p = 200_000, 400_000, 10_000
    senders, receivers = rng.integers(0, n, e), rng.integers(0, n, e)
    pairs = np.concatenate([np.stack([senders[:p], receivers[:p]], axis=1),
                            rng.integers(0, n, (p, 2))])
    for name, score in baselines.BASELINES.items():
        assert score(senders, receivers, n, pairs).shape == (2 * p,), name


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="pairs must lie in"):
        baselines.common_neighbours(SENDERS, RECEIVERS, N, [(0, 6)])
    with pytest.raises(ValueError, match=r"pairs must have shape \[P, 2\]"):
        baselines.jaccard(SENDERS, RECEIVERS, N, [0, 1])
    with pytest.raises(ValueError, match="senders must lie in"):
        baselines.adjacency([7], [0], N)
    with pytest.raises(ValueError, match="same length"):
        baselines.degree_sum([0, 1], [1], N, [(0, 1)])
    with pytest.raises(ValueError, match="max_entries"):
        baselines.adamic_adar(SENDERS, RECEIVERS, N, PAIRS, max_entries=0)
    with pytest.raises(ValueError, match=r"\[P, K, 2\]"):
        baselines.ranking(SENDERS, RECEIVERS, N, [(0, 1)], [(1, 2)])


@pytest.mark.parametrize("seed", [0, 1])
def test_host_auc_ap_equals_the_jax_metrics(seed):
    # Few distinct values, so ties are everywhere; both classes present.
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 7, 300).astype(np.float64)
    labels = rng.integers(0, 2, 300)
    got = baselines.auc_ap(scores, labels)
    assert got["roc_auc"] == pytest.approx(float(metrics.roc_auc(scores, labels)), abs=1e-6)
    assert got["ap"] == pytest.approx(float(metrics.average_precision(scores, labels)), abs=1e-6)
    assert np.isnan(baselines.auc_ap(scores, np.ones(300))["roc_auc"])
    assert baselines.auc_ap(scores, np.zeros(300))["ap"] == 0.0
