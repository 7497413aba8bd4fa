"""Lottery runs (IMP, UGS): rounds as an outer loop over train.fit, exact counts per round,
training FLOPs over every round, resuming at a round, and the flags' errors."""
import dataclasses
import re

import numpy as np
import pytest

import sparsegnn_jax as sg
from sparsegnn_jax import cli, config, rounds, tasks

BASE = dict(task="node", dataset="synthetic-sbm", model="gcn", progress=False)


def keep_by_hand(n, fraction, rounds_done):
    for _ in range(rounds_done):
        n = min(max(round(n * (1 - fraction)), 1), n)
    return n


def layer_sizes(cfg):
    problem = tasks.get("node").prepare(config.resolve(cfg))
    return problem, sg.runs.prunable_shapes(problem)


def test_ugs_five_rounds_reach_the_nominal_sparsities_with_exact_counts():
    cfg = config.RunConfig(**BASE, method="ugs", rounds=5, epochs=2, hidden=96)
    problem, shapes = layer_sizes(cfg)
    records = rounds.run_rounds(cfg, problem)
    assert [r["config"]["rounds"] for r in records] == [1, 2, 3, 4, 5]
    for r, rec in enumerate(records, start=1):
        kept_weights = total_weights = 0
        for path, shape in shapes.items():
            size = int(np.prod(shape))
            fraction = 0.05 if path.endswith("edge_weight") else 0.2
            kept = keep_by_hand(size, fraction, r)
            assert round((1 - rec["layer_sparsity"][path]) * size) == kept, (r, path)
            if path.endswith("edge_weight"):
                assert rec["edge_sparsity"] == pytest.approx(1 - kept / size, abs=1e-9)
            else:
                kept_weights, total_weights = kept_weights + kept, total_weights + size
        assert rec["sparsity"] == pytest.approx(1 - kept_weights / total_weights, abs=1e-6)
    final = records[-1]
    assert final["sparsity"] == pytest.approx(1 - 0.8 ** 5, abs=1e-3)
    assert final["edge_sparsity"] == pytest.approx(1 - 0.95 ** 5, abs=1e-3)
    assert final["config"]["sparsity"] == pytest.approx(1 - 0.8 ** 5)
    # Every search and every ticket training counted: 5 searches, 5 tickets.
    assert len(final["flops"]["training_rounds"]) == 10
    assert final["flops"]["training"] == pytest.approx(sum(final["flops"]["training_rounds"]))
    assert [e["round"] for e in final["rounds"]] == [1, 2, 3, 4, 5]


def test_imp_training_flops_over_every_round_against_a_hand_count():
    hidden, epochs, R = 8, 3, 2
    cfg = config.RunConfig(**BASE, method="imp", rounds=R, epochs=epochs, hidden=hidden)
    problem, shapes = layer_sizes(cfg)
    rec = rounds.run_rounds(cfg, problem)[-1]
    n = int(problem.graph.n_node[0])
    e = int(problem.graph.n_edge[0])
    layers = list(shapes.values())
    assert len(layers) == 2 and not any(p.endswith("edge_weight") for p in shapes)

    def forward(r):  # GCN layer: d 2 N in out + 2 E out (normalise, sum) + N out (bias)
        total = 0.0
        for fan_in, fan_out in layers:
            size = fan_in * fan_out
            density = keep_by_hand(size, 0.2, r) / size
            total += density * 2 * n * fan_in * fan_out + 2 * e * fan_out + n * fan_out
        return total

    # Trainings 0..R, each of `epochs` full-batch steps at the masks after r rounds.
    expected = sum(3.0 * epochs * forward(r) for r in range(R + 1))
    assert rec["flops"]["training"] == pytest.approx(expected, rel=1e-6)
    assert rec["flops"]["step_ticket"] == pytest.approx(3.0 * forward(R), rel=1e-6)
    assert rec["flops"]["training_ticket"] == pytest.approx(3.0 * epochs * forward(R), rel=1e-6)
    assert rec["flops"]["training_relative"] == pytest.approx(
        expected / (3.0 * epochs * forward(0)), rel=1e-6)
    # The analytic count of the registry entry agrees at the nominal (unrounded) densities.
    dense = {"a": 100.0, "b": 50.0}
    got = sg.flops.training("imp", 3 * 4, dense, {"a": 0.64, "b": 0.9025}, rounds=2,
                            steps_per_round=4)
    assert got == pytest.approx(3 * 4 * (150 + (80 + 47.5) + (64 + 45.125)))


def test_imp_resumed_at_a_round_ends_as_an_uninterrupted_run(tmp_path):
    cfg = config.RunConfig(**BASE, method="imp", epochs=3, hidden=8, rewind_step=1)
    whole = rounds.run_rounds(dataclasses.replace(cfg, rounds=3))
    first = rounds.run_rounds(dataclasses.replace(cfg, rounds=2, checkpoint_dir=str(tmp_path)))
    assert sg.checkpoint.latest_step(tmp_path) == 2
    resumed = rounds.run_rounds(dataclasses.replace(cfg, rounds=3, checkpoint_dir=str(tmp_path),
                                                    resume=True))
    assert [r["test"] for r in first] == [r["test"] for r in whole[:2]]
    for got, want in zip(resumed, whole):
        assert got["test"] == want["test"]
        assert got["layer_sparsity"] == want["layer_sparsity"]
        assert got["flops"]["training"] == want["flops"]["training"]
    with pytest.raises(ValueError, match="lr"):
        rounds.run_rounds(dataclasses.replace(cfg, rounds=3, lr=0.5,
                                              checkpoint_dir=str(tmp_path), resume=True))


@pytest.mark.parametrize("flags, message", [
    (["--method=rigl", "--rounds=3"], "--rounds applies to the lottery methods"),
    (["--method=ugs", "--model=mlp"], "--model=mlp passes no messages"),
    (["--method=imp", "--l1-weights=0.1"], "--l1-weights has no effect with --method=imp"),
    (["--method=imp", "--sparsity=0.5"], "final sparsity is 1 - \\(1 - p\\)\\^rounds"),
    (["--method=ugs", "--distribution=erk"], "uniform"),
])
def test_cli_refuses_lottery_flags_it_cannot_honour(flags, message, capsys, tmp_path,
                                                    no_data_loading):
    code = cli.main("node", ["--dataset=synthetic-sbm", "--no-progress", f"--out={tmp_path}",
                             *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_sweep_writes_a_row_per_round_equal_to_the_runs(tmp_path, capsys):
    from sparsegnn_jax import sweep_cli, sweeps

    flags = ["--task=node", "--model=gcn", "--dataset=synthetic-sbm", "--methods=imp",
             "--seeds=1", "--epochs=3", "--rounds=2", "--no-progress", f"--out={tmp_path}"]
    assert sweep_cli.main(flags) == 0
    rows = sweeps.read_csv(tmp_path / "results.csv")
    runs = rounds.run_rounds(config.RunConfig(**BASE, method="imp", rounds=2, epochs=3))
    assert [float(r["sparsity"]) for r in rows] == pytest.approx([0.2, 0.36])
    for row, rec in zip(rows, runs):
        assert float(row["test_accuracy"]) == pytest.approx(rec["test"]["accuracy"])
        assert float(row["training_flops"]) == pytest.approx(rec["flops"]["training"])
        assert float(row["achieved_sparsity"]) == pytest.approx(rec["sparsity"])
    assert sweep_cli.main(flags) == 0  # a restart skips the finished rounds
    assert "all rounds already in" in capsys.readouterr().out


def test_node_search_score_is_the_validation_accuracy():
    """UGS takes its next masks from the search's best validation epoch; on a node task that
    is the validation accuracy the evaluation reports for the same params."""
    cfg = config.resolve(config.RunConfig(**BASE, method="ugs", rounds=1, epochs=1))
    problem = tasks.get("node").prepare(cfg)
    model = tasks.get("node").build_model(problem, 0)
    bound, params = sg.train.split_model(model)
    score = tasks.jit_with_inputs(tasks.get("node").search_score(problem, bound))
    want = tasks.get("node").evaluate(problem, bound, params, "val")["accuracy"]
    assert float(score(params)) == pytest.approx(want, abs=1e-6)
