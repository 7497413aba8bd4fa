#!/usr/bin/env python
"""A sweep group three ways: vmapped, sequential with one compiled epoch, sequential compiling
per run (the sequential path before it compiled once).

Usage::

    SPARSEGNN_DATA=/work/shared/datasets python benchmarks/sweep_batching.py [--quick]
        [--training-only | --evaluation] [--json PATH]

The group is the paper's 36-run sweep: the link MLP with RigL (update every 50 steps) at 12
sparsities x 3 seeds, 6 epochs (``--quick``: 2 sparsities x 2 seeds, 1 epoch), on
email-eu-temporal with ``SPARSEGNN_DATA`` set, else synthetic-temporal. Each variant is
``sweeps.run_group`` whole, as ``experiments/sweep.py`` runs it: model init, compilation,
training, evaluation and FLOPs of every run, on one prepared problem. A one-run group first
compiles what every variant shares (evaluation, validation score), so each variant pays only
for its own training programs. ``benchmarks/run.py --only sweep`` runs this too.

``--training-only`` times the training stage alone (init, compilation, epochs with the
best-validation hook), without the per-run evaluation all variants share.

``--evaluation`` times the whole sequential group twice: with the ranking pairs' history
features derived at every evaluation call (as before they were kept) and computed once per
split for the group.

Targets (36 runs, on CPU): sequential >= 3x faster than the per-run compiling path, and no
slower than the vmapped one.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

from sparsegnn_jax import config, runs, sweeps, tasks, train

SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98)
SEEDS = (0, 1, 2)
UPDATE_EVERY = 50
QUICK_SPARSITIES, QUICK_SEEDS = (0.8, 0.95), (0, 1)


def _train_compiling_per_run(problem, bound, param_list, combos, score=None):
    """The sequential path as it was: a new ``jax.jit`` of an epoch closing over each run's
    sparsity and key, so every run compiled its epoch again."""
    cfg, task = problem.cfg, tasks.get(problem.cfg.task)
    states, losses, selections = [], [], []
    score = None if score is None else jax.jit(score)
    for params, (s, seed) in zip(param_list, combos):
        key = jax.random.key(seed)
        tx = runs.build_optimizer(problem, s, key)
        state = train.init_state(params, tx, key)
        hooks = [train.finite_guard(cfg.method)]
        if score is not None:
            hooks.append(train.BestOnValidation(
                score, train.no_selection(state.params),
                runs.first_selectable_epoch(cfg, problem.total_steps, problem.steps_per_epoch)))
        state, loss = train.fit(jax.jit(task.make_epoch(problem, bound, tx)), state,
                                problem.inputs, cfg.epochs, hooks=hooks)
        states.append(state)
        losses.append(float(loss))
        selections.append(None if score is None else hooks[-1].selection)
    return states, losses, (None if score is None else selections)


def measure_training(quick: bool = False, data_root: str | None = None) -> dict:
    """Wall seconds of the group's training alone (init, compilation, epochs with the
    validation-score hook) per variant, without the per-run evaluation that every variant
    shares: what the batching changes. Variants take turns on one prepared problem."""
    cfg, problem, sparsities, seeds = _group(quick, data_root)
    task = tasks.get("link")
    models = {seed: task.build_model(problem, seed) for seed in seeds}
    bound, _ = train.split_model(models[seeds[0]])
    combos = [(float(s), seed) for s in sparsities for seed in seeds]
    params = [train.split_model(models[seed])[1] for _, seed in combos]
    score = task.validation_score(problem, bound)
    trainers = {"vmap": sweeps._train_vmapped, "sequential": sweeps._train_sequential,
                "sequential_compiling_per_run": _train_compiling_per_run}
    times = {}
    for name, trainer in trainers.items():
        start = time.perf_counter()
        jax.block_until_ready(trainer(problem, bound, params, combos, score)[0])
        times[name] = time.perf_counter() - start
        print(f"  training, {name:30s} {times[name]:8.1f} s", flush=True)
    figures = {"runs": len(combos), "steps_per_run": problem.total_steps, "seconds": times,
               "sequential_vs_compiling_per_run": (times["sequential_compiling_per_run"]
                                                   / times["sequential"]),
               "sequential_vs_vmap": times["vmap"] / times["sequential"]}
    print(f"  training: sequential {figures['sequential_vs_compiling_per_run']:.2f}x the "
          f"per-run compiling path, {figures['sequential_vs_vmap']:.2f}x the vmapped one",
          flush=True)
    return figures


def _group(quick, data_root):
    """The config, prepared problem, sparsities and seeds of the benchmark's group."""
    dataset = "email-eu-temporal" if data_root else "synthetic-temporal"
    cfg = config.resolve(config.RunConfig(
        task="link", dataset=dataset, model="mlp", method="rigl", epochs=1 if quick else 6,
        update_every=UPDATE_EVERY, data_root=data_root, progress=False))
    problem = tasks.get("link").prepare(cfg)
    sparsities, seeds = (QUICK_SPARSITIES, QUICK_SEEDS) if quick else (SPARSITIES, SEEDS)
    n = len(sparsities) * len(seeds)
    print(f"{n} runs ({len(sparsities)} sparsities x {len(seeds)} seeds) of RigL "
          f"(dT={UPDATE_EVERY}) on the paper link MLP, {problem.total_steps} steps each, "
          f"batch {cfg.batch_size}, {dataset}, backend {jax.default_backend()}", flush=True)
    return cfg, problem, sparsities, seeds


def measure(quick: bool = False, data_root: str | None = None) -> dict:
    """Wall seconds of the group per variant (evaluation included), the training stage's
    seconds within it, their ratios and whether the runs agree."""
    cfg, problem, sparsities, seeds = _group(quick, data_root)
    n, dataset = len(sparsities) * len(seeds), cfg.dataset
    # A one-run group compiles what every variant shares (evaluation, validation score).
    sweeps.run_group(cfg, sparsities[:1], seeds[:1], batching="sequential", problem=problem)
    times, training, records = {}, {}, {}
    originals = {"vmap": sweeps._train_vmapped, "sequential": sweeps._train_sequential}
    for name in ("vmap", "sequential", "sequential_compiling_per_run"):
        batching = name.split("_")[0]
        trainer = (_train_compiling_per_run if name == "sequential_compiling_per_run"
                   else originals[batching])

        def timed_training(*args, trainer=trainer, name=name):
            # Training alone (init, compilation, epochs, gather): the rest of the group -
            # evaluation, FLOPs, records - is the same code in every variant.
            start = time.perf_counter()
            out = trainer(*args)
            training[name] = time.perf_counter() - start
            return out

        setattr(sweeps, f"_train_{'vmapped' if batching == 'vmap' else batching}",
                timed_training)
        try:
            start = time.perf_counter()
            records[name] = sweeps.run_group(cfg, sparsities, seeds, problem=problem,
                                             batching=batching)
            times[name] = time.perf_counter() - start
        finally:
            sweeps._train_vmapped = originals["vmap"]
            sweeps._train_sequential = originals["sequential"]
        print(f"  {name:30s} group {times[name]:8.1f} s   training {training[name]:8.1f} s  "
              f"({n * problem.total_steps / training[name]:.0f} run-steps/s)", flush=True)
    before = times["sequential_compiling_per_run"]
    figures = {"runs": n, "steps_per_run": problem.total_steps, "dataset": dataset,
               "seconds": times, "training_seconds": training,
               "sequential_vs_compiling_per_run": before / times["sequential"],
               "sequential_vs_vmap": times["vmap"] / times["sequential"],
               "training_sequential_vs_compiling_per_run": (
                   training["sequential_compiling_per_run"] / training["sequential"]),
               "training_sequential_vs_vmap": training["vmap"] / training["sequential"],
               "same_layer_sparsity": all(
                   a["layer_sparsity"] == b["layer_sparsity"] == c["layer_sparsity"]
                   for a, b, c in zip(*records.values())),
               "max_test_roc_auc_difference": max(
                   abs(a["test"]["roc_auc"] - b["test"]["roc_auc"])
                   for a, b in zip(records["vmap"], records["sequential"]))}
    print(f"  sequential, group: {figures['sequential_vs_compiling_per_run']:.2f}x the per-run "
          f"compiling path (target >= 3), {figures['sequential_vs_vmap']:.2f}x the vmapped one "
          f"(target >= 1); training: "
          f"{figures['training_sequential_vs_compiling_per_run']:.2f}x and "
          f"{figures['training_sequential_vs_vmap']:.2f}x; same layer sparsities: {figures['same_layer_sparsity']}, largest "
          f"test ROC-AUC difference vmap / sequential "
          f"{figures['max_test_roc_auc_difference']:.2e}", flush=True)
    return figures


def measure_evaluation(quick: bool = False, data_root: str | None = None) -> dict:
    """Wall seconds of the whole sequential group (training and every run's val and test
    evaluation) with the ranking pairs' inputs derived at every evaluation call, as before
    ``link_eval.evaluation_inputs``, and with them computed once per split for the group;
    the largest metric difference between the two, and the bytes the inputs take."""
    cfg, problem, sparsities, seeds = _group(quick, data_root)
    task = tasks.get("link")
    key = jax.random.key(tasks.RANKING_SEED)

    def every_call():
        # No ranking input held (cache_bytes=0): each call derives the ranking pairs and their
        # features inside the scoring program, the evaluation's program before the cache.
        return {part: train.evaluation_inputs(pos, neg, problem.num_nodes, key,
                                              problem.history(part), cache_bytes=0)
                for part, (pos, neg) in problem.eval_pairs.items()}

    variants = {"inputs_every_call": every_call, "inputs_once_per_split": dict}
    for fresh in variants.values():  # compiles what the timed groups run
        sweeps.run_group(cfg, sparsities[:1], seeds[:1], batching="sequential",
                         problem=dataclasses.replace(problem, eval_inputs=fresh()))
    times, records, load = {}, {}, {}
    for name, fresh in variants.items():
        group_problem = dataclasses.replace(problem, eval_inputs=fresh())
        load[name] = os.getloadavg()[0]
        start = time.perf_counter()
        records[name] = sweeps.run_group(cfg, sparsities, seeds, batching="sequential",
                                         problem=group_problem)
        times[name] = time.perf_counter() - start
        print(f"  {name:24s} group {times[name]:8.1f} s  (load average {load[name]:.1f} "
              f"before, {os.getloadavg()[0]:.1f} after)", flush=True)
    cached = group_problem.eval_inputs
    figures = {"runs": len(records[name]), "steps_per_run": problem.total_steps,
               "dataset": cfg.dataset, "seconds": times, "load_average": load,
               "speedup": times["inputs_every_call"] / times["inputs_once_per_split"],
               "inputs_bytes": {part: sum(x.nbytes for x in jax.tree.leaves(inputs))
                                for part, inputs in cached.items()},
               "ranking_pairs": {part: int(np.prod(inputs.negatives.shape[:2]))
                                 for part, inputs in cached.items()},
               "max_metric_difference": {
                   metric: max(abs(a[part][metric] - b[part][metric])
                               for a, b in zip(*records.values()) for part in ("val", "test"))
                   for metric in ("roc_auc", "ap", "mrr", "hits@10")}}
    print(f"  once per split: {figures['speedup']:.2f}x the group deriving them at every call; "
          f"inputs {figures['inputs_bytes']} bytes; largest metric differences "
          f"{figures['max_metric_difference']}", flush=True)
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 sparsities x 2 seeds, 1 epoch")
    p.add_argument("--training-only", action="store_true",
                   help="time the training stage alone (no per-run evaluation)")
    p.add_argument("--evaluation", action="store_true",
                   help="time the sequential group with the ranking inputs derived at every "
                        "evaluation call against computed once per split")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    fn = (measure_training if args.training_only else measure_evaluation if args.evaluation
          else measure)
    figures = fn(args.quick, os.environ.get("SPARSEGNN_DATA"))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
