"""Helpers shared by test modules in several folders (imported as ``helpers``; tests/ is on the
path because tests/conftest.py lives there).

Test modules never import each other: what two of them need lives here or, as a fixture, in
conftest.py.
"""
from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparsegnn_jax import graphs, models

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds; a hung subprocess fails its test instead of hanging CI


# ----------------------------------------------------------------------------------------------
# The experiment scripts, run as a user runs them.

SCRIPTS = {"node": "node_class.py", "link": "link_pred.py"}


def cli_main(task: str, argv: list[str], capsys) -> tuple:
    """Runs ``cli.main`` in-process; returns (exit code, stdout, stderr). argparse errors
    exit too."""
    from sparsegnn_jax import cli

    try:
        code = cli.main(task, argv)
    except SystemExit as stop:  # argparse rejects the flag before main's own handling
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def read_csv_rows(path) -> list[dict]:
    """The rows of a results CSV, every cell as text."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_csv_rows_agree(rows, expected, atol_of=lambda column: None) -> None:
    """Same number of rows and columns; every cell but the wall time equal as text or, when a
    number, within ``atol_of(column)`` when that gives one, else within rel 1e-5 (abs 1e-7)."""
    assert len(rows) == len(expected)
    for row, ref in zip(rows, expected):
        assert row.keys() == ref.keys()
        for key in ref.keys() - {"wall_time_s"}:
            try:
                want = float(ref[key])
            except ValueError:
                assert row[key] == ref[key], key
                continue
            atol = atol_of(key)
            close = (pytest.approx(want, abs=atol) if atol is not None
                     else pytest.approx(want, rel=1e-5, abs=1e-7))
            assert float(row[key]) == close, (key, row, ref)


def script_command(task: str, flags: list[str], out) -> list[str]:
    """The command line of ``experiments/<task script>`` with ``flags``, writing to ``out``."""
    return [sys.executable, str(REPO / "experiments" / SCRIPTS[task]), *flags, f"--out={out}",
            "--no-progress"]


def run_script(task: str, flags: list[str], out, env) -> subprocess.CompletedProcess:
    """Runs an experiment script to completion in ``env``; returns the finished process."""
    return subprocess.run(script_command(task, flags, out), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def sweep_script():
    """``experiments/sweep.py`` imported as a module."""
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import sweep
    finally:
        sys.path.pop(0)
    return sweep


def damage_checkpoint(step_folder, what: str) -> None:
    """Damages a committed checkpoint step as a disk or a careless copy would.

    ``what``: ``"arrays"`` (garbage in the array data files), ``"json"`` (the description is
    not JSON) or anything else (valid JSON without the description).
    """
    if what == "arrays":
        for f in (step_folder / "state").rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(b"garbage")
    elif what == "json":
        (step_folder / "meta" / "metadata").write_text("{not json")
    else:
        (step_folder / "meta" / "metadata").write_text("{}")


# ----------------------------------------------------------------------------------------------
# Small graphs and encoders for the model tests.

N, F = 12, 5
GNN_KINDS = ("gcn", "sage", "gat", "gin")


def random_graph(seed=0, n=N, m=30, features=F, symmetric=False, self_loops=False,
                 weights=False):
    """A random directed graph of ``n`` nodes whose last node is isolated."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n - 1, size=m)  # node n-1 stays isolated
    r = rng.integers(0, n - 1, size=m)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=m).astype(np.float32) if weights else None
    return graphs.from_edges(s, r, n, node_features=x, symmetric=symmetric,
                             self_loops=self_loops, edge_weights=w)


def ring_of_communities(communities=8, size=50, p_in=0.2, p_ring=0.01, seed=0):
    """``(senders, receivers, num_nodes)`` of communities of ``size`` nodes, dense inside and
    joined in a ring, each undirected edge once (u < v) and sorted by node id - the order
    networkx and SciPy list a graph's edges in. Node ``i`` is in community ``i // size``."""
    rng = np.random.default_rng(seed)
    n = communities * size
    block = np.arange(n) // size
    iu, ju = np.triu_indices(n, k=1)
    ring = (block[ju] - block[iu]) % communities == 1
    keep = rng.random(iu.size) < np.where(block[iu] == block[ju], p_in,
                                          np.where(ring, p_ring, 0.0))
    return iu[keep].astype(np.int32), ju[keep].astype(np.int32), n


def random_keep(num_edges, fraction=0.5, seed=3):
    """A bool [num_edges] mask dropping about ``fraction`` of the edges at random."""
    return np.random.default_rng(seed).random(num_edges) >= fraction


def build_encoder(kind, **opts):
    """A 2-layer ``kind`` encoder F -> 8 -> 3 (GAT with 2 heads)."""
    if kind == "gat":
        opts.setdefault("heads", 2)
    return models.build(kind, F, 8, 3, num_layers=2, rngs=nnx.Rngs(0), **opts)


# ----------------------------------------------------------------------------------------------
# A 3-layer dict model for the sparsity-method tests.

SHAPES = {"l0": (12, 32), "l1": (32, 24), "l2": (24, 3)}

# Every registered method with hyperparameters that change its masks within 4 steps.
METHOD_CONFIGS = {
    "dense": {},
    "static": dict(sparsity=0.8),
    "one_shot": dict(sparsity=0.8, prune_step=2),
    "gmp": dict(sparsity=0.8, begin_step=1, end_step=3, every=1),
    "admm": dict(sparsity=0.8, rho=0.1, dense_steps=1, penalty_steps=2, update_every=1),
    "slr": dict(sparsity=0.8, rho=0.1, dense_steps=1, penalty_steps=2, update_every=1),
    "set": dict(sparsity=0.8, update_every=2, drop_fraction=0.4),
    "rigl": dict(sparsity=0.8, update_every=2, drop_fraction=0.4),
    "snip": dict(sparsity=0.8),
}


def make_params(seed=0):
    """Kernels (scaled by 1/sqrt(fan_in)) and small biases of the :data:`SHAPES` model."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(SHAPES))
    return {name: {"kernel": jax.random.normal(keys[2 * i], shape) / np.sqrt(shape[0]),
                   "bias": 0.1 * jax.random.normal(keys[2 * i + 1], shape[-1:])}
            for i, (name, shape) in enumerate(SHAPES.items())}


def make_batch(seed=1):
    """A regression batch (x [64, 12], y [64, 3]) drawn from ``seed``."""
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, (64, 12)), jax.random.normal(ky, (64, 3))


BATCH = (jax.random.normal(jax.random.PRNGKey(1), (64, 12)),
         jax.random.normal(jax.random.PRNGKey(2), (64, 3)))


def loss_fn(params, batch=BATCH, activation=jax.nn.tanh):
    """Mean squared error of the MLP; the default tanh has no dead units, so inactive gradients
    are distinct."""
    x, y = batch
    h = x
    for i, name in enumerate(SHAPES):
        h = h @ params[name]["kernel"] + params[name]["bias"]
        if i < len(SHAPES) - 1:
            h = activation(h)
    return jnp.mean((h - y) ** 2)


def train(tx, params, steps, jit=True):
    """``steps`` updates of ``tx`` on :func:`loss_fn`; returns (params after each step, state)."""
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    history = []
    for _ in range(steps):
        value, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = update(grads, state, params, value=value)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history, state


def assert_exactly_masked(params, masks):
    """Every parameter is exactly 0 where its mask is False."""
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0)


def assert_counts(masks, counts):
    """Every mask holds exactly its keep count of True entries."""
    for m, c in zip(jax.tree.leaves(masks), jax.tree.leaves(counts)):
        assert int(np.asarray(m).sum()) == int(c)


# ----------------------------------------------------------------------------------------------
# Edge-case models: a layer smaller than 1 / density, and two plain layers.


def tiny_layer_params(key=0):
    """Two ordinary layers and a 2x2 "tiny" kernel that a high sparsity would round to zero."""
    k = jax.random.split(jax.random.key(key), 3)
    return {"l0": {"kernel": jax.random.normal(k[0], (6, 16)), "bias": jnp.zeros(16)},
            "l1": {"kernel": jax.random.normal(k[1], (16, 3)), "bias": jnp.zeros(3)},
            "tiny": {"kernel": jax.random.normal(k[2], (2, 2))}}


def pseudo_grads(params, step):
    """Deterministic pseudo-gradients, different at every step."""
    key = jax.random.fold_in(jax.random.key(42), step)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) + 0.1 * x
                                        for k, x in zip(keys, leaves)])


def train_on_pseudo_grads(tx, params, steps):
    """``steps`` jitted updates of ``tx`` on :func:`pseudo_grads`; returns (params, state)."""
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(steps):
        updates, state = update(pseudo_grads(params, t), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def two_layers():
    """A kernel-and-bias layer and a kernel-only layer, all ones."""
    return {"a": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(4)},
            "b": {"kernel": jnp.ones((4, 2))}}
