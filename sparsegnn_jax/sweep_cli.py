"""Command line of ``experiments/sweep.py``: methods x sparsity grid x seeds on one dataset and
model; writes ``results.csv``, one JSON record per run and ``sweep_meta.json``.

    python experiments/sweep.py --dataset=email-eu-temporal --model=mlp
    python experiments/sweep.py --task=node --dataset=drosophila-left --model=mlp --seeds=3

Each method's (sparsity, seed) runs share one compiled program: vmapped (split over
``--devices``, of one host or of every process of a ``--coordinator`` launch) or one after
another (``--batching``; by default sequential on CPU, vmapped on accelerators). Rows are written atomically
after every method, by process 0 only; a restarted sweep skips the runs already in results.csv.
The flags a sweep shares with a single run (dataset, model, method options, epochs, link
evaluation, data root, devices, output, plug-ins, compilation cache, processes) are defined in
:mod:`sparsegnn_jax.cli`. Exit codes as there: 2 bad input, 3 a non-finite loss, 4 a failed
peer process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax

from sparsegnn_jax import cli, config, distributed, files, method_settings, sweeps, tasks
from sparsegnn_jax.sparsity import registry

__all__ = ["build_parser", "main", "parse_edge_grid", "parse_grid", "parse_sparsities",
           "record_name", "sweep_meta"]


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``experiments/sweep.py``; method names as registered when it is called."""
    p = argparse.ArgumentParser(prog="experiments/sweep.py",
                                description="Methods x sparsity grid x seeds on one dataset "
                                            "and model; writes results.csv and JSON records.")
    p.add_argument("--task", default="link", choices=("link", "node"))
    cli.add_dataset_flag(p, None, "default: synthetic-temporal (link) / synthetic-sbm (node)")
    cli.add_model_flag(p, "mlp")
    p.add_argument("--methods", default=",".join(registry.sweep_defaults()),
                   help="comma-separated, from: " + ", ".join(registry.names()))
    p.add_argument("--sparsities", default=None,
                   help="comma-separated (default: the paper's grid; 1 - N/M with --structure)")
    p.add_argument("--edge-sparsities", default="0",
                   help="comma-separated edge sparsities, a grid axis beside --sparsities "
                        "(message-passing models; default 0: fixed graph, no edge weights). "
                        "A grid with a non-zero value gives every run, the 0 ones included, "
                        "the learnable edge weights")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1")
    cli.add_epochs_flag(p)
    cli.add_width_and_step_flags(p)
    cli.add_method_flags(p)
    cli.add_schedule_flags(p)
    cli.add_lottery_flags(p, "; a lottery method runs each seed once and writes a row per "
                             "round, so the sweep's sparsities do not apply to it")
    cli.add_link_eval_flags(p)
    p.add_argument("--batching", default="auto", choices=sweeps.BATCHINGS,
                   help="how a method's runs train: vmap (one vmapped program), sequential "
                        "(one after another, one compiled epoch for all) or auto (default: "
                        "sequential on CPU, vmap on GPU / TPU or when split over --devices)")
    p.add_argument("--sequential", action="store_true",
                   help="the same as --batching=sequential")
    cli.add_runtime_flags(p, out="runs/sweep", out_help="folder for results.csv, records/ and "
                                                        "sweep_meta.json (default runs/sweep)",
                          devices_help="devices the runs of a method are split over (default "
                                       "1; with several processes: all devices)")
    return p


def parse_grid(methods_flag: str, sparsities_flag: str) -> tuple[list[str], list[float]]:
    """The methods and sparsities of a sweep, checked as a single run checks its flags.

    Raises:
      ValueError: no method, an unknown method, a value that is not a number, or a sparsity
        outside [0, 1) (NaN and Inf included); names the flag.
    """
    methods = list(dict.fromkeys(m.strip() for m in methods_flag.split(",") if m.strip()))
    if not methods:
        raise ValueError(f"--methods names no method (got {methods_flag!r}); choose from "
                         f"{', '.join(registry.names())}")
    for m in methods:
        if m not in registry.names():
            raise ValueError(f"unknown method {m!r} in --methods; known: "
                             f"{', '.join(registry.names())}")
    return methods, parse_sparsities(sparsities_flag, "--sparsities")


def _sparsities_flag(args) -> str:
    """``--sparsities``, defaulting to the paper's grid, or to ``1 - N/M`` with ``--structure``
    (given values must all be that sparsity)."""
    if args.sparsities is None:
        if args.structure is None:
            return ",".join(map(str, sweeps.PAPER_GRID))
        return str(method_settings.structure_sparsity(args.structure, None))
    for value in parse_sparsities(args.sparsities, "--sparsities"):
        method_settings.structure_sparsity(args.structure, value, "--sparsities")
    return args.sparsities


def parse_sparsities(text: str, flag: str) -> list[float]:
    """The distinct sparsities of a comma-separated ``flag`` value, in the order given.

    Raises:
      ValueError: none given, a value that is not a number, or one outside [0, 1) (NaN and
        Inf included); names ``flag``.
    """
    try:
        grid = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}")
    if not grid:
        raise ValueError(f"{flag} names no sparsity (got {text!r})")
    return list(dict.fromkeys(config.check_sparsity(s, flag) for s in grid))


def parse_edge_grid(flag: str) -> list[float | None]:
    """The edge sparsities of a sweep: ``[None]`` (no edge weights) when every value is 0.

    Raises:
      ValueError: as :func:`parse_sparsities`, naming ``--edge-sparsities``.
    """
    grid = parse_sparsities(flag, "--edge-sparsities")
    return [None] if grid == [0.0] else grid


def _unpruned(edge_grid: list) -> float | None:
    """The edge sparsity of a method that prunes nothing: 0 with edge weights, else None."""
    return None if edge_grid == [None] else 0.0


def record_name(rec: dict) -> str:
    """File name of a run's JSON record in ``records/``."""
    c = rec["config"]
    edges = "" if c.get("edge_sparsity") is None else f"_e{c['edge_sparsity']:g}"
    structure = cli.structure_suffix(c.get("structure"))
    return f"{c['method']}_s{c['sparsity']:g}{structure}{edges}_seed{c['seed']}.json"


def sweep_meta(path: pathlib.Path, command: str, wall_time_s: float) -> dict:
    """``sweep_meta.json`` after a sweep: one entry per distinct command that wrote the folder.

    Methods with different settings (e.g. RigL with ERK, SLR with a dense layer) fill one
    folder through several commands; all of them are needed to regenerate it. A command run
    again (a restart) replaces its entry. A single command keeps the one-entry form
    ``{"command", "wall_time_s"}``.
    """
    entries = []
    if path.exists():
        old = json.loads(path.read_text())
        entries = old.get("commands", [old] if "command" in old else [])
    entries = [e for e in entries if e["command"] != command]
    entries.append({"command": command, "wall_time_s": wall_time_s})
    return entries[0] if len(entries) == 1 else {"commands": entries}


def main(argv=None) -> int:
    """Runs the command line of ``experiments/sweep.py``; returns its exit code.

    Args:
      argv: the flags (default ``sys.argv[1:]``).
    """
    with cli.warning_lines():
        failed = cli.start(sys.argv[1:] if argv is None else list(argv))
        if failed:
            return failed
        args = build_parser().parse_args(argv)
        return _sweep(args, argv)


def _sweep(args, argv) -> int:
    try:
        several = distributed.initialize_from_flags(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    main_process = distributed.is_main_process()
    dataset = args.dataset or tasks.get(args.task).default_dataset
    csv_path = pathlib.Path(args.out) / "results.csv"
    try:
        methods, grid = parse_grid(args.methods, _sparsities_flag(args))
        edge_grid = parse_edge_grid(args.edge_sparsities)
        if args.seeds <= 0:
            raise ValueError(f"--seeds must be positive, got {args.seeds}")
        seeds = list(range(args.seeds))
        if args.sequential and args.batching not in ("auto", "sequential"):
            raise ValueError(f"--sequential contradicts --batching={args.batching}")
        batching = "sequential" if args.sequential else args.batching
        base = config.resolve(config.RunConfig(
            # A lottery method's fields are set per method below; the base is of another.
            task=args.task, dataset=dataset, model=args.model,
            method=next((m for m in methods if registry.get(m).rounds is None), "dense"),
            epochs=args.epochs, hidden=args.hidden, lr=args.lr, weight_decay=args.weight_decay,
            distribution=args.distribution, update_every=args.update_every,
            drop_fraction=args.drop_fraction,
            layer_sparsity=config.parse_layer_sparsity(args.layer_sparsity),
            penalty_epochs=args.penalty_epochs, retrain_epochs=args.retrain_epochs,
            rho=args.rho, initial_step_size=args.initial_step_size,
            eval_protocol=args.eval_protocol, split=args.split,
            dyglib_setting=args.dyglib_setting,
            dyglib_negatives=args.dyglib_negatives, data_root=args.data_root, devices=distributed.mesh_size(args.devices),
            progress=not args.no_progress and main_process))
        out = files.output_dir(args.out, "--out")
        rows = sweeps.read_csv(csv_path)
        # Every process skips what process 0 has (the other hosts may not see its folder).
        done = {tuple(key) for key in json.loads(distributed.text_of_main_process(
            json.dumps(sorted(sweeps.done_runs(rows), key=str))))}
        problem = None
        start = time.perf_counter()
        # A method that prunes nothing runs once (with the unpruned edge weights of the grid).
        lottery = [m for m in methods if registry.get(m).rounds is not None]
        if not lottery:
            given = [n for n in method_settings.LOTTERY_FIELDS if getattr(args, n) is not None]
            if given:
                raise ValueError(f"{config.flag(given[0])} applies to the lottery methods only; "
                                 "--methods names none")
        pairs = [(m, e) for m in methods if m not in lottery
                 for e in (edge_grid if registry.get(m).sparse else [_unpruned(edge_grid)])]
        for method in lottery:
            cfg = config.resolve(dataclasses.replace(
                base, method=method, edge_sparsity=None, layer_sparsity=None,
                distribution=args.distribution,
                **{n: getattr(args, n) for n in method_settings.LOTTERY_FIELDS}))
            keys = {r: (dataset, args.model, method,
                        method_settings.lottery_sparsity(cfg.prune_per_round, r), cfg.edge_sparsity)
                    for r in range(1, cfg.rounds + 1)}
            todo = [seed for seed in seeds
                    if any(k + (seed, None) not in done for k in keys.values())]
            if not todo:
                print(f"{method}: all rounds already in {csv_path}, skipped")
                continue
            t0 = time.perf_counter()
            # Prepared apart: with edge weights (UGS) the graph stores its edges in another order.
            records = sweeps.run_lottery(cfg, todo, tasks.get(args.task).prepare(cfg))
            if not main_process:
                continue
            for rec in records:
                key = keys[rec["config"]["rounds"]] + (rec["config"]["seed"], None)
                if key not in done:
                    rows.append(sweeps.csv_row(rec))
                    files.write_json_atomic(out / "records" / record_name(rec), rec)
            sweeps.write_csv(csv_path, rows)
            print(f"{method}: {len(todo)} seeds x {cfg.rounds} rounds in "
                  f"{time.perf_counter() - t0:.1f}s")
        for method, edges in pairs:
            scored = registry.get(method).takes_initial_scores() and edges is not None
            # The structure applies to the methods that prune (the dense reference has none);
            # its distribution is uniform unless --distribution says otherwise (then an error).
            nm = args.structure if registry.get(method).sparse else None
            cfg = config.resolve(dataclasses.replace(
                base, method=method, edge_sparsity=edges,
                edge_scores=args.edge_scores if scored else None, structure=nm,
                sparsity=grid[0] if nm else base.sparsity,
                distribution=args.distribution if nm else base.distribution))
            name = method if edges is None else f"{method} (edge sparsity {edges:g})"
            todo_sp = grid if registry.get(method).sparse else [0.0]
            todo = [(s, seed) for s in todo_sp for seed in seeds
                    if (dataset, args.model, method, s, edges, seed, nm) not in done]
            if not todo:
                print(f"{name}: all runs already in {csv_path}, skipped")
                continue
            todo_sparsities = sorted({s for s, _ in todo})
            problem = problem or tasks.get(args.task).prepare(cfg)
            t0 = time.perf_counter()
            records = sweeps.run_group(cfg, todo_sparsities, seeds, batching=batching,
                                       problem=dataclasses.replace(problem, cfg=cfg))
            if not main_process:  # process 0 writes the results of all processes
                continue
            for rec in records:
                key = (dataset, args.model, method, rec["config"]["sparsity"], edges,
                       rec["config"]["seed"], nm)
                if key in done:
                    continue
                rows.append(sweeps.csv_row(rec))
                files.write_json_atomic(out / "records" / record_name(rec), rec)
            sweeps.write_csv(csv_path, rows)
            print(f"{name}: {len(records)} runs in {time.perf_counter() - t0:.1f}s "
                  f"({records[0]['batching']})")
        total = time.perf_counter() - start
        command = " ".join(["python", "experiments/sweep.py"] + (argv or sys.argv[1:]))
        if main_process:
            meta_path = out / "sweep_meta.json"
            files.write_json_atomic(meta_path, sweep_meta(meta_path, command, total))
            print(f"sweep done in {total:.1f}s -> {csv_path}")
    except jax.errors.JaxRuntimeError as err:
        if not several:
            raise
        distributed.exit_after_peer_failure(
            f"a process of this sweep failed or stopped answering: {str(err).splitlines()[0]}")
    except (ValueError, KeyError, OSError) as err:
        # OSError: FileNotFoundError, a file where a folder is needed, permissions, a full disk.
        print(f"error: {cli.error_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {cli.error_line(err)}", file=sys.stderr)
        return 3
    return 0
