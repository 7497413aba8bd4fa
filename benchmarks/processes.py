#!/usr/bin/env python
"""Sweep throughput on one process against two processes of the same machine.

Usage::

    python benchmarks/processes.py [--sparsities 0.5,0.75,0.875,0.9375] [--seeds 2]
                                   [--epochs 5] [--repeats 2] [--json PATH]

Runs ``experiments/sweep.py`` (link task, paper MLP, RigL) once as one process with one device
and once as two processes on 127.0.0.1 (``--coordinator``, one CPU device each, the run axis
split over them), taking turns ``--repeats`` times. Both use the same cores, so the ratio
measures what splitting costs (a second JAX runtime, data preparation and compilation in each
process, the gather to process 0), not a speed-up: on hosts with cores of their own each process
trains ``1 / P`` of the runs. Reported per setting: the median wall time of the whole command
and of the method's group as ``sweep.py`` prints it (training, gather and evaluation), and runs
per second of the group.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
GROUP_LINE = re.compile(r"rigl: (\d+) runs in ([0-9.]+)s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_command(args, out: pathlib.Path, extra=()) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "sweep.py"), "--model=mlp",
            "--methods=rigl", f"--sparsities={args.sparsities}", f"--seeds={args.seeds}",
            f"--epochs={args.epochs}", f"--out={out}", "--no-progress", *extra]


def timed(commands: list[list[str]], env: dict, timeout: float) -> tuple[float, float, int]:
    """Starts ``commands`` together; returns (wall s, group s, runs) read off process 0."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    wall = time.perf_counter() - start
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(p.args)} failed:\n{err[-2000:]}")
    match = GROUP_LINE.search(outputs[0][0])
    return wall, float(match.group(2)), int(match.group(1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sparsities", default="0.5,0.75,0.875,0.9375")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]))
    env.pop("XLA_FLAGS", None)
    times = {"1 process": [], "2 processes": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        # Warm-up: the walk embeddings are computed once and cached for every later run.
        timed([sweep_command(args, tmp / "warmup")], env, args.timeout)
        for i in range(args.repeats):
            times["1 process"].append(timed([sweep_command(args, tmp / f"one{i}")], env,
                                            args.timeout))
            coordinator = f"127.0.0.1:{free_port()}"
            times["2 processes"].append(timed(
                [sweep_command(args, tmp / f"two{i}", [f"--coordinator={coordinator}",
                                                       "--num-processes=2",
                                                       f"--process-id={k}"])
                 for k in range(2)], env, args.timeout))
    figures = {}
    for name, rows in times.items():
        wall = float(np.median([r[0] for r in rows]))
        group = float(np.median([r[1] for r in rows]))
        runs = rows[0][2]
        figures[name] = {"wall_s": wall, "group_s": group, "runs": runs,
                         "runs_per_s": runs / group}
        print(f"{name:12s} wall {wall:7.1f} s  group {group:7.1f} s  {runs} runs  "
              f"{runs / group:.3f} runs/s")
    ratio = figures["2 processes"]["group_s"] / figures["1 process"]["group_s"]
    print(f"group time, 2 processes / 1 process: {ratio:.2f} (same cores: overhead)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures | {"ratio_group": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
