"""The documentation: docs/tutorial.ipynb executes end to end and prints the numbers a hand
computation gives; no public example or docstring imports an underscore module."""
import ast
import json
import os
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from helpers import REPO

NOTEBOOK = REPO / "docs" / "tutorial.ipynb"


def _cell_texts(nb) -> list[str]:
    """The printed text of every code cell (stdout streams), in order."""
    return ["".join(o.get("text", "") for o in cell.get("outputs", [])
                    if o.get("output_type") == "stream" and o.get("name") == "stdout")
            for cell in nb.cells if cell.cell_type == "code"]


def _line(text: str, prefix: str) -> str:
    found = [line[len(prefix):].strip() for line in text.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, f"expected one line starting with {prefix!r} in:\n{text}"
    return found[0]


def _dict(text: str, prefix: str) -> dict:
    return ast.literal_eval(_line(text, prefix).split(" | ")[0])


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed now, in a kernel that imports this checkout."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_path = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "")
                                               .split(os.pathsep) if p])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", env_path)
        # The kernel compiles as the rest of the suite does (tests/conftest.py).
        env.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
        # Raises CellExecutionError, naming the cell, when any cell raises.
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}}
                       ).execute()
    return "".join(_cell_texts(nb))


def _keep(size, sparsity):
    return min(max(round(size * (1 - sparsity)), 1), size)


def _graph_counts():
    """Nodes and stored edges of the tutorial's graph, counted with NumPy."""
    n = 40
    senders = np.concatenate([np.arange(n), np.arange(0, n, 4)])
    receivers = np.concatenate([(np.arange(n) + 1) % n, (np.arange(0, n, 4) + n // 2) % n])
    undirected = {tuple(sorted(e)) for e in zip(senders.tolist(), receivers.tolist())}
    return n, 2 * len(undirected) + n


def test_tutorial_prints_the_hand_computed_numbers(executed):
    text = executed
    n, e = _graph_counts()
    assert int(_line(text, "stored edges:")) == e
    sizes = {"layers/0/kernel": 8 * 32, "layers/1/kernel": 32 * 3}
    at = {s: {p: _keep(size, s) for p, size in sizes.items()} for s in (0.5, 0.75, 0.8, 0.9)}
    assert _dict(text, "active weights per layer (masks):") == at[0.9]
    assert _dict(text, "non-zero weights per layer (params):") == at[0.9]
    assert int(_line(text, "mask updates (steps 5, 10, ..., 25):")) == len(range(5, 30, 5))
    assert _dict(text, "chain, active weights:") == at[0.8]
    assert _line(text, "inject_hyperparams, active weights:") == f"{at[0.8]} | update_every: 4"
    assert _line(text, "MultiSteps:") == "method updates 3 | mini-batches computed 12"
    # Under jit the library's message is the first line of the error.
    assert ("refused under jit: rigl: the sparsity method is followed by 1 other "
            "transformation in an optax.chain") in text
    assert "refused under jit: rigl: the sparsity changed after init" in text
    assert _dict(text, "linen non-zeros after apply:") == {"hidden/kernel": 64, "out/kernel": 24}
    assert _dict(text, "plain non-zeros after apply:") == {"w1": 64, "w2": 24}
    assert _dict(text, "SNIP active weights:") == at[0.9]
    assert _line(text, "same masks as static_sparse(scores=...):") == "True"
    assert _line(text, "same masks as the built-in sg.snip:") == "True"
    kept = at[0.9]["layers/0/kernel"]
    assert (f"refused: sparse_method: the masks returned at init keep more weights than the "
            f"sparsity allows ('layers/0/kernel' keeps 256, allowed {kept}") in text
    # GCN layer: 2 N F_in F_out d + N F_out (bias) + 2 E F_out (normalised sum).
    def gcn(f_in, f_out, d=1.0):
        return 2 * n * f_in * f_out * d + n * f_out + 2 * e * f_out
    d0, d1 = at[0.9]["layers/0/kernel"] / 256, at[0.9]["layers/1/kernel"] / 96
    assert _dict(text, "dense forward FLOPs per layer:") == {"layers/0": gcn(8, 32),
                                                             "layers/1": gcn(32, 3)}
    assert _dict(text, "RigL forward FLOPs per layer:") == pytest.approx(
        {"layers/0": gcn(8, 32, d0), "layers/1": gcn(32, 3, d1)})
    f_dense, f_sparse = gcn(8, 32) + gcn(32, 3), gcn(8, 32, d0) + gcn(32, 3, d1)
    # 30 steps at 3 f_S, and 5 RigL mask updates with the dense weight gradient.
    total = 30 * 3 * f_sparse + 5 * (f_dense - f_sparse)
    found = re.search(r"training FLOPs of the 30 RigL steps: (\d+), ([\d.]+) of dense", text)
    assert int(found.group(1)) == round(total)
    assert float(found.group(2)) == round(total / (90 * f_dense), 4)
    sweep = _line(text, "non-zeros of layers/0/kernel, rows = sparsity 0.5 / 0.75 / 0.9, "
                        "columns = seed 0 / 1:")
    assert json.loads(sweep) == [[_keep(256, s)] * 2 for s in (0.5, 0.75, 0.9)]
    assert _line(text, "restored bit for bit:") == "True | metadata: {'note': 'tutorial'}"
    assert float(_line(text, "mask sparsity after restore:")) == pytest.approx(
        1 - sum(at[0.9].values()) / sum(sizes.values()))


def test_the_committed_notebook_holds_the_outputs_it_prints(executed):
    stored = _cell_texts(nbformat.read(NOTEBOOK, as_version=4))
    # Everything but the loss (float rounding may differ between CPUs) is reproduced exactly.
    def stable(text):
        return [line for line in text.splitlines() if not line.startswith("loss after")]
    assert stable("".join(stored)) == stable(executed)


# Imports of underscore modules: `sparsegnn_jax.sparsity._core`, `sg.flops._x`, `from ... import _y`.
_PRIVATE = re.compile(r"\b(?:sparsegnn_jax|sg)(?:\.\w+)*\._\w+"
                      r"|from\s+sparsegnn_jax[\w.]*\s+import\s+\(?\s*_\w+")


def _docstrings(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def test_no_public_example_or_docstring_uses_an_underscore_module():
    sources = {str(p.relative_to(REPO)): p.read_text() for p in
               [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sources["docs/tutorial.ipynb"] = "\n".join(c.source for c in nb.cells)
    for path in sorted((REPO / "sparsegnn_jax").rglob("*.py")):
        sources[str(path.relative_to(REPO))] = "\n".join(_docstrings(path))
    offenders = {name: _PRIVATE.findall(text) for name, text in sources.items()
                 if _PRIVATE.search(text)}
    assert not offenders, f"underscore modules in public docs: {offenders}"
    # The pattern does catch what it must.
    assert _PRIVATE.search("from sparsegnn_jax.sparsity._core import Rule")
    assert _PRIVATE.search("sg.sparsity._core.Rule")
    assert _PRIVATE.search("from sparsegnn_jax.sparsity.transform import _densities")
