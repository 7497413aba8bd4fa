"""One link-prediction epoch of the paper MLP with RigL, sampling included, and its sampler alone.

    SPARSEGNN_DATA=/work/shared/datasets python benchmarks/link_epoch.py

The epoch is ``train.make_link_epoch`` as runs and sweeps use it (shuffle, negative sampling,
steps) on the email-eu-temporal training targets (synthetic-temporal without SPARSEGNN_DATA);
the sampler figure is ``data.sample_negatives`` for every step of 390 steps of batch 1024 on
random keys of a graph of that size. Medians of 5 calls after a compiling one.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from sparsegnn_jax import config, data, runs, tasks, train


def median_ms(fn, repeats: int = 5) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    root = os.environ.get("SPARSEGNN_DATA")
    cfg = config.resolve(config.RunConfig(
        task="link", dataset="email-eu-temporal" if root else "synthetic-temporal", model="mlp",
        method="rigl", sparsity=0.9, update_every=50, data_root=root, progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    bound, params = train.split_model(task.build_model(problem, 0))
    tx = runs.build_optimizer(problem)
    state = train.init_state(params, tx, jax.random.key(0))
    epoch = jax.jit(task.make_epoch(problem, bound, tx))
    ms = median_ms(lambda: epoch(state, problem.inputs))
    print(f"epoch ({cfg.dataset}, {problem.steps_per_epoch} steps of batch "
          f"{problem.batch_size}): {ms:.1f} ms")
    n = 986
    keys = data.edge_keys(np.random.default_rng(0).integers(0, n, (20_000, 2)), n)
    sample = jax.jit(lambda ks: jax.lax.map(lambda k: data.sample_negatives(k, n, 1024, keys),
                                            ks))
    step_keys = jax.random.split(jax.random.key(0), 390)
    print(f"sampler, 390 steps of 1024 pairs, {n} nodes / {len(keys)} edges: "
          f"{median_ms(lambda: sample(step_keys)):.1f} ms")


if __name__ == "__main__":
    main()
