#!/usr/bin/env python
"""Import time of ``sparsegnn_jax`` against its own dependencies (``import jax, flax.nnx, optax``).

Usage::

    python benchmarks/import_time.py [--repeats 9] [--json PATH]

Each import runs in a fresh interpreter (``python -c ...``; the wall time of the whole process,
interpreter start included, as a user waits for it); the two commands take turns ``--repeats``
times so that load on the machine hits both alike, and the ratio of their medians is reported.
Target (issue 24): ``import sparsegnn_jax`` within 1.25x of the dependencies' import.

``--importtime`` also prints the modules ``import sparsegnn_jax`` loads beyond the
dependencies', by their own import time (``python -X importtime``), to find what to defer.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = {
    "dependencies": "import jax, flax.nnx, optax",
    "sparsegnn_jax": "import sparsegnn_jax",
}
TARGET_RATIO = 1.25


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def time_import(code: str, env: dict) -> float:
    """Wall seconds of ``python -c code`` in a fresh interpreter."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def measure(repeats: int) -> dict:
    """Median seconds per command and their ratio, the commands taking turns."""
    env = _env()
    for code in COMMANDS.values():  # warm the file cache; not timed
        time_import(code, env)
    times = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, code in COMMANDS.items():
            times[name].append(time_import(code, env))
    median = {name: float(np.median(t)) for name, t in times.items()}
    return {"repeats": repeats, "times_s": times, "median_s": median,
            "ratio": median["sparsegnn_jax"] / median["dependencies"],
            "target_ratio": TARGET_RATIO}


def _self_times(code: str, env: dict) -> dict[str, int]:
    """``{module: own import microseconds}`` from ``python -X importtime -c code``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                         capture_output=True, text=True, check=True).stderr
    found = re.findall(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", out)
    return {name: int(us) for us, name in found}


def extra_modules(top: int = 15) -> list[tuple[str, float]]:
    """The ``top`` modules ``import sparsegnn_jax`` loads beyond the dependencies, by own ms."""
    env = _env()
    base = _self_times(COMMANDS["dependencies"], env)
    ours = _self_times(COMMANDS["sparsegnn_jax"], env)
    extra = {m: us / 1000 for m, us in ours.items() if m not in base}
    return sorted(extra.items(), key=lambda kv: -kv[1])[:top]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--importtime", action="store_true",
                        help="also list the modules loaded beyond the dependencies")
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    for name, code in COMMANDS.items():
        t = result["times_s"][name]
        print(f"{code:30s} median {result['median_s'][name]:.3f} s "
              f"(min {min(t):.3f}, max {max(t):.3f}, {len(t)} runs)")
    verdict = "met" if result["ratio"] <= TARGET_RATIO else "NOT met"
    print(f"ratio {result['ratio']:.3f} (target <= {TARGET_RATIO}: {verdict})")
    if args.importtime:
        extra = extra_modules()
        result["extra_modules_ms"] = extra
        print("modules beyond the dependencies, own import ms:")
        for name, ms in extra:
            print(f"  {ms:8.1f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
