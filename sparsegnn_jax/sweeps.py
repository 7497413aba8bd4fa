"""Sweeps over methods x sparsities x seeds, each method's runs trained by one compiled program.

Runs of one method and model that differ only in sparsity or seed share the data, the graph and
the compiled programs: the keep counts of each run are computed (from a traced sparsity) at init
and live in the state, so one update function serves every run of the group. Two batchings:

* ``"vmap"``: parameters, optimizer state and masks carry leading run axes and one
  ``jax.vmap``-ed epoch trains them all (split over ``cfg.devices``, possibly of several
  processes). Best where a batched step costs little more than one (GPU, TPU).
* ``"sequential"``: the runs train one after another with one compiled init (sparsity and seed
  key as arguments) and one compiled epoch for all of them. Best on CPU, where a vmapped step
  of N runs costs more than N separate steps (batched matmuls; ``benchmarks/RESULTS.md``).

``"auto"`` (the default, :func:`choose_batching`) takes the sequential one on CPU and the vmapped
one elsewhere or when the runs are split over several devices. Both give the same metrics.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import time
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp

from sparsegnn_jax import baselines, config, distributed, files, runs, sparsity, tasks, train

# The paper's sparsity grid (same for every method).
PAPER_GRID = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.90625, 0.9375, 0.96875,
              0.984375, 0.9921875)

# Link rows also carry the seen / new breakdown, the selected epoch and every baseline's test
# ROC-AUC on the same pairs (under --eval-protocol=dyglib also EdgeBank's time-window memory);
# node rows leave those empty.
BASELINE_COLUMNS = tuple(f"baseline_{name}_roc_auc"
                         for name in (*baselines.BASELINES, "edgebank_tw"))
CSV_FIELDS = ("dataset", "model", "method", "sparsity", "seed", "test_accuracy", "test_roc_auc",
              "test_ap", "test_macro_f1", "val_accuracy", "achieved_sparsity", "training_flops",
              "training_flops_relative", "inference_flops", "wall_time_s", "val_roc_auc",
              "test_roc_auc_seen", "test_roc_auc_new", "selected_epoch") + BASELINE_COLUMNS + (
              "edge_sparsity", "achieved_edge_sparsity", "structure")


def _index(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


#: Values of ``run_group(batching=...)`` and of ``sweep.py --batching``.
BATCHINGS = ("auto", "vmap", "sequential")


def choose_batching(batching: str = "auto", devices: int = 1,
                    backend: str | None = None) -> str:
    """``"vmap"`` or ``"sequential"``: how a group's runs train.

    ``"auto"`` takes the sequential batching on CPU, where a vmapped step of N runs costs more
    than N single steps, and the vmapped one on accelerators and whenever the runs are split
    over several devices (the run axis is what is split).

    Args:
      batching: one of :data:`BATCHINGS`; ``"vmap"`` and ``"sequential"`` are returned as is.
      devices: the devices the group's runs are split over (``cfg.devices``).
      backend: JAX's platform name (default: ``jax.default_backend()``).

    Raises:
      ValueError: an unknown ``batching``.
    """
    if batching not in BATCHINGS:
        raise ValueError(f"--batching must be one of {', '.join(BATCHINGS)}, got {batching!r}")
    if batching != "auto":
        return batching
    if devices > 1:
        return "vmap"
    return "sequential" if (backend or jax.default_backend()) == "cpu" else "vmap"


def run_group(cfg: config.RunConfig, sparsities: Sequence[float], seeds: Sequence[int], *,
              batching: str = "auto", vmapped: bool | None = None,
              problem: tasks.Problem | None = None) -> list[dict]:
    """Trains every (sparsity, seed) of ``cfg.method`` and returns one results record per run.

    Args:
      cfg: the run configuration; its ``sparsity`` and ``seed`` are replaced per run.
      sparsities: sparsities to train (ignored for a method without sparsity, e.g. ``dense``,
        which runs once per seed).
      seeds: seeds (model init, masks, data order).
      batching: ``"vmap"`` (all runs as one vmapped program), ``"sequential"`` (one after
        another, one compiled epoch for all) or ``"auto"`` (see :func:`choose_batching`).
      vmapped: the older spelling: True for ``"vmap"``, False for ``"sequential"``; overrides
        ``batching`` when given.
      problem: a prepared problem to reuse (its data must match ``cfg``).

    Returns:
      A list of records as ``runs.run`` returns them, each with ``"batching"`` (the one that
      ran); ``wall_time_s`` is the group's wall time divided by its number of runs. With
      ``cfg.devices > 1`` the vmapped runs are split over that many devices (of every
      process); processes other than 0 return an empty list.

    Raises:
      FloatingPointError: a run's loss or parameters became NaN / Inf (the message names it).
      ValueError: an unknown ``batching``.
    """
    cfg = config.resolve(cfg)
    if vmapped is not None:
        batching = "vmap" if vmapped else "sequential"
    batching = choose_batching(batching, cfg.devices)
    if not sparsity.registry.get(cfg.method).sparse:
        sparsities = [0.0]
    combos = [(float(s), int(seed)) for s in sparsities for seed in seeds]
    start = time.perf_counter()
    task = tasks.get(cfg.task)
    problem = dataclasses.replace(problem or task.prepare(cfg), cfg=cfg)
    models = {seed: task.build_model(problem, seed) for seed in seeds}
    bound, _ = train.split_model(models[seeds[0]])
    param_list = [train.split_model(models[seed])[1] for _, seed in combos]
    train_runs = _train_vmapped if batching == "vmap" else _train_sequential
    score = task.validation_score(problem, bound) if cfg.select == "best_val" else None
    states, losses, selections = train_runs(problem, bound, param_list, combos, score)
    if not distributed.is_main_process():
        return []
    elapsed = (time.perf_counter() - start) / len(combos)
    records = []
    for i, (s, seed) in enumerate(combos):
        run_cfg = dataclasses.replace(cfg, sparsity=s, seed=seed)
        state = states[i]
        run_problem = dataclasses.replace(problem, cfg=run_cfg)
        params, extra = state.params, {}
        if selections is not None:
            params = selections[i].params
            extra["selected_epoch"] = int(selections[i].epoch)
        val = task.evaluate(run_problem, bound, params, "val")
        test = task.evaluate(run_problem, bound, params, "test")
        masks = sparsity.get_masks(state.opt_state)
        flops = runs.flops_summary(run_problem, models[seed], masks,
                                   sparsity.get_trace(state.opt_state))
        records.append(runs.record(run_cfg, elapsed, float(losses[i]), val, test, masks, flops,
                                   problem, **extra) | {"batching": batching})
    return records


def run_lottery(cfg: config.RunConfig, seeds: Sequence[int],
                problem: tasks.Problem | None = None) -> list[dict]:
    """Trains a lottery method (``imp``, ``ugs``) once per seed for ``cfg.rounds`` rounds and
    returns a record per round and seed (``rounds.run_rounds``): the sparsity grid does not
    apply, a run of ``R`` rounds passes through every sparsity ``1 - (1 - p)^r``, ``r <= R``.

    Each record's ``config.sparsity`` and ``config.rounds`` are its round's, its metrics those of
    that round's ticket and its training FLOPs those of every training up to it.
    """
    from sparsegnn_jax import rounds  # built on runs, like this module

    cfg = config.resolve(cfg)
    records = []
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, seed=int(seed))
        problem = dataclasses.replace(problem or tasks.get(cfg.task).prepare(run_cfg), cfg=run_cfg)
        records += [rec | {"batching": "rounds"} for rec in rounds.run_rounds(run_cfg, problem)]
    return records


def _run_names(combos) -> list[str]:
    return [f"sparsity {s:g}, seed {seed}" for s, seed in combos]


def _equal_along(x, axis: int) -> bool:
    """Whether every slice of ``x`` along ``axis`` is the same (PRNG keys compared by data)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    first = jax.lax.index_in_dim(x, 0, axis, keepdims=True)
    return bool(jnp.all(x == first))


class _GridEpoch:
    """An epoch function vmapped over a [sparsity, seed] grid of runs, sharing what they share.

    Two things are shared. Runs of one seed share the training key, hence the data order,
    negatives and dropout masks: that work is done once per seed, not once per run (the inner
    vmap, over sparsities, leaves the key unbatched). Step counters are equal in every run:
    unbatched, a ``lax.cond`` on them (mask update or not) stays a cond - batched, it would turn
    into a ``select`` running the sort-heavy mask update at every step of every run. Which leaves
    are shared is read off the state, so the result is the same computation as separate runs.
    """

    def __init__(self, epoch, grid: tuple[int, int]):
        self._epoch, self._grid, self._compiled = epoch, grid, {}

    def __call__(self, state, inputs):
        """``state`` leaves are [num_sparsities, num_seeds, ...]; so are the outputs."""
        leaves, treedef = jax.tree.flatten(state)
        per_seed = tuple(_equal_along(x, 0) for x in leaves)
        everywhere = tuple(p and _equal_along(x, 1) for p, x in zip(per_seed, leaves))
        kinds = tuple(2 if e else 1 if p else 0 for p, e in zip(per_seed, everywhere))
        fn = self._compiled.get(kinds)
        if fn is None:
            # Outer vmap: over seeds (axis 1 of unshared leaves, axis 0 of per-seed ones).
            outer = jax.tree.unflatten(treedef, [None if k == 2 else 0 if k == 1 else 1
                                                 for k in kinds])
            inner = jax.tree.unflatten(treedef, [0 if k == 0 else None for k in kinds])
            # axis_size: with one sparsity (or seed) every leaf may be shared along that axis.
            per_seed_fn = jax.vmap(self._epoch, in_axes=(inner, None), axis_size=self._grid[0])
            fn = jax.jit(jax.vmap(per_seed_fn, in_axes=(outer, None), out_axes=1,
                                  axis_size=self._grid[1]))
            self._compiled[kinds] = fn
        compact = [x[0, 0] if k == 2 else x[0] if k == 1 else x for x, k in zip(leaves, kinds)]
        return fn(jax.tree.unflatten(treedef, compact), inputs)


def _train_vmapped(problem, bound, param_list, combos, score=None):
    cfg = problem.cfg
    sparsities = sorted({s for s, _ in combos})
    seeds = sorted({seed for _, seed in combos})
    if combos != [(s, seed) for s in sparsities for seed in seeds]:
        raise ValueError("vmapped runs must form a full (sparsity, seed) grid")
    grid = (len(sparsities), len(seeds))
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *param_list)
    sps = jnp.asarray([s for s, _ in combos], jnp.float32)
    keys = jax.vmap(jax.random.key)(jnp.asarray([seed for _, seed in combos]))

    def init_one(p, s, k):
        return train.init_state(p, runs.build_optimizer(problem, s, k), k)

    state = jax.jit(jax.vmap(init_one))(params, sps, keys)
    state = jax.tree.map(lambda x: x.reshape(grid + x.shape[1:]), state)
    # Several devices: the sparsity axis is padded to a multiple of them and split over them.
    mesh = distributed.device_mesh(cfg.devices, distributed.RUN_AXIS) if cfg.devices > 1 else None
    padded = (distributed.padded_size(grid[0], cfg.devices), grid[1])
    state = distributed.shard_runs(distributed.pad_runs(state, padded[0]), mesh)
    names = _run_names(combos + combos[-grid[1]:] * (padded[0] - grid[0]))
    # Keep counts live in the state, so one update function serves every sparsity.
    tx = runs.build_optimizer(problem)
    epoch = _GridEpoch(tasks.get(cfg.task).make_epoch(problem, bound, tx), padded)
    hooks = [train.finite_guard(cfg.method, names)]
    if score is not None:
        # One validation score per run: vmapped over the [sparsity, seed] axes of the params.
        selector = train.BestOnValidation(
            tasks.jit_with_inputs(score, lambda f: jax.vmap(jax.vmap(f))),
            distributed.shard_runs(train.no_selection(state.params, padded), mesh),
            runs.first_selectable_epoch(cfg, problem.total_steps, problem.steps_per_epoch))
        hooks.append(selector)
    state, losses = train.fit(
        epoch, state, distributed.replicate(problem.inputs, mesh), cfg.epochs, hooks=hooks,
        progress=f"{cfg.method} x{len(combos)} {cfg.dataset}" if cfg.progress else None)
    trained = (state, jnp.broadcast_to(losses, padded),
               None if score is None else selector.selection)
    state, losses, selection = distributed.unpad_runs(distributed.gather(trained), grid[0])

    def runs_of(tree):
        tree = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)
        return [_index(tree, i) for i in range(len(combos))]

    selections = None if score is None else runs_of(selection)
    return runs_of(state), list(map(float, losses.reshape(-1))), selections


def _train_sequential(problem, bound, param_list, combos, score=None):
    """The runs one after another, each compiled program shared by all of them.

    Compiling per run (a new ``jax.jit`` of an epoch closing over the run's sparsity and key)
    cost more than training a short run. Here the sparsity and the key are arguments of one
    jitted init, and the keep counts they give live in the state, so the update function of a
    group-wide optimizer - the vmapped path's - serves every run from one compiled epoch.
    """
    cfg = problem.cfg
    init = jax.jit(lambda p, s, k: train.init_state(p, runs.build_optimizer(problem, s, k), k))
    epoch = jax.jit(tasks.get(cfg.task).make_epoch(problem, bound, runs.build_optimizer(problem)))
    score = None if score is None else tasks.jit_with_inputs(score)
    states, losses, selections = [], [], []
    for params, (s, seed) in zip(param_list, combos):
        key = jax.random.key(seed)
        # float32, as the vmapped init's sparsity axis: both paths compute the same keep counts.
        state = init(params, jnp.asarray(s, jnp.float32), key)
        hooks = [train.finite_guard(cfg.method, _run_names([(s, seed)]))]
        if score is not None:
            hooks.append(train.BestOnValidation(
                score, train.no_selection(state.params),
                runs.first_selectable_epoch(cfg, problem.total_steps, problem.steps_per_epoch)))
        state, loss = train.fit(epoch, state, problem.inputs, cfg.epochs, hooks=hooks)
        states.append(state)
        losses.append(float(loss))
        selections.append(None if score is None else hooks[-1].selection)
    return states, losses, (None if score is None else selections)


def csv_row(rec: dict) -> dict:
    """One ``results.csv`` row of a run record."""
    c, test, val, fl = rec["config"], rec["test"], rec["val"], rec["flops"]
    return {
        "dataset": c["dataset"], "model": c["model"], "method": c["method"],
        "sparsity": c["sparsity"] if sparsity.registry.get(c["method"]).sparse else 0.0,
        "seed": c["seed"],
        "test_accuracy": test.get("accuracy"), "test_roc_auc": test.get("roc_auc", ""),
        "test_ap": test.get("ap", ""), "test_macro_f1": test.get("macro_f1", ""),
        "val_accuracy": val.get("accuracy"), "achieved_sparsity": rec["sparsity"],
        "training_flops": fl["training"], "training_flops_relative": fl["training_relative"],
        "inference_flops": fl["inference"], "wall_time_s": rec["wall_time_s"],
        "val_roc_auc": _blank(val.get("roc_auc")),
        "test_roc_auc_seen": _blank(test.get("seen", {}).get("roc_auc")),
        "test_roc_auc_new": _blank(test.get("new", {}).get("roc_auc")),
        "selected_epoch": _blank(rec.get("selected_epoch")),
    } | {f"baseline_{name}_roc_auc": _blank(m.get("roc_auc"))
         for name, m in rec.get("baselines", {}).items()} | {
        # Blank: the run had no edge weights (the graph was fixed).
        "edge_sparsity": _blank(c.get("edge_sparsity")),
        "achieved_edge_sparsity": rec.get("edge_sparsity", 0.0),
        # Blank: unstructured masks (--structure unset).
        "structure": _blank(c.get("structure"))}


def _blank(value):
    """An empty CSV cell for a missing or undefined value."""
    return "" if value is None else value


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a results CSV (empty when the file does not exist)."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Writes ``results.csv`` atomically: a reader never sees a partial file."""
    files.write_csv_atomic(path, rows, CSV_FIELDS)


def done_runs(rows: Iterable[dict]) -> set[tuple]:
    """(dataset, model, method, sparsity, edge sparsity, seed, structure) of the finished rows,
    to skip on restart; the edge sparsity is None for a run without edge weights and the
    structure None for unstructured masks (blank cells, or columns older files lack)."""
    return {(r["dataset"], r["model"], r["method"], float(r["sparsity"]),
             edge_sparsity_of(r.get("edge_sparsity")), int(r["seed"]),
             r.get("structure") or None) for r in rows}


def edge_sparsity_of(cell) -> float | None:
    """The edge sparsity of a results.csv cell: None when blank or missing (no edge weights)."""
    return None if cell in (None, "") else float(cell)
