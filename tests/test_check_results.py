"""experiments/check_results.py: which row it re-runs and with which batching."""
import importlib.util
import json
import pathlib

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "check_results.py"
_spec = importlib.util.spec_from_file_location("check_results", _PATH)
check_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_results)


def _write_record(folder: pathlib.Path, name: str, record: dict) -> None:
    (folder / "records").mkdir(parents=True, exist_ok=True)
    (folder / "records" / name).write_text(json.dumps(record))


def test_records_without_batching_were_vmapped(tmp_path):
    _write_record(tmp_path, "rigl_s0.9_seed0.json", {"config": {}})
    assert check_results.stored_batching(tmp_path) == "vmap"


def test_records_name_their_batching(tmp_path):
    _write_record(tmp_path, "rigl_s0.9_seed0.json", {"batching": "sequential"})
    assert check_results.stored_batching(tmp_path) == "sequential"


def test_the_row_is_seed_0_of_the_first_pruned_run():
    rows = [{"method": "dense", "sparsity": "0.0", "seed": "0"},
            {"method": "rigl", "sparsity": "0.9", "seed": "1"},
            {"method": "rigl", "sparsity": "0.9", "seed": "0"}]
    assert check_results.row_to_check(rows) == rows[2]
