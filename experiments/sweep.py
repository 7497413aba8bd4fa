"""Methods x sparsity grid x seeds on one dataset and model; writes results.csv and JSON records.

    python experiments/sweep.py --dataset=email-eu-temporal --model=mlp
    python experiments/sweep.py --task=node --dataset=drosophila-left --model=mlp --seeds=3

Each method's (sparsity, seed) runs train as one vmapped program. Rows are written atomically
after every method; a restarted sweep skips the runs already in results.csv.
"""
import argparse
import dataclasses
import json
import pathlib
import sys
import time

from sparsegnn_jax import cli, config, files, sweeps, tasks
from sparsegnn_jax.sparsity import registry


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="experiments/sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="link", choices=("link", "node"))
    p.add_argument("--dataset", default=None,
                   help="default: synthetic-temporal (link) / synthetic-sbm (node)")
    p.add_argument("--model", default="mlp", choices=config.MODELS)
    p.add_argument("--methods", default=",".join(registry.sweep_defaults()),
                   help="comma-separated, from: " + ", ".join(registry.names()))
    p.add_argument("--sparsities", default=",".join(map(str, sweeps.PAPER_GRID)),
                   help="comma-separated (default: the paper's grid)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--distribution", default="uniform")
    p.add_argument("--update-every", type=int, default=None)
    p.add_argument("--drop-fraction", type=float, default=None,
                   help="initial RigL / SET drop fraction, cosine-decayed to 0 (default: the "
                        "paper's 0.5 decayed to 0.005)")
    cli.add_schedule_flags(p)
    p.add_argument("--data-root", default=None)
    p.add_argument("--sequential", action="store_true",
                   help="train runs one after another instead of vmapped (for comparison)")
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


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
    args = parse_args(argv)
    dataset = args.dataset or tasks.get(args.task).default_dataset
    out = pathlib.Path(args.out)
    csv_path = out / "results.csv"
    try:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in methods:
            if m not in registry.names():
                raise ValueError(f"unknown method {m!r} in --methods; known: "
                                 f"{', '.join(registry.names())}")
        try:
            grid = [float(s) for s in args.sparsities.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--sparsities must be comma-separated numbers, got {args.sparsities!r}")
        if args.seeds <= 0:
            raise ValueError(f"--seeds must be positive, got {args.seeds}")
        seeds = list(range(args.seeds))
        base = config.resolve(config.RunConfig(
            task=args.task, dataset=dataset, model=args.model, method=methods[0],
            epochs=args.epochs, distribution=args.distribution, update_every=args.update_every,
            drop_fraction=args.drop_fraction,
            layer_sparsity=config.parse_layer_sparsity(args.layer_sparsity),
            penalty_epochs=args.penalty_epochs, retrain_epochs=args.retrain_epochs,
            rho=args.rho, initial_step_size=args.initial_step_size,
            data_root=args.data_root, progress=not args.no_progress))
        rows = sweeps.read_csv(csv_path)
        done = sweeps.done_runs(rows)
        problem = None
        start = time.perf_counter()
        for method in methods:
            cfg = dataclasses.replace(base, method=method)
            todo_sp = grid if registry.get(method).sparse else [0.0]
            todo = [(s, seed) for s in todo_sp for seed in seeds
                    if (dataset, args.model, method, s, seed) not in done]
            if not todo:
                print(f"{method}: all runs already in {csv_path}, skipped")
                continue
            todo_sparsities = sorted({s for s, _ in todo})
            problem = problem or tasks.get(args.task).prepare(cfg)
            t0 = time.perf_counter()
            records = sweeps.run_group(cfg, todo_sparsities, seeds, vmapped=not args.sequential,
                                       problem=dataclasses.replace(problem, cfg=cfg))
            for rec in records:
                key = (dataset, args.model, method, rec["config"]["sparsity"], rec["config"]["seed"])
                if key in done:
                    continue
                rows.append(sweeps.csv_row(rec))
                name = f"{method}_s{rec['config']['sparsity']:g}_seed{rec['config']['seed']}.json"
                files.write_json_atomic(out / "records" / name, rec)
            sweeps.write_csv(csv_path, rows)
            print(f"{method}: {len(records)} runs in {time.perf_counter() - t0:.1f}s")
        total = time.perf_counter() - start
        command = " ".join(["python", "experiments/sweep.py"] + (argv or sys.argv[1:]))
        meta_path = out / "sweep_meta.json"
        files.write_json_atomic(meta_path, sweep_meta(meta_path, command, total))
        print(f"sweep done in {total:.1f}s -> {csv_path}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
