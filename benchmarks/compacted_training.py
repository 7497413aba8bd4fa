#!/usr/bin/env python
"""End-to-end ``train.fit`` epochs of a GCN at edge sparsity 0.9 against 0, with compacted
training (``sparsegnn_jax.compaction``), for static, SET and RigL.

Usage::

    python benchmarks/compacted_training.py [--quick] [--nodes N] [--edges E] [--repeats R]
                                            [--methods static,set,rigl] [--json PATH]

Node classification on a random graph (``--nodes`` 100k, ``--edges`` 10M directed random
edges, symmetrised by nothing, plus one self loop per node after them; 64 random input
features, 16 random classes, half the nodes for training): a 2-layer GCN, hidden 64, built and
trained exactly as ``runs.run`` builds and trains it (``NodeTask.build_model``,
``runs.build_optimizer``, the task's epoch, ``compaction.plan_for``, ``train.fit``). The
training nodes are split into ``STEPS`` minibatches, so an epoch is ``STEPS`` full-graph steps;
SET and RigL update their masks every ``STEPS`` steps (once an epoch, included in the time:
RigL's update step runs on the whole graph, and both recompact after it). Weights stay dense
(``--sparsity=0``); only the edges are pruned.

Variants per method: ``e=0`` (edge weights, none pruned: the masked graph) and ``e=0.9``
(compacted: the run's ``training_mode``). Each variant is warmed up by one epoch (compiles),
then its epochs are timed round-robin with the other variants', so load from other jobs hits
them alike; the figure is the median epoch. ``--quick``: 100k nodes / 1M edges, 2 repeats.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from run import interleaved_times, load_average, median, peak_rss_mb, print_run_header, write_figures

HIDDEN = 64
FEATURES = 64
CLASSES = 16
STEPS = 5
TARGETS = {"static": 3.0, "set": 2.0, "rigl": 2.0}


def problem_of(cfg, nodes: int, edges: int):
    """A ``tasks.Problem`` of node classification on a random graph (see the module doc)."""
    import jax.numpy as jnp

    from sparsegnn_jax import graphs, tasks, train

    rng = np.random.default_rng(0)
    s = rng.integers(0, nodes, edges, dtype=np.int64)
    r = rng.integers(0, nodes, edges, dtype=np.int64)
    g = graphs.self_loops_last(graphs.from_edges(s, r, nodes, symmetric=False, self_loops=True))
    del s, r
    x = rng.normal(size=(nodes, FEATURES)).astype(np.float32)
    g = g._replace(nodes=jnp.asarray(x))
    labels = rng.integers(0, CLASSES, nodes).astype(np.int32)
    train_idx = np.sort(rng.permutation(nodes)[: nodes // 2]).astype(np.int32)
    batch = len(train_idx) // STEPS
    inputs = train.NodeInputs(g, jnp.asarray(labels), jnp.asarray(train_idx))
    info = dict(num_nodes=nodes, stored_edges=int(g.senders.shape[0]))
    return tasks.Problem(cfg, g, x, nodes, batch, STEPS, inputs, None, info, labels=labels,
                         num_classes=CLASSES)


def variant(base, problem, method: str, edge_sparsity: float):
    """``(epoch_fn, state, inputs, mode)`` of one run, built as ``runs.run`` builds it."""
    import jax

    from sparsegnn_jax import compaction, config, runs, tasks, train

    cfg = config.resolve(dataclasses.replace(base, method=method, edge_sparsity=edge_sparsity))
    problem = dataclasses.replace(problem, cfg=cfg)
    task = tasks.get("node")
    bound, params = train.split_model(task.build_model(problem, cfg.seed))
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(cfg.seed))
    plan = compaction.plan_for(cfg, state.params, state.opt_state, runs.method_kwargs(
        cfg, problem.total_steps, problem.steps_per_epoch))
    epoch = (jax.jit(task.make_epoch(problem, bound, tx)) if plan is None else
             compaction.CompactedEpoch(task.make_epoch(problem, bound, tx, compaction=plan), plan))
    return epoch, state, problem.inputs, "masked" if plan is None else "compacted"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--nodes", type=int, default=100_000)
    p.add_argument("--edges", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--methods", default="static,set,rigl")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    edges = args.edges or (1_000_000 if args.quick else 10_000_000)
    repeats = args.repeats or (2 if args.quick else 3)
    info = print_run_header()

    import jax

    from sparsegnn_jax import config, train

    base = config.RunConfig(task="node", dataset="synthetic-sbm", model="gcn", sparsity=0.0,
                            hidden=HIDDEN, epochs=10, update_every=STEPS, progress=False)
    problem = problem_of(config.resolve(dataclasses.replace(base, method="static",
                                                            edge_sparsity=0.0)),
                         args.nodes, edges)
    print(f"graph: {args.nodes:,} nodes, {problem.info['stored_edges']:,} stored edges; "
          f"{STEPS} steps an epoch", flush=True)
    runs_, fns, modes = {}, {}, {}
    for method in args.methods.split(","):
        for es in (0.0, 0.9):
            name = f"{method} e={es:g}"
            epoch, state, inputs, modes[name] = variant(base, problem, method, es)
            runs_[name] = [epoch, state]

            def one_epoch(name=name, inputs=inputs):
                epoch_fn, st = runs_[name]
                st, loss = train.fit(epoch_fn, st, inputs, 1)
                jax.block_until_ready((st, loss))
                runs_[name][1] = st

            one_epoch()  # warm-up: compiles, and the first compaction
            fns[name] = one_epoch
            print(f"  built {name} ({modes[name]})", flush=True)
    times = interleaved_times(fns, repeats)
    results = []
    print(f"\n| method | e=0 epoch s | e=0.9 epoch s | speed-up | target | compacted steps |")
    print("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        t0, t9 = median(times[f"{method} e=0"]), median(times[f"{method} e=0.9"])
        epoch9 = runs_[f"{method} e=0.9"][0]
        steps = getattr(epoch9, "compacted_steps", 0)
        total = int(np.asarray(runs_[f"{method} e=0.9"][1].step))
        target = TARGETS.get(method)
        print(f"| {method} | {t0:.2f} | {t9:.2f} | {t0 / t9:.2f}x | "
              f"{'-' if target is None else f'>= {target:g}x'} | {steps} of {total} |")
        results.append(dict(method=method, epoch_s_e0=t0, epoch_s_e09=t9, speedup=t0 / t9,
                            times_e0=times[f"{method} e=0"], times_e09=times[f"{method} e=0.9"],
                            compacted_steps=steps, steps=total,
                            modes=[modes[f"{method} e=0"], modes[f"{method} e=0.9"]]))
    print(f"\npeak RSS {peak_rss_mb() / 1024:.2f} GiB; load average after: {load_average()}")
    if args.json:
        write_figures(args.json, info, results)


if __name__ == "__main__":
    main()
