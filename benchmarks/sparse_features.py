"""The first layer's product with sparse (BCOO) against dense node features, by density.

    python benchmarks/sparse_features.py --nodes=2708 --features=1433 --runs=3,36

For each density, random ``[nodes, features]`` features with that share of nonzeros are
multiplied by a ``[features, 16]`` kernel, forward and backward, vmapped over ``runs`` kernels
(a sweep's runs), with ``models.sparse_inputs.matmul`` on the dense array and on its BCOO form.
Prints one JSON line per (density, runs): milliseconds per call of each, and their ratio. The
density where the ratio reaches 1 bounds ``sparse_inputs.MAX_DENSITY``.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from sparsegnn_jax.models import sparse_inputs


def milliseconds(fn, *args, repeats: int) -> float:
    """Mean wall time of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=2708)
    p.add_argument("--features", type=int, default=1433)
    p.add_argument("--out", type=int, default=16)
    p.add_argument("--runs", default="3,36")
    p.add_argument("--densities", default="0.0127,0.05,0.1,0.2,0.3,0.5")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    for density in map(float, args.densities.split(",")):
        x = (rng.random((args.nodes, args.features)) < density) * rng.random(
            (args.nodes, args.features))
        inputs = {"dense": jnp.asarray(x, jnp.float32), "sparse": sparse_inputs.from_dense(x)}
        for runs in map(int, args.runs.split(",")):
            kernels = jax.random.normal(jax.random.key(0), (runs, args.features, args.out))
            ms = {}
            for name, features in inputs.items():
                def loss(kernel, features=features):
                    return jnp.sum(jnp.tanh(sparse_inputs.matmul(features, kernel)))
                step = jax.jit(jax.vmap(jax.value_and_grad(loss)))
                ms[name] = milliseconds(step, kernels, repeats=args.repeats)
            print(json.dumps({"density": density, "runs": runs, "dense_ms": round(ms["dense"], 2),
                              "sparse_ms": round(ms["sparse"], 2),
                              "sparse_over_dense": round(ms["sparse"] / ms["dense"], 3)}),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
