"""The README's "Extending from your own code": ``examples/my_extension.py``, copied to a folder
outside the repository, registers a method, a dataset and a FLOP counter; the README's own
commands train with them from the command line, in a sweep and in a report."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import REPO, TIMEOUT

import sparsegnn_jax as sg

EXAMPLE = REPO / "examples" / "my_extension.py"
SECTION = "## Extending from your own code"
# The node model of the README's commands: a 2-layer GCN, Kipf & Welling's 16 hidden units,
# on the example dataset's 24 features and 3 classes.
KERNELS = {"encoder/layers/0/kernel": (24, 16), "encoder/layers/1/kernel": (16, 3)}


def readme_commands() -> list[list[str]]:
    """The commands of the section's bash block, one argument list each."""
    section = (REPO / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
            if line.startswith("python ")]


def whole_rows_sparsity(sparsity: float) -> dict[str, float]:
    """Per kernel the sparsity the method's rule gives: whole rows of the uniform keep count."""
    shapes = {k: np.zeros(s) for k, s in KERNELS.items()}
    counts = sg.distributions.keep_counts(shapes, sparsity, "uniform")
    return {k: 1 - (int(counts[k]) // s[1]) * s[1] / (s[0] * s[1]) for k, s in KERNELS.items()}


@pytest.mark.slow
def test_the_readme_commands_run_the_example_from_a_folder_outside_the_repository(tmp_path,
                                                                                 cli_env):
    user = tmp_path / "user"
    (user / "examples").mkdir(parents=True)
    shutil.copy(EXAMPLE, user / "examples")
    node, sweep, report = readme_commands()
    outputs = []
    for cmd in (node, sweep, report):
        assert cmd[0] == "python" and "--import=examples/my_extension.py" in cmd
        quiet = [] if "report" in cmd[1] else ["--no-progress"]
        proc = subprocess.run([sys.executable, str(REPO / cmd[1]), *cmd[2:], *quiet], cwd=user,
                              env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)

    # The single run: the plug-in's method on the plug-in's dataset, masks by its rule.
    rec = json.loads((user / "runs" / "node_mine_gcn_mine_s0.7_seed0.json").read_text())
    assert (rec["config"]["method"], rec["config"]["dataset"]) == ("mine", "mine")
    assert rec["data"]["num_nodes"] == 120 and rec["data"]["num_classes"] == 3
    want = whole_rows_sparsity(0.7)
    # Whole rows keep fewer weights than the plain keep count (0.7005 and 0.7083 here).
    assert want == pytest.approx({"encoder/layers/0/kernel": 1 - 7 * 16 / 384,
                                  "encoder/layers/1/kernel": 1 - 4 * 3 / 48})
    # float32 sparsities: 1e-6 is far below one weight (1/384).
    assert rec["layer_sparsity"] == pytest.approx(want, abs=1e-6)
    assert outputs[0].startswith("layer sparsity: encoder/layers/0/kernel=0.7083, "
                                 "encoder/layers/1/kernel=0.7500\n")
    assert rec["flops"]["training_relative"] < 1

    # The sweep: dense and the plug-in's method, vmapped over sparsities and seeds.
    rows = sg.sweeps.read_csv(user / "runs" / "mine" / "results.csv")
    assert sorted((r["dataset"], r["method"], float(r["sparsity"]), int(r["seed"]))
                  for r in rows) == sorted(
        [("mine", "dense", 0.0, s) for s in (0, 1)]
        + [("mine", "mine", sp, s) for sp in (0.5, 0.7) for s in (0, 1)])
    total = sum(a * b for a, b in KERNELS.values())
    for r in rows:
        if r["method"] == "mine":
            layers = whole_rows_sparsity(float(r["sparsity"]))
            pruned = sum(layers[k] * a * b for k, (a, b) in KERNELS.items())
            assert float(r["achieved_sparsity"]) == pytest.approx(pruned / total, abs=1e-6)
    meta = json.loads((user / "runs" / "mine" / "sweep_meta.json").read_text())
    assert "--import=examples/my_extension.py" in meta["command"]

    # The report labels the method as its module registered it.
    table = (user / "runs" / "mine" / "report" / "results.md").read_text()
    assert "| sparsity | Whole rows |" in table


@pytest.fixture
def extension():
    """The example imported in this process; its method is unregistered afterwards (its
    dataset and FLOP counter stay: no other test uses the name or the layer)."""
    module = sg.plugins.import_module(str(EXAMPLE))
    # A module runs once per process: after an earlier test's cleanup, register it again.
    sg.registry.register(module.METHOD, replace=True)
    yield module
    sg.registry.unregister("mine")


def test_the_rule_keeps_whole_rows_of_largest_norm(extension):
    w = jnp.asarray([[3.0, 0.0, 0.0], [0.1, 0.1, 0.1], [0.0, 0.0, -2.0], [1.0, 1.0, 1.0]])
    params = {"w": w, "b": jnp.ones(3)}
    # 0.5 of 12 weights: a keep count of 6, two whole rows: norms 3, 0.17, 2, 1.73.
    masks = sg.get_masks(sg.sparsifier("mine", optax.sgd(0.1), sparsity=0.5).init(params))
    np.testing.assert_array_equal(masks["w"], [[True] * 3, [False] * 3, [True] * 3,
                                               [False] * 3])
    assert bool(masks["b"].all())
    # 0.4: a keep count of 7, still two whole rows (never more than the count).
    masks = sg.get_masks(sg.sparsifier("mine", optax.sgd(0.1), sparsity=0.4).init(params))
    assert int(masks["w"].sum()) == 6


def test_the_counter_counts_the_layers_aggregation_and_its_linear(extension):
    ds = sg.data.load("mine")
    graph = sg.graphs.from_edges(ds.senders, ds.receivers, ds.num_nodes,
                                 node_features=ds.features, symmetric=False, self_loops=False)
    n, e = ds.num_nodes, int(graph.n_edge[0])
    layer = extension.NeighbourSum(24, 8, rngs=nnx.Rngs(0))
    assert layer(graph).shape == (n, 8)
    report = sg.flops.forward(layer, graph)
    # One add per edge and input feature, then [N, 24] @ [24, 8] and the bias.
    assert report.per_layer == {"NeighbourSum": e * 24, "linear": 2 * n * 24 * 8 + n * 8}
    # The kernel's path is the one masks name it by: its density scales only the product.
    half = sg.flops.forward(layer, graph, densities={"linear/kernel": 0.5})
    assert half.total == e * 24 + n * 24 * 8 + n * 8


@pytest.mark.slow
def test_a_module_name_is_found_in_the_folder_the_script_runs_from(tmp_path, cli_env):
    # `python experiments/node_class.py` puts experiments/, not the current folder, on the
    # path; --import=my_extension still finds the user's module there. The run stops at the
    # first check after the flags (no training): the names were accepted.
    shutil.copy(EXAMPLE, tmp_path)
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "node_class.py"), "--import=my_extension",
         "--method=mine", "--dataset=mine", "--epochs=0", f"--out={tmp_path / 'out'}"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "error: --epochs must be positive, got 0\n"
