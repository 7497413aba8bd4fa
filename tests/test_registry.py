"""The method registry: a method added with one register call reaches runs, sweeps, FLOPs, CLI."""
import json

import numpy as np
import optax
import pytest

import sparsegnn_jax as sg
from sparsegnn_jax import cli, config, flops, report, sparsity, sweeps
from sparsegnn_jax.sparsity import registry


def magnitude_once(inner, sparsity=0.9, distribution="uniform", filter_fn=None,
                   warmup_steps=0):
    """A toy method: dense for ``warmup_steps``, then the magnitude mask, fixed."""
    return sg.one_shot(inner, sparsity=sparsity, prune_step=warmup_steps,
                       distribution=distribution, filter_fn=filter_fn)


def _plan(options, total_steps, steps_per_epoch):
    return dict(warmup_steps=total_steps // 2)


@pytest.fixture
def toy_method():
    spec = registry.MethodSpec(
        "toy", magnitude_once, "Toy", plan=_plan,
        sparsity_at=lambda kw, steps, final: np.where(np.asarray(steps) < kw["warmup_steps"],
                                                      0.0, final),
        in_sweeps=False)
    registry.register(spec)
    try:
        yield spec
    finally:
        registry.unregister("toy")


def test_register_rejects_a_taken_name_and_a_factory_without_sparsity():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.MethodSpec("rigl", sparsity.rigl, "RigL"))
    with pytest.raises(ValueError, match="must take"):
        registry.register(registry.MethodSpec("bad", lambda inner: inner, "Bad"))
    assert "bad" not in registry.names()


def test_registry_and_factory_names_are_one_set():
    # Every built-in method is reachable by its registry name and its factory name, in the
    # registry and in the package; records keep the registry name.
    pairs = {"static": "static_sparse", "gmp": "gradual_magnitude",
             "set": "sparse_evolutionary", "rigl": "rigl", "admm": "admm", "slr": "slr",
             "one_shot": "one_shot", "dense": "dense"}
    for name, factory_name in pairs.items():
        assert registry.get(factory_name) is registry.get(name)
        assert registry.get(name).factory is getattr(sg, factory_name)
        assert registry.canonical_name(factory_name) == name
    assert registry.get("set_") is registry.get("set") and sg.set_ is sg.sparse_evolutionary
    tx = sg.sparsifier("gradual_magnitude", optax.sgd(0.1), sparsity=0.5, end_step=4, every=2)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert flops.training("gradual_magnitude", 10, 1.0, 0.5, end_step=4) == flops.training(
        "gmp", 10, 1.0, 0.5, end_step=4)
    # Runs accept the factory name and record the registry name.
    assert config.resolve(config.RunConfig(task="node", method="gradual_magnitude")).method == "gmp"
    with pytest.raises(ValueError, match="already names method 'gmp'"):
        registry.register(registry.MethodSpec("gmp2", sg.gradual_magnitude, "GMP2",
                                              aliases=("gradual_magnitude",)))
    assert "gmp2" not in registry.names()


def test_the_sparsity_package_is_not_callable_and_names_the_function():
    masks = {"w": np.array([[True, False], [False, False]])}
    with pytest.raises(TypeError, match=r"sparsegnn_jax.mask_sparsity\(masks\)"):
        sg.sparsity(masks)
    assert sg.mask_sparsity(masks) == 0.75


def test_a_registered_method_runs_sweeps_counts_flops_and_reports(toy_method, tmp_path, capsys):
    assert "toy" in registry.names() and "toy" not in registry.sweep_defaults()
    # The command line takes it by name; its record (runs.run's) is the one checked here.
    assert cli.main("node", ["--method=toy", "--sparsity=0.75", "--epochs=4", "--no-progress",
                             f"--out={tmp_path}"]) == 0
    [written] = tmp_path.glob("*.json")
    rec = json.loads(written.read_text())
    assert rec["config"]["method"] == "toy"
    assert rec["sparsity"] == pytest.approx(0.75, abs=0.01)
    steps = rec["data"]["steps"]
    for path, s in rec["layer_sparsity"].items():
        assert s == pytest.approx(0.75, abs=0.01), path
    # Dense for the first half of the run, then sparse: the FLOPs of the trace and of the
    # spec's schedule agree.
    f_dense = rec["flops"]["forward_step_dense"]
    expected = flops.training("toy", steps, f_dense, 0.25, warmup_steps=steps // 2)
    assert expected == pytest.approx(3 * f_dense * (steps // 2) + 3 * 0.25 * f_dense
                                     * (steps - steps // 2))
    assert rec["flops"]["training"] < 3 * f_dense * steps

    cfg = config.RunConfig(task="node", method="toy", sparsity=0.75, epochs=4, progress=False)
    group = sweeps.run_group(cfg, [0.5, 0.75], [0], vmapped=True)
    assert [r["config"]["sparsity"] for r in group] == [0.5, 0.75]
    assert [round(r["sparsity"], 2) for r in group] == [0.5, 0.75]

    # The report labels it and draws its density from the spec: dense for half the run.
    sweeps.write_csv(tmp_path / "results.csv", [sweeps.csv_row(r) for r in group])
    tables = report.markdown_tables(report.summarise(report.load_rows([tmp_path / "results.csv"])))
    assert "| sparsity | Toy |" in tables
    trace = report.density_trace(0.75, 100, "node", methods=("toy",))
    assert trace["toy"][:50] == [1.0] * 50 and trace["toy"][50:] == [0.25] * 50


def test_flops_training_rejects_unknown_methods_after_unregistering(toy_method):
    registry.unregister("toy")
    with pytest.raises(ValueError, match="unknown"):
        flops.training("toy", 10, 1000.0, 0.5)
    registry.register(toy_method)
