"""The flags that express the authors' GCN setups: per-layer sparsity, the SLR / ADMM schedule
(reweighting and retraining epochs, rho, s_0), a dense warm start from a checkpoint, and ERK in
a vmapped sweep. Each flag reaches the method's arguments; bad values exit 2 with one line."""
from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsegnn_jax import checkpoint, cli, config, runs, sparsity, sweep_cli, tasks, train
from sparsegnn_jax.sparsity import distributions

LAYERS = ("encoder/layers/0/kernel", "encoder/layers/1/kernel")
# A tiny node run on the embedded synthetic graph (one full-batch step per epoch).
TINY = ["--hidden=4", "--no-progress"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGNN_CACHE", str(tmp_path / "cache"))


def _main(argv, capsys):
    try:
        code = cli.main("node", argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, fragment: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(fragment, lines[0]), lines[0]


def _resolved(argv) -> config.RunConfig:
    args = cli.build_parser("node").parse_args(argv)
    return config.resolve(cli.config_from_args("node", args))


def test_layer_sparsity_parsing():
    assert config.parse_layer_sparsity(None) is None
    assert config.parse_layer_sparsity(["a/kernel=0.5,b/kernel=0", "c=0.25"]) == {
        "a/kernel": 0.5, "b/kernel": 0.0, "c": 0.25}
    for bad in (["a/kernel"], ["=0.5"], ["a/kernel=x"]):
        with pytest.raises(ValueError, match="expects PATH=SPARSITY"):
            config.parse_layer_sparsity(bad)
    with pytest.raises(ValueError, match="gives 'a' twice"):
        config.parse_layer_sparsity(["a=0.1", "a=0.2"])


def test_slr_flags_reach_the_method():
    cfg = _resolved(["--method=slr", "--epochs=10", "--penalty-epochs=3", "--retrain-epochs=2",
                     "--rho=0.01", "--initial-step-size=0.001", "--update-every=2",
                     "--layer-sparsity=encoder/layers/1/kernel=0"])
    assert cfg.layer_sparsity == {LAYERS[1]: 0.0}
    kw = runs.method_kwargs(cfg, total_steps=20, steps_per_epoch=2)
    # 20 steps: 3 * 2 penalty, 2 * 2 retraining, the other 10 a dense warm start.
    assert (kw["dense_steps"], kw["penalty_steps"], kw["update_every"]) == (10, 6, 2)
    assert (kw["rho"], kw["initial_step_size"]) == (0.01, 0.001)
    admm = runs.method_kwargs(dataclasses.replace(cfg, method="admm"), 20, 2)
    assert "initial_step_size" not in admm and admm["dense_steps"] == 10
    # Unset: the run splits half dense, a quarter penalty, a quarter retraining (s_0 = rho).
    kw = runs.method_kwargs(_resolved(["--method=slr", "--epochs=10"]), 43, 1)
    assert (kw["dense_steps"], kw["penalty_steps"], kw["initial_step_size"]) == (21, 10, None)
    assert kw["rho"] == config.TASK_DEFAULTS["node"]["rho"]


def test_layer_distribution_fixes_listed_layers_and_splits_the_rest():
    shapes = {LAYERS[0]: (100, 16), LAYERS[1]: (16, 7)}
    cfg = _resolved(["--layer-sparsity=encoder/layers/1/kernel=0"])
    assert runs.layer_distribution(cfg, shapes, 0.9) == {LAYERS[0]: pytest.approx(0.9),
                                                         LAYERS[1]: 0.0}
    # Traced (a vmapped sweep): the free layer follows each run's sparsity.
    traced = jax.vmap(lambda s: runs.layer_distribution(cfg, shapes, s))(
        jnp.asarray([0.5, 0.75]))
    np.testing.assert_allclose(traced[LAYERS[0]], [0.5, 0.75], rtol=1e-6)
    # ERK over the free layer alone: all of the sparsity budget falls on it.
    erk = dataclasses.replace(cfg, distribution="erk", layer_sparsity={LAYERS[0]: 0.5})
    got = runs.layer_distribution(erk, shapes, 0.75)
    assert got[LAYERS[0]] == 0.5 and got[LAYERS[1]] == pytest.approx(np.floor(0.75 * 112) / 112)
    assert runs.layer_distribution(dataclasses.replace(cfg, layer_sparsity=None), shapes,
                                   0.9) == "uniform"


def test_layer_sparsity_reaches_the_masks(tmp_path, capsys):
    code, out, _ = _main(["--method=slr", "--epochs=4", "--penalty-epochs=1",
                          "--retrain-epochs=1", "--sparsity=0.75",
                          f"--layer-sparsity={LAYERS[1]}=0", f"--out={tmp_path}"] + TINY, capsys)
    assert code == 0, out
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert rec["layer_sparsity"][LAYERS[1]] == 0.0
    assert rec["layer_sparsity"][LAYERS[0]] == pytest.approx(0.75, abs=0.01)


@pytest.mark.parametrize("flags,fragment", [
    ([f"--layer-sparsity={LAYERS[0]}=0.5", "--layer-sparsity=encoder/layers/7/kernel=0"],
     r"--layer-sparsity names no prunable layer of --model=gcn: encoder/layers/7/kernel; "
     r"known layers: encoder/layers/0/kernel, encoder/layers/1/kernel$"),
    (["--layer-sparsity=encoder/layers/1/kernel"], r"--layer-sparsity expects PATH=SPARSITY"),
    ([f"--layer-sparsity={LAYERS[1]}=1"], r"a sparsity must be in \[0, 1\)"),
    (["--penalty-epochs=-1"], r"--penalty-epochs must be >= 0, got -1"),
    (["--epochs=10", "--penalty-epochs=6", "--retrain-epochs=5"],
     r"--penalty-epochs \+ --retrain-epochs \(11\) must fit in --epochs=10"),
    (["--rho=0"], r"--rho must be a positive finite number, got 0.0"),
    (["--initial-step-size=nan"], r"--initial-step-size must be a positive finite number"),
    (["--init-from=/nonexistent/ckpt"], r"--init-from='/nonexistent/ckpt': checkpoint "
                                        r"directory not found"),
])
def test_bad_values_exit_2_with_one_line(flags, fragment, tmp_path, capsys):
    code, _, err = _main(["--method=slr", "--epochs=2", f"--out={tmp_path}"] + TINY + flags,
                         capsys)
    assert code == 2
    _one_error_line(err, fragment)


def test_init_from_a_dense_checkpoint(tmp_path, capsys):
    dense_dir = tmp_path / "dense.ckpt"
    code, out, _ = _main(["--method=dense", "--epochs=2", f"--checkpoint-dir={dense_dir}",
                          "--checkpoint-every=2", f"--out={tmp_path}"] + TINY, capsys)
    assert code == 0, out
    cfg = _resolved(["--method=slr", "--epochs=2", f"--init-from={dense_dir}"] + TINY)
    problem = tasks.get("node").prepare(cfg)
    _, fresh = train.split_model(tasks.get("node").build_model(problem, cfg.seed))
    warm = runs.dense_warm_start(problem, fresh)
    # The warm start is the dense run's final parameters, not the fresh ones.
    dense_cfg = dataclasses.replace(cfg, method="dense", init_from=None)
    template = train.init_state(fresh, runs.build_optimizer(
        dataclasses.replace(problem, cfg=dense_cfg)), jax.random.key(0))
    saved, _ = checkpoint.restore(dense_dir, template)
    for a, b, f in zip(jax.tree.leaves(warm), jax.tree.leaves(saved.params),
                       jax.tree.leaves(fresh)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(f))
    # A checkpoint of a sparse run is refused, naming the flag.
    slr_dir = tmp_path / "slr.ckpt"
    assert _main(["--method=slr", "--epochs=2", f"--checkpoint-dir={slr_dir}",
                  "--checkpoint-every=2", f"--out={tmp_path}"] + TINY, capsys)[0] == 0
    code, _, err = _main(["--method=slr", "--epochs=2", f"--init-from={slr_dir}",
                          f"--out={tmp_path}"] + TINY, capsys)
    assert code == 2
    _one_error_line(err, r"--init-from='.*slr.ckpt' is not a checkpoint of a dense run of "
                         r"--model=gcn on synthetic-sbm")


def test_erk_keep_counts_in_a_vmapped_init_match_separate_runs():
    # What a sweep does: one vmapped init over the sparsity grid with distribution="erk".
    cfg = _resolved(["--method=rigl", "--distribution=erk", "--hidden=8"])
    problem = tasks.get("node").prepare(cfg)
    _, params = train.split_model(tasks.get("node").build_model(problem, 0))
    grid = [0.5, 0.9, 0.96875]
    key = jax.random.key(0)
    counts = jax.jit(jax.vmap(lambda s: train.init_state(
        params, runs.build_optimizer(problem, s, key), key).opt_state))(jnp.asarray(grid))
    batched = sparsity.find_state(counts).keep_counts
    for i, s in enumerate(grid):
        want = distributions.keep_counts(params, s, "erk", tasks.weight_matrices)
        assert ([int(np.asarray(c)[i]) for c in jax.tree.leaves(batched)]
                == [int(c) for c in jax.tree.leaves(want)])


def test_sweep_meta_keeps_every_command(tmp_path):
    path = tmp_path / "sweep_meta.json"
    first = sweep_cli.sweep_meta(path, "python experiments/sweep.py --methods=rigl", 10.0)
    assert first == {"command": "python experiments/sweep.py --methods=rigl", "wall_time_s": 10.0}
    path.write_text(json.dumps(first))
    both = sweep_cli.sweep_meta(path, "python experiments/sweep.py --methods=slr", 5.0)
    assert [e["command"][-4:] for e in both["commands"]] == ["rigl", "=slr"]
    path.write_text(json.dumps(both))
    again = sweep_cli.sweep_meta(path, "python experiments/sweep.py --methods=rigl", 7.0)
    assert [(e["command"][-4:], e["wall_time_s"]) for e in again["commands"]] == [
        ("=slr", 5.0), ("rigl", 7.0)]
