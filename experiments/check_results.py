"""Re-runs one row of each results folder with the folder's own command and compares.

A results folder's ``sweep_meta.json`` holds the command that wrote its ``results.csv``. This
script re-runs that command restricted to one method and one sparsity (the first row of the
CSV whose method prunes, else the first row), with the command's seeds and the batching the
folder's records name (``vmap`` for records that predate the choice) - a group trained
otherwise rounds its matmuls differently, and RigL's mask updates amplify that - in a
temporary folder, and compares seed 0's test metrics with the stored row, so a folder made by
older code is caught.

    python experiments/check_results.py docs/results/link_*/ docs/results/temporal_benchmarks/*/

Exit code 0 when every folder's row is reproduced (within ``--tolerance``), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import tempfile

from sparsegnn_jax import sweeps

COMPARED = ("test_roc_auc", "test_ap", "test_accuracy", "achieved_sparsity")
# Flags that choose the grid; the check replaces them with one cell of it.
_GRID_FLAGS = ("--methods", "--sparsities", "--out", "--no-progress", "--batching",
               "--sequential")


def row_to_check(rows: list[dict]) -> dict:
    """Seed 0 of the first pruned run (sparsity > 0), else the first seed-0 row."""
    seed0 = [r for r in rows if int(r["seed"]) == 0]
    pruned = [r for r in seed0 if float(r["sparsity"]) > 0]
    return (pruned or seed0)[0]


def stored_batching(folder: pathlib.Path) -> str:
    """The batching that trained a folder's runs: its records' ``batching``; ``vmap`` for
    records written before sweeps chose one (they were all vmapped)."""
    for path in sorted((folder / "records").glob("*.json")):
        return json.loads(path.read_text()).get("batching", "vmap")
    return "vmap"


def check_folder(folder: pathlib.Path, tolerance: float) -> list[str]:
    """Differences between the stored row and its re-run (empty: reproduced)."""
    meta = json.loads((folder / "sweep_meta.json").read_text())
    row = row_to_check(sweeps.read_csv(folder / "results.csv"))
    argv = [a for a in shlex.split(meta["command"])[2:]
            if not a.startswith(_GRID_FLAGS)]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "experiments/sweep.py", *argv, f"--methods={row['method']}",
               f"--sparsities={row['sparsity']}", f"--out={out}", "--no-progress",
               f"--batching={stored_batching(folder)}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        again = [r for r in sweeps.read_csv(pathlib.Path(out) / "results.csv")
                 if r["method"] == row["method"] and r["seed"] == "0"][0]
    diffs = []
    for column in COMPARED:
        if row.get(column, "") in ("", None):
            continue
        a, b = float(row[column]), float(again[column])
        if abs(a - b) > tolerance:
            diffs.append(f"{column}: stored {a:.4f}, re-run {b:.4f}")
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=pathlib.Path)
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest accepted difference of a metric (default 1e-3)")
    args = p.parse_args(argv)
    failed = 0
    for folder in args.folders:
        if not (folder / "sweep_meta.json").is_file():
            print(f"{folder}: no sweep_meta.json, skipped")
            continue
        diffs = check_folder(folder, args.tolerance)
        print(f"{folder}: {'reproduced' if not diffs else 'DIFFERS: ' + '; '.join(diffs)}")
        failed += bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
