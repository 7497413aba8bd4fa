"""sparsegnn_jax.data.dyglib: DyGLib's split, negatives, EdgeBank and metrics, exactly."""
import hashlib
import io

import numpy as np
import pytest

from sparsegnn_jax import data
from sparsegnn_jax.data import download as dl
from sparsegnn_jax.data.dyglib import StreamBatch

# A 20-event toy stream on 12 nodes, times 0..19. Cut times: quantile(0.70) = 13.3,
# quantile(0.85) = 16.15. The nodes of events after 13.3 are {0, 1, 2, 3, 7, 8, 11}, DyGLib
# ids {1, 2, 3, 4, 8, 9, 12}; int(0.1 * 12) = 1 of them is drawn: random.seed(2020) picks the
# 5th of the set's order, which for these small ints is sorted order: id 8 = our node 7.
# Node 7's events 5 and 12 are then hidden from training; 7, 8 and 11 have no training event.
TOY_SRC = [0, 1, 2, 3, 4, 5, 6, 0, 1, 9, 2, 3, 10, 0, 1, 7, 0, 11, 7, 0]
TOY_DST = [1, 2, 3, 4, 5, 7, 0, 2, 9, 3, 4, 10, 7, 1, 2, 8, 3, 0, 1, 1]


def _toy(times=None):
    times = np.arange(20) if times is None else np.asarray(times)
    return data.Dataset(name="toy", num_nodes=12, senders=np.array(TOY_SRC, np.int32),
                        receivers=np.array(TOY_DST, np.int32), times=times)


def _pairs(split, idx):
    return {(int(split.src[i]), int(split.dst[i])) for i in idx}


def test_split_indices_on_toy_stream():
    sp = data.dyglib_split(_toy())
    assert sp.val_time == pytest.approx(13.3) and sp.test_time == pytest.approx(16.15)
    assert sp.new_test_nodes.tolist() == [7]
    assert sp.train.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13]
    assert sp.hidden.tolist() == [5, 12]
    assert sp.val.tolist() == [14, 15, 16] and sp.test.tolist() == [17, 18, 19]
    assert sp.new_nodes.tolist() == [7, 8, 11]
    assert sp.new_node_val.tolist() == [15] and sp.new_node_test.tolist() == [17, 18]
    assert sp.times.dtype == np.float64 and sp.id_offset == 1


def test_split_refuses_unordered_or_untimed():
    with pytest.raises(ValueError, match="not in time order"):
        data.dyglib_split(_toy(np.arange(20)[::-1]))
    untimed = data.Dataset(name="s", num_nodes=2, senders=np.array([0]), receivers=np.array([1]))
    with pytest.raises(ValueError, match="no timed events"):
        data.dyglib_split(untimed)


def test_batches_history_end_and_events():
    sp = data.dyglib_split(_toy())
    test = data.evaluation_batches(sp, "test", batch_size=2)
    assert [b.history_end for b in test] == [17, 19]
    assert [b.events.tolist() for b in test] == [[17, 18], [19]]
    assert test[0].positives.tolist() == [[11, 0], [7, 1]] and test[0].positives.dtype == np.int32
    val = data.evaluation_batches(sp, "val", batch_size=2)
    assert [b.history_end for b in val] == [14, 16]
    inductive = data.evaluation_batches(sp, "test", "inductive", batch_size=2)
    assert [b.history_end for b in inductive] == [17]
    assert [b.history_end for b in data.evaluation_batches(sp, "val", "inductive")] == [15]


def test_random_negatives_keep_source_with_dyglib_seeds():
    sp = data.dyglib_split(_toy())
    for part, setting, seed, events in [("val", "transductive", 0, sp.val),
                                        ("test", "transductive", 2, sp.test),
                                        ("test", "inductive", 3, sp.new_node_test)]:
        pool = np.arange(20) if setting == "transductive" else events
        unique_src, unique_dst = np.unique(sp.src[pool]), np.unique(sp.dst[pool])
        rng = np.random.RandomState(seed)  # DyGLib's sampler: source indices drawn first
        rng.randint(0, unique_src.size, events.size)
        expected = unique_dst[rng.randint(0, unique_dst.size, events.size)]
        (batch,) = data.evaluation_batches(sp, part, setting)
        np.testing.assert_array_equal(batch.negatives[:, 0], batch.positives[:, 0])
        np.testing.assert_array_equal(batch.negatives[:, 1], expected)
        # The sampler is reset for every evaluation: the same negatives again.
        np.testing.assert_array_equal(data.evaluation_batches(sp, part, setting)[0].negatives,
                                      batch.negatives)


def test_historical_negatives_come_from_history():
    sp = data.dyglib_split(_toy())
    for part in ("val", "test"):
        for b in data.evaluation_batches(sp, part, negatives="historical", batch_size=2):
            start, end = sp.times[b.events[0]], sp.times[b.events[-1]]
            history = _pairs(sp, np.flatnonzero(sp.times <= start))
            current = _pairs(sp, np.flatnonzero((sp.times >= start) & (sp.times <= end)))
            negatives = {tuple(p) for p in b.negatives.tolist()}
            assert len(history - current) >= len(b.events)  # enough history: no random fill
            assert negatives <= history - current
            assert len(negatives) == len(b.events)  # drawn without replacement


def test_inductive_negatives_fill_up_with_random_pairs():
    sp = data.dyglib_split(_toy())
    # val: history up to 14 minus what was observed by the last training event (t = 13)
    # minus the batch leaves nothing: every negative is a random pair outside the batch.
    for b in data.evaluation_batches(sp, "val", negatives="inductive", batch_size=2):
        positives = {tuple(p) for p in b.positives.tolist()}
        assert not positives & {tuple(p) for p in b.negatives.tolist()}
        assert set(b.negatives[:, 0]) <= set(sp.src.tolist())
        assert set(b.negatives[:, 1]) <= set(sp.dst.tolist())


def test_bad_arguments():
    sp = data.dyglib_split(_toy())
    with pytest.raises(ValueError, match="part must be"):
        data.evaluation_batches(sp, "train")
    with pytest.raises(ValueError, match="negatives must be one of"):
        data.evaluation_batches(sp, "val", negatives="uniform")
    with pytest.raises(ValueError, match="memory must be"):
        data.edgebank_scores(sp, [], memory="repeat")


def _batch(pos, neg, end):
    return StreamBatch(np.array(pos, np.int32), np.array(neg, np.int32), end, np.array([end]))


def test_edgebank_hand_computed():
    sp = data.dyglib_split(_toy())
    # (5, 7) occurred only at hidden event 5: outside DyGLib's memory, inside the prefix.
    b = _batch([[11, 0], [7, 1]], [[5, 7], [0, 2]], 17)
    pos, neg = data.edgebank_scores(sp, b)
    assert pos.tolist() == [0, 0] and neg.tolist() == [0, 1]
    assert data.edgebank_scores(sp, b, history="prefix")[1].tolist() == [1, 1]
    # tw: the history's times without hidden events 5 and 12 are 0..16 less {5, 12}
    # (15 values); their 0.85 quantile is 13 + 0.9 = 13.9, so only events 14..16 stay:
    # (1, 2) and (0, 3) are in memory, (0, 1) (last at 13) and (0, 2) (at 7) are not.
    b = _batch([[1, 2], [0, 1]], [[0, 3], [0, 2]], 17)
    pos, neg = data.edgebank_scores(sp, [b], "unlimited")
    assert pos[0].tolist() == [1, 1] and neg[0].tolist() == [1, 1]
    pos, neg = data.edgebank_scores(sp, [b], "tw")
    assert pos[0].tolist() == [1, 0] and neg[0].tolist() == [1, 0]
    # Only events before history_end count: (0, 3) first occurs at event 16.
    assert data.edgebank_scores(sp, _batch([[0, 3]], [[7, 8]], 15))[0].tolist() == [0]
    assert data.edgebank_scores(sp, _batch([[0, 3]], [[7, 8]], 0))[0].tolist() == [0]


def test_mean_batch_metrics_hand_computed():
    # Batch 1: scores 1, 0 | 0, 0. AP: threshold 1 -> precision 1 at recall 1/2, threshold 0
    # -> precision 2/4 at recall 1: 0.5 * 1 + 0.5 * 0.5 = 0.75. AUC: the 1 beats both
    # negatives, the tied 0 counts 1/2 twice: 3/4. Batch 2: one tie, AP 0.5, AUC 0.5.
    m = data.mean_batch_metrics([np.array([1.0, 0.0]), np.array([1.0])],
                                [np.array([0.0, 0.0]), np.array([1.0])])
    assert m == {"ap": pytest.approx(0.625), "roc_auc": pytest.approx(0.625), "num_batches": 2}
    with pytest.raises(ValueError, match="2 positive but 1 negative"):
        data.mean_batch_metrics([np.ones(1)] * 2, [np.ones(1)])


def test_metrics_match_sklearn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    pos = [rng.integers(0, 3, 50) / 2 for _ in range(5)]  # few distinct values: many ties
    neg = [rng.integers(0, 2, 50) / 2 for _ in range(5)]
    y = np.r_[np.ones(50), np.zeros(50)]
    aps = [metrics.average_precision_score(y, np.r_[p, q]) for p, q in zip(pos, neg)]
    aucs = [metrics.roc_auc_score(y, np.r_[p, q]) for p, q in zip(pos, neg)]
    m = data.mean_batch_metrics(pos, neg)
    assert m["ap"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert m["roc_auc"] == pytest.approx(np.mean(aucs), abs=1e-12)


# ----------------------------------------------------------------------------- real data

# name: (nodes, events, memory DyGLib uses (load_configs.py), DyGLib's published EdgeBank
# AP / AUC x100 (reproduced with history="dyglib"), the same with every event before the
# batch in memory (history="prefix"), split sizes train / val / test / new-node val / test,
# number of new test nodes)
REAL = {
    "uci": (1899, 59835, "unlimited", (76.20, 77.30), (76.50, 77.65),
            (34352, 8975, 8976, 5002, 5932), 189),
    "enron": (184, 125235, "tw", (83.53, 87.05), (83.50, 87.17),
              (69452, 18786, 18785, 5232, 4206), 18),
    "uslegis": (225, 60396, "tw", (58.39, 62.57), (59.24, 63.96),
                (34512, 10005, 4950, 5433, 3354), 22),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_named_benchmark_loads(data_root, name):
    ds = data.load(name, root=data_root)
    nodes, events = REAL[name][:2]
    assert (ds.num_nodes, ds.num_edges) == (nodes, events)
    assert np.all(np.diff(ds.times) >= 0) and ds.times.dtype == np.int64


@pytest.mark.parametrize("name", sorted(REAL))
def test_edgebank_reproduces_dyglib(data_root, name):
    _, _, memory, published, prefix, sizes, new_test = REAL[name]
    sp = data.dyglib_split(data.load(name, root=data_root))
    assert tuple(getattr(sp, k).size for k in ("train", "val", "test", "new_node_val",
                                               "new_node_test")) == sizes
    assert sp.new_test_nodes.size == new_test
    batches = data.evaluation_batches(sp, "test")
    for history, expected in (("dyglib", published), ("prefix", prefix)):
        m = data.mean_batch_metrics(*data.edgebank_scores(sp, batches, memory, history=history))
        assert (round(100 * m["ap"], 2), round(100 * m["roc_auc"], 2)) == expected, history


# SHA-256 (first 16 hex digits) of every negative of Enron's 12 evaluations (int32 [n, 2]
# arrays concatenated over batches), checked equal to DyGLib's own NegativeEdgeSampler and
# evaluation loop run on the same file when they were written.
ENRON_NEGATIVES = {
    ("val", "transductive", "random"): "87dd86445e9ecabd",
    ("val", "transductive", "historical"): "f75155676ba550bd",
    ("val", "transductive", "inductive"): "e01e50fa525f872d",
    ("val", "inductive", "random"): "fd6e934aef64e169",
    ("val", "inductive", "historical"): "1164dcece382d367",
    ("val", "inductive", "inductive"): "310ec3e3f069817e",
    ("test", "transductive", "random"): "99e654e9cc566f41",
    ("test", "transductive", "historical"): "53456c365329cc23",
    ("test", "transductive", "inductive"): "cbf113d0a23d5e79",
    ("test", "inductive", "random"): "1210a69a45985a45",
    ("test", "inductive", "historical"): "921032c215d5c3db",
    ("test", "inductive", "inductive"): "f5bc117fe9750a2e",
}


def test_enron_negatives_are_dyglibs(data_root):
    sp = data.dyglib_split(data.load("enron", root=data_root))
    for (part, setting, strategy), digest in ENRON_NEGATIVES.items():
        batches = data.evaluation_batches(sp, part, setting, strategy)
        negatives = np.concatenate([b.negatives for b in batches]).astype(np.int32)
        assert hashlib.sha256(negatives.tobytes()).hexdigest()[:16] == digest, \
            (part, setting, strategy)


def test_dyglib_csv_loads_like_the_shared_file(data_root, tmp_path):
    """DyGLib's ml_enron.csv, rebuilt from the shared file (byte for byte as published):
    file: loads it with the same ids, and the downloader's conversion gives back the file."""
    shared = data.load("enron", root=data_root)
    rows = zip(shared.senders.tolist(), shared.receivers.tolist(), shared.times.tolist())
    path = tmp_path / "ml_enron.csv"
    path.write_text(",u,i,ts,label,idx\n" + "".join(
        f"{k},{u + 1},{i + 1},{float(t)},0,{k + 1}\n" for k, (u, i, t) in enumerate(rows)))
    ds = data.load(f"file:{path}")
    np.testing.assert_array_equal(ds.senders, shared.senders)
    np.testing.assert_array_equal(ds.receivers, shared.receivers)
    np.testing.assert_array_equal(ds.times, shared.times)
    np.testing.assert_array_equal(ds.node_ids, np.arange(1, 185))
    out = io.BytesIO()
    dl._write_events(path, out)
    assert hashlib.sha256(out.getvalue()).hexdigest() == \
        dl.KNOWN_SHA256["dyglib_enron/enron.txt.gz"]
