"""The README's "Your own graph" examples, run line for line: a networkx graph, a SciPy
adjacency and NumPy edge arrays to a trained node classifier and link predictor."""
import re

import numpy as np
import pytest
from helpers import REPO

from sparsegnn_jax import data


def _examples() -> list[str]:
    """The code blocks of the README's "Your own graph" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your own graph\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _run(code: str, upto: str | None = None) -> dict:
    """Executes ``code`` (up to the first line starting with ``upto``); returns its names."""
    if upto is not None:
        lines = code.splitlines()
        code = "\n".join(lines[:next(i for i, line in enumerate(lines) if line.startswith(upto))])
    names: dict = {}
    exec(compile(code, "README.md (Your own graph)", "exec"), names)  # noqa: S102
    return names


def test_each_example_is_at_most_six_lines_and_uses_its_converter():
    examples = _examples()
    assert len(examples) == 3
    for code, converter in zip(examples, ("from_networkx", "from_scipy", "from_arrays")):
        lines = [line for line in code.splitlines() if line.strip()]
        assert len(lines) <= 6, code
        assert f"sg.graphs.{converter}(" in code
        assert 'task="node"' in code and 'task="link"' in code


def _check_trained(names: dict, num_nodes: int) -> None:
    node, link = names["node"], names["link"]
    assert node["data"]["num_nodes"] == link["data"]["num_nodes"] == num_nodes
    # 4 equal communities: chance is 0.25; a GCN reading the graph finds them.
    assert node["test"]["accuracy"] > 0.6
    assert link["data"]["split"] == "random"  # no timestamps
    assert link["test"]["roc_auc"] > 0.65
    assert link["data"]["new_node_share_test"] < 0.05


def test_networkx_example_trains_a_node_classifier_and_a_link_predictor(capsys):
    nx = pytest.importorskip("networkx")
    names = _run(_examples()[0])
    # The graph kept its nodes and edges, node i being the i-th of G.nodes.
    ds = data.load("sbm")
    g = names["G"]
    assert (ds.num_nodes, ds.num_edges) == (g.number_of_nodes(), g.number_of_edges())
    blocks = nx.get_node_attributes(g, "block")
    np.testing.assert_array_equal(ds.labels, [blocks[v] for v in g.nodes])
    _check_trained(names, 200)
    printed = capsys.readouterr().out.split()
    assert printed[-1] == "random" and float(printed[0]) == names["node"]["test"]["accuracy"]


def test_scipy_and_numpy_examples_convert_every_edge():
    # The conversion lines alone (training is the slow tests below).
    scipy_names = _run(_examples()[1], upto="node =")
    adjacency = data.load("adj")
    assert adjacency.num_edges == scipy_names["A"].nnz  # not symmetric: directed, all kept
    numpy_names = _run(_examples()[2], upto="node =")
    edges = data.load("edges")
    np.testing.assert_array_equal(edges.senders, numpy_names["senders"])
    # The two examples draw the same graph.
    np.testing.assert_array_equal(adjacency.senders, edges.senders)
    np.testing.assert_array_equal(adjacency.receivers, edges.receivers)
    np.testing.assert_array_equal(edges.labels, np.arange(200) // 50)


@pytest.mark.slow
@pytest.mark.parametrize("which", [1, 2], ids=["scipy", "numpy"])
def test_scipy_and_numpy_examples_train(which):
    _check_trained(_run(_examples()[which]), 200)
