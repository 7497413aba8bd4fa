"""SNIP from the command line (node and link scripts) and in a vmapped sweep: the registered
method reaches the records at its sparsity, its first step counted dense."""
from __future__ import annotations

import json

import pytest
from helpers import cli_main

from sparsegnn_jax import config, sweeps


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGNN_CACHE", str(tmp_path / "cache"))


def _main(task, argv, capsys):
    return cli_main(task, argv, capsys)


@pytest.mark.parametrize("task", ["node", pytest.param("link", marks=pytest.mark.slow)])
def test_method_snip_runs_from_the_scripts(task, tmp_path, capsys):
    code, out, err = _main(task, ["--method=snip", "--epochs=2", "--sparsity=0.75",
                                  "--hidden=8", "--no-progress", f"--out={tmp_path}"], capsys)
    assert code == 0, err
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert rec["config"]["method"] == "snip"
    assert rec["sparsity"] == pytest.approx(0.75, abs=0.01)
    # The first step ran dense: training FLOPs lie between all-sparse and all-dense.
    flops = rec["flops"]
    assert 0.25 < flops["training_relative"] < 1.0


@pytest.mark.slow
def test_snip_in_a_vmapped_sweep():
    cfg = config.RunConfig(task="node", method="snip", epochs=2, hidden=8, progress=False)
    records = sweeps.run_group(cfg, [0.5, 0.9], [0, 1])
    assert [(r["config"]["sparsity"], r["config"]["seed"]) for r in records] == [
        (0.5, 0), (0.5, 1), (0.9, 0), (0.9, 1)]
    for rec in records:
        assert rec["sparsity"] == pytest.approx(rec["config"]["sparsity"], abs=0.01)
