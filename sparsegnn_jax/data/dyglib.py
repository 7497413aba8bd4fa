"""DyGLib's link-prediction evaluation protocol, reproduced exactly on the host (NumPy).

DyGLib (Yu et al., NeurIPS 2023, github yule-BUAA/DyGLib) is the protocol of the published
temporal-graph tables (JODIE ... DyGFormer, EdgeBank). Every rule here cites the DyGLib file and
function it follows:

- split (utils/DataLoader.py get_link_prediction_data): cut times ``np.quantile(ts, [0.70,
  0.85])``; 10% of all nodes, drawn with ``random.seed(2020)`` from the nodes of events after
  ``val_time``, are "new test nodes": every event touching one is dropped from training; the
  inductive parts are the val / test events touching a node without a training event.
- negatives (utils/utils.py NegativeEdgeSampler): strategies random / historical / inductive,
  one sampler per part with seeds val 0, new-node val 1, test 2, new-node test 3
  (train_link_prediction.py, evaluate_link_prediction.py), reset before each evaluation
  (evaluate_models_utils.py evaluate_model_link_prediction), advanced batch by batch; not
  filtered against true edges.
- EdgeBank (models/EdgeBank.py, evaluate_models_utils.py evaluate_edge_bank_link_prediction):
  memory of the events known before the batch, unlimited or a time window; AP and ROC-AUC per
  batch of 200 averaged over batches (utils/metrics.py get_link_prediction_metrics).

Node ids: DyGLib's processed files number nodes from 1 (preprocess_data.py ``reindex``), ours
from 0, so DyGLib id = our id + ``id_offset`` (1). The offset matters: the new-node draw and the
historical / inductive negatives depend on CPython's set iteration order, i.e. on the ids' hash
values, so those sets are built here with DyGLib's ids, with the same operations, in the same
order as DyGLib builds them (Python ints hash like its ``np.int64`` ids).
"""
from __future__ import annotations

import dataclasses
import random
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["DyGLibSplit", "StreamBatch", "dyglib_split", "evaluation_batches",
           "edgebank_scores", "mean_batch_metrics", "NEGATIVE_STRATEGIES"]

NEGATIVE_STRATEGIES = ("random", "historical", "inductive")
# Seed of each evaluation sampler (train_link_prediction.py / evaluate_link_prediction.py).
_SEEDS = {("val", "transductive"): 0, ("val", "inductive"): 1,
          ("test", "transductive"): 2, ("test", "inductive"): 3}


@dataclasses.dataclass(frozen=True, eq=False)
class DyGLibSplit:
    """DyGLib's chronological split of an event stream (DataLoader.get_link_prediction_data).

    Attributes:
      num_nodes: N (our ids 0..N-1).
      src, dst: [E] int64 event endpoints in stream (file = time) order, our ids.
      times: [E] float64 event times (DyGLib reads ``ts`` as float64).
      val_time, test_time: ``np.quantile(times, [0.70, 0.85])``.
      train: int64 stream indices of the training events: ``times <= val_time`` and touching no
        new test node.
      val, test: every event of ``(val_time, test_time]`` / ``> test_time`` (transductive).
      new_node_val, new_node_test: the val / test events touching a node of ``new_nodes``
        (inductive).
      new_test_nodes: sorted int64 ids of the nodes drawn as new test nodes.
      new_nodes: sorted int64 ids of the stream's nodes without a training event.
      id_offset: DyGLib id = our id + id_offset.
    """

    num_nodes: int
    src: np.ndarray
    dst: np.ndarray
    times: np.ndarray
    val_time: float
    test_time: float
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    new_node_val: np.ndarray
    new_node_test: np.ndarray
    new_test_nodes: np.ndarray
    new_nodes: np.ndarray
    id_offset: int = 1

    @property
    def hidden(self) -> np.ndarray:
        """Stream indices of the events up to ``val_time`` left out of ``train`` (they touch a
        new test node). DyGLib never gives them back to EdgeBank: its memory is built from
        train_data + val_data + earlier test events (evaluate_edge_bank_link_prediction)."""
        early = np.flatnonzero(self.times <= self.val_time)
        return np.setdiff1d(early, self.train, assume_unique=True)


class StreamBatch(NamedTuple):
    """One evaluation batch, as DyGLib's evaluation loop scores it.

    Attributes:
      positives: [B, 2] int32 (src, dst) of the batch's events, in stream order.
      negatives: [B, 2] int32 negative pair of each positive (scored at that positive's time).
      history_end: the events ``[0, history_end)`` of the stream come before the batch: the
        stream index of its first event. DyGLib's EdgeBank memory is this prefix minus
        ``split.hidden``; see :func:`edgebank_scores`.
      events: [B] int64 stream indices of the positives (their times: ``split.times[events]``).
    """

    positives: np.ndarray
    negatives: np.ndarray
    history_end: int
    events: np.ndarray


def dyglib_split(ds, val_ratio: float = 0.15, test_ratio: float = 0.15,
                 id_offset: int = 1) -> DyGLibSplit:
    """DyGLib's split of a temporal dataset (utils/DataLoader.py get_link_prediction_data).

    Args:
      ds: a :class:`~sparsegnn_jax.data.Dataset` with ``times``, its events in time order (as
        DyGLib's ``ml_<name>.csv`` files are; the order is kept, ties included).
      val_ratio, test_ratio: DyGLib's ``--val_ratio`` / ``--test_ratio`` (0.15 each).
      id_offset: DyGLib's id of our node v is ``v + id_offset``: 1 for the named datasets
        ``uci``, ``enron``, ``uslegis`` and for ``file:ml_<name>.csv`` (DyGLib's processed
        files number nodes from 1; their loaders map DyGLib id k to node k - 1).

    Returns:
      DyGLibSplit.

    Raises:
      ValueError: no times, times not non-decreasing, no events, or fewer nodes after
        ``val_time`` than DyGLib draws (``random.sample`` would fail in DyGLib too).
    """
    if ds.times is None or ds.num_edges == 0:
        raise ValueError(f"dyglib_split: {ds.name!r} has no timed events")
    times = np.asarray(ds.times).astype(np.float64)  # DataLoader: ts.astype(np.float64)
    if np.any(np.diff(times) < 0):
        raise ValueError(f"dyglib_split: {ds.name!r} is not in time order; DyGLib's files are "
                         "(preprocess_data.py asserts it): sort the events stably by time first")
    src = np.asarray(ds.senders, dtype=np.int64)
    dst = np.asarray(ds.receivers, dtype=np.int64)
    # Same expressions as DataLoader, so the float cut points are bit-identical.
    val_time, test_time = list(np.quantile(times, [(1 - val_ratio - test_ratio),
                                                   (1 - test_ratio)]))
    num_total = np.union1d(src, dst).size  # len(set(src) | set(dst))
    # test_node_set = set(src[ts > val_time]).union(set(dst[ts > val_time])) on DyGLib's ids;
    # random.sample(set) took tuple(set) on Python <= 3.10 (3.11 refuses a set): its
    # iteration order is what decides the draw.
    late = times > val_time
    test_node_set = set((src[late] + id_offset).tolist()).union(
        set((dst[late] + id_offset).tolist()))
    num_new = int(0.1 * num_total)
    if num_new > len(test_node_set):
        raise ValueError(f"dyglib_split: DyGLib draws {num_new} new test nodes among the "
                         f"{len(test_node_set)} nodes of events after val_time")
    rng = random.Random(2020)  # random.seed(2020), without touching the global generator
    drawn = rng.sample(tuple(test_node_set), num_new)
    new_test_nodes = np.sort(np.asarray(drawn, dtype=np.int64) - id_offset)
    observed = ~(np.isin(src, new_test_nodes) | np.isin(dst, new_test_nodes))
    train_mask = (times <= val_time) & observed
    train_nodes = np.union1d(src[train_mask], dst[train_mask])
    new_nodes = np.setdiff1d(np.union1d(src, dst), train_nodes)
    has_new = np.isin(src, new_nodes) | np.isin(dst, new_nodes)
    val_mask = (times <= test_time) & (times > val_time)
    test_mask = times > test_time
    idx = np.flatnonzero
    return DyGLibSplit(
        num_nodes=int(ds.num_nodes), src=src, dst=dst, times=times, val_time=float(val_time),
        test_time=float(test_time), train=idx(train_mask), val=idx(val_mask),
        test=idx(test_mask), new_node_val=idx(val_mask & has_new),
        new_node_test=idx(test_mask & has_new), new_test_nodes=new_test_nodes,
        new_nodes=new_nodes, id_offset=int(id_offset))


def _pairs(src: np.ndarray, dst: np.ndarray) -> set:
    """``set((s, d) for s, d in zip(src, dst))`` as DyGLib builds it (insertion order kept)."""
    return set(zip(src.tolist(), dst.tolist()))


class _NegativeSampler:
    """utils/utils.py NegativeEdgeSampler with a seed, on DyGLib ids, for one evaluation.

    The historical edge set grows with the batches' start times instead of being rebuilt per
    batch: adding the same pairs in the same order to a set gives the same table as DyGLib's
    ``set(generator)``, so the iteration order, and hence the draw, is unchanged.
    """

    def __init__(self, src, dst, times, strategy: str, seed: int, last_observed_time: float):
        self.src, self.dst, self.times, self.strategy = src, dst, times, strategy
        self.unique_src, self.unique_dst = np.unique(src), np.unique(dst)
        self.rng = np.random.RandomState(seed)  # reset_random_state() before each evaluation
        self._possible = None  # built lazily: DyGLib builds it in __init__, drawing nothing
        self._history, self._history_end = set(), 0
        if strategy == "inductive":
            # get_unique_edges_between_start_end_time(earliest_time, last_observed_time)
            self.observed = _pairs(*self._window(times[0], last_observed_time))

    def _window(self, start: float, end: float):
        """Events with ``start <= t <= end``: a contiguous range, the times being sorted."""
        lo = np.searchsorted(self.times, start, side="left")
        hi = np.searchsorted(self.times, end, side="right")
        return self.src[lo:hi], self.dst[lo:hi]

    def sample(self, pos_src: np.ndarray, pos_dst: np.ndarray, start: float, end: float):
        size = pos_src.size
        if self.strategy == "random":
            # evaluate_model_link_prediction keeps the source: `_, neg_dst = sampler.sample(n)`;
            # random_sample still draws the source indices first.
            self.rng.randint(0, len(self.unique_src), size)
            return pos_src, self.unique_dst[self.rng.randint(0, len(self.unique_dst), size)]
        # historical_sample / inductive_sample: unique edges of [earliest, start] that are not
        # in [start, end] (nor, for inductive, observed by last_observed_time).
        end_hist = int(np.searchsorted(self.times, start, side="right"))
        self._history.update(zip(self.src[self._history_end:end_hist].tolist(),
                                 self.dst[self._history_end:end_hist].tolist()))
        self._history_end = end_hist
        current = _pairs(*self._window(start, end))
        if self.strategy == "historical":
            edges = self._history - current
        else:
            edges = self._history - self.observed - current
        e_src = np.array([e[0] for e in edges], dtype=np.int64)
        e_dst = np.array([e[1] for e in edges], dtype=np.int64)
        if size > len(edges):  # fill up with random pairs, then every candidate edge
            r_src, r_dst = self._random_with_collision_check(size - len(edges), pos_src, pos_dst)
            return np.concatenate([r_src, e_src]), np.concatenate([r_dst, e_dst])
        pick = self.rng.choice(len(edges), size=size, replace=False)
        return e_src[pick], e_dst[pick]

    def _random_with_collision_check(self, size: int, pos_src, pos_dst):
        """random_sample_with_collision_check: any unique-src x unique-dst pair not in the batch."""
        if self._possible is None:
            us, ud = self.unique_src.tolist(), self.unique_dst.tolist()
            self._possible = set((s, d) for s in us for d in ud)
        possible = list(self._possible - _pairs(pos_src, pos_dst))
        if not possible:
            raise ValueError("DyGLib's negative sampler has no pair left to draw")
        pick = self.rng.choice(len(possible), size=size, replace=len(possible) < size)
        return (np.array([possible[i][0] for i in pick], dtype=np.int64),
                np.array([possible[i][1] for i in pick], dtype=np.int64))


def evaluation_batches(split: DyGLibSplit, part: str, setting: str = "transductive",
                       negatives: str = "random", batch_size: int = 200) -> list[StreamBatch]:
    """The batches DyGLib scores for one part, with its negatives.

    Args:
      split: from :func:`dyglib_split`.
      part: ``"val"`` or ``"test"``.
      setting: ``"transductive"`` (every event of the part) or ``"inductive"`` (the events
        touching a node without training events: ``new_node_val`` / ``new_node_test``).
      negatives: DyGLib's ``--negative_sample_strategy``: ``"random"`` (the source kept, a
        uniform destination among the sampler's destinations), ``"historical"`` (earlier pairs
        not in the batch's time span) or ``"inductive"`` (earlier pairs not seen by the end of
        the previous part); the last two replace both ends and fill up with random pairs.
      batch_size: DyGLib's ``--batch_size`` (200).

    Returns:
      One :class:`StreamBatch` per batch, in order (empty when the part has no events).
      Transductive samplers draw from the whole stream, inductive ones from the part's events
      only; ``last_observed_time`` is the last training event's time for ``val`` and the last
      val event's for ``test`` (evaluate_link_prediction.py). ``history_end`` is the stream
      index of the batch's first event in either setting: DyGLib runs EdgeBank in the
      transductive setting only (evaluate_link_prediction.py), and its models query the
      full-data neighbour sampler, which holds every event before each event's time, in
      both settings. Historical / inductive strategies that must fill up with random pairs
      build every unique-source x unique-destination pair, as DyGLib does.

    Raises:
      ValueError: unknown part, setting or strategy, or a non-positive batch size.
    """
    if (part, setting) not in _SEEDS:
        raise ValueError(f"part must be 'val' or 'test' and setting 'transductive' or "
                         f"'inductive', got {part!r}, {setting!r}")
    if negatives not in NEGATIVE_STRATEGIES:
        raise ValueError(f"negatives must be one of {NEGATIVE_STRATEGIES}, got {negatives!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    events = {("val", "transductive"): split.val, ("val", "inductive"): split.new_node_val,
              ("test", "transductive"): split.test,
              ("test", "inductive"): split.new_node_test}[(part, setting)]
    if events.size == 0:
        return []
    pool = np.arange(split.times.size) if setting == "transductive" else events
    last_part = split.train if part == "val" else split.val
    last_observed = split.times[last_part[-1]] if last_part.size else -np.inf
    off = split.id_offset
    sampler = _NegativeSampler(split.src[pool] + off, split.dst[pool] + off, split.times[pool],
                               negatives, _SEEDS[(part, setting)], last_observed)
    out = []
    for b in range(0, events.size, batch_size):  # DataLoader(shuffle=False, drop_last=False)
        idx = events[b:b + batch_size]
        ps, pd, t = split.src[idx] + off, split.dst[idx] + off, split.times[idx]
        ns, nd = sampler.sample(ps, pd, t[0], t[-1])
        out.append(StreamBatch(
            positives=np.stack([ps - off, pd - off], 1).astype(np.int32),
            negatives=np.stack([ns - off, nd - off], 1).astype(np.int32),
            history_end=int(idx[0]), events=idx))
    return out


def edgebank_scores(split: DyGLibSplit, batches: StreamBatch | Sequence[StreamBatch],
                    memory: str = "unlimited", history: str = "dyglib",
                    time_window: float = 0.15):
    """EdgeBank's 0/1 scores as DyGLib computes them (models/EdgeBank.py), vectorised.

    A pair scores 1 when it occurred in the memory: the history events (unlimited), or those
    at or after ``np.quantile(history times, 1 - time_window)`` (``"tw"``: time_window_memory
    with 'fixed_proportion', whose proportion is ``--test_ratio`` = 0.15;
    load_configs.py picks it for Enron and US Legis, unlimited for UCI). One sorted index of
    the stream answers every batch: a pair is in memory when its last history occurrence
    before ``history_end`` exists (and, for tw, is inside the window).

    Args:
      split: from :func:`dyglib_split`.
      batches: a :class:`StreamBatch` or a sequence of them.
      memory: ``"unlimited"`` or ``"tw"``.
      history: ``"dyglib"``: the events before ``history_end`` minus ``split.hidden``, as
        evaluate_edge_bank_link_prediction builds it (train_data + val_data + earlier test
        events); ``"prefix"``: every event before ``history_end``.
      time_window: the window's share of the history's events' time quantile.

    Returns:
      ``(positive scores, negative scores)`` float64 arrays for one batch, or lists of them.
    """
    if memory not in ("unlimited", "tw") or history not in ("dyglib", "prefix"):
        raise ValueError(f"memory must be 'unlimited' or 'tw' and history 'dyglib' or "
                         f"'prefix', got {memory!r}, {history!r}")
    single = isinstance(batches, StreamBatch)
    batches = [batches] if single else list(batches)
    keep = np.ones(split.times.size, bool)
    if history == "dyglib":
        keep[split.hidden] = False
    known = np.flatnonzero(keep)  # stream indices a memory may hold, ascending
    n, e = np.int64(split.num_nodes), np.int64(split.times.size + 1)
    codes, rank = np.unique(split.src[known] * n + split.dst[known], return_inverse=True)
    keys = np.sort(rank.astype(np.int64) * e + known)  # by pair, then by stream index

    def score(pairs: np.ndarray, end: int, start: float) -> np.ndarray:
        if not keys.size:
            return np.zeros(len(pairs))
        q = pairs[:, 0].astype(np.int64) * n + pairs[:, 1]
        r = np.minimum(np.searchsorted(codes, q), codes.size - 1)
        p = np.searchsorted(keys, r * e + end) - 1  # the pair's last occurrence before `end`
        last = keys[np.maximum(p, 0)]
        found = (codes[r] == q) & (p >= 0) & (last // e == r)
        return (found & (split.times[last % e] >= start)).astype(np.float64)

    pos, neg = [], []
    for batch in batches:
        end = batch.history_end
        past = known[:np.searchsorted(known, end)]
        start = -np.inf
        if memory == "tw" and past.size:
            start = np.quantile(split.times[past], 1 - time_window)
        pos.append(score(batch.positives, end, start))
        neg.append(score(batch.negatives, end, start))
    return (pos[0], neg[0]) if single else (pos, neg)


def mean_batch_metrics(pos_scores_per_batch, neg_scores_per_batch) -> dict:
    """AP and ROC-AUC of every batch, averaged over batches (DyGLib's reported numbers).

    Per batch, as utils/metrics.py get_link_prediction_metrics: sklearn's
    ``average_precision_score`` and ``roc_auc_score`` on the positives (label 1) and negatives
    (label 0); computed by :func:`sparsegnn_jax.baselines.auc_ap` (float64, the same
    definitions, ties included).

    Args:
      pos_scores_per_batch, neg_scores_per_batch: sequences of 1-D score arrays, one per batch.

    Returns:
      ``{"ap": float, "roc_auc": float, "num_batches": int}`` (NaN metrics with no batch).
    """
    # Imported here: data stays below the rest of the package in the import graph.
    from ..baselines import auc_ap

    if len(pos_scores_per_batch) != len(neg_scores_per_batch):
        raise ValueError(f"{len(pos_scores_per_batch)} positive but "
                         f"{len(neg_scores_per_batch)} negative score batches")
    aps, aucs = [], []
    for p, q in zip(pos_scores_per_batch, neg_scores_per_batch):
        p, q = np.ravel(p), np.ravel(q)
        m = auc_ap(np.concatenate([p, q]), np.concatenate([np.ones(p.size), np.zeros(q.size)]))
        aps.append(m["ap"])
        aucs.append(m["roc_auc"])
    if not aps:
        return {"ap": float("nan"), "roc_auc": float("nan"), "num_batches": 0}
    return {"ap": float(np.mean(aps)), "roc_auc": float(np.mean(aucs)), "num_batches": len(aps)}
