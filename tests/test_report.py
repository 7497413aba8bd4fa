"""sparsegnn_jax.report and experiments/report.py: seed statistics, markdown tables, plots, the
density figure, errors."""
import csv
import math
import os
import pathlib
import subprocess
import sys

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np

from sparsegnn_jax import config, report, runs, sweeps
from sparsegnn_jax.sparsity import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "report.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Known accuracies: method -> sparsity -> (seed 0, seed 1).
ACC = {
    "dense": {0.0: (0.80, 0.90)},
    "slr": {0.5: (0.70, 0.74), 0.9: (0.60, 0.66)},
    "rigl": {0.5: (0.71, 0.75), 0.9: (0.62, 0.70)},
}
# Training FLOPs (identical over seeds) and the dense budget they are relative to.
FLOPS = {"dense": {0.0: 1000.0}, "slr": {0.5: 875.0, 0.9: 775.0},
         "rigl": {0.5: 500.0, 0.9: 100.0}}


def _rows(task="link", dataset="toy", model="mlp"):
    rows = []
    for method, by_s in ACC.items():
        for s, accs in by_s.items():
            for seed, acc in enumerate(accs):
                rows.append({
                    "dataset": dataset, "model": model, "method": method, "sparsity": s,
                    "seed": seed, "test_accuracy": acc,
                    "test_roc_auc": 0.9 if task == "link" else "",
                    "test_ap": 0.9 if task == "link" else "",
                    "test_macro_f1": acc - 0.1 if task == "node" else "",
                    "val_accuracy": acc, "achieved_sparsity": s,
                    "training_flops": FLOPS[method][s],
                    "training_flops_relative": FLOPS[method][s] / 1000.0,
                    "inference_flops": 10.0 * (1 - s), "wall_time_s": 1.0,
                })
    return rows


def _write(path, rows, fields=sweeps.CSV_FIELDS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "results.csv"
    sweeps.write_csv(path, _rows())
    return path


def _section(md, heading):
    """The table lines under a '### heading' of the markdown."""
    lines = md.splitlines()
    start = lines.index(f"### {heading}") + 2
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_summary_mean_and_sample_std_match_hand_values(csv_path):
    summary = report.summarise(report.load_rows([csv_path]))
    group = summary["toy"]["mlp"]
    assert group["task"] == "link" and group["seeds"] == [0, 1]
    assert list(group["methods"]) == ["dense", "slr", "rigl"]
    mean, std = group["methods"]["rigl"][0.9]["accuracy"]
    assert mean == pytest.approx(0.66)
    # Sample std of two values a, b is |a - b| / sqrt(2).
    assert std == pytest.approx(0.08 / math.sqrt(2))
    assert group["methods"]["dense"][0.0]["accuracy"] == pytest.approx((0.85, 0.1 / math.sqrt(2)))
    assert group["methods"]["slr"][0.5]["training_flops_relative"] == pytest.approx(0.875)
    assert group["methods"]["slr"][0.5]["macro_f1"] is None


def test_accuracy_table_cells_and_dense_row_first(csv_path):
    md = report.markdown_tables(report.summarise(report.load_rows([csv_path])))
    table = _section(md, "Test accuracy (%)")
    assert _cells(table[0]) == ["sparsity", "SLR", "RigL"]
    body = [_cells(line) for line in table[2:]]
    assert [row[0] for row in body] == ["dense", "50%", "90%"]
    # Dense: mean 85, std 0.1 / sqrt(2) = 7.07 points, shown under every method.
    assert body[0][1:] == ["85.00 ± 7.07", "85.00 ± 7.07"]
    # slr 0.5: (70, 74) -> 72 ± 2.83; rigl 0.5: (71, 75) -> 73 ± 2.83.
    assert body[1][1:] == ["72.00 ± 2.83", "73.00 ± 2.83"]
    # slr 0.9: (60, 66) -> 63 ± 4.24; rigl 0.9: (62, 70) -> 66 ± 5.66.
    assert body[2][1:] == ["63.00 ± 4.24", "66.00 ± 5.66"]
    assert "Test macro-F1" not in md  # link task


def test_flops_table_and_rigl_slr_comparison(csv_path):
    md = report.markdown_tables(report.summarise(report.load_rows([csv_path])))
    flops = [_cells(line) for line in _section(md, "Training FLOPs relative to dense (mean)")[2:]]
    assert flops == [["dense", "1.000", "1.000"], ["50%", "0.875", "0.500"],
                     ["90%", "0.775", "0.100"]]
    cmp = _section(md, "RigL against SLR")
    assert _cells(cmp[0])[-2:] == ["RigL - SLR (points)", "RigL / SLR training FLOPs"]
    body = [_cells(line) for line in cmp[2:]]
    # 0.5: 73 - 72 = +1.00 points, 500 / 875 = 0.571; 0.9: 66 - 63 = +3.00, 100 / 775 = 0.129.
    assert body == [["50%", "73.00", "72.00", "+1.00", "0.571"],
                    ["90%", "66.00", "63.00", "+3.00", "0.129"]]
    group = report.summarise(report.load_rows([csv_path]))["toy"]["mlp"]
    rows = report.compare(group)
    assert rows[1]["flops_ratio"] == pytest.approx(100 / 775)
    assert rows[1]["accuracy_diff"] == pytest.approx(3.0)


def test_no_comparison_without_both_methods(tmp_path):
    rows = [r for r in _rows() if r["method"] != "slr"]
    path = _write(tmp_path / "r.csv", rows)
    md = report.markdown_tables(report.summarise(report.load_rows([path])))
    assert "RigL against SLR" not in md
    assert _cells(_section(md, "Test accuracy (%)")[0]) == ["sparsity", "RigL"]


def test_node_task_has_macro_f1_table_and_missing_seed_is_marked(tmp_path):
    rows = _rows(task="node")
    # Drop seed 1 of slr at 0.9: that cell is one run, marked (n=1) with std 0.
    rows = [r for r in rows if not (r["method"] == "slr" and r["sparsity"] == 0.9
                                    and r["seed"] == 1)]
    path = _write(tmp_path / "r.csv", rows)
    summary = report.summarise(report.load_rows([path]))
    assert summary["toy"]["mlp"]["task"] == "node"
    md = report.markdown_tables(summary)
    f1 = [_cells(line) for line in _section(md, "Test macro-F1 (%)")[2:]]
    assert f1[0] == ["dense", "75.00 ± 7.07", "75.00 ± 7.07"]
    assert f1[2][1] == "50.00 ± 0.00 (n=1)"


def test_several_csvs_group_by_dataset_and_later_rows_win(tmp_path):
    a = _write(tmp_path / "a.csv", _rows(dataset="alpha"))
    rerun = [dict(r, test_accuracy=0.5) for r in _rows(dataset="alpha") if r["method"] == "rigl"]
    b = _write(tmp_path / "b.csv", _rows(dataset="beta", model="gcn") + rerun)
    rows = report.load_rows([a, b])
    assert len(rows) == 2 * len(_rows())  # the re-run replaced alpha's rigl rows
    summary = report.summarise(rows)
    assert set(summary) == {"alpha", "beta"} and list(summary["beta"]) == ["gcn"]
    assert summary["alpha"]["mlp"]["methods"]["rigl"][0.5]["accuracy"] == (0.5, 0.0)
    md = report.markdown_tables(summary, [str(a), str(b)])
    assert md.index("## alpha / mlp") < md.index("## beta / gcn")


def test_format_sparsity_is_exact_on_the_paper_grid():
    labels = [report.format_sparsity(s) for s in sweeps.PAPER_GRID]
    assert labels[0] == "12.5%" and labels[7] == "90.625%" and labels[-1] == "99.21875%"
    assert [report.sparsity_x(s) for s in (0.5, 0.75, 0.9921875)] == [1.0, 2.0, 7.0]


def test_density_trace_follows_the_run_schedules():
    trace = report.density_trace(0.9, 1000)
    kw = runs.method_kwargs(config.resolve(config.RunConfig(method="slr", model="mlp")), 1000, 1)
    assert (trace["dense_steps"], trace["penalty_steps"]) == (kw["dense_steps"],
                                                              kw["penalty_steps"]) == (500, 250)
    slr, rigl = trace["slr"], trace["rigl"]
    assert len(slr) == len(rigl) == 1000
    assert slr[0] == slr[749] == 1.0
    assert slr[750] == slr[-1] == pytest.approx(0.1)
    assert rigl == pytest.approx([0.1] * 1000)
    # Mean density = the fraction of dense training FLOPs: 0.75 + 0.25 * 0.1.
    assert sum(slr) / 1000 == pytest.approx(0.775)
    with pytest.raises(ValueError, match="density-sparsity"):
        report.density_trace(1.0)


def test_density_trace_reads_any_registered_method_from_the_registry():
    trace = report.density_trace(0.9, 1000, methods=("gmp", "rigl", "dense"))
    kw = runs.method_kwargs(config.resolve(config.RunConfig(method="gmp", model="mlp")), 1000, 1)
    expected = 1.0 - registry.gmp_sparsity(np.arange(1000), 0.9, kw["begin_step"],
                                           kw["end_step"], kw["every"])
    np.testing.assert_allclose(trace["gmp"], expected)
    # GMP: dense until 10% of the run, a cubic ramp down to the target density by 50%.
    assert trace["gmp"][99] == 1.0 and trace["gmp"][-1] == pytest.approx(0.1)
    assert 0.1 < trace["gmp"][300] < 1.0
    assert trace["dense"] == [1.0] * 1000
    # RigL's dense gradients every update_every steps are not a density change.
    rigl = runs.method_kwargs(config.resolve(config.RunConfig(method="rigl", model="mlp")), 1000, 1)
    assert trace["dense_gradient_every"] == {"rigl": rigl["update_every"]}
    assert "phased" not in trace and "dense_steps" not in trace
    with pytest.raises(ValueError, match="unknown --method='nope'"):
        report.density_trace(methods=("nope",))


def _is_png(path):
    data = pathlib.Path(path).read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_cli_writes_markdown_and_pngs(tmp_path, csv_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert report.main([str(csv_path), "--out", str(out), "--density-trace"]) == 0
    printed = capsys.readouterr().out
    md = (out / "results.md").read_text()
    assert md in printed and "## toy / mlp" in md
    for name in ("toy_mlp_accuracy.png", "toy_mlp_flops.png", "density_vs_step.png"):
        assert _is_png(out / name), name
    assert not (out / "toy_mlp_macro_f1.png").exists()


def test_plot_functions_write_pngs_for_a_node_task(tmp_path):
    pytest.importorskip("matplotlib")
    path = _write(tmp_path / "r.csv", _rows(task="node", dataset="file:/x/y.csv"))
    summary = report.summarise(report.load_rows([path]))
    written = report.write_plots(summary, tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["file_x_y.csv_mlp_accuracy.png", "file_x_y.csv_mlp_flops.png",
                     "file_x_y.csv_mlp_macro_f1.png"]
    assert all(_is_png(p) for p in written)
    assert _is_png(report.plot_density(tmp_path / "d.png", sparsity=0.984375, steps=200))


def test_without_matplotlib_tables_are_still_written(tmp_path, csv_path, monkeypatch, capsys):
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "report"
    # The tables were written: success, with one warning line about the skipped plots.
    assert report.main([str(csv_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning:") and err.count("\n") == 1
    assert 'pip install -e ".[plots]"' in err and "results.md was written" in err
    assert "## toy / mlp" in (out / "results.md").read_text()
    assert not list(out.glob("*.png"))
    with pytest.raises(report.PlotsUnavailable, match=r"pip install -e \"\.\[plots\]\""):
        report.plot_density(tmp_path / "d.png")
    # --no-plots never needs matplotlib.
    assert report.main([str(csv_path), "--out", str(out), "--no-plots"]) == 0
    # Only the density figure asked for: nothing can be written, an error.
    capsys.readouterr()
    assert report.main(["--density-trace", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nothing was written" in err


def test_missing_csv_is_named_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope" / "results.csv"
    assert report.main([str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(missing) in err and "not found" in err


def test_missing_columns_are_named_exit_2(tmp_path, capsys):
    fields = [f for f in sweeps.CSV_FIELDS if f not in ("test_accuracy", "training_flops")]
    path = _write(tmp_path / "old.csv", _rows(), fields)
    assert report.main([str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "missing column(s) test_accuracy, training_flops" in err
    assert not (tmp_path / "o" / "results.md").exists()


def test_bad_value_and_empty_csv_exit_2(tmp_path, capsys):
    rows = _rows()
    rows[3]["test_accuracy"] = "high"
    path = _write(tmp_path / "bad.csv", rows)
    assert report.main([str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    # Row index 3 is data line 4, file line 5 (after the header).
    assert f"{path}, line 5: column 'test_accuracy' must be a number" in err
    empty = _write(tmp_path / "empty.csv", [])
    assert report.main([str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no result rows" in capsys.readouterr().err
    assert report.main(["--out", str(tmp_path / "o")]) == 2
    assert "at least one results CSV" in capsys.readouterr().err


def test_required_columns_are_sweep_columns():
    assert set(report.REQUIRED_COLUMNS) <= set(sweeps.CSV_FIELDS)
    assert set(report.TEXT_COLUMNS) | {"seed"} | set(report.NUMERIC_COLUMNS) == set(sweeps.CSV_FIELDS)


def _toy_method(inner, sparsity=0.9, distribution="uniform", filter_fn=None):
    return registry.sparsifier("static", inner, sparsity=sparsity, distribution=distribution,
                               filter_fn=filter_fn)


def test_method_registered_at_runtime_gets_its_label_and_unknown_ones_sort_last(tmp_path):
    rows = _rows() + [dict(r, method=m) for m in ("toy", "zz_unregistered")
                      for r in _rows() if r["method"] == "rigl"]
    path = _write(tmp_path / "r.csv", rows)
    registry.register(registry.MethodSpec("toy", _toy_method, "Toy"))
    try:
        summary = report.summarise(report.load_rows([path]))
        md = report.markdown_tables(summary)
    finally:
        registry.unregister("toy")
    assert list(summary["toy"]["mlp"]["methods"]) == ["dense", "slr", "rigl", "toy",
                                                      "zz_unregistered"]
    header = _cells(_section(md, "Test accuracy (%)")[0])
    assert header == ["sparsity", "SLR", "RigL", "Toy", "zz_unregistered"]
    assert _cells(_section(md, "Training FLOPs relative to dense (mean)")[0]) == header


def test_script_writes_results_md(tmp_path, csv_path, cli_env):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(csv_path), "--out", str(out),
                           "--no-plots"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=cli_env, check=False)
    assert proc.returncode == 0, proc.stderr
    md = (out / "results.md").read_text()
    assert "## toy / mlp" in md and md in proc.stdout
    assert proc.stderr == ""


def test_script_exit_code_and_message(tmp_path, cli_env):
    missing = tmp_path / "missing.csv"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(missing), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env=cli_env)
    assert proc.returncode == 2
    assert f"error: results CSV not found: {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_link_tables_carry_the_baselines_best_first(tmp_path):
    rows = _rows("link")
    for row in rows:
        # Each seed scores its pairs once: one value per seed, whatever the method.
        row["baseline_adamic_adar_roc_auc"] = 0.80 + 0.02 * row["seed"]
        row["baseline_preferential_attachment_roc_auc"] = 0.60
    path = tmp_path / "results.csv"
    _write(path, rows)
    group = report.summarise(report.load_rows([path]))["toy"]["mlp"]
    seeds = sorted({r["seed"] for r in rows})
    mean = 0.80 + 0.02 * sum(seeds) / len(seeds)
    assert group["baselines"]["adamic_adar"][0] == pytest.approx(mean)
    assert group["baselines"]["preferential_attachment"] == pytest.approx((0.60, 0.0))
    table = report.baselines_table(group)
    lines = table.splitlines()
    assert lines[2].startswith("| model (dense) | 90.00")
    assert lines[3].startswith("| adamic_adar |") and lines[4].startswith(
        "| preferential_attachment | 60.00")
    assert "### Non-learned baselines on the same test pairs" in report.markdown_tables(
        report.summarise(report.load_rows([path])))


def test_a_grid_that_prunes_only_edges_gets_a_sparsity_0_row_and_no_plots(tmp_path):
    # Dense weights, edges pruned: the weight sparsity is 0 in every row, and the dense method
    # (with the unpruned edge weights) is the dense model's row.
    rows = [{"dataset": "d", "model": "gcn", "method": m, "sparsity": 0.0, "seed": seed,
             "test_accuracy": acc + seed / 100, "test_macro_f1": acc, "training_flops": 2.0,
             "training_flops_relative": rel, "edge_sparsity": edge}
            for m, edge, acc, rel in (("dense", 0.0, 0.8, 1.0), ("static", 0.4, 0.7, 0.9),
                                      ("static", 0.6, 0.6, 0.8))
            for seed in (0, 1)]
    path = _write(tmp_path / "r.csv", rows)
    summary = report.summarise(report.load_rows([path]))
    md = report.markdown_tables(summary)
    acc = [_cells(line) for line in _section(md, "Test accuracy (%)")]
    assert acc[0] == ["sparsity", "Static (edges 0.4)", "Static (edges 0.6)"]
    assert acc[2] == ["dense", "80.50 ± 0.71", "80.50 ± 0.71"]
    assert acc[3] == ["0%", "70.50 ± 0.71", "60.50 ± 0.71"]
    flops = [_cells(line) for line in _section(md, "Training FLOPs relative to dense (mean)")]
    assert flops[3] == ["0%", "0.900", "0.800"]
    pytest.importorskip("matplotlib")
    assert report.write_plots(summary, tmp_path) == []


def test_lottery_rounds_are_one_column_beside_the_edge_grid(tmp_path):
    """A lottery method's rows are its rounds (each at the edge sparsity it reached): one
    column named by the method, while a method trained at a given edge sparsity gets its own."""
    rows = [{"dataset": "d", "model": "gcn", "method": m, "sparsity": s, "seed": 0,
             "test_accuracy": acc, "test_macro_f1": acc, "training_flops": 2.0,
             "training_flops_relative": 1.0, "edge_sparsity": edge}
            for m, s, edge, acc in (("dense", 0.0, "", 0.8), ("imp", 0.2, 0.0, 0.75),
                                    ("imp", 0.36, 0.0, 0.7), ("rigl", 0.36, 0.0975, 0.65))]
    summary = report.summarise(report.load_rows([_write(tmp_path / "r.csv", rows)]))
    acc = [_cells(line) for line in _section(report.markdown_tables(summary),
                                              "Test accuracy (%)")]
    assert acc[0] == ["sparsity", "RigL (edges 0.0975)", "IMP"]
    assert acc[-1] == ["36%", "65.00 ± 0.00", "70.00 ± 0.00"]
