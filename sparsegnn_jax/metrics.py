"""Evaluation metrics for link prediction and node classification.

All functions take JAX or NumPy arrays, return JAX scalars and are jit-compatible (no data-dependent
shapes): ``jax.jit(roc_auc)(scores, labels)`` works. Binary labels may be bool, int or float; a
label counts as positive when it is > 0.5.

Link prediction: ``accuracy_at_half`` (the paper's metric), ``roc_auc``, ``average_precision``,
``mrr_hits`` (ranking of each positive against its own negatives).
Node classification: ``accuracy``, ``macro_f1``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "accuracy_at_half",
    "roc_auc",
    "average_precision",
    "mrr_hits",
    "mrr_hits_of_ranks",
    "ranks",
    "accuracy",
    "macro_f1",
]


def _as_binary(labels):
    return jnp.asarray(labels) > 0.5


def _flat_scores(scores, labels, name):
    scores = jnp.asarray(scores, jnp.float32)
    labels = jnp.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(
            f"{name}: scores and labels must be 1-D arrays of the same shape, "
            f"got scores {scores.shape} and labels {labels.shape}"
        )
    return scores, _as_binary(labels)


def _weights(mask, shape, name):
    """A float weight per example from an optional bool mask (None: every example counts)."""
    if mask is None:
        return jnp.ones(shape, jnp.float32)
    mask = jnp.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name}: mask must have shape {shape}, got {mask.shape}")
    return mask.astype(bool).astype(jnp.float32)


def accuracy_at_half(logits, labels, mask=None):
    """Binary accuracy of ``round(sigmoid(logits))`` against 0/1 labels (the paper's link metric).

    ``sigmoid(0) = 0.5`` rounds to 0 (round half to even, as ``torch.round`` and ``jnp.round``
    do), so a prediction is positive iff ``logit > 0``.

    Args:
      logits: [P] float logits (pre-sigmoid).
      labels: [P] 0/1 labels.
      mask: optional [P] bool; only True entries count.

    Returns:
      Scalar float32 in [0, 1] (NaN when the mask selects nothing).
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(
            f"accuracy_at_half: logits {logits.shape} and labels {labels.shape} differ in shape"
        )
    w = _weights(mask, logits.shape, "accuracy_at_half")
    correct = ((logits > 0) == _as_binary(labels)).astype(jnp.float32)
    return jnp.sum(correct * w) / jnp.sum(w)


def _average_ranks(scores):
    """1-based ranks of ``scores`` in ascending order, tied values sharing their average rank."""
    ordered = jnp.sort(scores)
    first = jnp.searchsorted(ordered, scores, side="left")
    last = jnp.searchsorted(ordered, scores, side="right")
    # Tied block occupies 1-based ranks first+1 .. last; its mean is (first + 1 + last) / 2.
    return (first + 1 + last).astype(jnp.float32) / 2.0


def roc_auc(scores, labels):
    """Area under the ROC curve via the Mann-Whitney U statistic.

    Equals the probability that a random positive scores above a random negative, ties counting
    one half (average ranks for tied scores), i.e. the same value as
    ``sklearn.metrics.roc_auc_score``.

    Args:
      scores: [P] float scores (logits or probabilities; only their order matters).
      labels: [P] 0/1 labels.

    Returns:
      Scalar float32; NaN when all labels belong to one class (AUC is undefined there).
    """
    scores, positive = _flat_scores(scores, labels, "roc_auc")
    ranks = _average_ranks(scores)
    n_pos = jnp.sum(positive).astype(jnp.float32)
    n_neg = positive.shape[0] - n_pos
    rank_sum = jnp.sum(jnp.where(positive, ranks, 0.0))
    u = rank_sum - n_pos * (n_pos + 1.0) / 2.0
    return jnp.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), jnp.nan)


def average_precision(scores, labels):
    """Average precision as defined by ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order,
    where ``P_n``/``R_n`` are precision/recall when predicting positive every score ``>=`` the
    n-th threshold. A block of tied scores is one threshold: all its positives enter at once,
    at the precision of the whole block (no interpolation), exactly as sklearn does.

    Args:
      scores: [P] float scores.
      labels: [P] 0/1 labels.

    Returns:
      Scalar float32 in [0, 1]; 0.0 when there are no positives (sklearn's value: recall is
      defined as 1 at every threshold, so no recall increment).
    """
    scores, positive = _flat_scores(scores, labels, "average_precision")
    n = scores.shape[0]
    order = jnp.argsort(scores)
    ordered = scores[order]
    pos_sorted = positive[order].astype(jnp.float32)
    # positives strictly below index i in ascending order, for every i (length n + 1).
    pos_below = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(pos_sorted)])
    n_pos = pos_below[-1]
    # Threshold at score s selects every example with score >= s.
    first = jnp.searchsorted(ordered, scores, side="left")
    selected = (n - first).astype(jnp.float32)
    true_pos = n_pos - pos_below[first]
    precision_at_own_threshold = true_pos / selected
    # Each positive raises recall by 1/n_pos at its own threshold (ties: same threshold).
    ap = jnp.sum(jnp.where(positive, precision_at_own_threshold, 0.0)) / jnp.maximum(n_pos, 1.0)
    return jnp.where(n_pos > 0, ap, 0.0)


def ranks(pos_scores, neg_scores) -> jax.Array:
    """[P] int32 rank of each positive among its own negatives (ties count against it).

    The rank of positive i is ``1 + #{j : neg_scores[i, j] >= pos_scores[i]}``: the
    pessimistic convention, so a constant scorer gets the worst rank ``K + 1``.

    Args:
      pos_scores: [P] score of each positive pair.
      neg_scores: [P, K] scores of the K negatives paired with each positive.
    """
    pos_scores = jnp.asarray(pos_scores, jnp.float32)
    neg_scores = jnp.asarray(neg_scores, jnp.float32)
    if pos_scores.ndim != 1 or neg_scores.ndim != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(
            "mrr_hits: expected pos_scores [P] and neg_scores [P, K], "
            f"got {pos_scores.shape} and {neg_scores.shape}"
        )
    return 1 + jnp.sum(neg_scores >= pos_scores[:, None], axis=1, dtype=jnp.int32)


def mrr_hits_of_ranks(rank, k=10):
    """``(mrr, hits@k)`` of [P] ranks (see :func:`ranks`): two float32 scalars."""
    rank = jnp.asarray(rank)
    return jnp.mean(1.0 / rank.astype(jnp.float32)), jnp.mean((rank <= k).astype(jnp.float32))


def mrr_hits(pos_scores, neg_scores, k=10):
    """Mean reciprocal rank and Hits@k of each positive among its own negatives.

    The rank of positive i is ``1 + #{j : neg_scores[i, j] >= pos_scores[i]}``: ties count
    against the positive (the pessimistic convention), so a constant scorer gets the worst rank
    ``K + 1`` rather than a flattering one.

    Args:
      pos_scores: [P] score of each positive pair.
      neg_scores: [P, K] scores of the K negatives paired with each positive.
      k: Hits@k cut-off (a positive hits when its rank <= k).

    Returns:
      ``(mrr, hits)``: two float32 scalars in (0, 1] and [0, 1].
    """
    return mrr_hits_of_ranks(ranks(pos_scores, neg_scores), k)


def _predictions(logits_or_preds, labels, name):
    """Class predictions: argmax over the last axis for logits, as-is for integer predictions."""
    x = jnp.asarray(logits_or_preds)
    labels = jnp.asarray(labels)
    if x.ndim == labels.ndim + 1:
        return jnp.argmax(x, axis=-1), labels
    if x.shape == labels.shape:
        return x.astype(jnp.int32), labels
    raise ValueError(
        f"{name}: expected logits [N, C] or predictions [N] for labels {labels.shape}, "
        f"got {x.shape}"
    )


def accuracy(logits, labels, mask=None):
    """Node classification accuracy.

    Args:
      logits: [N, C] logits (argmax is the prediction) or [N] integer predictions.
      labels: [N] integer class labels.
      mask: optional [N] bool (e.g. the test nodes); only True entries count.

    Returns:
      Scalar float32 in [0, 1] (NaN when the mask selects nothing).
    """
    preds, labels = _predictions(logits, labels, "accuracy")
    w = _weights(mask, labels.shape, "accuracy")
    correct = (preds == labels).astype(jnp.float32)
    return jnp.sum(correct * w) / jnp.sum(w)


def macro_f1(logits_or_preds, labels, num_classes, mask=None):
    """Macro-averaged F1 over the classes present in the labels or the predictions.

    Per class ``F1 = 2 TP / (2 TP + FP + FN)``; the macro average is the unweighted mean over the
    classes that occur in the (masked) labels or predictions. Classes absent from both are left
    out, which is what ``sklearn.metrics.f1_score(average="macro")`` does with its default
    ``labels`` (the union of classes seen in ``y_true`` and ``y_pred``). A class that is predicted
    but never true (or true but never predicted) counts with F1 = 0.

    Args:
      logits_or_preds: [N, C] logits or [N] integer predictions.
      labels: [N] integer labels in [0, num_classes).
      num_classes: number of classes C (static).
      mask: optional [N] bool; only True entries count.

    Returns:
      Scalar float32 in [0, 1]; 0.0 when the mask selects nothing.
    """
    preds, labels = _predictions(logits_or_preds, labels, "macro_f1")
    w = _weights(mask, labels.shape, "macro_f1")
    pred_onehot = jax.nn.one_hot(preds, num_classes) * w[:, None]
    true_onehot = jax.nn.one_hot(labels, num_classes) * w[:, None]
    tp = jnp.sum(pred_onehot * true_onehot, axis=0)
    fp = jnp.sum(pred_onehot, axis=0) - tp
    fn = jnp.sum(true_onehot, axis=0) - tp
    denom = 2.0 * tp + fp + fn
    present = denom > 0
    f1 = jnp.where(present, 2.0 * tp / jnp.maximum(denom, 1.0), 0.0)
    n_present = jnp.sum(present)
    return jnp.where(n_present > 0, jnp.sum(f1) / jnp.maximum(n_present, 1), 0.0)


def pair_metrics(pos_scores, neg_scores) -> dict:
    """ROC-AUC, AP and accuracy at 0.5 of positive against negative pair logits.

    Args:
      pos_scores: [P] logits of true pairs.
      neg_scores: [Q] logits of non-pairs.

    Returns:
      ``{"roc_auc", "ap", "accuracy", "pairs"}`` as Python numbers; the three metrics are None
      when either side is empty (undefined), ``pairs`` is ``P + Q``.
    """
    pos = np.asarray(pos_scores, np.float32).reshape(-1)
    neg = np.asarray(neg_scores, np.float32).reshape(-1)
    out = {"roc_auc": None, "ap": None, "accuracy": None, "pairs": int(pos.size + neg.size)}
    if pos.size == 0 or neg.size == 0:
        return out
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size, np.float32), np.zeros(neg.size, np.float32)])
    out.update(roc_auc=float(roc_auc(scores, labels)), ap=float(average_precision(scores, labels)),
               accuracy=float(accuracy_at_half(scores, labels)))
    return out
