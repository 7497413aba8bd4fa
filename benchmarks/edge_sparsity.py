#!/usr/bin/env python
"""GCN training step time at edge sparsity 0 / 0.5 / 0.9 with compacted edges, measured.

Usage::

    python benchmarks/edge_sparsity.py [--quick] [--json PATH] [--data-root DIR] [--graphs NAME ...]

A 2-layer GCN (``layers.gcn_conv``, hidden 64, ReLU, cross-entropy over all nodes, ``optax.adam``)
takes full-batch training steps on: email-eu (skipped, saying why, when the data is absent), a
random 100k-node / 10M-edge graph and a random 1M-node / 10M-edge graph (directed random edges
plus one self loop per node; 64 random input features, 16 random classes). ``--quick`` uses
1M-edge versions of the two random graphs and fewer repeats.

Variants, all in one process per graph, their repeats interleaved so that load from other jobs
hits them alike:

* ``dense``: the unpruned graph, no mask (what a run without edge sparsity costs);
* ``s=0.0 / 0.5 / 0.9``: a random edge mask keeping exactly ``E - round(s E)`` edges (self loops
  can be pruned too); every step compacts the mask with ``graphs.compact_edges`` inside the jitted
  step, as training with a changing mask would, then computes GCN's degree normalisation on the
  kept edges. The compaction's cost is part of the step.

The split between per-node and per-edge time is measured by timing the two parts on their own:
per-node is the same training step with the aggregation removed (the matmuls, biases, ReLU, loss
and Adam); per-edge is the compaction, the normalisation and the two layers' gather +
``segment_sum``, forward and backward (``jax.vjp``). Their sum next to the whole step shows how
well the split adds up (XLA fuses across the boundary in the whole step).

Each figure is the median over the repeats after a warm-up call that also compiles; each graph
runs in a fresh process, which reports its peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from run import (interleaved_times, load_average, median, peak_rss_mb, print_run_header,
                 write_figures)

HIDDEN = 64
FEATURES = 64
CLASSES = 16
SPARSITIES = (0.0, 0.5, 0.9)
TARGET_GRAPH = "random-100k-10M"
TARGET_SPEEDUP = 3.0
# name: (nodes, edges); None for the real dataset.
GRAPHS = {"email-eu": None, "random-100k-10M": (100_000, 10_000_000),
          "random-1M-10M": (1_000_000, 10_000_000)}
QUICK_GRAPHS = {"email-eu": None, "random-100k-1M": (100_000, 1_000_000),
                "random-1M-1M": (1_000_000, 1_000_000)}


def build_problem(name: str, sizes, data_root) -> dict:
    """Edge list (with self loops), features, labels and class count of one benchmark graph."""
    import sparsegnn_jax as sg

    rng = np.random.default_rng(0)
    if sizes is None:
        ds = sg.data.load(name, root=data_root)
        n, classes = ds.num_nodes, int(ds.num_classes)
        g = sg.graphs.from_edges(ds.senders, ds.receivers, n)
        labels = np.asarray(ds.labels, np.int32)
    else:
        n, e = sizes
        s = rng.integers(0, n, e, dtype=np.int64)
        r = rng.integers(0, n, e, dtype=np.int64)
        g = sg.graphs.from_edges(s, r, n, symmetric=False, self_loops=True)
        del s, r
        classes = CLASSES
        labels = rng.integers(0, classes, n).astype(np.int32)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    return dict(senders=np.asarray(g.senders), receivers=np.asarray(g.receivers), x=x,
                labels=labels, classes=classes, num_nodes=n)


def exact_keep_mask(num_edges: int, sparsity: float, rng) -> np.ndarray:
    """Bool mask over ``num_edges`` edges keeping exactly ``num_edges - round(sparsity * E)``."""
    keep = np.zeros(num_edges, bool)
    keep[rng.choice(num_edges, num_edges - int(round(sparsity * num_edges)), replace=False)] = True
    return keep


def gcn_aggregate(h, senders, receivers, weights, num_nodes):
    """GCN's per-edge work alone: ``gcn_conv`` without its matmul and bias."""
    import jax

    import sparsegnn_jax as sg

    coef = sg.graphs.sym_norm_coefficients(weights, senders, receivers, num_nodes)
    return jax.ops.segment_sum(h[senders] * coef[:, None], receivers, num_segments=num_nodes)


def make_functions(size, tx):
    """Jitted ``step``, ``edge_part`` and ``compact`` for ``size`` kept edges (None: no mask)."""
    import jax
    import jax.numpy as jnp
    import optax

    import sparsegnn_jax as sg

    def edges_of(data, keep):
        if size is None:
            return data["senders"], data["receivers"], jnp.ones(data["senders"].shape, jnp.float32)
        return sg.graphs.compact_edges(data["senders"], data["receivers"], None, keep, size)

    def loss_fn(params, data, edges):
        s, r, w = edges
        conv = sg.models.layers.gcn_conv
        h = jax.nn.relu(conv(data["x"], params["w1"], params["b1"], s, r, w))
        logits = conv(h, params["w2"], params["b2"], s, r, w)
        return optax.softmax_cross_entropy_with_integer_labels(logits, data["labels"]).mean()

    def step(params, opt_state, data, keep):
        loss, grads = jax.value_and_grad(loss_fn)(params, data, edges_of(data, keep))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def edge_part(h1, h2, data, keep):
        s, r, w = edges_of(data, keep)
        n = h1.shape[0]
        agg = lambda a, b: (gcn_aggregate(a, s, r, w, n), gcn_aggregate(b, s, r, w, n))  # noqa: E731
        out, vjp = jax.vjp(agg, h1, h2)
        return vjp(out)

    return jax.jit(step), jax.jit(edge_part), jax.jit(lambda data, keep: edges_of(data, keep))


def make_node_step(tx):
    """The training step with the aggregation removed: the per-node work alone."""
    import jax
    import optax

    def loss_fn(params, data):
        h = jax.nn.relu(data["x"] @ params["w1"] + params["b1"])
        logits = h @ params["w2"] + params["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, data["labels"]).mean()

    def step(params, opt_state, data):
        loss, grads = jax.value_and_grad(loss_fn)(params, data)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def worker(name: str, sizes, repeats: int, data_root) -> dict:
    """Every variant on one graph in this process; returns medians in ms and peak RSS."""
    import jax
    import jax.numpy as jnp
    import optax

    t0 = time.perf_counter()
    prob = build_problem(name, sizes, data_root)
    n, e, classes = prob["num_nodes"], int(prob["senders"].size), prob["classes"]
    data = {k: jnp.asarray(prob[k]) for k in ("senders", "receivers", "x", "labels")}
    rng = np.random.default_rng(1)
    keeps = {f"s={s}": exact_keep_mask(e, s, rng) for s in SPARSITIES}
    del prob
    setup_s = time.perf_counter() - t0
    key = jax.random.split(jax.random.key(0), 2)
    params = {"w1": jax.random.normal(key[0], (FEATURES, HIDDEN)) * FEATURES ** -0.5,
              "b1": jnp.zeros(HIDDEN),
              "w2": jax.random.normal(key[1], (HIDDEN, classes)) * HIDDEN ** -0.5,
              "b2": jnp.zeros(classes)}
    tx = optax.adam(0.01)
    opt_state = tx.init(params)
    h1 = jax.random.normal(key[0], (n, HIDDEN))
    h2 = jax.random.normal(key[1], (n, classes))

    variants = {"dense": (None, None)}
    variants.update({name_: (int(k.sum()), jnp.asarray(k)) for name_, k in keeps.items()})
    calls = {}
    node_step = make_node_step(tx)
    calls["node part"] = lambda: jax.block_until_ready(node_step(params, opt_state, data))
    for label, (size, keep) in variants.items():
        step, edge_part, compact = make_functions(size, tx)
        calls[f"{label} step"] = (lambda f=step, k=keep:
                                  jax.block_until_ready(f(params, opt_state, data, k)))
        calls[f"{label} edge part"] = (lambda f=edge_part, k=keep:
                                       jax.block_until_ready(f(h1, h2, data, k)))
        if size is not None:
            calls[f"{label} compaction"] = (lambda f=compact, k=keep:
                                            jax.block_until_ready(f(data, k)))
    compile_s = {}
    for label, fn in calls.items():
        t = time.perf_counter()
        fn()
        compile_s[label] = time.perf_counter() - t
    times = interleaved_times(calls, repeats)
    ms = {label: median(ts) * 1e3 for label, ts in times.items()}
    return dict(graph=name, num_nodes=n, num_edges=e, setup_s=setup_s,
                kept={label: size or e for label, (size, _) in variants.items()}, ms=ms,
                first_call_s=compile_s, peak_rss_mb=peak_rss_mb(), repeats=repeats)


def table(r: dict) -> str:
    """Markdown table of one graph's figures."""
    ms = r["ms"]
    dense = ms["dense step"]
    lines = ["| variant | kept edges | step ms | speed-up vs dense | compaction ms | per-edge ms "
             "| per-node ms | per-node + per-edge / step |",
             "|---|---|---|---|---|---|---|---|"]
    for label, kept in r["kept"].items():
        step, edge = ms[f"{label} step"], ms[f"{label} edge part"]
        comp = ms.get(f"{label} compaction")
        lines.append(f"| {label} | {kept:,} | {step:.1f} | {dense / step:.2f}x | "
                     f"{'-' if comp is None else f'{comp:.1f}'} | {edge:.1f} | "
                     f"{ms['node part']:.1f} | {(edge + ms['node part']) / step:.2f} |")
    return "\n".join(lines)


def run_worker(name: str, args) -> dict:
    """Runs one graph in a fresh process; returns its figures or ``{"error": ...}``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name,
           "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit code {proc.returncode}: {' | '.join(tail)}"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1M-edge random graphs and 2 repeats (a check that everything runs)")
    p.add_argument("--json", metavar="PATH", help="write every graph's figures to this JSON file")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="dataset folder (default: $SPARSEGNN_DATA); email-eu is skipped without it")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    p.add_argument("--graphs", nargs="+", default=None,
                   help="run only these graphs (names as printed; default: all)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.data_root is None:
        args.data_root = os.environ.get("SPARSEGNN_DATA")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    graphs = QUICK_GRAPHS if args.quick else GRAPHS
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.worker:
        out = worker(args.worker, graphs[args.worker], args.repeats, args.data_root)
        print("RESULT " + json.dumps(out), flush=True)
        return 0
    unknown = [name for name in args.graphs or () if name not in graphs]
    if unknown:
        print(f"error: --graphs: unknown graph {unknown[0]!r}; choose from {', '.join(graphs)}",
              file=sys.stderr)
        return 2
    info = print_run_header()
    print(f"GCN {FEATURES}-{HIDDEN}-classes, Adam, full batch; {args.repeats} timed repeats",
          flush=True)
    start = time.perf_counter()
    results = []
    for name in args.graphs or graphs:
        if graphs[name] is None and not args.data_root:
            print(f"\n## {name}\n\nskipped: no dataset folder (set SPARSEGNN_DATA or --data-root)",
                  flush=True)
            continue
        r = run_worker(name, args)
        if "error" in r:
            print(f"\n## {name}\n\nfailed: {r['error']}", flush=True)
            continue
        results.append(r)
        print(f"\n## {name}: {r['num_nodes']:,} nodes, {r['num_edges']:,} edges (self loops "
              f"included); peak RSS {r['peak_rss_mb'] / 1024:.2f} GiB\n\n{table(r)}", flush=True)
        if name == TARGET_GRAPH:
            for ref in ("dense", "s=0.0"):
                speedup = r["ms"][f"{ref} step"] / r["ms"]["s=0.9 step"]
                verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
                print(f"\ntarget: s=0.9 step >= {TARGET_SPEEDUP:g}x faster than {ref}: "
                      f"{speedup:.2f}x, {verdict}", flush=True)
    print(f"\nload average after: {load_average()}; total {time.perf_counter() - start:.0f} s",
          flush=True)
    if args.json:
        write_figures(args.json, info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
