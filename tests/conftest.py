"""Shared fixtures: the real datasets (skipping cleanly without them), the subprocess
environment, one JAX compilation cache per test process (each pytest-xdist worker), XLA's
cheaper compile mode, and the opt-in slow tests.

Set ``SPARSEGNN_SLOW_TESTS=1`` to run the tests marked ``@pytest.mark.slow`` (CI does); without
it they skip, saying so.

The tests check counts, equalities and hand-computed values, not speed, and most of their time
is XLA compiling small programs: they run with ``jax_disable_most_optimizations`` (in this
process and in the subprocesses of ``cli_env``), which compiles about a third faster. A test
whose assertion holds only for optimized programs (e.g. bitwise equality of two differently
shaped computations) is marked ``@pytest.mark.xla_optimized`` and runs with the optimizations.
"""
import os
import pathlib
import shutil
import tempfile

import jax
import pytest

SLOW_TESTS_VARIABLE = "SPARSEGNN_SLOW_TESTS"

# Each pytest-xdist worker is a JAX process of its own (about 1 GB with its compiled programs),
# and XLA already uses a second core inside one process: more workers than this add memory and
# contention, not speed.
MAX_TEST_WORKERS = 4

REPO = pathlib.Path(__file__).resolve().parents[1]

# The test files that take longest, longest first (measured with --durations). They start
# before all others: pytest-xdist hands out one file at a time, and a long file started last
# keeps one worker busy while the others idle. The rest follow in collection order
# (pyproject.toml turns off xdist's own order, by number of tests).
LONGEST_FIRST = ["test_distributed.py", "test_link_task.py", "sparsity/test_method_compat.py",
                 "test_edge_sparsity.py", "sparsity/test_masks.py", "test_cli.py", "test_runs.py",
                 "sparsity/test_method_counts.py", "models/test_encoders.py", "test_docs.py",
                 "sparsity/test_method_dst.py", "test_walks.py", "sparsity/test_method_jit.py",
                 "models/test_sparse_inputs.py", "data/test_download.py",
                 "models/test_edge_weights.py"]


def _data_root():
    root = os.environ.get("SPARSEGNN_DATA")
    if root:
        return pathlib.Path(root)
    return None


@pytest.fixture(scope="session")
def data_root():
    """The real-data folder named by SPARSEGNN_DATA; skips the test when it is absent."""
    root = _data_root()
    if root is None:
        pytest.skip("real data not available: set SPARSEGNN_DATA to the datasets folder")
    if not root.is_dir():
        pytest.skip(f"real data not available: SPARSEGNN_DATA={root} is not a directory")
    return root


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    """Environment of the subprocesses: private caches, this checkout first on the path."""
    base = tmp_path_factory.getbasetemp()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in
                                        env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["SPARSEGNN_CACHE"] = str(base / "walk-cache")
    env["JAX_COMPILATION_CACHE_DIR"] = str(base / "jax-compilation-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    return env


@pytest.fixture
def no_data_loading(monkeypatch):
    """Makes loading any dataset fail the test: what it checks must fail before that."""

    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded before the input was checked")

    # By name: importing the package here, before pytest_configure, could fix JAX's cache.
    monkeypatch.setattr("sparsegnn_jax.data.load", no_loading)


@pytest.fixture(autouse=True)
def xla_optimizations(request):
    """XLA's full optimizations for a test marked ``xla_optimized``; the cheaper compile mode
    (set in :func:`pytest_configure`) for every other test."""
    if request.node.get_closest_marker("xla_optimized") is None:
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


def pytest_configure(config):
    """Compiled programs of this test process go to a cache private to the session.

    Many tests build the same small runs again (a new closure each time, so jit traces and
    compiles again); the cache turns the repeated XLA compilations into disk reads. Only
    compilations above a second are stored: the many tiny eager ones are cheaper to redo than to
    write. It is set here, before collection, because JAX fixes its cache at the first
    compilation, which importing a test module may trigger. The subprocesses of ``cli_env`` have
    a cache of their own: a cache file is written without a lock, and a killed run must not leave
    one half-written for this process.
    """
    config.jax_cache_dir = tempfile.mkdtemp(prefix="sparsegnn-tests-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", config.jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_disable_most_optimizations", True)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the default in pyproject.toml): one worker per core, at most MAX_TEST_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_TEST_WORKERS))


def pytest_unconfigure(config):
    shutil.rmtree(config.jax_cache_dir, ignore_errors=True)


def _start_rank(item) -> int:
    """Where the file of ``item`` stands in LONGEST_FIRST (after them all if absent)."""
    try:
        path = item.path.relative_to(REPO / "tests").as_posix()
    except ValueError:  # a test file outside tests/
        return len(LONGEST_FIRST)
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """The files of LONGEST_FIRST run first; tests marked slow skip unless
    SPARSEGNN_SLOW_TESTS=1."""
    items.sort(key=_start_rank)   # stable: the order within a file and among the rest is kept
    if os.environ.get(SLOW_TESTS_VARIABLE) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow test: set {SLOW_TESTS_VARIABLE}=1 to run it "
                                   "(CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
