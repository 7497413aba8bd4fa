"""``import sparsegnn_jax`` leaves its heavy optional dependencies unloaded until first use.

Not a timing test: it checks which modules a fresh interpreter holds after the import
(``benchmarks/import_time.py`` measures the time). scipy.stats alone took about 0.45 s, a third
of ``import jax, flax.nnx, optax``.
"""
import json
import subprocess
import sys

# Loaded on first use by: baselines (scipy.sparse adjacency, scipy.stats ranks), checkpoint
# (orbax), report (matplotlib), train's progress bars and data.download (tqdm), sparse node
# features (jax.experimental.sparse, which imports scipy.linalg).
DEFERRED = ("scipy", "scipy.stats", "scipy.sparse", "scipy.linalg", "orbax", "orbax.checkpoint",
            "matplotlib", "tqdm", "jax.experimental.sparse")


def _modules_after(code, cli_env):
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         env=cli_env, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_leaves_heavy_dependencies_unloaded(cli_env):
    # A dense model's forward pass and graph padding do not load them either.
    loaded = _modules_after(
        "import numpy as np, sparsegnn_jax as sg\nfrom flax import nnx\n"
        "g = sg.graphs.from_edges(np.array([0, 1]), np.array([1, 2]), 3,\n"
        "                         node_features=np.ones((3, 4), np.float32))\n"
        "sg.models.build('gcn', 4, 8, 2, rngs=nnx.Rngs(0))(g)\n"
        "sg.graphs.pad_to_bucket(g)\nsg.flops; sg.baselines; sg.report", cli_env)
    assert "sparsegnn_jax.baselines" in loaded  # the public names are still there
    assert sorted(loaded & set(DEFERRED)) == []


def test_first_use_loads_them(cli_env):
    # The deferred imports still happen where they are needed.
    loaded = _modules_after(
        "import numpy as np, sparsegnn_jax as sg\n"
        "sg.baselines.adamic_adar(np.array([0, 1]), np.array([1, 2]), 3, np.array([[0, 2]]))\n"
        "sg.baselines.auc_ap(np.array([1.0, 0.5]), np.array([0, 1]))\n"
        "x = sg.models.sparse_inputs.from_dense(np.eye(3))\n"
        "assert sg.models.sparse_inputs.is_sparse(x)", cli_env)
    assert {"scipy.sparse", "scipy.stats", "jax.experimental.sparse"} <= loaded
