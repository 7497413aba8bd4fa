#!/usr/bin/env python
"""Benchmark suite of sparsegnn_jax: sparsity overhead, mask updates, sweeps, large graphs, PyG.

Usage::

    python benchmarks/run.py [--quick] [--json PATH] [--data-root DIR] [--only SECTION ...]

Everything runs on the CPU. Each figure is the median of repeated runs after a warm-up run (which
also compiles); times are taken with ``time.perf_counter`` around calls whose results are waited
for with ``jax.block_until_ready``. When several variants are compared (dense vs sparse methods),
their repeats are interleaved so that load from other processes hits all of them alike.

Sections (``--only`` picks some):

* ``overhead``: train step time of static sparse, SET and RigL (over ``dT`` steps that include one
  mask update) divided by the dense (plain Adam) step, for a 2-layer GCN link predictor (hidden
  256) and for the paper's link MLP (16-128-1, 1024 positive + 1024 negative pairs). Target <= 1.10.
* ``mask_update``: one RigL drop-and-grow on a 10M-parameter pytree at 90% sparsity, jitted, against
  a NumPy ``argpartition`` implementation of the same update. Target ratio <= 1.0.
* ``sweep``: the paper's link MLP with RigL at 12 sparsities x 3 seeds, vmapped, sequential with
  one compiled epoch, and sequential compiling per run (``benchmarks/sweep_batching.py``).
  Targets: sequential >= 3x the per-run compiling path and no slower than vmapped.
* ``large``: full-batch GCN (hidden 64) steps on random graphs of 1M nodes with 1M..10M edges, each
  size in its own process: time per step and peak RSS. Targets: cost grows at most linearly in
  edges; 10M edges fit in 24 GB.
* ``pyg``: the same full-batch 2-layer GCN training step (Adam) in PyTorch Geometric (``GCNConv``)
  on Cora, the email-eu-temporal training graph and the 1M-node / 10M-edge graph, torch limited to
  2 threads; skipped, saying why, when torch or torch_geometric do not import. Target ratio <= 1.0.
* ``link_loop``: one link epoch of the paper MLP with RigL 95 % (400k pairs, 1024 per step) as
  ``train.make_link_epoch`` runs it (shuffle and negative sampling included) against the paper
  authors' PyTorch loop on their input format (pair rows of two 8-d embeddings), both at 1
  thread: their compute-only loop and their end-to-end epoch (``DataLoader`` over a
  ``TensorDataset``); skipped, saying why, when torch does not import. Targets: ours <= 0.5x
  their compute-only epoch and >= 10x faster than their end-to-end one.

``--json PATH`` writes ``{"name": {"value": ..., "unit": ..., "ratio": ...}}`` (ratio is None when
a figure has no reference).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

SECTIONS = ("overhead", "mask_update", "sweep", "large", "pyg", "link_loop")
SPARSITY = 0.9
DT = 100                      # steps between mask updates (RigL's default update_every)
LINK_BATCH = 1024             # positive pairs per step (as many sampled negatives)
LARGE_NODES = 1_000_000
LARGE_HIDDEN = 64
LARGE_CLASSES = 16
TORCH_THREADS = 2

# ------------------------------------------------------------------------------------------------
# Timing and reporting helpers.


def median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def interleaved_times(fns: dict, repeats: int) -> dict:
    """Times every callable ``repeats`` times, round-robin; each call must block until done.

    Returns:
      ``{name: [seconds, ...]}``.
    """
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


class Results:
    """Collects figures as ``{name: {"value", "unit", "ratio"}}`` and prints them as they come."""

    def __init__(self):
        self.figures: dict = {}
        self.notes: list = []

    def add(self, name: str, value, unit: str, ratio=None, note: str = "") -> None:
        value = None if value is None else float(value)
        ratio = None if ratio is None else float(ratio)
        self.figures[name] = {"value": value, "unit": unit, "ratio": ratio}
        r = "" if ratio is None else f"   ratio {ratio:.3f}"
        v = "n/a" if value is None else f"{value:.4g}"
        print(f"  {name:<44s} {v:>10s} {unit:<12s}{r}{'   ' + note if note else ''}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM; ru_maxrss as a fallback)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gb = int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return {"cpu": model, "cores": cores, "ram_gb": ram_gb, "python": platform.python_version()}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as one string."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_run_header() -> dict:
    """Prints the machine, library versions, date and load average; returns ``machine_info()``."""
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']:.1f} GB RAM; "
          f"{versions()}", flush=True)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average before: "
          f"{load_average()}", flush=True)
    return info


def write_figures(path, info: dict, results: list) -> None:
    """Writes ``{"machine": info, "results": results}`` as JSON to ``path``."""
    with open(path, "w") as f:
        json.dump({"machine": info, "results": results}, f, indent=1)


# ------------------------------------------------------------------------------------------------
# Shared setup: the link-prediction graph.


def load_link_graph(data_root):
    """The email-eu-temporal training split, or synthetic-temporal when the data is absent.

    Returns:
      ``(name, split)`` with ``split`` a ``LinkSplit``.
    """
    import sparsegnn_jax as sg

    try:
        ds = sg.data.load("email-eu-temporal", root=data_root)
    except (FileNotFoundError, ValueError) as err:
        print(f"  note: email-eu-temporal not available ({str(err).splitlines()[0]}); "
              f"using synthetic-temporal instead", flush=True)
        ds = sg.data.load("synthetic-temporal")
    return ds.name, sg.data.temporal_link_split(ds)


def tiled_edges(edges: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` training edges drawn by repeating a shuffled copy of ``edges``."""
    rng = np.random.default_rng(seed)
    reps = -(-rows // edges.shape[0])
    tiled = np.concatenate([edges[rng.permutation(edges.shape[0])] for _ in range(reps)])
    return tiled[:rows]


def link_models(kind: str, num_nodes: int, seed: int = 0):
    """The two link predictors: 2-layer GCN (hidden 256) or the paper's 16-128-1 MLP."""
    from flax import nnx

    import sparsegnn_jax as sg

    rngs = nnx.Rngs(seed)
    if kind == "gcn":
        # Featureless graph: a learnable 256-d embedding per node, as the experiments do.
        encoder = sg.models.build("gcn", 256, 256, 256, num_layers=2, num_nodes=num_nodes, rngs=rngs)
        decoder = sg.models.MLPDecoder(256, 256, mode="hadamard", rngs=rngs)
        return sg.models.LinkPredictor(encoder, decoder)
    # The paper's pipeline: fixed 8-d node embeddings, Linear(16,128) -> ReLU -> Linear(128,1).
    decoder = sg.models.MLPDecoder(8, 128, mode="concat", init="torch", rngs=rngs)
    return sg.models.LinkPredictor(sg.models.Identity(), decoder)


def link_graph(kind: str, split, seed: int = 0):
    import sparsegnn_jax as sg

    feats = None
    if kind == "mlp":
        # Stand-in for the 8-d temporal walk embeddings (their values do not change the cost).
        feats = np.random.default_rng(seed).normal(size=(split.num_nodes, 8)).astype(np.float32)
    return sg.graphs.from_edges(split.graph_senders, split.graph_receivers, split.num_nodes,
                                node_features=feats)


# ------------------------------------------------------------------------------------------------
# 1. Sparsity overhead.


def method_txs(update_every: int):
    import optax

    import sparsegnn_jax as sg

    adam = lambda: optax.adam(1e-3)  # noqa: E731
    return {
        "dense": adam(),  # what a user without sparsity runs: the reference
        "dense_wrapper": sg.dense(adam()),
        "static": sg.static_sparse(adam(), sparsity=SPARSITY),
        "set": sg.set_(adam(), sparsity=SPARSITY, update_every=update_every),
        "rigl": sg.rigl(adam(), sparsity=SPARSITY, update_every=update_every),
    }


def bench_overhead(res: Results, args) -> None:
    import jax
    import jax.numpy as jnp

    import sparsegnn_jax as sg

    repeats = 2 if args.quick else 7
    name, split = load_link_graph(args.data_root)
    print(f"  graph: {name} training split, {split.num_nodes} nodes, "
          f"{split.train_edges.shape[0]} training pairs; dT={DT}, sparsity {SPARSITY}, "
          f"batch {LINK_BATCH}+{LINK_BATCH}, {repeats} repeats", flush=True)
    keys = jnp.asarray(sg.data.edge_keys(split.train_edges, split.num_nodes))
    # One "epoch" = exactly dT steps, so every timed call after the first includes one mask update.
    edges = jnp.asarray(tiled_edges(split.train_edges, DT * LINK_BATCH))
    for kind in ("gcn", "mlp"):
        graph = link_graph(kind, split)
        inputs = sg.train.LinkInputs(graph, edges, keys,
                                     jnp.arange(split.num_nodes, dtype=jnp.int32))
        bound, params = sg.train.split_model(link_models(kind, split.num_nodes))
        n_params = sum(x.size for x in jax.tree.leaves(params))
        states, fns = {}, {}
        for method, tx in method_txs(DT).items():
            # --quick: the GCN's compiles dominate, so only dense and the costliest method (RigL).
            if args.quick and (method == "dense_wrapper"
                               or (kind == "gcn" and method in ("static", "set"))):
                continue
            epoch = jax.jit(sg.train.make_link_epoch(bound, tx, LINK_BATCH, split.num_nodes))
            states[method] = sg.train.init_state(params, tx, jax.random.key(0))

            def run(method=method, epoch=epoch):
                states[method], loss = epoch(states[method], inputs)
                jax.block_until_ready((states[method], loss))

            t0 = time.perf_counter()
            run()  # compile + steps 0..dT-1; every later call holds steps dT*i..dT*(i+1)-1,
            # i.e. exactly one mask update (at step dT*i)
            compile_s = time.perf_counter() - t0
            fns[method] = run
            print(f"  [{kind}] {method}: warm-up {compile_s:.1f} s", flush=True)
        times = interleaved_times(fns, repeats)
        dense_step = median(times["dense"]) / DT
        label = f"{kind} ({n_params / 1e3:.0f}k params)"
        for method in fns:
            step = median(times[method]) / DT
            res.add(f"overhead/{kind}/{method}", step * 1e3, "ms/step", step / dense_step,
                    label if method == "dense" else "")
        for method in ("static", "set", "rigl"):
            if method not in fns:
                continue
            ratio = res.figures[f"overhead/{kind}/{method}"]["ratio"]
            print(f"  [{kind}] {method} / dense = {ratio:.3f}  target <= 1.10: "
                  f"{verdict(ratio <= 1.10)}", flush=True)
        for method, s in states.items():
            if method not in ("dense",):
                got = sg.masks.sparsity(sg.get_masks(s.opt_state))
                assert method.startswith("dense") or abs(got - SPARSITY) < 0.01, (method, got)


# ------------------------------------------------------------------------------------------------
# 2. Mask update: RigL drop-and-grow against NumPy argpartition.


def numpy_drop_grow(mask: np.ndarray, weights: np.ndarray, grads: np.ndarray,
                    fraction: float) -> np.ndarray:
    """RigL's update of one layer with ``np.argpartition``: same counts and rule as the library.

    Drops the ``n = min(floor(fraction * active), inactive)`` smallest |w| among active weights
    and grows the ``n`` largest |g| among weights inactive before the update.
    """
    flat = mask.reshape(-1)
    active = np.flatnonzero(flat)
    inactive = np.flatnonzero(~flat)
    n = min(int(np.floor(fraction * active.size)), inactive.size)
    new = flat.copy()
    if n:
        drop = np.argpartition(np.abs(weights.reshape(-1)[active]), n - 1)[:n]
        new[active[drop]] = False
        grow = np.argpartition(-np.abs(grads.reshape(-1)[inactive]), n - 1)[:n]
        new[inactive[grow]] = True
    return new.reshape(mask.shape)


def mask_update_inputs(shapes, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {f"w{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    masks = {}
    for k, v in params.items():
        m = np.zeros(v.size, bool)
        m[rng.choice(v.size, int(round(v.size * (1 - SPARSITY))), replace=False)] = True
        masks[k] = m.reshape(v.shape)
        params[k] = np.where(masks[k], v, 0).astype(np.float32)  # pruned weights are exactly 0
    return params, grads, masks


def bench_mask_update(res: Results, args) -> None:
    import jax
    import jax.numpy as jnp

    from sparsegnn_jax.sparsity import dst

    shapes = [(2500, 1000)] * 4  # 10M parameters in 4 matrices
    fraction = 0.3
    repeats = 1 if args.quick else 5
    params, grads, masks = mask_update_inputs(shapes)
    n_params = sum(int(np.prod(s)) for s in shapes)
    print(f"  pytree: {len(shapes)} x {shapes[0]} = {n_params / 1e6:.0f}M params, "
          f"sparsity {SPARSITY}, drop fraction {fraction}, {repeats} repeats", flush=True)

    @jax.jit
    def jax_update(masks, params, grads):
        # Exactly what rigl's update runs on each prunable leaf at a mask-update step.
        return jax.tree.map(lambda m, w, g: dst.swap(m, w, jnp.abs(g), fraction), masks, params,
                            grads)

    def numpy_update():
        return {k: numpy_drop_grow(masks[k], params[k], grads[k], fraction) for k in masks}

    jm, jp, jg = (jax.device_put(t) for t in (masks, params, grads))
    t0 = time.perf_counter()
    out = jax.block_until_ready(jax_update(jm, jp, jg))
    print(f"  jax warm-up (compile + run) {time.perf_counter() - t0:.1f} s", flush=True)
    ref = numpy_update()
    for k in masks:  # same rule: identical masks (random float scores have no ties)
        if not np.array_equal(np.asarray(out[k]), ref[k]):
            res.note(f"mask_update: JAX and NumPy masks differ on {k} "
                     f"({int(np.sum(np.asarray(out[k]) != ref[k]))} entries)")
    times = interleaved_times({
        "jax": lambda: jax.block_until_ready(jax_update(jm, jp, jg)),
        "numpy": numpy_update,
    }, repeats)
    t_jax, t_np = median(times["jax"]), median(times["numpy"])
    res.add("mask_update/jax", t_jax * 1e3, "ms", t_jax / t_np)
    res.add("mask_update/numpy_argpartition", t_np * 1e3, "ms", 1.0)
    print(f"  jax / numpy = {t_jax / t_np:.3f}  target <= 1.0: {verdict(t_jax <= t_np)}",
          flush=True)


# ------------------------------------------------------------------------------------------------
# 3. Sweep throughput: 12 sparsities x 3 seeds, vmapped vs one after another (sweep_batching.py).


def bench_sweep(res: Results, args) -> None:
    """The library's sweep group (``sweeps.run_group``) of 36 RigL runs three ways: vmapped,
    sequential with one compiled epoch, and sequential compiling per run (the path before);
    ``benchmarks/sweep_batching.py`` (``--quick``: 2 sparsities x 2 seeds, one epoch)."""
    import sweep_batching

    fig = sweep_batching.measure(args.quick, args.data_root)
    n, steps, base = fig["runs"], fig["steps_per_run"], fig["seconds"]["sequential"]
    for name, t in fig["seconds"].items():
        res.add(f"sweep/{name}_{n}", t, "s", t / base,
                f"{n * steps / t:.0f} run-steps/s, compile and evaluation included")
    res.add("sweep/sequential_vs_compiling_per_run", fig["sequential_vs_compiling_per_run"], "x",
            fig["sequential_vs_compiling_per_run"])
    res.add("sweep/sequential_vs_vmap", fig["sequential_vs_vmap"], "x", fig["sequential_vs_vmap"])
    if not fig["same_layer_sparsity"]:
        res.note("sweep: the batchings ended with different layer sparsities")
    print(f"  targets (36 runs): >= 3x the per-run compiling path: "
          f"{verdict(fig['sequential_vs_compiling_per_run'] >= 3.0)}, no slower than vmapped: "
          f"{verdict(fig['sequential_vs_vmap'] >= 1.0)}", flush=True)


# ------------------------------------------------------------------------------------------------
# 4. Large graphs and 5. PyG: full-batch GCN steps, each in its own process.


def gcn_problem(graph_name: str, num_edges: int = 0, data_root=None):
    """The full-batch GCN problem shared by our step and PyG's.

    Returns:
      dict: senders, receivers (int32, self loops included, duplicates removed), x [N, F],
      labels [N], train_idx, hidden, classes, description.
    """
    import sparsegnn_jax as sg

    rng = np.random.default_rng(0)
    if graph_name == "cora":
        ds = sg.data.load("cora", root=data_root)
        g = sg.graphs.from_edges(ds.senders, ds.receivers, ds.num_nodes)
        x, labels, train_idx = ds.features, ds.labels, np.asarray(ds.split.train)
        hidden, classes = 16, int(ds.num_classes)
    elif graph_name == "email":
        ds = sg.data.load("email-eu-temporal", root=data_root)
        split = sg.data.temporal_link_split(ds)
        g = sg.graphs.from_edges(split.graph_senders, split.graph_receivers, split.num_nodes)
        n = split.num_nodes
        x = rng.normal(size=(n, 256)).astype(np.float32)
        labels = rng.integers(0, LARGE_CLASSES, n).astype(np.int32)
        train_idx, hidden, classes = np.arange(n), 256, LARGE_CLASSES
    elif graph_name == "synthetic":
        n = LARGE_NODES
        s = rng.integers(0, n, num_edges, dtype=np.int64)
        r = rng.integers(0, n, num_edges, dtype=np.int64)
        # Directed random edges plus one self loop per node (GCN's A + I).
        g = sg.graphs.from_edges(s, r, n, symmetric=False, self_loops=True)
        del s, r
        x = rng.normal(size=(n, LARGE_HIDDEN)).astype(np.float32)
        labels = rng.integers(0, LARGE_CLASSES, n).astype(np.int32)
        train_idx, hidden, classes = np.arange(n), LARGE_HIDDEN, LARGE_CLASSES
    else:
        raise ValueError(f"unknown graph {graph_name!r}")
    senders, receivers = np.asarray(g.senders), np.asarray(g.receivers)
    return dict(senders=senders, receivers=receivers, x=np.asarray(x, np.float32),
                labels=np.asarray(labels, np.int32), train_idx=np.asarray(train_idx, np.int32),
                hidden=hidden, classes=classes, num_nodes=int(x.shape[0]))


def worker_ours(prob: dict, steps: int) -> dict:
    """Our full-batch step: ``make_node_epoch`` with a 2-layer GCN and Adam, jitted."""
    import jax
    import jax.numpy as jnp
    import jraph
    import optax
    from flax import nnx

    import sparsegnn_jax as sg

    n = prob["num_nodes"]
    graph = jraph.GraphsTuple(
        nodes=jnp.asarray(prob["x"]), edges=None, senders=jnp.asarray(prob["senders"]),
        receivers=jnp.asarray(prob["receivers"]), n_node=jnp.asarray([n]),
        n_edge=jnp.asarray([prob["senders"].size]), globals=None)
    labels, idx = jnp.asarray(prob["labels"]), jnp.asarray(prob["train_idx"])
    inputs = sg.train.NodeInputs(graph, labels, idx)
    model = sg.models.build("gcn", prob["x"].shape[1], prob["hidden"], prob["classes"],
                            num_layers=2, rngs=nnx.Rngs(0))
    bound, params = sg.train.split_model(model)
    tx = optax.adam(0.01)
    step = jax.jit(sg.train.make_node_epoch(bound, tx, None), donate_argnums=0)
    state = sg.train.init_state(params, tx, jax.random.key(0))
    del prob
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    state, loss = jax.block_until_ready(step(state, inputs))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, loss = jax.block_until_ready(step(state, inputs))
        times.append(time.perf_counter() - t0)
    return dict(step_s=median(times), compile_s=compile_s, loss=float(loss),
                rss_setup_mb=rss_before, peak_rss_mb=peak_rss_mb(),
                num_edges=int(graph.senders.shape[0]))


def worker_pyg(prob: dict, steps: int, threads: int = TORCH_THREADS) -> dict:
    """PyG's full-batch step: 2 x ``GCNConv`` (ReLU between), cross-entropy, ``torch.optim.Adam``."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import GCNConv

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class GCN(torch.nn.Module):
        def __init__(self, f, h, c):
            super().__init__()
            # The edge list already holds the self loops (the same edges as ours).
            self.conv1 = GCNConv(f, h, add_self_loops=False)
            self.conv2 = GCNConv(h, c, add_self_loops=False)

        def forward(self, x, edge_index):
            return self.conv2(F.relu(self.conv1(x, edge_index)), edge_index)

    x = torch.from_numpy(prob["x"])
    edge_index = torch.from_numpy(np.stack([prob["senders"], prob["receivers"]]).astype(np.int64))
    y = torch.from_numpy(prob["labels"].astype(np.int64))
    idx = torch.from_numpy(prob["train_idx"].astype(np.int64))
    model = GCN(x.shape[1], prob["hidden"], prob["classes"])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    del prob
    rss_before = peak_rss_mb()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, edge_index)[idx], y[idx])
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    return dict(step_s=median(times), compile_s=warm, loss=float(loss.detach()),
                rss_setup_mb=rss_before, peak_rss_mb=peak_rss_mb(),
                num_edges=int(edge_index.shape[1]))


def worker_main(args) -> None:
    """``--worker ours|pyg --graph NAME [--edges E]``: prints one JSON line with the figures."""
    if args.worker in ("link_ours", "link_loop"):
        if args.threads == 1:
            # Set before JAX starts: XLA:CPU on one thread, as the authors' loop is timed.
            os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
        out = worker_link_loop(args.steps, with_torch=args.worker == "link_loop")
        print("RESULT " + json.dumps(out), flush=True)
        return
    if args.worker == "pyg":
        # Our graph construction runs in this process too; keep JAX off torch's two threads.
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    prob = gcn_problem(args.graph, args.edges, args.data_root)
    if args.worker == "ours":
        out = worker_ours(prob, args.steps)
    else:
        out = worker_pyg(prob, args.steps, args.threads)
    print("RESULT " + json.dumps(out), flush=True)


def run_worker(kind: str, graph: str, edges: int, steps: int, args, python=None,
               timeout=3600, threads: int = TORCH_THREADS) -> dict:
    """Runs a worker in a fresh process; returns its figures or ``{"error": ...}``."""
    cmd = [python or sys.executable, os.path.abspath(__file__), "--worker", kind, "--graph", graph,
           "--edges", str(edges), "--steps", str(steps), "--threads", str(threads)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            out["wall_s"] = time.perf_counter() - t0
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit code {proc.returncode}: {' | '.join(tail)}"}


def bench_large(res: Results, args) -> dict:
    sizes = (1_000_000, 2_000_000) if args.quick else (1_000_000, 2_000_000, 5_000_000, 10_000_000)
    steps = 2 if args.quick else 5
    print(f"  random graphs, {LARGE_NODES:,} nodes, 64 input features, GCN 64-{LARGE_HIDDEN}-"
          f"{LARGE_CLASSES}, Adam, full batch; {steps} timed steps per size, one process each",
          flush=True)
    out = {}
    for e in sizes:
        r = run_worker("ours", "synthetic", e, steps, args)
        if "error" in r:
            res.note(f"large graph with {e:,} edges failed: {r['error']}")
            continue
        out[e] = r
        tag = f"{e // 1_000_000}M"
        res.add(f"large/{tag}_edges/step", r["step_s"] * 1e3, "ms/step", None,
                f"{r['num_edges']:,} message edges incl. self loops; compile+first step "
                f"{r['compile_s']:.1f} s")
        res.add(f"large/{tag}_edges/peak_rss", r["peak_rss_mb"] / 1024, "GiB", None,
                f"after setup {r['rss_setup_mb'] / 1024:.2f} GiB")
    if len(out) >= 2:
        es = sorted(out)
        for a, b in zip(es, es[1:]):
            slope = np.log(out[b]["step_s"] / out[a]["step_s"]) / np.log(b / a)
            res.add(f"large/slope_{a // 1_000_000}M_to_{b // 1_000_000}M", slope,
                    "d log t / d log E", None)
        total = np.log(out[es[-1]]["step_s"] / out[es[0]]["step_s"]) / np.log(es[-1] / es[0])
        # Noise allowance: a log-log slope up to 1.1 still counts as linear.
        print(f"  cost growth in edges (log-log slope {es[0]:,} -> {es[-1]:,}) = {total:.2f}; "
              f"at most linear: {verdict(total <= 1.1)}", flush=True)
        res.add("large/slope_overall", total, "d log t / d log E", None)
    if 10_000_000 in out:
        fits = out[10_000_000]["peak_rss_mb"] < 24 * 1024
        print(f"  10M edges peak RSS {out[10_000_000]['peak_rss_mb'] / 1024:.2f} GiB; fits 24 GB: "
              f"{verdict(fits)}", flush=True)
    return out


def torch_status(python: str, modules: str = "torch, torch_geometric") -> tuple[bool, str]:
    """Whether ``python`` can import ``modules`` (and their versions, or why not)."""
    code = (f"import {modules}; "
            f"print(*(m.__version__ for m in ({modules},)))")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"exit code {proc.returncode}"
    return True, proc.stdout.strip()


def bench_pyg(res: Results, args, large: dict) -> None:
    python = args.torch_python or sys.executable
    ok, info = torch_status(python)
    if not ok:
        msg = f"PyG comparison skipped: torch / torch_geometric do not import ({info})"
        print(f"  {msg}", flush=True)
        res.notes.append(msg)
        return
    torch_v, pyg_v = info.split()
    print(f"  torch {torch_v}, torch_geometric {pyg_v} ({python}), {TORCH_THREADS} threads",
          flush=True)
    res.notes.append(f"PyG comparison: torch {torch_v}, torch_geometric {pyg_v}")
    graphs = [("cora", 0, 20), ("email", 0, 20)]
    if args.quick:
        print("  --quick: the 1M-node / 10M-edge graph is left out of the PyG comparison",
              flush=True)
    else:
        graphs.append(("synthetic", 10_000_000, 5))
    for graph, edges, steps in graphs:
        if graph == "synthetic" and edges in large:
            ours = large[edges]
        else:
            ours = run_worker("ours", graph, edges, steps, args)
        theirs = run_worker("pyg", graph, edges, steps, args, python=python)
        # torch's OpenMP threads spin-wait; on a loaded 2-core machine 2 threads can be much
        # slower than 1, so the single-thread step is measured too (reported, not the target).
        one = run_worker("pyg", graph, edges, steps, args, python=python, threads=1)
        if "error" in ours or "error" in theirs:
            res.note(f"pyg/{graph}: ours {ours.get('error', 'ok')}; "
                     f"PyG {theirs.get('error', 'ok')}")
            continue
        tag = {"cora": "cora", "email": "email_eu_temporal", "synthetic": "synthetic_1M_10M"}[graph]
        ratio = ours["step_s"] / theirs["step_s"]
        res.add(f"pyg/{tag}/ours", ours["step_s"] * 1e3, "ms/step", ratio,
                f"peak RSS {ours['peak_rss_mb'] / 1024:.2f} GiB")
        res.add(f"pyg/{tag}/pyg", theirs["step_s"] * 1e3, "ms/step", 1.0,
                f"{TORCH_THREADS} threads, peak RSS {theirs['peak_rss_mb'] / 1024:.2f} GiB")
        if "error" not in one:
            res.add(f"pyg/{tag}/pyg_1thread", one["step_s"] * 1e3, "ms/step",
                    ours["step_s"] / one["step_s"], "1 thread; ratio = ours / this")
        print(f"  {tag}: ours / PyG = {ratio:.3f}  target <= 1.0: {verdict(ratio <= 1.0)}",
              flush=True)


# ------------------------------------------------------------------------------------------------
# 6. The link epoch against the paper authors' PyTorch loop, each in its own process.

LOOP_NODES = 50_000
LOOP_PAIRS = 400_000          # pairs per epoch, half positive (the authors' epoch)
LOOP_BATCH = 1024             # pairs per step on both sides
LOOP_SPARSITY = 0.95
LOOP_DT = 100


def link_loop_data(seed: int = 0) -> dict:
    """Synthetic data shared by both sides.

    Returns:
      dict: ``emb`` [N, 8] node embeddings, ``pos`` [P/2, 2] distinct training edges, ``neg``
      [P/2, 2] random non-edges (the authors' fixed negatives; our epoch draws its own).
    """
    rng = np.random.default_rng(seed)
    half = LOOP_PAIRS // 2
    codes = np.unique(rng.integers(0, LOOP_NODES * LOOP_NODES, 2 * half, dtype=np.int64))
    codes = codes[codes // LOOP_NODES != codes % LOOP_NODES]
    pos = np.stack([codes // LOOP_NODES, codes % LOOP_NODES], 1)[rng.permutation(codes.size)[:half]]
    neg = rng.integers(0, LOOP_NODES, (half, 2))
    emb = rng.normal(size=(LOOP_NODES, 8)).astype(np.float32)
    return dict(emb=emb, pos=pos.astype(np.int32), neg=neg.astype(np.int32))


def link_loop_ours() -> dict:
    """Our epochs: ``train.make_link_epoch`` (shuffle, negative sampling, RigL steps), jitted.

    Two batchings of the same 400k pairs: 512 positives + 512 negatives per step (390 steps,
    the authors' steps and pairs) and the library's default 1024 + 1024 (195 steps).

    Returns:
      ``{name: (epoch, steps)}``: ``epoch()`` trains one (compiled) epoch and returns seconds.
    """
    import jax
    import jax.numpy as jnp
    import optax

    import sparsegnn_jax as sg

    d = link_loop_data()
    graph = sg.graphs.from_edges(d["pos"][:, 0], d["pos"][:, 1], LOOP_NODES,
                                 node_features=d["emb"])
    inputs = sg.train.LinkInputs(graph, jnp.asarray(d["pos"]),
                                 jnp.asarray(sg.data.edge_keys(d["pos"], LOOP_NODES)),
                                 jnp.arange(LOOP_NODES, dtype=jnp.int32))
    bound, params = sg.train.split_model(link_models("mlp", LOOP_NODES))
    tx = sg.rigl(optax.adam(1e-3), sparsity=LOOP_SPARSITY, update_every=LOOP_DT)
    out = {}
    for name, batch in (("ours_epoch_512x2", LOOP_BATCH // 2),
                        ("ours_epoch_1024x2", LOOP_BATCH)):
        fn = jax.jit(sg.train.make_link_epoch(bound, tx, batch, LOOP_NODES))
        box = [sg.train.init_state(params, tx, jax.random.key(0))]

        def epoch(fn=fn, box=box):
            t0 = time.perf_counter()
            box[0], loss = jax.block_until_ready(fn(box[0], inputs))
            return time.perf_counter() - t0

        out[name] = (epoch, int(d["pos"].shape[0] // batch))
    # The epoch's data work alone (shuffle, negative sampling, dropout keys): the share of the
    # 512 + 512 epoch that is not the model, Adam and RigL.
    draw = jax.jit(lambda key: sg.train.link_epoch_batches(key, inputs, LOOP_BATCH // 2,
                                                           LOOP_NODES))
    keys = iter(jax.random.split(jax.random.key(1), 10_000))

    def batches_only():
        t0 = time.perf_counter()
        jax.block_until_ready(draw(next(keys)))
        return time.perf_counter() - t0

    out["ours_batches_only_512x2"] = (batches_only, int(d["pos"].shape[0] // (LOOP_BATCH // 2)))
    return out


def link_loop_torch() -> dict:
    """The authors' loop on their input format: [P, 16] rows (two 8-d embeddings) and labels.

    ``nn.Sequential(Linear(16, 128), ReLU, Linear(128, 1), Sigmoid)``, ``BCELoss``, Adam, batch
    1024; the RigL masks (95 %) applied to the gradients and the weights at every step, as a
    masked torch loop does (no drop-and-grow inside one epoch: the authors' dT is 500 steps).
    ``authors_compute`` loops over batches sliced before its clock starts;
    ``authors_end_to_end`` is their epoch: a ``DataLoader(TensorDataset(X, y), batch_size=1024,
    shuffle=True)``.

    Returns:
      ``{name: (epoch, steps)}`` as :func:`link_loop_ours`.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    d = link_loop_data()
    emb = torch.from_numpy(d["emb"])
    pairs = torch.from_numpy(np.concatenate([d["pos"], d["neg"]]).astype(np.int64))
    x = torch.cat([emb[pairs[:, 0]], emb[pairs[:, 1]]], dim=1)
    y = torch.cat([torch.ones(d["pos"].shape[0]), torch.zeros(d["neg"].shape[0])])
    model = torch.nn.Sequential(torch.nn.Linear(16, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 1), torch.nn.Sigmoid())
    weights = [model[0].weight, model[2].weight]
    masks = [(torch.rand_like(w) >= LOOP_SPARSITY).float() for w in weights]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCELoss()
    with torch.no_grad():
        for w, m in zip(weights, masks):
            w.mul_(m)

    def train_batch(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb).squeeze(1), yb)
        loss.backward()
        for w, m in zip(weights, masks):
            w.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.mul_(m)
        return loss

    def compute_epoch():
        batches = [(x[i], y[i]) for i in torch.randperm(x.shape[0]).split(LOOP_BATCH)]
        t0 = time.perf_counter()
        for xb, yb in batches:
            train_batch(xb, yb)
        return time.perf_counter() - t0

    loader = DataLoader(TensorDataset(x, y), batch_size=LOOP_BATCH, shuffle=True)

    def end_to_end_epoch():
        t0 = time.perf_counter()
        for xb, yb in loader:
            train_batch(xb, yb)
        return time.perf_counter() - t0

    steps = -(-x.shape[0] // LOOP_BATCH)
    return {"authors_compute": (compute_epoch, steps),
            "authors_end_to_end": (end_to_end_epoch, steps)}


def worker_link_loop(repeats: int, with_torch: bool) -> dict:
    """Times every epoch of :func:`link_loop_ours` (and :func:`link_loop_torch`) in turns.

    One process, one thread for both (XLA flags set by ``worker_main``): each round runs every
    variant once, so load from other processes hits all alike. Medians after a warm-up epoch.
    """
    fns = link_loop_ours()
    if with_torch:
        import torch

        torch.set_num_threads(1)
        fns.update(link_loop_torch())
    for epoch, _ in fns.values():
        epoch()  # compiles (ours), warms up (theirs)
    # Each epoch's own clock (the compute-only loop's excludes its batch slicing).
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (epoch, _) in fns.items():
            times[name].append(epoch())
    out = {k: median(v) for k, v in times.items()}
    for name, (epoch, steps) in fns.items():
        out[f"{name}_steps"] = steps
    return out


def bench_link_loop(res: Results, args) -> None:
    """Our link epoch against the authors' loop, in one process taking turns epoch by epoch."""
    torch_python = args.torch_python or sys.executable
    ok, info = torch_status(torch_python, "torch")
    repeats = 1 if args.quick else 5
    print(f"  paper MLP 16-128-1, RigL {LOOP_SPARSITY:.0%}, {LOOP_PAIRS:,} pairs per epoch, "
          f"{LOOP_NODES:,} nodes, 1 thread; {repeats} epochs per variant in turns", flush=True)
    if not ok:
        msg = f"authors' loop skipped: torch does not import ({info})"
        print(f"  {msg}", flush=True)
        res.notes.append(msg)
    r = run_worker("link_loop" if ok else "link_ours", "synthetic", 0, repeats, args,
                   python=torch_python if ok else None, threads=1)
    if "error" in r:
        res.note(f"link loop: {r['error']}")
        return
    if not ok:
        for k in ("ours_epoch_512x2", "ours_epoch_1024x2", "ours_batches_only_512x2"):
            res.add(f"link_loop/{k}", r[k] * 1e3, "ms/epoch", None, f"{r[k + '_steps']} steps")
        return
    compute, e2e = r["authors_compute"], r["authors_end_to_end"]
    res.add("link_loop/authors_compute_1thread", compute * 1e3, "ms/epoch", 1.0,
            f"{r['authors_compute_steps']} steps of {LOOP_BATCH}, torch {info}")
    res.add("link_loop/authors_end_to_end_1thread", e2e * 1e3, "ms/epoch", e2e / compute,
            "DataLoader(TensorDataset); ratio = this / compute-only")
    for k in ("ours_epoch_512x2", "ours_epoch_1024x2"):
        res.add(f"link_loop/{k}", r[k] * 1e3, "ms/epoch", r[k] / compute,
                f"{r[k + '_steps']} steps; ratio = ours / compute-only; "
                f"{e2e / r[k]:.1f}x faster than end-to-end")
    res.add("link_loop/ours_batches_only_512x2", r["ours_batches_only_512x2"] * 1e3, "ms/epoch",
            r["ours_batches_only_512x2"] / r["ours_epoch_512x2"],
            "shuffle + negative sampling alone; ratio = share of our 512x2 epoch")
    ratio, speedup = r["ours_epoch_512x2"] / compute, e2e / r["ours_epoch_512x2"]
    print(f"  ours / authors' compute-only = {ratio:.2f}  target <= 0.5: {verdict(ratio <= 0.5)}; "
          f"authors' end-to-end / ours = {speedup:.1f}x  target >= 10: {verdict(speedup >= 10)}",
          flush=True)


# ------------------------------------------------------------------------------------------------
# Driver.


def versions() -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a subset that finishes in about 3 minutes on 2 cores")
    p.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="dataset folder (default: $SPARSEGNN_DATA); synthetic data is used when "
                        "email-eu-temporal is missing")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=None,
                   help="run only these sections")
    p.add_argument("--torch-python", metavar="PYTHON", default=None,
                   help="interpreter with torch + torch_geometric for the PyG comparison and the authors' loop "
                        "(default: this one)")
    # Internal: one measurement in a fresh process.
    p.add_argument("--worker", choices=("ours", "pyg", "link_ours", "link_loop"),
                   help=argparse.SUPPRESS)
    p.add_argument("--graph", default="synthetic", help=argparse.SUPPRESS)
    p.add_argument("--edges", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=TORCH_THREADS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.data_root is None:
        args.data_root = os.environ.get("SPARSEGNN_DATA")
    if args.worker:
        worker_main(args)
        return 0
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    start = time.perf_counter()
    res = Results()
    info = machine_info()
    print(f"sparsegnn_jax benchmarks{' (--quick)' if args.quick else ''}: {info['cpu']}, "
          f"{info['cores']} cores, {info['ram_gb']:.1f} GB RAM; {versions()}", flush=True)
    sections = args.only or list(SECTIONS)
    large: dict = {}
    for section in SECTIONS:
        if section not in sections:
            continue
        print(f"\n== {section}", flush=True)
        t0 = time.perf_counter()
        if section == "overhead":
            bench_overhead(res, args)
        elif section == "mask_update":
            bench_mask_update(res, args)
        elif section == "sweep":
            bench_sweep(res, args)
        elif section == "large":
            large = bench_large(res, args)
        elif section == "pyg":
            bench_pyg(res, args, large)
        elif section == "link_loop":
            bench_link_loop(res, args)
        print(f"  ({section}: {time.perf_counter() - t0:.0f} s)", flush=True)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res.figures, f, indent=1, sort_keys=True)
        print(f"wrote {len(res.figures)} figures to {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
