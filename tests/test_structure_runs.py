"""``--structure=nm:N:M`` on the command lines: checked flags, run names, the record."""
from __future__ import annotations

import argparse
import json
import re

import pytest
from helpers import cli_main, sweep_script

from sparsegnn_jax import cli, config, method_settings, runs, sweep_cli, sweeps, tasks


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGNN_CACHE", str(tmp_path / "cache"))


def _main(task, argv, capsys):
    return cli_main(task, argv, capsys)


@pytest.mark.parametrize("flags, fragment", [
    (["--structure=2:4"], r"--structure must be nm:N:M \(e.g. nm:2:4\) or none, got '2:4'"),
    (["--structure=nm:5:4"], r"--structure=nm:5:4: N:M structure needs 0 < n <= m"),
    (["--structure=nm:2:4", "--sparsity=0.9"],
     r"--sparsity=0.9 contradicts --structure=nm:2:4, which keeps 2 of every 4 weights "
     r"\(sparsity 0.5\)"),
    (["--structure=nm:2:4", "--method=gmp"],
     r"--structure=nm:2:4 cannot be kept by --method=gmp; methods that keep an N:M structure: "
     r".*rigl"),
    (["--structure=nm:2:4", "--method=dense"], r"cannot be kept by --method=dense"),
    (["--structure=nm:2:4", "--distribution=erk"],
     r"--distribution=erk contradicts --structure=nm:2:4"),
])
def test_bad_structure_is_one_error_line(flags, fragment, tmp_path, capsys, no_data_loading):
    code, _, err = _main("node", ["--epochs=1", *flags, f"--out={tmp_path}", "--no-progress"],
                         capsys)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
    assert re.search(fragment, err), err


def test_structure_sets_sparsity_and_uniform_distribution():
    cfg = config.resolve(config.RunConfig(task="link", model="gcn", method="rigl",
                                          sparsity=0.75, structure="NM:1:4"))
    # A link GNN's default distribution is ERK; N:M fixes every matrix, so uniform.
    assert (cfg.structure, cfg.sparsity, cfg.distribution) == ("nm:1:4", 0.75, "uniform")
    assert config.resolve(config.RunConfig(structure="none")).structure is None
    assert method_settings.structure_sparsity("nm:2:4", None) == 0.5
    assert method_settings.structure_sparsity(None, None) == 0.9


def test_run_names_tell_structured_runs_apart():
    plain = cli.run_name("node", config.RunConfig(task="node", sparsity=0.5))
    nm = cli.run_name("node", config.RunConfig(task="node", sparsity=0.5, structure="nm:2:4"))
    assert nm == plain.replace("_s0.5_", "_s0.5_nm2-4_")
    assert sweep_cli.record_name({"config": dict(method="rigl", sparsity=0.5, seed=0,
                                                 structure="nm:2:4")}) == (
        "rigl_s0.5_nm2-4_seed0.json")


def test_sweep_sparsities_follow_the_structure():
    def flag(structure, sparsities):
        return sweep_cli._sparsities_flag(argparse.Namespace(structure=structure,
                                                             sparsities=sparsities))

    assert flag("nm:2:4", None) == "0.5"
    assert flag("nm:2:4", "0.5") == "0.5"
    assert flag(None, None).startswith("0.125")
    with pytest.raises(ValueError, match=r"--sparsities=0.9 contradicts --structure=nm:2:4"):
        flag("nm:2:4", "0.5,0.9")


def test_node_run_with_structure_records_it(tmp_path, capsys):
    code, out, err = _main("node", ["--structure=nm:2:4", "--method=rigl", "--epochs=3",
                                    "--update-every=1", f"--out={tmp_path}", "--no-progress"],
                           capsys)
    assert code == 0, err
    [path] = tmp_path.glob("*.json")
    assert "_nm2-4_" in path.name
    rec = json.loads(path.read_text())
    assert rec["config"]["structure"] == "nm:2:4" and rec["config"]["sparsity"] == 0.5
    # Every weight matrix keeps 2 of every 4 inputs per output, min(2, r) of a partial last
    # group of r inputs.
    cfg = config.resolve(cli.config_from_args("node", cli.build_parser("node").parse_args(
        ["--structure=nm:2:4", "--epochs=3"])))
    shapes = runs.prunable_shapes(tasks.get("node").prepare(cfg))
    assert set(shapes) == set(rec["layer_sparsity"])
    for layer, (size_in, size_out) in shapes.items():
        kept = 2 * (size_in // 4) + min(2, size_in % 4)
        assert rec["layer_sparsity"][layer] == pytest.approx(1 - kept / size_in, abs=1e-9)


def test_restarted_sweep_tells_structured_runs_from_unstructured(tmp_path):
    """The same method, sparsity and seed with and without --structure are different runs:
    a sweep into a folder holding the unstructured one still runs the structured one."""
    argv = ["--task=node", "--model=gcn", "--methods=static", "--seeds=1", "--epochs=1",
            f"--out={tmp_path}", "--no-progress"]
    assert sweep_script().main(argv + ["--sparsities=0.5"]) == 0
    assert sweep_script().main(argv + ["--structure=nm:2:4"]) == 0
    rows = sweeps.read_csv(tmp_path / "results.csv")
    assert [(r["method"], float(r["sparsity"]), r["structure"]) for r in rows] == [
        ("static", 0.5, ""), ("static", 0.5, "nm:2:4")]
    assert sweep_script().main(argv + ["--structure=nm:2:4"]) == 0  # both done: nothing runs
    assert len(sweeps.read_csv(tmp_path / "results.csv")) == 2
