"""Metrics against hand-computed values and NumPy brute-force references; jit against eager."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsegnn_jax import metrics



def _jit(fn, **static):
    return jax.jit(lambda *a: fn(*a, **static))


# ----------------------------------------------------------------------------- references


def _auc_all_pairs(scores, labels):
    """P(positive scores above negative) over every (pos, neg) pair, ties worth one half."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def _ap_sklearn_style(scores, labels):
    """sklearn's average_precision_score: sum_n (R_n - R_{n-1}) P_n over distinct thresholds."""
    thresholds = np.unique(scores)[::-1]
    n_pos = labels.sum()
    ap, prev_recall = 0.0, 0.0
    for t in thresholds:
        selected = scores >= t
        tp = (labels[selected] == 1).sum()
        precision = tp / selected.sum()
        recall = tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


# ----------------------------------------------------------------------------- link metrics


def test_accuracy_at_half_hand():
    fn = _jit(metrics.accuracy_at_half)
    logits = jnp.array([2.0, -1.0, 0.0, 0.5, -3.0])
    labels = jnp.array([1, 0, 1, 0, 1])
    # predictions 1, 0, 0 (sigmoid(0) = 0.5 rounds to 0), 1, 0 -> correct: T, T, F, F, F
    assert float(fn(logits, labels)) == pytest.approx(2 / 5)
    mask = jnp.array([True, True, False, False, True])
    assert float(fn(logits, labels, mask)) == pytest.approx(2 / 3)


def test_roc_auc_hand():
    fn = _jit(metrics.roc_auc)
    # The classic example: 3 of 4 (pos, neg) pairs ordered correctly.
    got = fn(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1]))
    assert float(got) == pytest.approx(0.75)
    # Ties: pos {0.5, 0.9}, neg {0.5, 0.2}: pairs worth 0.5 + 1 + 1 + 1 = 3.5 of 4.
    got = fn(jnp.array([0.5, 0.5, 0.2, 0.9]), jnp.array([1, 0, 0, 1]))
    assert float(got) == pytest.approx(0.875)
    # Perfectly reversed and constant scorers.
    assert float(fn(jnp.array([3.0, 2.0, 1.0]), jnp.array([0, 1, 1]))) == pytest.approx(0.0)
    assert float(fn(jnp.zeros(6), jnp.array([0, 1, 0, 1, 1, 0]))) == pytest.approx(0.5)


def test_roc_auc_one_class_is_nan():
    assert np.isnan(float(metrics.roc_auc(jnp.array([0.1, 0.2]), jnp.array([1, 1]))))


def test_roc_auc_matches_all_pairs_reference():
    fn = _jit(metrics.roc_auc)
    rng = np.random.default_rng(0)
    for trial in range(4):
        n = 200  # one shape: one compilation
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        # Coarse rounding creates many ties on purpose.
        scores = np.round(rng.normal(labels * 0.7, 1.0), 1 if trial % 2 else 3).astype(np.float32)
        expected = _auc_all_pairs(scores, labels)
        assert float(fn(scores, labels)) == pytest.approx(expected, abs=1e-5)


def test_average_precision_hand():
    fn = _jit(metrics.average_precision)
    # Descending: 0.8 (+) P=1, 0.4 (-), 0.35 (+) P=2/3 -> (1 + 2/3) / 2.
    got = fn(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1]))
    assert float(got) == pytest.approx(5 / 6)
    # One tied threshold holding both positives and a negative: P = 2/3 at recall 1.
    got = fn(jnp.array([0.5, 0.5, 0.5, 0.1]), jnp.array([1, 0, 1, 0]))
    assert float(got) == pytest.approx(2 / 3)
    # 0.9 (+): R=0.5, P=1; tied 0.5 {+, -}: R=1, P=2/3 -> 0.5 * 1 + 0.5 * 2/3.
    got = fn(jnp.array([0.9, 0.5, 0.5]), jnp.array([1, 1, 0]))
    assert float(got) == pytest.approx(0.5 + 1 / 3)
    # No positives: sklearn's value is 0.
    assert float(fn(jnp.array([0.3, 0.1]), jnp.array([0, 0]))) == 0.0


def test_average_precision_matches_reference():
    rng = np.random.default_rng(1)
    fn = jax.jit(metrics.average_precision)
    for trial in range(4):
        n = 120
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        scores = np.round(rng.normal(labels * 0.5, 1.0), 1 if trial % 2 else 4).astype(np.float32)
        expected = _ap_sklearn_style(scores, labels)
        assert float(fn(scores, labels)) == pytest.approx(expected, abs=1e-5)


def test_mrr_hits_hand_ties_count_against_positive():
    pos = jnp.array([3.0, 1.0, 2.0])
    neg = jnp.array([[1.0, 2.0], [1.0, 0.0], [5.0, 2.0]])
    # ranks: 1; 2 (the tie 1.0 counts against); 3 (5.0 above, 2.0 tied)
    mrr, hits1 = _jit(metrics.mrr_hits, k=1)(pos, neg)
    assert float(mrr) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert float(hits1) == pytest.approx(1 / 3)
    _, hits2 = _jit(metrics.mrr_hits, k=2)(pos, neg)
    assert float(hits2) == pytest.approx(2 / 3)
    # A constant scorer is ranked last, not first.
    mrr, hits = metrics.mrr_hits(jnp.zeros(4), jnp.zeros((4, 9)), k=3)
    assert float(mrr) == pytest.approx(1 / 10) and float(hits) == 0.0


def test_mrr_hits_matches_loop_reference():
    rng = np.random.default_rng(2)
    pos = rng.integers(0, 5, 50).astype(np.float32)
    neg = rng.integers(0, 5, (50, 7)).astype(np.float32)
    ranks = [1 + sum(n >= p for n in row) for p, row in zip(pos, neg)]
    mrr, hits = metrics.mrr_hits(pos, neg, k=3)
    assert float(mrr) == pytest.approx(np.mean([1 / r for r in ranks]), rel=1e-6)
    assert float(hits) == pytest.approx(np.mean([r <= 3 for r in ranks]))


def test_link_metric_shape_errors():
    with pytest.raises(ValueError, match="neg_scores"):
        metrics.mrr_hits(jnp.zeros(3), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="roc_auc"):
        metrics.roc_auc(jnp.zeros(3), jnp.zeros(4))


# ----------------------------------------------------------------------------- node metrics


def test_accuracy_logits_preds_and_mask():
    fn = _jit(metrics.accuracy)
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 1, 2])
    # argmax: 0, 2, 1, 0 -> correct T, F, T, F
    assert float(fn(logits, labels)) == pytest.approx(0.5)
    assert float(fn(jnp.array([0, 2, 1, 0]), labels)) == pytest.approx(0.5)
    assert float(fn(logits, labels, jnp.array([True, False, True, False]))) == pytest.approx(1.0)


def test_macro_f1_hand():
    fn = _jit(metrics.macro_f1, num_classes=4)
    preds = jnp.array([0, 0, 1, 2])
    labels = jnp.array([0, 1, 1, 1])
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp1 fp0 fn2 -> 1/2; class 2: tp0 fp1 -> 0;
    # class 3 never seen -> excluded. Mean over 3 classes.
    assert float(fn(preds, labels)) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # Same predictions given as logits.
    logits = jax.nn.one_hot(preds, 4) * 3.0
    assert float(fn(logits, labels)) == pytest.approx((2 / 3 + 1 / 2) / 3)
    # Masking out the last two nodes: class 0 tp1 fp1 -> 2/3, class 1 tp0 fn1 -> 0.
    mask = jnp.array([True, True, False, False])
    assert float(metrics.macro_f1(preds, labels, 4, mask)) == pytest.approx((2 / 3) / 2)


def test_macro_f1_matches_loop_reference():
    rng = np.random.default_rng(3)
    c = 6
    preds = rng.integers(0, c - 1, 80)  # class 5 never predicted ...
    labels = rng.integers(0, c - 2, 80)  # ... nor true (4 is predicted only)
    present = sorted(set(preds) | set(labels))
    f1s = []
    for k in present:
        tp = np.sum((preds == k) & (labels == k))
        fp = np.sum((preds == k) & (labels != k))
        fn = np.sum((preds != k) & (labels == k))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert 5 not in present and 4 in present
    got = metrics.macro_f1(preds, labels, num_classes=c)
    assert float(got) == pytest.approx(np.mean(f1s), rel=1e-6)


def test_perfect_predictions():
    labels = jnp.array([0, 1, 2, 2, 1])
    assert float(metrics.macro_f1(labels, labels, 3)) == pytest.approx(1.0)
    assert float(metrics.accuracy(labels, labels)) == pytest.approx(1.0)
    scores = jnp.array([0.1, 0.2, 0.8, 0.9])
    y = jnp.array([0, 0, 1, 1])
    assert float(metrics.roc_auc(scores, y)) == 1.0
    assert float(metrics.average_precision(scores, y)) == pytest.approx(1.0)


def test_accuracy_shape_error():
    with pytest.raises(ValueError, match="accuracy"):
        metrics.accuracy(jnp.zeros((3, 2, 2, 2)), jnp.zeros(3, jnp.int32))


def test_all_pairs_reference_itself():
    # Guard the reference: brute force over explicit pairs equals the vectorised form.
    scores = np.array([0.3, 0.3, 0.9, 0.1, 0.5])
    labels = np.array([1, 0, 1, 0, 0])
    pairs = list(itertools.product(np.where(labels == 1)[0], np.where(labels == 0)[0]))
    by_loop = np.mean([1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
                       for i, j in pairs])
    assert _auc_all_pairs(scores, labels) == pytest.approx(by_loop)


def test_jit_matches_eager():
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=64), 1).astype(np.float32)
    labels = rng.integers(0, 2, 64)
    neg = np.round(rng.normal(size=(64, 5)), 1).astype(np.float32)
    logits = rng.normal(size=(64, 4)).astype(np.float32)
    classes = rng.integers(0, 4, 64)
    mask = rng.random(64) < 0.5
    cases = [
        (metrics.accuracy_at_half, (scores, labels, mask), {}),
        (metrics.roc_auc, (scores, labels), {}),
        (metrics.average_precision, (scores, labels), {}),
        (metrics.mrr_hits, (scores, neg), {"k": 3}),
        (metrics.accuracy, (logits, classes, mask), {}),
        (metrics.macro_f1, (logits, classes), {"num_classes": 4, "mask": mask}),
    ]
    for fn, args, kwargs in cases:
        eager = fn(*args, **kwargs)
        jitted = jax.jit(lambda *a, fn=fn, kwargs=kwargs: fn(*a, **kwargs))(*args)
        np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6)
