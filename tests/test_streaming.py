"""Streaming evaluation under DyGLib's protocol: what each batch knows, model and baselines."""
import numpy as np

from sparsegnn_jax import config, data, graphs, tasks


def _problem(**kw):
    cfg = config.resolve(config.RunConfig(task="link", method="dense", epochs=1,
                                          eval_protocol="dyglib", progress=False, **kw))
    return cfg, tasks.get("link").prepare(cfg)


def test_each_test_batch_knows_every_earlier_event_but_the_hidden_ones():
    cfg, problem = _problem()
    ds = data.load(cfg.dataset, seed=cfg.seed)
    split = data.dyglib_split(ds)
    stream = problem.streams["test"]
    first, last = stream.batches[0], stream.batches[-1]
    # The first test batch knows the training and validation periods, hidden events aside:
    # DyGLib's training data (the model's) plus its validation events.
    np.testing.assert_array_equal(stream.prefix(first),
                                  np.sort(np.concatenate([split.train, split.val])))
    # The last one also every earlier test event.
    earlier = split.test[split.test < last.history_end]
    assert earlier.size > 0 and np.isin(earlier, stream.prefix(last)).all()
    assert not np.isin(split.hidden, stream.prefix(last)).any()


def test_a_prefix_graph_is_the_static_test_graph_padded():
    _, problem = _problem()
    stream = problem.streams["test"]
    graph, history = problem.stream_inputs(stream.prefix(stream.batches[0]))
    static = problem.eval_graphs["test"]
    e = int(static.senders.shape[0])
    np.testing.assert_array_equal(np.asarray(graph.senders[:e]), np.asarray(static.senders))
    np.testing.assert_array_equal(np.asarray(graph.nodes[:problem.num_nodes]),
                                  np.asarray(static.nodes))
    assert (np.asarray(graph.senders[e:]) == problem.num_nodes).all()  # the padding node
    # Every prefix has one shape: the scoring function compiles once.
    later, _ = problem.stream_inputs(stream.prefix(stream.batches[-1]))
    assert later.senders.shape == graph.senders.shape and later.nodes.shape == graph.nodes.shape
    np.testing.assert_array_equal(np.asarray(history.counts).sum(),
                                  np.asarray(problem.history("test").counts).sum())


def test_baselines_are_scored_per_batch_on_the_same_prefix():
    cfg, problem = _problem()
    ds = data.load(cfg.dataset, seed=cfg.seed)
    split = data.dyglib_split(ds)
    stream = problem.streams["test"]
    pos, neg = data.edgebank_scores(split, stream.batches, memory="unlimited")
    src, dst = np.asarray(ds.senders), np.asarray(ds.receivers)
    for batch, p in zip(stream.batches, pos):
        idx = stream.prefix(batch)
        seen = set(zip(src[idx].tolist(), dst[idx].tolist()))
        np.testing.assert_array_equal(p, [float(tuple(x) in seen) for x in batch.positives.tolist()])
    assert problem.baselines["test"]["edgebank"] == data.mean_batch_metrics(pos, neg)
