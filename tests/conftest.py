"""Shared fixtures: where the real datasets live, skipping cleanly when they do not."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


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
    return env
