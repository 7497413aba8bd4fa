"""Training on neighbour-sampled blocks (``--fanout``) on large synthetic graphs, stage by stage.

    python benchmarks/sampled_training.py link --nodes=1100000 --edges=1000000,7800000 --max-steps=40
    python benchmarks/sampled_training.py link --nodes=1100000 --edges=7800000 --evaluate
    python benchmarks/sampled_training.py node --nodes=2000000 --edges=20000000 --batch-size=1024

``link``: the temporal stream of ``benchmarks/large_link.py``, then what ``experiments/
link_pred.py --model=gcn --method=rigl --epochs=1 --fanout=F`` does (split and inputs, model,
one sampled epoch, with ``--evaluate`` validation and test on the full graph). ``node``: a
planted-partition graph (labels = blocks, most edges inside a block, 16 noisy feature columns
derived from the label), then ``node_class.py --model=gcn --fanout=F --batch-size=B``. Each size
runs in its own process (peak RSS is per process). With ``--max-steps=K`` a first pass of K
steps compiles, a second is timed, and ``epoch_s_estimate`` is its time per step times the
epoch's steps; without it the one epoch is timed, compilation included. Prints one JSON line per size.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import resource
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def planted_partition(num_nodes: int, num_edges: int, classes: int = 10, inside: float = 0.8,
                      seed: int = 0):
    """Labels, edges (``inside`` of them within a class) and 16 label-correlated features."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, num_nodes).astype(np.int32)
    by_class = [np.flatnonzero(labels == c) for c in range(classes)]
    src = rng.integers(0, num_nodes, num_edges).astype(np.int32)
    same = rng.random(num_edges) < inside
    dst = rng.integers(0, num_nodes, num_edges).astype(np.int32)
    for c in range(classes):  # an inside edge goes to a random node of the source's class
        pick = np.flatnonzero(same & (labels[src] == c))
        dst[pick] = by_class[c][rng.integers(0, by_class[c].size, pick.size)]
    centres = rng.normal(size=(classes, 16)).astype(np.float32)
    features = centres[labels] + 3.0 * rng.normal(size=(num_nodes, 16)).astype(np.float32)
    return labels, src, dst, features


def one_size(task_name: str, num_nodes: int, num_edges: int, fanout: str, max_steps: int,
             batch_size: int | None, evaluate: bool) -> dict:
    import jax

    from sparsegnn_jax import config, data, runs, sampled, tasks, train

    from large_link import stopwatch
    stages, lap = stopwatch()

    name = f"synthetic-{task_name}-{num_nodes}-{num_edges}"
    if task_name == "link":
        from large_link import temporal_stream

        src, dst, times = temporal_stream(num_nodes, num_edges)
        ds = data.Dataset(name, num_nodes, src, dst, times)
    else:
        labels, src, dst, features = planted_partition(num_nodes, num_edges)
        ds = data.Dataset(name, num_nodes, src, dst, features=features, labels=labels,
                          num_classes=int(labels.max()) + 1,
                          split=data.node_split(labels, 0, train=0.1, val=0.05))
    data.register(name, lambda root, seed: ds, needs_files=False)
    lap("generate")
    cfg = config.resolve(config.RunConfig(task=task_name, dataset=name, model="gcn",
                                          method="rigl", epochs=1, fanout=fanout,
                                          batch_size=batch_size, progress=False))
    task = tasks.get(task_name)
    problem = task.prepare(cfg)
    lap("prepare")
    steps = problem.steps_per_epoch
    model = task.build_model(problem, cfg.seed)
    bound, params = train.split_model(model)
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(cfg.seed))
    lap("model")

    def epoch_of(k):
        small = dataclasses.replace(problem, steps_per_epoch=k)
        if task_name == "node" and cfg.batch_size:  # a node epoch's steps: its training nodes
            inputs = problem.inputs._replace(train_idx=problem.inputs.train_idx[: k * cfg.batch_size])
            return sampled.compiled(task.make_epoch(small, bound, tx)), inputs
        return sampled.compiled(task.make_epoch(small, bound, tx)), problem.inputs

    trained = steps if not max_steps else min(max_steps, steps)
    epoch, inputs = epoch_of(trained)
    if max_steps:  # compiled by a first pass over the same steps, timed on the second
        state, loss = epoch(state, inputs)
        jax.block_until_ready(loss)
        lap(f"compile + {trained} warm-up steps")
    state, loss = epoch(state, inputs)
    jax.block_until_ready(loss)
    lap(f"train {trained} steps")
    step_s = stages[f"train {trained} steps"] / trained
    out = {"task": task_name, "nodes": num_nodes, "edges": num_edges, "fanout": fanout,
           "batch_size": cfg.batch_size, "steps_per_epoch": steps, "trained_steps": trained,
           "s_per_step": round(step_s, 4), "epoch_s_estimate": round(step_s * steps, 1),
           "block_nodes": problem.blocks.sizes.nodes, "block_edges": problem.blocks.sizes.edges,
           "graph_edges": int(problem.graph.senders.shape[0]), "loss": float(loss)}
    if evaluate:
        val = task.evaluate(problem, bound, state.params, "val")
        test = task.evaluate(problem, bound, state.params, "test")
        lap("evaluate val + test (full graph)")
        key = "roc_auc" if task_name == "link" else "accuracy"
        out |= {f"val_{key}": val[key], f"test_{key}": test[key]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {**out, "seconds": stages, "total_s": round(sum(stages.values()), 1),
            "peak_rss_gib": round(peak, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=("link", "node"))
    p.add_argument("--nodes", type=int, default=1_100_000)
    p.add_argument("--edges", default="7800000", help="comma-separated edge counts")
    p.add_argument("--fanout", default="15,10")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=0,
                   help="train only this many steps and extrapolate the epoch (0: all)")
    p.add_argument("--evaluate", action="store_true", help="also evaluate on the full graph")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(e) for e in args.edges.split(",")]
    if args.one:
        print(json.dumps(one_size(args.task, args.nodes, sizes[0], args.fanout, args.max_steps,
                                  args.batch_size, args.evaluate)), flush=True)
        return 0
    from large_link import run_sizes
    command = [__file__, args.task, f"--fanout={args.fanout}", f"--max-steps={args.max_steps}"]
    command += [f"--batch-size={args.batch_size}"] * (args.batch_size is not None)
    command += ["--evaluate"] * args.evaluate
    run_sizes(command, args.nodes, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
