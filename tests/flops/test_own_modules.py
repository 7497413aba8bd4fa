"""Counting models built from modules of your own: the count is complete or says what it misses.

The README's example (a model that sums neighbour messages inline between two nnx.Linear) is run
as written: before its counter is registered the aggregation is missing and a warning names the
module; after, the count equals the hand count and agrees with XLA's.
"""
import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import REPO
from sparsegnn_jax import flops, graphs, models
from sparsegnn_jax.flops import counting, xla

README = (REPO / "README.md").read_text()


def _readme_block(heading):
    """The first ```python block after ``heading`` in the README."""
    section = README[README.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def readme_example():
    """The README's block executed, with the warnings it raised; its counter is unregistered
    afterwards."""
    saved = dict(counting._COUNTERS)
    namespace = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(_readme_block("### Your own modules"), "README.md", "exec"), namespace)
        yield namespace, caught
    finally:
        counting._COUNTERS.clear()
        counting._COUNTERS.update(saved)


def _hand_count(n, e, f_in, hidden, f_out):
    # Linear + bias, one add per edge and hidden feature, Linear + bias (ReLU not counted).
    return 2 * n * f_in * hidden + n * hidden + e * hidden + 2 * n * hidden * f_out + n * f_out


def test_readme_example_warns_then_counts_the_hand_count(readme_example):
    ns, caught = readme_example
    n, e = int(ns["graph"].n_node[0]), int(ns["graph"].senders.shape[0])
    assert (n, e) == (720, 10_200)
    hand = _hand_count(n, e, 32, 16, 5)
    assert hand == 1_030_800
    # Before: the two Linear layers only, and one warning naming the module, its type and the fix.
    uncounted = [w for w in caught if issubclass(w.category, flops.UncountedModuleWarning)]
    assert len(uncounted) == 1
    message = str(uncounted[0].message)
    assert "<top level> (" in message and "SumGNN" in message and "register_counter" in message
    assert ns["before"].total == hand - e * 16 == 867_600
    assert len(ns["before"].uncounted) == 1 and "SumGNN" in ns["before"].uncounted[0]
    # After: the hand count, per layer as the README says, checked against XLA without a warning.
    after = ns["after"]
    assert after.total == hand
    assert after.per_layer == {"aggregate": 163_200, "lin1": 748_800, "lin2": 118_800}
    assert after.uncounted == ()
    assert not [w for w in caught if issubclass(w.category, flops.FlopsMismatchWarning)]
    assert after.xla_total == pytest.approx(hand, rel=xla.TOLERANCE)


def test_uncounted_module_fails_the_check_and_strict_raises(readme_example, monkeypatch):
    ns, _ = readme_example
    model, graph = ns["model"], ns["graph"]
    monkeypatch.delitem(counting._COUNTERS, ns["SumGNN"])
    with pytest.raises(flops.UncountedModuleError, match=r"<top level> \(.*SumGNN\)"):
        flops.forward(model, graph, strict=True)
    with pytest.warns(flops.UncountedModuleWarning, match="SumGNN"):
        with pytest.warns(flops.FlopsMismatchWarning, match="SumGNN") as mismatch:
            report = flops.forward(model, graph, check=True)
    # The missing aggregation is 16% of the pass: beyond the 10% tolerance.
    assert report.total / report.xla_total - 1 < -xla.TOLERANCE
    assert "-1" in str(mismatch[-1].message)  # the gap, e.g. "-16.8%"


def test_check_names_a_user_counter_that_misses_an_operation(readme_example, monkeypatch):
    ns, _ = readme_example
    # Declared a container: its counter runs (no UncountedModuleWarning) but drops the sum.
    monkeypatch.setitem(counting._COUNTERS, ns["SumGNN"], flops.count_children)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flops.forward(ns["model"], ns["graph"], check=True)
    assert [w.category for w in caught] == [flops.FlopsMismatchWarning]
    assert re.search(r"without a library counter: <top level> \(.*SumGNN\)",
                     str(caught[0].message))


class Rescale(nnx.Module):
    """``x * scale``: elementwise arithmetic of its own, no counter registered."""

    def __init__(self, width):
        self.scale = nnx.Param(jnp.ones((width,)))

    def __call__(self, x):
        return x * self.scale[...]


def test_a_nested_module_without_counter_is_named_by_path():
    head = nnx.Sequential(models.Linear(8, 8, rngs=nnx.Rngs(0)), Rescale(8), nnx.Dropout(0.1),
                          models.Linear(8, 2, rngs=nnx.Rngs(1)))
    model = models.NodeClassifier(models.build("gcn", 4, 8, 8, rngs=nnx.Rngs(0)), head)
    g = graphs.from_edges(np.array([0, 1, 2]), np.array([1, 2, 3]), 4,
                          node_features=np.ones((4, 4), np.float32))
    with pytest.warns(flops.UncountedModuleWarning) as caught:
        report = flops.forward(model, g)
    assert len(caught) == 1
    assert re.search(r"no FLOP counter for head/layers/1 \(.*Rescale\): ", str(caught[0].message))
    assert report.uncounted == (f"head/layers/1 ({__name__}.Rescale)",)
    # Everything else is counted: the two Linear layers of the head are in the report.
    assert {"head/layers/0", "head/layers/3"} <= set(report.per_layer)
    with pytest.raises(flops.UncountedModuleError, match="head/layers/1"):
        flops.inference(model, g, strict=True)


def test_library_containers_and_flax_leaves_without_arithmetic_are_not_reported():
    model = nnx.Sequential(nnx.Embed(10, 4, rngs=nnx.Rngs(0)), nnx.Dropout(0.5),
                           nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = flops.forward(model, 6, strict=True)
    assert report.total == 2 * 6 * 4 * 3 + 6 * 3
    # A flax layer with arithmetic of its own and no counter is reported.
    with pytest.raises(flops.UncountedModuleError, match="LayerNorm"):
        flops.forward(nnx.LayerNorm(4, rngs=nnx.Rngs(0)), 6, strict=True)


def test_check_needs_an_input_to_run():
    with pytest.raises(ValueError, match="batch size"):
        flops.forward(models.paper_link_mlp(nnx.Rngs(0)), 7, check=True)


def test_readme_states_the_check_tolerances():
    text = " ".join(README.split())
    found = re.search(r"more than \*\*(\d+)%, or (\d+)% for a model with GAT layers\*\*", text)
    assert found, "README no longer states the check's tolerances"
    assert (int(found.group(1)) / 100, int(found.group(2)) / 100) == (
        xla.TOLERANCE, xla.ATTENTION_TOLERANCE)
    gat = models.build("gat", 4, 8, 2, heads=2, rngs=nnx.Rngs(0))
    assert xla.default_tolerance(gat) == xla.ATTENTION_TOLERANCE
    assert xla.default_tolerance(models.paper_node_mlp(nnx.Rngs(0))) == xla.TOLERANCE
