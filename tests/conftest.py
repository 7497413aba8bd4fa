"""Shared fixtures: where the real datasets live, skipping cleanly when they do not."""
import os
import pathlib

import pytest


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
