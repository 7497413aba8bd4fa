"""Parts of one link-prediction GCN step on a 1.1M-node graph: encode, gradient, optimizer.

    python benchmarks/link_step_parts.py --message-edges=3100000[,...]

The model is what ``experiments/link_pred.py --model=gcn --method=rigl`` builds with its
defaults (a 64-d id table with a cold-start row, two GCN layers of 64, hadamard MLP decoder,
RigL 90 %) on a random symmetric graph with self loops; one step scores 1024 positive and 1024
negative pairs. Each part is jitted on its own and timed as the median of 3 calls after a
compiling one, as wall and as process CPU seconds (CPU time moves far less than wall time
when other jobs share the machine). Prints one JSON line per graph size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsegnn_jax as sg

NODES = 1_100_000
HIDDEN = 64
PAIRS = 1024


def wall_and_cpu(fn, *args, repeats: int = 3) -> tuple[float, float]:
    """Median wall and process CPU seconds of ``fn(*args)`` after one compiling call."""
    jax.block_until_ready(fn(*args))
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return round(float(np.median(wall)), 3), round(float(np.median(cpu)), 3)


def step_parts(message_edges: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # Symmetric edges plus one self loop per node: (E - N) / 2 random pairs give E messages.
    half = max(1, (message_edges - NODES) // 2)
    graph = sg.graphs.from_edges(rng.integers(0, NODES, half), rng.integers(0, NODES, half),
                                 NODES, node_features=np.ones((NODES, 1), np.float32),
                                 symmetric=True, self_loops=True)
    rngs = nnx.Rngs(seed)
    encoder = sg.models.build("gcn", HIDDEN, HIDDEN, HIDDEN, num_layers=2, num_nodes=NODES,
                              cold_start=True, rngs=rngs)
    model = sg.models.LinkPredictor(encoder, sg.models.MLPDecoder(HIDDEN, HIDDEN,
                                                                  mode="hadamard", rngs=rngs))
    bound, params = sg.train.split_model(model)
    tx = sg.rigl(optax.adam(1e-3), sparsity=0.9, update_every=100)
    state = sg.train.init_state(params, tx, jax.random.key(seed))
    pairs = jnp.asarray(rng.integers(0, NODES, (2 * PAIRS, 2)), jnp.int32)
    labels = jnp.concatenate([jnp.ones(PAIRS), jnp.zeros(PAIRS)])
    key = jax.random.key(seed + 1)

    def loss(p):
        return sg.train.link_loss(bound, p, graph, pairs, labels, key)

    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params, value=jnp.zeros(()))
        return optax.apply_updates(params, updates), opt_state

    loss_and_grad = jax.jit(jax.value_and_grad(loss))
    _, grads = loss_and_grad(state.params)
    return {
        "message_edges": int(graph.senders.shape[0]),
        "whole_step": wall_and_cpu(jax.jit(lambda s: sg.train.optimizer_step(s, tx, loss, s.key)),
                                   state),
        "loss_and_grad": wall_and_cpu(loss_and_grad, state.params),
        "encode_forward": wall_and_cpu(jax.jit(lambda p: bound.module(p).encode(graph)),
                                       state.params),
        "optimizer_update": wall_and_cpu(jax.jit(update), state.params, state.opt_state, grads),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--message-edges", default="3100000", help="comma-separated sizes")
    args = p.parse_args(argv)
    for edges in (int(e) for e in args.message_edges.split(",")):
        print(json.dumps(step_parts(edges)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
