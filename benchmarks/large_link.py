"""Link prediction at the paper's wiki-talk scale on a synthetic temporal graph, stage by stage.

    python benchmarks/large_link.py --nodes=1100000 --edges=7800000
    python benchmarks/large_link.py --nodes=1100000 --edges=1000000,2000000,4000000,7800000

Each size runs in its own process (peak RSS is per process): generate a temporal edge stream,
then what ``experiments/link_pred.py --model=gcn --method=rigl --epochs=1`` does - split,
graphs, features, evaluation pairs and baselines (prepare), model, one training epoch,
validation and test evaluation with the default protocol and the ranking metrics, FLOPs -
each stage timed. Prints one JSON line per size (seconds per stage, peak RSS in GiB).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def temporal_stream(num_nodes: int, num_edges: int, seed: int = 0):
    """A synthetic temporal edge stream: heavy-tailed activity, repeated pairs, sorted times.

    Sources are drawn with Zipf-like popularity; half of the events repeat an earlier pair of
    the source's small partner set, so later links are predictable from earlier ones.
    """
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, num_nodes + 1) ** 0.8
    weight /= weight.sum()
    src = rng.choice(num_nodes, num_edges, p=weight).astype(np.int32)
    partner = (src.astype(np.int64) * 7919 + rng.integers(0, 4, num_edges)) % num_nodes
    random_dst = rng.choice(num_nodes, num_edges, p=weight)
    dst = np.where(rng.random(num_edges) < 0.5, partner, random_dst).astype(np.int32)
    dst = np.where(dst == src, (dst + 1) % num_nodes, dst).astype(np.int32)
    times = np.sort(rng.integers(0, 10**8, num_edges))
    return src, dst, times


def one_size(num_nodes: int, num_edges: int, max_steps: int = 0,
             train_only: bool = False) -> dict:
    """Runs every stage at one size in this process; returns seconds per stage and peak RSS.

    ``max_steps`` > 0 trains only that many steps of the epoch (a step costs the same
    whichever it is) and adds ``epoch_s_estimate``: the per-step time times the epoch's steps.
    ``train_only`` stops after training (no evaluation, no FLOPs; their keys are absent).
    """
    import jax

    from sparsegnn_jax import config, data, runs, sparsity, tasks, train

    stages, lap = stopwatch()

    src, dst, times = temporal_stream(num_nodes, num_edges)
    name = f"synthetic-large-{num_nodes}-{num_edges}"
    data.register(name, lambda root, seed: data.Dataset(name, num_nodes, src, dst, times),
                  needs_files=False)
    lap("generate")
    cfg = config.resolve(config.RunConfig(task="link", dataset=name, model="gcn",
                                          method="rigl", epochs=1, progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    lap("prepare (split, graphs, features, eval pairs, baselines)")
    steps = problem.steps_per_epoch
    if max_steps:
        problem = dataclasses.replace(problem, steps_per_epoch=min(max_steps, steps))
    model = task.build_model(problem, cfg.seed)
    bound, params = train.split_model(model)
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(cfg.seed))
    epoch = jax.jit(task.make_epoch(problem, bound, tx))
    lap("model")
    compiled = epoch.lower(state, problem.inputs).compile()
    lap("compile epoch")
    state, loss = compiled(state, problem.inputs)
    jax.block_until_ready(loss)
    lap("train 1 epoch")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    trained = problem.steps_per_epoch
    out = {"nodes": num_nodes, "edges": num_edges, "steps": steps, "trained_steps": trained,
           "epoch_s_estimate": round(stages["train 1 epoch"] / trained * steps, 1),
           "train_edges": int(problem.inputs.train_edges.shape[0]),
           "graph_edges": int(problem.inputs.graph.senders.shape[0]), "loss": float(loss)}
    if train_only:
        return {**out, "seconds": stages, "peak_rss_gib": round(peak, 2)}
    val = task.evaluate(problem, bound, state.params, "val")
    test = task.evaluate(problem, bound, state.params, "test")
    lap("evaluate val + test (compile included)")
    masks = sparsity.get_masks(state.opt_state)
    runs.flops_summary(problem, model, masks, sparsity.get_trace(state.opt_state))
    lap("flops")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {**out, "test_pairs": problem.info["test_edges"],
            "test_roc_auc": test["roc_auc"], "test_mrr": test["mrr"],
            "val_roc_auc": val["roc_auc"], "seconds": stages,
            "total_s": round(sum(stages.values()), 1), "peak_rss_gib": round(peak, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1_100_000)
    p.add_argument("--edges", default="7800000", help="comma-separated edge counts")
    p.add_argument("--max-steps", type=int, default=0,
                   help="train only this many steps of the epoch and extrapolate (0: all)")
    p.add_argument("--train-only", action="store_true",
                   help="stop after training (no evaluation): the per-epoch cost alone")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(e) for e in args.edges.split(",")]
    if args.one:
        print(json.dumps(one_size(args.nodes, sizes[0], args.max_steps, args.train_only)), flush=True)
        return 0
    run_sizes([__file__, f"--max-steps={args.max_steps}"] + ["--train-only"] * args.train_only,
              args.nodes, sizes)
    return 0


def stopwatch():
    """``(stages, lap)``: ``lap(name)`` records in ``stages`` the seconds since the previous
    lap (or since the call)."""
    stages, last = {}, [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(now - last[0], 2)
        last[0] = now
    return stages, lap


def run_sizes(command: list[str], nodes: int, sizes: list[int]) -> None:
    """Runs ``python *command --nodes --edges --one`` once per edge count, each in a fresh
    process (so one size's peak memory does not carry over to the next), and prints each
    run's JSON line, or its error."""
    for edges in sizes:
        out = subprocess.run([sys.executable, *command, f"--nodes={nodes}", f"--edges={edges}",
                              "--one"], env=os.environ, text=True, capture_output=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        print(line if out.returncode == 0 else
              json.dumps({"nodes": nodes, "edges": edges, "error": out.stderr[-2000:]}),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
