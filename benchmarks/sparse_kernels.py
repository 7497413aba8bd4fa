#!/usr/bin/env python
"""Inference time of a pruned layer: masked dense matmul against sparse kernels, on the CPU.

Usage::

    python benchmarks/sparse_kernels.py [--quick] [--json PATH]

One layer ``y = x @ W`` with ``x`` of ``[N, h]`` (N rows: a batch of nodes) and ``W`` of
``[h, h]`` pruned to 90 / 95 / 99 % sparsity (a random mask keeping exactly
``h^2 - round(s h^2)`` weights), forward only, jitted. Variants:

* ``masked dense``: ``x @ (W * mask)``, what training with masks computes (the reference);
* ``BCOO``: ``jax.experimental.sparse`` ``BCOO @ dense`` with the kept weights of ``W^T`` (built
  once, outside the timed call, as inference would) times ``x^T``;
* ``gather``: the kept ``(row, col, value)`` triples as a gather + ``segment_sum``:
  ``y^T = segment_sum(x^T[row] * value, col)``. It materialises a ``[kept, N]`` message array, so
  it is skipped (saying so) when that array would exceed ``GATHER_LIMIT_BYTES``.

Every variant's output is checked against the masked dense one. Each figure is the median of
interleaved repeats after a warm-up call that also compiles. Hidden 256 and 1024; N = 1,024 and
10,000 rows (``--quick``: hidden 256, N = 1,024, 3 repeats).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from run import interleaved_times, load_average, median, peak_rss_mb, print_run_header, write_figures

SPARSITIES = (0.9, 0.95, 0.99)
HIDDENS = (256, 1024)
ROWS = (1_024, 10_000)
GATHER_LIMIT_BYTES = 2 * 2**30


def kept_triples(weights: np.ndarray, keep: np.ndarray):
    """``(rows, cols, values)`` of the kept weights, row-major."""
    rows, cols = np.nonzero(keep)
    return rows.astype(np.int32), cols.astype(np.int32), weights[rows, cols]


def make_variants(x, weights: np.ndarray, keep: np.ndarray) -> dict:
    """``{name: zero-argument callable returning y}`` for one layer; None for skipped variants."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import sparse

    n, h = x.shape
    w, mask = jnp.asarray(weights), jnp.asarray(keep, jnp.float32)
    masked = jax.jit(lambda x, w, m: x @ (w * m))
    w_t = sparse.BCOO.fromdense(jnp.asarray((weights * keep).T), nse=int(keep.sum()))
    bcoo = jax.jit(lambda x, w_t: (w_t @ x.T).T)
    rows, cols, values = (jnp.asarray(a) for a in kept_triples(weights, keep))

    def gather(x, rows, cols, values):
        messages = x.T[rows] * values[:, None]                                   # [kept, N]
        return jax.ops.segment_sum(messages, cols, num_segments=h, indices_are_sorted=False).T

    gather = jax.jit(gather)
    variants = {
        "masked dense": lambda: jax.block_until_ready(masked(x, w, mask)),
        "BCOO": lambda: jax.block_until_ready(bcoo(x, w_t)),
        "gather": lambda: jax.block_until_ready(gather(x, rows, cols, values)),
    }
    if int(keep.sum()) * n * 4 > GATHER_LIMIT_BYTES:
        variants["gather"] = None
    return variants


def one_layer(n: int, h: int, sparsity: float, repeats: int, rng) -> dict:
    """Times every variant on one ``[n, h] @ [h, h]`` layer at one sparsity; ms medians."""
    import jax.numpy as jnp

    x = jnp.asarray(rng.normal(size=(n, h)).astype(np.float32))
    weights = rng.normal(size=(h, h)).astype(np.float32) * h ** -0.5
    keep = np.zeros(h * h, bool)
    keep[rng.choice(h * h, h * h - int(round(sparsity * h * h)), replace=False)] = True
    keep = keep.reshape(h, h)
    variants = make_variants(x, weights, keep)
    runnable = {name: fn for name, fn in variants.items() if fn is not None}
    reference = np.asarray(runnable["masked dense"]())
    max_err = {}
    for name, fn in runnable.items():
        max_err[name] = float(np.max(np.abs(np.asarray(fn()) - reference)))
        if max_err[name] > 1e-3:
            raise AssertionError(f"{name} differs from masked dense by {max_err[name]:.3g}")
    times = interleaved_times(runnable, repeats)
    ms = {name: (median(times[name]) * 1e3 if name in times else None) for name in variants}
    return dict(rows=n, hidden=h, sparsity=sparsity, kept=int(keep.sum()), ms=ms, max_abs_err=max_err)


def table(results: list) -> str:
    lines = ["| N | hidden | sparsity | kept weights | masked dense ms | BCOO ms | gather ms "
             "| BCOO speed-up | gather speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ms = r["ms"]
        dense = ms["masked dense"]

        def cell(name):
            return "skipped" if ms[name] is None else f"{ms[name]:.2f}"

        def speedup(name):
            return "-" if ms[name] is None else f"{dense / ms[name]:.2f}x"

        lines.append(f"| {r['rows']:,} | {r['hidden']} | {r['sparsity']:.2f} | {r['kept']:,} | "
                     f"{dense:.2f} | {cell('BCOO')} | {cell('gather')} | {speedup('BCOO')} | "
                     f"{speedup('gather')} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="hidden 256, N = 1,024, 3 repeats")
    p.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7, quick 3)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    repeats = args.repeats or (3 if args.quick else 7)
    hiddens, rows = ((256,), (1_024,)) if args.quick else (HIDDENS, ROWS)
    info = print_run_header()
    print(f"{repeats} timed repeats", flush=True)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    results = []
    for n in rows:
        for h in hiddens:
            for s in SPARSITIES:
                r = one_layer(n, h, s, repeats, rng)
                results.append(r)
                print(f"  N={n} h={h} s={s}: " + ", ".join(
                    f"{k} {'skipped' if v is None else f'{v:.2f} ms'}" for k, v in r["ms"].items()),
                    flush=True)
    print("\n" + table(results), flush=True)
    skipped = [r for r in results if r["ms"]["gather"] is None]
    if skipped:
        print(f"\ngather skipped where its [kept, N] messages exceed "
              f"{GATHER_LIMIT_BYTES / 2**30:.0f} GiB: "
              + ", ".join(f"N={r['rows']} h={r['hidden']} s={r['sparsity']}" for r in skipped),
              flush=True)
    print(f"\npeak RSS {peak_rss_mb() / 1024:.2f} GiB; load average after: {load_average()}; "
          f"total {time.perf_counter() - start:.0f} s", flush=True)
    if args.json:
        write_figures(args.json, info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
