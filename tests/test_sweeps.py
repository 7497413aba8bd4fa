"""Sweeps: vmapped runs equal sequential ones (which compile one epoch per group), the batching
chosen per backend; the CLI writes the expected rows and a table."""
import csv
import json
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import assert_csv_rows_agree, read_csv_rows, sweep_script

from sparsegnn_jax import config, report, runs, sweeps, tasks, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_vmapped_and_sequential_runs_agree():
    # SGD: batching reorders float sums (~1e-7); Adam's normalisation would amplify that for
    # near-zero gradients and flip RigL's near-tied choices, which says nothing about vmap.
    cfg = config.RunConfig(task="link", method="rigl", epochs=2, update_every=3, optimizer="sgd",
                           lr=0.1, progress=False)
    a = sweeps.run_group(cfg, [0.5, 0.9], [0, 1], vmapped=True)
    b = sweeps.run_group(cfg, [0.5, 0.9], [0, 1], vmapped=False)
    assert [(r["config"]["sparsity"], r["config"]["seed"]) for r in a] == [
        (0.5, 0), (0.5, 1), (0.9, 0), (0.9, 1)]
    for x, y in zip(a, b):
        assert x["config"] == y["config"]
        # A pair whose logit sits within float noise of 0 may round either way: a few pairs
        # of ~3,000 (1e-3) in accuracy at 0.5; the ranking metrics agree closer.
        np.testing.assert_allclose(x["test"]["accuracy"], y["test"]["accuracy"], atol=2e-3)
        for metric in ("roc_auc", "ap"):
            np.testing.assert_allclose(x["test"][metric], y["test"][metric], atol=2e-4)
        np.testing.assert_allclose(x["final_train_loss"], y["final_train_loss"], rtol=1e-5)
        assert x["layer_sparsity"] == y["layer_sparsity"]
        np.testing.assert_allclose(x["flops"]["training"], y["flops"]["training"], rtol=1e-6)
    # Different seeds really are different runs.
    assert a[0]["test"]["roc_auc"] != a[1]["test"]["roc_auc"]


def test_sequential_runs_of_a_group_share_one_compiled_epoch(monkeypatch):
    # The epoch is traced (so compiled) once for the group: sparsity and seed reach it through
    # the state. Before, each run jitted an epoch of its own and compiled it again.
    task = tasks.get("node")
    make_epoch, traces = task.make_epoch, []

    def counting(problem, bound, tx, mesh=None):
        epoch = make_epoch(problem, bound, tx, mesh)

        def traced(state, inputs):
            traces.append(1)  # runs when jax.jit traces, not at every call
            return epoch(state, inputs)

        return traced

    monkeypatch.setattr(task, "make_epoch", counting)
    cfg = config.RunConfig(task="node", method="set", epochs=2, update_every=2, progress=False)
    records = sweeps.run_group(cfg, [0.5, 0.9], [0, 1], batching="sequential")
    assert len(traces) == 1
    assert [(r["config"]["sparsity"], r["config"]["seed"], r["batching"]) for r in records] == [
        (0.5, 0, "sequential"), (0.5, 1, "sequential"), (0.9, 0, "sequential"),
        (0.9, 1, "sequential")]
    # Each run kept its own sparsity and seed (its keep counts and initial masks).
    assert [round(r["sparsity"], 2) for r in records] == [0.5, 0.5, 0.9, 0.9]
    assert records[0]["final_train_loss"] != records[1]["final_train_loss"]


def test_auto_batching_is_sequential_on_cpu_and_vmapped_elsewhere():
    assert sweeps.choose_batching("auto", 1, "cpu") == "sequential"
    assert sweeps.choose_batching("auto", 1, "gpu") == "vmap"
    assert sweeps.choose_batching("auto", 1, "tpu") == "vmap"
    # Runs split over devices are split along the vmapped run axis.
    assert sweeps.choose_batching("auto", 2, "cpu") == "vmap"
    assert sweeps.choose_batching("vmap", 1, "cpu") == "vmap"
    assert sweeps.choose_batching("sequential", 1, "gpu") == "sequential"
    assert sweeps.choose_batching() == ("sequential" if jax.default_backend() == "cpu"
                                        else "vmap")
    with pytest.raises(ValueError, match="--batching must be one of auto, vmap, sequential"):
        sweeps.choose_batching("loop")


def _tolerance(column: str) -> float | None:
    """Of a row vmapped against the row sequential (see the first test for why): a few of
    ~3,000 pairs may round the other way in accuracy; ranking metrics agree closer."""
    if column.endswith("accuracy"):
        return 2e-3
    if "roc_auc" in column or column in ("test_ap", "test_macro_f1"):
        return 2e-4
    return None


@pytest.mark.slow
def test_sweep_cli_rows_are_the_same_vmapped_and_sequential(tmp_path, capsys):
    # Groups of 1 run (dense) and of 4 (the rest), mask updates inside the run (update_every).
    argv = ["--model=mlp", "--methods=dense,static,set,rigl,gmp", "--sparsities=0.5,0.9",
            "--seeds=2", "--epochs=2", "--update-every=5", "--no-progress"]
    rows = {}
    for batching in ("vmap", "sequential"):
        assert sweep_script().main(argv + [f"--batching={batching}",
                                           f"--out={tmp_path / batching}"]) == 0
        assert "runs in" in capsys.readouterr().out
        rows[batching] = read_csv_rows(tmp_path / batching / "results.csv")
    assert [(r["method"], r["sparsity"], r["seed"]) for r in rows["vmap"]] == [
        ("dense", "0.0", "0"), ("dense", "0.0", "1")] + [
        (m, s, seed) for m in ("static", "set", "rigl", "gmp") for s in ("0.5", "0.9")
        for seed in ("0", "1")]
    assert_csv_rows_agree(rows["sequential"], rows["vmap"], _tolerance)
    records = sorted((tmp_path / "sequential" / "records").glob("*.json"))
    assert len(records) == 18
    assert {json.loads(r.read_text())["batching"] for r in records} == {"sequential"}


@pytest.mark.slow
def test_sweep_cli_rows_restart_and_table(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import sweep
    finally:
        sys.path.pop(0)
    argv = ["--model=gcn", "--methods=dense,static,rigl", "--sparsities=0.5,0.9", "--seeds=2",
            "--epochs=2", f"--out={tmp_path}", "--no-progress"]
    assert sweep.main(argv) == 0
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    keys = sorted((r["method"], float(r["sparsity"]), int(r["seed"])) for r in rows)
    assert keys == sorted([("dense", 0.0, 0), ("dense", 0.0, 1)] + [
        (m, s, seed) for m in ("static", "rigl") for s in (0.5, 0.9) for seed in (0, 1)])
    for r in rows:
        assert abs(float(r["achieved_sparsity"]) - float(r["sparsity"])) < 0.01
        if r["method"] != "dense":
            assert 0 < float(r["training_flops_relative"]) < 1
    # A restart finds every run done and keeps the rows.
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "already in" in capsys.readouterr().out
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 10
    table = report.markdown_tables(report.summarise(report.load_rows([tmp_path / "results.csv"])))
    assert "RigL" in table and "Static" in table and "| 90% |" in table


@pytest.mark.parametrize("flags, fragment", [
    (["--sparsities=0.5,1.0"], r"--sparsities must be in \[0, 1\), got 1.0"),
    (["--sparsities=nan"], r"--sparsities must be in \[0, 1\), got nan"),
    (["--sparsities=0.9,inf"], r"--sparsities must be in \[0, 1\), got inf"),
    (["--sparsities=-0.5"], r"--sparsities must be in \[0, 1\), got -0.5"),
    (["--sparsities=,"], r"--sparsities names no sparsity \(got ','\)"),
    (["--sparsities=0.5,x"], r"--sparsities must be comma-separated numbers, got '0.5,x'"),
    (["--methods=,"], r"--methods names no method \(got ','\); choose from .*rigl"),
    (["--methods=rigl,nope"], r"unknown method 'nope' in --methods"),
    (["--seeds=0"], r"--seeds must be positive, got 0"),
    (["--sequential", "--batching=vmap"], r"--sequential contradicts --batching=vmap"),
    (["--epochs=0"], r"--epochs must be positive, got 0"),
    (["--split=random", "--eval-protocol=dyglib"],
     r"--split=random has no effect with --eval-protocol=dyglib"),
    (["--out={a_file}"], r"--out='.*a_file' is not a usable folder: File exists"),
    (["--out={a_file}/sub"], r"--out='.*a_file/sub' is not a usable folder: Not a directory"),
])
def test_sweep_rejects_bad_arguments_before_training(flags, fragment, tmp_path, capsys,
                                                     no_data_loading):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out = tmp_path / "out"
    argv = [f"--out={out}", "--no-progress"] + [f.format(a_file=a_file) for f in flags]
    assert sweep_script().main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("error: ") and re.search(fragment, line), line
    assert not out.exists() or list(out.iterdir()) == []
    assert a_file.read_text() == "not a folder"


def test_sweep_script_rejects_sparsity_one_before_training(tmp_path, cli_env):
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "sweep.py"),
                           "--sparsities=0.5,1.0", "--epochs=1", "--seeds=1",
                           f"--out={tmp_path}", "--no-progress"],
                          cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: --sparsities must be in [0, 1), got 1.0\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_runs_of_a_seed_train_on_the_batches_of_a_single_run_with_that_seed():
    # The vmapped group draws each epoch's shuffle and negatives once per seed; a run of the
    # group must end where a single run of its (sparsity, seed) ends, which it cannot on
    # another seed's batches (the two seeds' losses differ by far more than the tolerance).
    # tests/test_train.py checks the same on a vmapped epoch in the default run.
    cfg = config.resolve(config.RunConfig(task="link", method="static", epochs=1, lr=0.1,
                                          select="last", progress=False))
    task = tasks.get("link")
    problem = task.prepare(cfg)
    records = sweeps.run_group(cfg, [0.5, 0.9], [0, 1], problem=problem)
    bound, _ = train.split_model(task.build_model(problem, 0))
    # One compiled epoch for the four single runs: keep counts live in the state.
    epoch = jax.jit(task.make_epoch(problem, bound, runs.build_optimizer(problem)))
    for rec in records:
        s, seed = rec["config"]["sparsity"], rec["config"]["seed"]
        key = jax.random.key(seed)
        params = train.split_model(task.build_model(problem, seed))[1]
        state = train.init_state(params, runs.build_optimizer(problem, s, key), key)
        _, loss = epoch(state, problem.inputs)
        np.testing.assert_allclose(rec["final_train_loss"], float(loss), rtol=1e-5)
    by_seed = {r["config"]["seed"]: r["final_train_loss"] for r in records}
    assert abs(by_seed[0] - by_seed[1]) > 1e-4  # ten times the tolerance above


def test_sweep_trains_at_the_width_and_steps_it_is_given(tmp_path):
    """--hidden, --lr and --weight-decay reach every run of a sweep (and its record)."""
    argv = ["--task=node", "--model=gcn", "--methods=dense", "--sparsities=0", "--seeds=1",
            "--epochs=1", "--hidden=8", "--lr=0.05", "--weight-decay=0", f"--out={tmp_path}",
            "--no-progress"]
    assert sweep_script().main(argv) == 0
    [path] = (tmp_path / "records").glob("*.json")
    c = json.loads(path.read_text())["config"]
    assert (c["hidden"], c["lr"], c["weight_decay"]) == (8, 0.05, 0.0)
