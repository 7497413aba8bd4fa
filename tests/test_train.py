"""The training loop's pieces: the non-finite guard, and data-parallel training over 4 (fake
CPU) devices matching 1-device training.

XLA fixes the device count when JAX starts, so the device comparison runs in a subprocess with
``--xla_force_host_platform_device_count=4``; one subprocess checks both configurations. The runs
use SGD: sharded gradients are summed in a different order (differences ~1e-7), and Adam's
normalisation would blow such differences up for weights whose gradient is near zero, which says
nothing about the sharding.
"""
import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import TIMEOUT, build_encoder, random_graph

from sparsegnn_jax import data, models, train

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from sparsegnn_jax import config, runs, sparsity, tasks, train

    assert len(jax.devices()) == 4, jax.devices()


    def compare(task, method):
        dataset = "synthetic-temporal" if task == "link" else "synthetic-sbm"
        model = "gcn" if task == "link" else "mlp"
        base = config.resolve(config.RunConfig(
            task=task, dataset=dataset, model=model, method=method, sparsity=0.9, epochs=3,
            batch_size=256 if task == "link" else 64, update_every=4, optimizer="sgd", lr=0.05,
            progress=False))
        task_ = tasks.get(task)
        problem = task_.prepare(base)

        def train_on(devices):
            bound, params = train.split_model(task_.build_model(problem, 0))
            tx = runs.build_optimizer(problem)
            mesh = train.data_mesh(devices) if devices > 1 else None
            state = train.replicate(train.init_state(params, tx, jax.random.key(0)), mesh)
            inputs = train.replicate(problem.inputs, mesh)
            epoch = jax.jit(task_.make_epoch(problem, bound, tx, mesh))
            hlo = epoch.lower(state, inputs).compile().as_text()
            for _ in range(base.epochs):
                state, loss = epoch(state, inputs)
            return state, hlo

        (one, _), (four, hlo) = train_on(1), train_on(4)
        shardings = {str(x.sharding) for x in jax.tree.leaves(four.params)}
        p1, p4 = jax.tree.leaves(one.params), jax.tree.leaves(four.params)
        m1 = jax.tree.leaves(sparsity.get_masks(one.opt_state))
        m4 = jax.tree.leaves(sparsity.get_masks(four.opt_state))
        return {
            "params_close": all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(p1, p4)),
            "max_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in zip(p1, p4)),
            "masks_equal": all(np.array_equal(a, b) for a, b in zip(m1, m4)),
            "mask_updates": int(sparsity.get_trace(four.opt_state).mask_updates),
            "devices": len(jax.tree.leaves(four.params)[0].sharding.device_set),
            "all_reduce": "all-reduce" in hlo,
            "shardings": sorted(shardings),
        }


    print(json.dumps({arg: compare(*arg.split(":")) for arg in sys.argv[1:]}))
""")


@pytest.fixture(scope="module")
def device_runs(cli_env):
    """Both comparisons from one subprocess: JAX starts and each program compiles only once."""
    env = dict(cli_env, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, "link:rigl", "node:static"], env=env,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the default run trains over two processes (test_distributed.py)
def test_four_devices_match_one_device_link_rigl(device_runs):
    res = device_runs["link:rigl"]
    assert res["devices"] == 4
    assert res["all_reduce"]                 # gradients are summed across devices
    assert res["mask_updates"] >= 2          # masks really changed during the run
    assert res["masks_equal"], res
    assert res["params_close"], res


@pytest.mark.slow  # the default run trains over two processes (test_distributed.py)
def test_four_devices_match_one_device_node_mlp_static(device_runs):
    res = device_runs["node:static"]
    assert res["devices"] == 4
    assert res["all_reduce"]
    assert res["masks_equal"], res
    assert res["params_close"], res


# ----------------------------------------------------------------------------------------------
# The non-finite guard.


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


def test_runs_sharing_a_key_train_on_the_batches_of_a_single_run():
    # Three runs (different parameters, one key) vmapped over params and optimizer state only,
    # as a sweep trains the runs of one seed: each ends exactly where a single run ends, and
    # its batches are those link_epoch_batches draws from the key (a fourth run on another
    # key's batches ends elsewhere).
    graph = random_graph(seed=3, symmetric=True, self_loops=True)
    edges = np.random.default_rng(0).integers(0, 11, (40, 2)).astype(np.int32)
    inputs = train.LinkInputs(graph, jnp.asarray(edges), jnp.asarray(data.edge_keys(edges, 12)),
                              jnp.arange(12, dtype=jnp.int32))
    bound, params = train.split_model(models.LinkPredictor(build_encoder("gcn"),
                                                           models.DotDecoder()))
    tx = optax.adam(0.05)
    epoch = train.make_link_epoch(bound, tx, 8, 12)
    runs = [jax.tree.map(lambda x, c=c: c * x, params) for c in (1.0, 0.5, 2.0)]
    key = jax.random.key(3)

    def state(p, k=key):
        return train.TrainState(p, tx.init(p), k, jnp.zeros((), jnp.int32))

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[state(p) for p in runs])
    axes = train.TrainState(0, 0, None, None)
    shared = jax.jit(jax.vmap(epoch, in_axes=(axes, None), out_axes=(axes, 0)))
    unstacked = stacked._replace(key=key, step=stacked.step[0])
    out, losses = shared(unstacked, inputs)
    single = jax.jit(epoch)
    for i, p in enumerate(runs):
        one, loss = single(state(p), inputs)
        np.testing.assert_allclose(float(losses[i]), float(loss), rtol=1e-6)
        for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(one.params)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)
    _, other_loss = single(state(runs[0], jax.random.key(4)), inputs)
    assert abs(float(other_loss) - float(losses[0])) > 1e-4
    # The key moved on as a single run's does; the batches (a pure function of the key) are
    # non-edges.
    np.testing.assert_array_equal(jax.random.key_data(out.key),
                                  jax.random.key_data(single(state(runs[0]), inputs)[0].key))
    _, batches = jax.jit(train.link_epoch_batches, static_argnums=(2, 3))(key, inputs, 8, 12)
    assert batches.positives.shape == (5, 8, 2) and batches.negatives.shape == (5, 8, 2)
    codes = data.pair_codes(np.asarray(batches.negatives)[..., 0].ravel(),
                            np.asarray(batches.negatives)[..., 1].ravel(), 12)
    assert not np.isin(codes, data.pair_codes(edges[:, 0], edges[:, 1], 12)).any()
