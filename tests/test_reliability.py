"""Reliability: kill-and-resume, determinism, the non-finite guard and edge cases of the API.

The command lines run as subprocesses, exactly as a user runs them. Their compiled programs go
to a JAX compilation cache shared by the test session, so only the first run of a configuration
pays for XLA compilation. A cache file is written without a lock, so no two processes use the
cache at the same time: the run that is killed compiles without it.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparsegnn_jax import checkpoint, cli, config, data, graphs, models, runs, sparsity, tasks, train

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds; a hung run fails the test instead of hanging CI

NODE_EPOCHS = 10
NODE_ARGS = ["--dataset=synthetic-sbm", "--model=gcn", "--method=rigl", "--sparsity=0.9",
             f"--epochs={NODE_EPOCHS}", "--checkpoint-every=1"]
LINK_EPOCHS = 4
LINK_ARGS = ["--dataset=synthetic-temporal", "--model=gcn", "--method=rigl", "--sparsity=0.9",
             f"--epochs={LINK_EPOCHS}", "--checkpoint-every=1"]
SCRIPTS = {"node": "node_class.py", "link": "link_pred.py"}


# ----------------------------------------------------------------------------------------------
# Running the command lines.


def _command(task: str, args: list[str], out) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / SCRIPTS[task]), *args, f"--out={out}",
            "--no-progress"]


def run_cli(task: str, args: list[str], out, env) -> subprocess.CompletedProcess:
    """Runs an experiment command line to completion."""
    return subprocess.run(_command(task, args, out), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def run_ok(task, args, out, env) -> subprocess.CompletedProcess:
    proc = run_cli(task, args, out, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def _uncached(env: dict) -> dict:
    env = dict(env)
    env.pop("JAX_COMPILATION_CACHE_DIR")
    return env


def run_name(task: str, args: list[str]) -> str:
    """The file stem the command line gives this run's JSON and checkpoint folder."""
    parsed = cli.build_parser(task).parse_args(args)
    return cli.run_name(task, cli.config_from_args(task, parsed))


def results(out, task, args) -> dict:
    return json.loads((pathlib.Path(out) / f"{run_name(task, args)}.json").read_text())


def ckpt_dir(out, task, args) -> pathlib.Path:
    return pathlib.Path(out) / f"{run_name(task, args)}.ckpt"


def template_state(task: str, args: list[str]):
    """A freshly initialised TrainState of the run ``args`` describe: the restore target."""
    return _template_state(task, tuple(args))


@functools.lru_cache(maxsize=None)
def _template_state(task: str, args: tuple):
    parsed = cli.build_parser(task).parse_args(list(args))
    cfg = config.resolve(cli.config_from_args(task, parsed))
    problem = tasks.get(task).prepare(cfg)
    _, params = train.split_model(tasks.get(task).build_model(problem, cfg.seed))
    return train.init_state(params, runs.build_optimizer(problem), jax.random.key(cfg.seed))


def _leaf_data(x) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def assert_states_bitwise_equal(a, b):
    """Every leaf (params, masks, optimizer moments, counters, key, step) bit for bit."""
    paths_a = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for path, x, y in zip(paths_a, leaves_a, leaves_b):
        x, y = _leaf_data(x), _leaf_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        # Compare the bytes: NaN == NaN and -0.0 != 0.0, unlike a value comparison.
        assert x.tobytes() == y.tobytes(), f"{path} differs"


def _metrics(record: dict) -> dict:
    """What a results JSON reports about the trained model (not timing or paths)."""
    return {k: record[k] for k in ("final_train_loss", "val", "test", "sparsity",
                                   "layer_sparsity", "flops", "data")}


def kill_and_resume(task, args, tmp, env, seed):
    """Runs ``args`` uninterrupted and, in parallel, a copy SIGKILLed after a random epoch.

    Returns ``(full_out, resumed_out, k, killed_at)``: output folders of the uninterrupted and
    the killed-then-resumed run, the random epoch and the last checkpoint when it was killed.
    """
    epochs = int(next(a for a in args if a.startswith("--epochs=")).split("=")[1])
    k = random.Random(seed).randint(1, epochs - 1)
    full, resumed = tmp / "full", tmp / "resumed"
    full_proc = subprocess.Popen(_command(task, args, full), cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_command(task, args, resumed), cwd=REPO, env=_uncached(env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts = ckpt_dir(resumed, task, args)
    deadline = time.monotonic() + TIMEOUT
    try:
        while victim.poll() is None and time.monotonic() < deadline:
            step = checkpoint.latest_step(ckpts)
            if step is not None and step >= k:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if victim.poll() is None and time.monotonic() >= deadline:
            victim.kill()
        _, victim_err = victim.communicate(timeout=TIMEOUT)
    assert victim.returncode == -signal.SIGKILL, (
        f"the run ended (exit {victim.returncode}) before epoch {k}'s checkpoint was seen: "
        f"{victim_err[-2000:]}")
    killed_at = checkpoint.latest_step(ckpts)
    assert killed_at is not None and k <= killed_at < epochs
    assert not (resumed / f"{run_name(task, args)}.json").exists()
    _, full_err = full_proc.communicate(timeout=TIMEOUT)
    assert full_proc.returncode == 0, full_err[-3000:]
    run_ok(task, args + ["--resume"], resumed, env)
    return full, resumed, k, killed_at


def check_resumed_equals_full(task, args, full, resumed):
    template = template_state(task, args)
    state_full, meta_full = checkpoint.restore(ckpt_dir(full, task, args), template)
    state_resumed, meta_resumed = checkpoint.restore(ckpt_dir(resumed, task, args), template)
    epochs = int(next(a for a in args if a.startswith("--epochs=")).split("=")[1])
    assert meta_full["epoch"] == meta_resumed["epoch"] == epochs
    # The comparison must cover the masks and the optimizer's moments, not just the params.
    kinds = {np.asarray(_leaf_data(x)).dtype.kind for x in jax.tree.leaves(state_full.opt_state)}
    assert "b" in kinds and "f" in kinds
    assert int(state_full.step) > epochs - 1
    assert_states_bitwise_equal(state_full, state_resumed)
    assert _metrics(results(full, task, args)) == _metrics(results(resumed, task, args))


# ----------------------------------------------------------------------------------------------
# Kill and resume, determinism, non-finite loss.


@pytest.fixture(scope="module")
def node_runs(tmp_path_factory, cli_env):
    tmp = tmp_path_factory.mktemp("node_kill")
    return kill_and_resume("node", NODE_ARGS, tmp, cli_env, seed=7)


@pytest.mark.slow
def test_node_run_killed_and_resumed_is_bitwise_equal_to_uninterrupted(node_runs):
    full, resumed, k, killed_at = node_runs
    check_resumed_equals_full("node", NODE_ARGS, full, resumed)


@pytest.mark.slow
def test_link_run_killed_and_resumed_is_bitwise_equal_to_uninterrupted(tmp_path, cli_env):
    full, resumed, k, killed_at = kill_and_resume("link", LINK_ARGS, tmp_path, cli_env, seed=3)
    check_resumed_equals_full("link", LINK_ARGS, full, resumed)


@pytest.mark.slow
def test_two_identical_runs_are_bitwise_equal(node_runs, tmp_path, cli_env):
    full, _, _, _ = node_runs
    again = tmp_path / "again"
    run_ok("node", NODE_ARGS, again, cli_env)
    template = template_state("node", NODE_ARGS)
    first, _ = checkpoint.restore(ckpt_dir(full, "node", NODE_ARGS), template)
    second, _ = checkpoint.restore(ckpt_dir(again, "node", NODE_ARGS), template)
    assert_states_bitwise_equal(first, second)
    assert _metrics(results(full, "node", NODE_ARGS)) == _metrics(
        results(again, "node", NODE_ARGS))


def test_non_finite_loss_stops_with_exit_3_and_keeps_last_good_checkpoint(tmp_path, cli_env):
    # Adam moves every weight by about lr per step whatever the gradient: lr=1e30 makes the
    # activations, hence the loss of the second step, overflow.
    args = NODE_ARGS + ["--lr=1e30"]
    proc = run_cli("node", args, tmp_path, cli_env)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: non-finite training loss")
    assert "at step 2" in lines[-1] and "(method rigl)" in lines[-1]
    ckpts = ckpt_dir(tmp_path, "node", args)
    assert checkpoint.list_steps(ckpts) == [1]
    # Same structure as the normal run: only the learning rate differs.
    state, meta = checkpoint.restore(ckpts, template_state("node", NODE_ARGS))
    assert meta["epoch"] == 1 and math.isfinite(meta["loss"])
    assert int(state.step) == 1
    assert not (tmp_path / f"{run_name('node', args)}.json").exists()


def _state_at(step, params):
    return train.TrainState(params, None, jax.random.key(0), jnp.asarray(step, jnp.int32))


def test_finite_guard_names_step_and_method():
    guard = train.finite_guard("rigl")
    guard(1, _state_at(3, {"w": jnp.ones(2)}), jnp.asarray(0.5))
    guard = train.finite_guard("set")
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(FloatingPointError, match=r"loss .* at step 17 \(method set\)"):
            guard(1, _state_at(17, {"w": jnp.ones(2)}), jnp.asarray(bad))
    with pytest.raises(FloatingPointError, match=r"parameters after step 17 \(method set\)"):
        guard(1, _state_at(17, {"w": jnp.asarray([1.0, jnp.nan])}), jnp.asarray(0.5))


def test_finite_guard_names_the_failing_run_of_a_sweep():
    guard = train.finite_guard("rigl", ["a", "b", "c", "d"])
    params = {"w": jnp.ones((2, 2, 3))}
    guard(1, _state_at(5, params), jnp.ones((2, 2)))
    with pytest.raises(FloatingPointError, match=r"run c\)"):
        guard(1, _state_at(5, params), jnp.asarray([[1.0, 1.0], [jnp.nan, 1.0]]))
    with pytest.raises(FloatingPointError, match=r"parameters .* run b\)"):
        guard(1, _state_at(5, {"w": params["w"].at[0, 1, 2].set(jnp.inf)}), jnp.ones((2, 2)))


# ----------------------------------------------------------------------------------------------
# Edge cases of the API.


def _params(key=0):
    k = jax.random.split(jax.random.key(key), 3)
    return {"l0": {"kernel": jax.random.normal(k[0], (6, 16)), "bias": jnp.zeros(16)},
            "l1": {"kernel": jax.random.normal(k[1], (16, 3)), "bias": jnp.zeros(3)},
            "tiny": {"kernel": jax.random.normal(k[2], (2, 2))}}


def _grads(params, step):
    """Deterministic pseudo-gradients, different at every step."""
    key = jax.random.fold_in(jax.random.key(42), step)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) + 0.1 * x
                                        for k, x in zip(keys, leaves)])


def _train(tx, params, steps):
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(steps):
        updates, state = update(_grads(params, t), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _inner():
    # The experiments' Adam with decoupled L2, as runs.inner_optimizer builds it.
    return optax.chain(optax.add_decayed_weights(5e-4), optax.adam(1e-2))


def test_sparsity_zero_is_the_dense_optimizer():
    params = _params()
    ref, _ = _train(_inner(), params, 8)
    dense, _ = _train(sparsity.dense(_inner()), params, 8)
    for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Mask updates every step with a large drop fraction: nothing is inactive, so nothing moves.
    for name, kw in (("static", {}), ("rigl", dict(update_every=1, drop_fraction=0.5))):
        got, state = _train(sparsity.sparsifier(name, _inner(), sparsity=0.0, **kw), params, 8)
        assert all(bool(m.all()) for m in jax.tree.leaves(sparsity.get_masks(state))), name
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7,
                                       err_msg=name)


@pytest.mark.parametrize("distribution", ["uniform", "uniform_dense_first", "dict"])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.99])
def test_layer_smaller_than_one_over_density_keeps_exactly_one(distribution, target):
    # (ERK gives a 2x2 layer a high density by design, so it is not a case of this rule.)
    params = _params()
    assert 4 < 1 / (1 - target)  # the 2x2 "tiny" kernel would round to zero weights
    if distribution == "dict":
        distribution = {"tiny/kernel": target}
    counts = sparsity.distributions.keep_counts(params, target, distribution)
    assert int(counts["tiny"]["kernel"]) == 1
    masks = sparsity.masks.init(jax.random.key(0), params, target, distribution=distribution)
    assert int(masks["tiny"]["kernel"].sum()) == 1
    for leaf in jax.tree.leaves(masks):
        assert int(leaf.sum()) >= 1


@pytest.mark.parametrize("method", ["rigl"])
def test_tiny_layer_keeps_one_weight_through_training(method):
    params = _params()
    kw = {} if method == "static" else dict(update_every=2, drop_fraction=0.5)
    tx = sparsity.sparsifier(method, optax.sgd(0.1), sparsity=0.95, **kw)
    got, state = _train(tx, params, 6)
    masks = sparsity.get_masks(state)
    assert int(masks["tiny"]["kernel"].sum()) == 1
    assert int((got["tiny"]["kernel"] != 0).sum()) <= 1
    assert int(masks["l0"]["kernel"].sum()) == round(96 * 0.05)


def test_isolated_nodes_give_finite_outputs_and_gradients():
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    # Nodes 3, 4 and 5 have no edge; without self-loops no message reaches them at all.
    for self_loops in (True, False):
        graph = graphs.from_edges(np.array([0, 1]), np.array([1, 2]), 6, node_features=x,
                                  symmetric=True, self_loops=self_loops)
        weights = np.asarray(graphs.gcn_norm_weights(graph))
        assert np.isfinite(weights).all() and (weights > 0).all()
    # The harder case for the models: the graph without self-loops.
    for kind in ("gcn", "sage", "gat", "gin"):
        bound, params = train.split_model(models.build(kind, 5, 8, 3, rngs=nnx.Rngs(0)))
        out, grads = _forward_and_grads(bound, params, graph)
        assert out.shape == (6, 3) and bool(jnp.isfinite(out).all()), kind
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads)), kind


def _forward_and_grads(bound, params, graph):
    """Outputs and the gradient of their sum, in one compiled call."""
    @jax.jit
    def f(p):
        out = bound(p, graph)
        return out, jax.grad(lambda q: bound(q, graph).sum())(p)
    return f(params)


def test_graph_without_edges_gives_finite_outputs():
    x = np.ones((4, 3), np.float32)
    graph = graphs.from_edges(np.zeros(0, np.int32), np.zeros(0, np.int32), 4, node_features=x,
                              symmetric=True, self_loops=False)
    for kind in ("gcn", "gat"):
        out = models.build(kind, 3, 4, 2, rngs=nnx.Rngs(0))(graph)
        assert bool(jnp.isfinite(out).all()), kind


def _edges(pairs, times=None, num_nodes=None):
    pairs = np.asarray(pairs, np.int32).reshape(-1, 2)
    n = int(pairs.max()) + 1 if num_nodes is None else num_nodes
    t = None if times is None else np.asarray(times, np.int64)
    return data.Dataset("toy", n, pairs[:, 0].copy(), pairs[:, 1].copy(), times=t)


def test_link_split_with_an_empty_part_is_a_clear_error():
    # 3 edges: floor(0.7 * 3) = 2 train, floor(0.8 * 3) - 2 = 0 val, 1 test.
    with pytest.raises(ValueError, match=r"3 edges: too few .*the val part would be empty.*"
                                         r"need at least 4 edges"):
        data.temporal_link_split(_edges([[0, 1], [1, 2], [2, 0]], times=[3, 1, 2]))
    with pytest.raises(ValueError, match="train and val and test parts would be empty"):
        data.temporal_link_split(_edges(np.zeros((0, 2)), num_nodes=3))
    with pytest.raises(ValueError, match="1 node: link prediction needs at least 2 nodes"):
        data.temporal_link_split(_edges([[0, 0]] * 5, times=range(5)))


def test_link_split_of_the_smallest_graphs():
    # 4 edges: the smallest stream with the default fractions: 2 / 1 / 1.
    split = data.temporal_link_split(_edges([[0, 1], [1, 2], [2, 0], [0, 2]], times=range(4)))
    assert [len(split.train_edges), len(split.val_edges), len(split.test_edges)] == [2, 1, 1]
    # A zero fraction asks for an empty part: 3 edges then split fine.
    split = data.temporal_link_split(_edges([[0, 1], [1, 2], [2, 0]]), train=0.7, val=0.0)
    assert [len(split.train_edges), len(split.val_edges), len(split.test_edges)] == [2, 0, 1]
    # Repeats of one pair dedupe within a part but the part is never empty.
    split = data.temporal_link_split(_edges([[0, 1]] * 10, times=range(10)))
    assert [len(split.train_edges), len(split.val_edges), len(split.test_edges)] == [1, 1, 1]


def test_negative_seed_is_a_clear_error():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        data.load("synthetic-sbm", seed=-1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        data.node_split(np.array([0, 1, 0, 1]), seed=-2)


# ----------------------------------------------------------------------------------------------
# Bad input through the Python API.


def _two_layers():
    return {"a": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(4)},
            "b": {"kernel": jnp.ones((4, 2))}}


def test_distribution_dict_naming_no_layer_lists_valid_paths():
    params = _two_layers()
    with pytest.raises(ValueError, match=r"names no prunable layer for \['c/kernel'\]; "
                                         r"valid paths: \['a/kernel', 'b/kernel'\]"):
        sparsity.distributions.layer_densities(params, 0.5, {"c/kernel": 0.5})
    tx = sparsity.sparsifier("static", optax.sgd(0.1), distribution={"a/kernal": 0.5})
    with pytest.raises(ValueError, match="valid paths"):
        tx.init(params)
    with pytest.raises(ValueError, match=r"distribution\['a/kernel'\] must be in \[0, 1\)"):
        sparsity.sparsifier("static", optax.sgd(0.1), distribution={"a/kernel": 1.0})


def test_masks_of_another_structure_name_both_structures():
    params = _two_layers()
    masks = {"a": {"kernel": jnp.ones((8, 4), bool)}, "b": {"kernel": jnp.ones((4, 2), bool)}}
    with pytest.raises(ValueError, match="does not match") as err:
        sparsity.masks.apply(params, masks)
    text = str(err.value)
    assert str(jax.tree.structure(params)) in text and str(jax.tree.structure(masks)) in text


def test_masks_of_another_shape_name_the_leaf():
    params = _two_layers()
    masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    # A [1, 4] mask would broadcast over the [8, 4] kernel without the check.
    masks["a"]["kernel"] = jnp.ones((1, 4), bool)
    with pytest.raises(ValueError, match=r"'a/kernel' has shape \(1, 4\) but the parameter "
                                         r"has shape \(8, 4\)"):
        sparsity.masks.apply(params, masks)


@pytest.mark.parametrize("method,kw,fragment", [
    ("rigl", dict(sparsity=1.0), r"sparsity must be in \[0, 1\), got 1.0"),
    ("static", dict(sparsity=-0.1), r"sparsity must be in \[0, 1\), got -0.1"),
    ("static", dict(sparsity=float("nan")), r"sparsity must be in \[0, 1\), got nan"),
    ("rigl", dict(update_every=0), "update_every must be a positive integer, got 0"),
    ("set", dict(update_every=-3), "update_every must be a positive integer, got -3"),
    ("rigl", dict(drop_fraction=0.0), r"drop_fraction must be in \(0, 1\]"),
    ("set", dict(drop_fraction=1.5), r"drop_fraction must be in \(0, 1\]"),
    ("foo", {}, "unknown sparsity method 'foo'; known: dense, static"),
    ("static", dict(distribution="nope"), "unknown distribution 'nope'; known: uniform"),
    ("static", dict(update_every=3), "'static' does not take update_every"),
])
def test_invalid_method_arguments_raise_value_error(method, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        sparsity.sparsifier(method, optax.sgd(0.1), **kw)
