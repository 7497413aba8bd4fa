"""One training run, end to end: config -> task data -> model -> sparsifier -> fit -> record.

``experiments/link_pred.py`` and ``experiments/node_class.py`` are thin command lines over
:func:`run`; ``sweeps`` reuses :func:`build_optimizer`, :func:`flops_summary` and :func:`record`.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
import optax
from flax import nnx

from sparsegnn_jax import (
    checkpoint,
    compaction,
    config,
    distributed,
    graphs,
    models,
    sampled,
    sparsity,
    tasks,
    train,
)
from sparsegnn_jax import flops as sg_flops
from sparsegnn_jax.sparsity import distributions, registry
from sparsegnn_jax.sparsity.trees import flatten_with_paths, path_str, prunable_flags


def inner_optimizer(cfg: config.RunConfig, total_steps: int) -> optax.GradientTransformation:
    """The dense optimizer the sparsifier wraps: the paper's SGD or Adam, with weight decay."""
    if cfg.optimizer == "sgd":
        lr = optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1))
        opt = optax.sgd(lr, momentum=0.9, nesterov=True)
    else:
        opt = optax.adam(cfg.lr)
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decays), opt)


def decays(params) -> object:
    """Which leaves weight decay shrinks: all but the encoder's edge-weight leaf.

    The edge leaf is a learnt score of each edge, ranked by magnitude methods; decay would pull
    the edges without a loss signal (beyond the labelled nodes' receptive field) towards 0 under
    Adam, so magnitude pruning removed them first (Cora, GMP, 40% of the edges: 72.7 with decay,
    76.4 without, 80.9 unpruned).
    """
    return sparsity.trees.prunable(params, lambda path, _: not models.is_edge_weight(path))


def method_kwargs(cfg: config.RunConfig, total_steps: int, steps_per_epoch: int) -> dict:
    """Keyword arguments of ``sparsifier(cfg.method, ...)`` for a run of ``total_steps``.

    The method's registry entry plans its phases (:attr:`~registry.MethodSpec.plan`); the
    sparsity, distribution and prunable-leaf filter come from the run.
    """
    spec = registry.get(cfg.method)
    kw = dict(filter_fn=tasks.prunable_params)
    if spec.sparse:
        kw |= dict(sparsity=cfg.sparsity, distribution=cfg.distribution)
    if cfg.structure is not None:
        kw["structure"] = cfg.structure
    return kw | spec.plan(config.method_options(cfg), total_steps, steps_per_epoch)


def first_selectable_epoch(cfg: config.RunConfig, total_steps: int,
                           steps_per_epoch: int) -> int:
    """The first epoch after which the method's sparsity schedule stays at its target.

    Model selection on validation data may only choose among such epochs: the parameters of
    a dense phase are not the sparse model the run reports. Read off the method's registry
    entry (``sparsity_at`` over the run's steps).
    """
    spec = registry.get(cfg.method)
    kw = method_kwargs(cfg, total_steps, steps_per_epoch)
    schedule = np.asarray(spec.sparsity_at(kw, np.arange(total_steps), 0.5), np.float64)
    if schedule.size == 0:
        return 1
    changing = np.flatnonzero(~np.isclose(schedule, schedule[-1]))
    last_change = int(changing[-1]) if changing.size else -1
    # The params after epoch e come from step e * steps_per_epoch - 1.
    return max(1, -(-(last_change + 2) // steps_per_epoch))


def prunable_shapes(problem: tasks.Problem) -> dict:
    """``{path: shape}`` of the prunable leaves of ``problem``'s model (weight matrices and the
    edge-weight leaf, :func:`tasks.prunable_params`; no weights are made)."""
    model = nnx.eval_shape(lambda: tasks.get(problem.cfg.task).build_model(problem, 0))
    paths, leaves, _ = flatten_with_paths(train.split_model(model)[1])
    flags = prunable_flags(paths, leaves, tasks.prunable_params)
    return {p: tuple(leaf.shape) for p, leaf, f in zip(paths, leaves, flags) if f}


def fixed_layers(cfg: config.RunConfig, shapes: dict) -> dict:
    """``{path: sparsity}`` of the layers whose sparsity the run fixes: ``cfg.layer_sparsity``
    and the edge-weight leaf at ``cfg.edge_sparsity``.

    Raises:
      ValueError: a ``--layer-sparsity`` path that names no prunable layer (the message lists
        the known ones), or one that names the edge-weight leaf (its flag is --edge-sparsity).
    """
    given = dict(cfg.layer_sparsity or {})
    unknown = [p for p in given if p not in shapes]
    if unknown:
        raise ValueError(f"--layer-sparsity names no prunable layer of --model={cfg.model}: "
                         f"{', '.join(unknown)}; known layers: {', '.join(shapes)}")
    edges = [p for p in shapes if models.is_edge_weight(p)]
    named = [p for p in edges if p in given]
    if named:
        raise ValueError(f"--layer-sparsity names the edge weights {', '.join(named)}: set "
                         "their sparsity with --edge-sparsity")
    return given | {p: cfg.edge_sparsity for p in edges}


def layer_distribution(cfg: config.RunConfig, shapes: dict, sparsity_value):
    """The sparsifier's ``distribution``: ``cfg.distribution``, or a ``{path: sparsity}`` dict
    when the run fixes some layers (:func:`fixed_layers`).

    The fixed layers take their given sparsity; the others share ``sparsity_value`` as
    ``cfg.distribution`` splits it over them alone (uniform: each at ``sparsity_value``), so
    the edge-weight leaf stays at exactly ``cfg.edge_sparsity`` under every distribution.

    Args:
      cfg: a resolved configuration.
      shapes: ``{path: shape}`` of the prunable layers (:func:`prunable_shapes`).
      sparsity_value: the run's sparsity (may be traced).

    Raises:
      ValueError: as :func:`fixed_layers`.
    """
    fixed = fixed_layers(cfg, shapes)
    if not fixed:
        return cfg.distribution
    return distributions.with_fixed_layers(shapes, sparsity_value, cfg.distribution, fixed)


def initial_scores(problem: tasks.Problem):
    """The ``scores`` argument of a method that starts sparse, or None for its default.

    With ``--edge-scores`` other than ``random``, a callable ``(key, params) -> scores``: the
    random scores the method would draw for the weights, and for the edge-weight leaf

    * ``resistance``: the rank of :func:`graphs.resistance_scores` among its distinct values
      plus a uniform draw in [0, 1), so the mask keeps the edges at low-degree nodes and
      breaks ties at random;
    * ``saliency``: :func:`tasks.edge_saliency` of the params the method starts from (the
      dense model of ``--init-from``): the edges whose removal would raise its loss most.
    """
    cfg = problem.cfg
    if cfg.edge_scores in (None, "random"):
        return None
    if cfg.edge_scores == "saliency":
        bound, _ = train.split_model(tasks.get(cfg.task).build_model(problem, cfg.seed))

        def edge_scores(params, uniform):
            return tasks.edge_saliency(bound, params, problem.graph, problem.labels,
                                       problem.split.train)
    else:
        graph = problem.graph
        size = tasks.edge_leaf_size(cfg, graph)
        resistance = graphs.resistance_scores(np.asarray(graph.senders)[:size],
                                              np.asarray(graph.receivers)[:size],
                                              problem.num_nodes)
        rank = np.unique(resistance, return_inverse=True)[1].astype(np.float32)

        def edge_scores(params, uniform):
            return rank + uniform

    def scores(key, params):
        drawn = sparsity.masks.random_scores(key, params)
        return jax.tree_util.tree_map_with_path(
            lambda path, s: edge_scores(params, s) if models.is_edge_weight(path_str(path)) else s,
            drawn)

    return scores


def build_optimizer(problem: tasks.Problem, sparsity_value=None, key=None):
    """The sparsifier of ``problem.cfg`` around its inner optimizer.

    ``sparsity_value`` and ``key`` default to the config's; a sweep passes traced values.

    Raises:
      ValueError: a ``--layer-sparsity`` path that names no prunable layer.
    """
    cfg = problem.cfg
    kw = method_kwargs(cfg, problem.total_steps, problem.steps_per_epoch)
    spec = registry.get(cfg.method)
    if sparsity_value is not None and spec.sparse:
        kw["sparsity"] = sparsity_value
    if spec.sparse and (cfg.layer_sparsity or cfg.edge_sparsity is not None):
        kw["distribution"] = layer_distribution(cfg, prunable_shapes(problem), kw["sparsity"])
    if spec.needs_key:
        kw["key"] = jax.random.key(cfg.seed) if key is None else key
    scores = initial_scores(problem) if spec.takes_initial_scores() else None
    if scores is not None:
        kw["scores"] = scores
    return registry.sparsifier(cfg.method, inner_optimizer(cfg, problem.total_steps), **kw)


def dense_warm_start(problem: tasks.Problem, params):
    """The parameters of the dense run checkpointed in ``problem.cfg.init_from``.

    Args:
      problem: the run's problem; the checkpoint must be of a ``--method=dense`` run of the
        same task, dataset and model (its optimizer state is restored, then dropped).
      params: the run's freshly initialised parameters (the structure to restore into).

    Returns:
      The checkpoint's parameters, in the structure of ``params``. A run with edge weights
      (``--edge-sparsity``) starts from a dense run without them too: its edge weights keep
      their initial value (1, every edge kept).

    Raises:
      FileNotFoundError: no folder or no complete checkpoint there.
      ValueError: the checkpoint is not of a dense run of this model on this dataset.
    """
    cfg = problem.cfg
    flag = f"--init-from={cfg.init_from!r}"
    dense = dataclasses.replace(problem, cfg=dataclasses.replace(cfg, method="dense"))

    def restore(start):
        template = train.init_state(start, build_optimizer(dense), jax.random.key(cfg.seed))
        return checkpoint.restore(cfg.init_from, template)

    edges = params.get("encoder", {}).get(models.EDGE_WEIGHT)
    try:
        # A dense run without edge weights (its config's edge_sparsity is None) restores
        # into the parameters without the leaf, which then keeps its initial value.
        saved_edges = checkpoint.read_metadata(cfg.init_from)[1].get("config", {}).get(
            "edge_sparsity")
        if edges is None or saved_edges is not None:
            state, meta = restore(params)
        else:
            encoder = {k: v for k, v in params["encoder"].items() if k != models.EDGE_WEIGHT}
            state, meta = restore(dict(params, encoder=encoder))
            state = state._replace(params=dict(state.params, encoder=dict(
                state.params["encoder"], **{models.EDGE_WEIGHT: edges})))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{flag}: {err}") from err
    except ValueError as err:
        raise ValueError(f"{flag} is not a checkpoint of a dense run of --model={cfg.model} "
                         f"on {cfg.dataset}: {str(err).splitlines()[0]}") from err
    saved = meta.get("config", {})
    got = tuple(saved.get(k) for k in ("method", "task", "dataset", "model"))
    if got != ("dense", cfg.task, cfg.dataset, cfg.model):
        raise ValueError(f"{flag} holds a {'/'.join(map(str, got))} run (method / task / "
                         f"dataset / model), not dense/{cfg.task}/{cfg.dataset}/{cfg.model}")
    return state.params


def flops_summary(problem: tasks.Problem, model, masks, trace) -> dict:
    """Training and inference FLOPs of a run, absolute and relative to dense training.

    Training FLOPs integrate the recorded per-layer densities of every step; inference scores
    the test set (what each pass sees comes from the task).
    """
    step_inputs, eval_inputs = tasks.get(problem.cfg.task).flops_inputs(problem)
    dense_step = sg_flops.forward(model, step_inputs)
    training = float(sg_flops.training_from_trace(dense_step, trace))
    dense_training = 3.0 * dense_step.total * problem.total_steps
    inference = sg_flops.forward(model, eval_inputs, masks).total
    inference_dense = sg_flops.forward(model, eval_inputs).total
    return {
        "training": training,
        "training_dense": dense_training,
        "training_relative": training / dense_training,
        "inference": inference,
        "inference_dense": inference_dense,
        "inference_relative": inference / inference_dense,
        "forward_step_dense": dense_step.total,
    }


# RunConfig fields that say how a run is carried out, not which run it is: a resumed run may
# change them. (More devices split the same minibatches; the sums may differ in the last bit.)
RESUMABLE_CHANGES = ("progress", "resume", "checkpoint_dir", "checkpoint_every", "data_root",
                     "devices", "compact_edges")


def config_differences(stored: dict, cfg: config.RunConfig) -> list[str]:
    """The fields of a resolved ``cfg`` that differ from a checkpoint's stored config.

    Args:
      stored: ``dataclasses.asdict`` of the resolved config the checkpoint was saved with.
      cfg: the resolved config of the run asking to resume.

    Returns:
      One ``"field: X in the checkpoint, Y requested"`` per differing field (fields of
      :data:`RESUMABLE_CHANGES` aside), in field order. A field the stored config lacks
      (added since) differs only when ``cfg`` sets it to other than its default.
    """
    out = []
    for field in dataclasses.fields(cfg):
        if field.name in RESUMABLE_CHANGES:
            continue
        wanted = getattr(cfg, field.name)
        if field.name not in stored:
            # A checkpoint written before the field existed ran with its default.
            if wanted != field.default:
                out.append(f"{field.name}: not in the checkpoint, {wanted!r} requested")
        elif stored[field.name] != wanted:
            out.append(f"{field.name}: {stored[field.name]!r} in the checkpoint, "
                       f"{wanted!r} requested")
    return out


def check_resumable(cfg: config.RunConfig) -> None:
    """Raises unless ``cfg.checkpoint_dir`` holds a checkpoint of the run ``cfg`` describes.

    Reads only the checkpoint's JSON metadata, so a wrong ``--resume`` fails before any data
    is loaded.

    Raises:
      ValueError: no checkpoint folder given, nothing to resume (folder missing or without a
        complete checkpoint), no stored config, or a stored config that differs (names every
        differing field).
    """
    if cfg.checkpoint_dir is None:
        raise ValueError("--resume needs a checkpoint folder (--checkpoint-dir)")
    folder = cfg.checkpoint_dir
    if not checkpoint.list_steps(folder):
        why = "does not exist" if not pathlib.Path(folder).exists() else (
            "holds no complete checkpoint")
        raise ValueError(f"--resume: nothing to resume: {folder} {why}; run without --resume "
                         "to start training")
    step, meta = checkpoint.read_metadata(folder)
    stored = meta.get("config")
    if not isinstance(stored, dict):
        raise ValueError(f"--resume: the checkpoint {folder} (step {step}) holds no run "
                         "configuration to check against; it was not written by a run")
    differences = config_differences(stored, cfg)
    if differences:
        raise ValueError(f"--resume: the checkpoint {folder} is of another run: "
                         f"{'; '.join(differences)} (resume with the same settings, or start "
                         "a new run without --resume)")


def run(cfg: config.RunConfig) -> dict:
    """Trains and evaluates one run of ``cfg``; returns its record (what the CLI writes).

    With ``cfg.checkpoint_dir`` the whole training state (params, masks, optimizer state,
    counters, key - hence the data order) is saved every ``checkpoint_every`` epochs and at the
    end; ``cfg.resume`` continues from the newest readable one (:func:`check_resumable` first
    refuses a folder without one or of another run) and ends bitwise equal to an uninterrupted
    run. A non-finite loss stops the run before it is checkpointed, so the last checkpoint is
    the last good state. Checkpoints need a single process.

    In a multi-process run (``jax.distributed``) with ``cfg.devices`` spanning the processes,
    every process trains the same replicated state and returns the same record.

    A lottery method (``imp``, ``ugs``) runs its rounds (``sparsegnn_jax.rounds.run``).
    """
    cfg = config.resolve(cfg)
    if registry.get(cfg.method).rounds is not None:
        # Imported here: the round loop is built on this module (optimizer, FLOPs, record).
        from sparsegnn_jax import rounds

        return rounds.run(cfg)
    if cfg.resume:
        check_resumable(cfg)
    start = time.perf_counter()
    task = tasks.get(cfg.task)
    problem = task.prepare(cfg)
    model = task.build_model(problem, cfg.seed)
    bound, params = train.split_model(model)
    tx = build_optimizer(problem)
    if cfg.init_from:
        params = dense_warm_start(problem, params)
    # A warm start's weights are trained: masked, not rescaled.
    state = train.init_state(params, tx, jax.random.key(cfg.seed), rescale=not cfg.init_from)
    score = task.validation_score(problem, bound) if cfg.select == "best_val" else None
    selector = (None if score is None else train.BestOnValidation(
        tasks.jit_with_inputs(score), train.no_selection(state.params),
        first_selectable_epoch(cfg, problem.total_steps, problem.steps_per_epoch)))
    first_epoch, stored_loss = 0, float("nan")
    if cfg.checkpoint_dir and jax.process_count() > 1:
        raise ValueError("checkpoints (--checkpoint-every, --resume) are not supported with "
                         "several processes")
    if cfg.resume:
        template = state if selector is None else (state, selector.selection)
        restored, meta = checkpoint.restore(cfg.checkpoint_dir, template)
        if selector is None:
            state = restored
        else:
            state, selector.selection = restored
        first_epoch, stored_loss = int(meta["epoch"]), float(meta.get("loss", "nan"))
    mesh = train.data_mesh(cfg.devices) if cfg.devices > 1 else None
    state = train.replicate(state, mesh)
    inputs = train.replicate(problem.inputs, mesh)
    if selector is not None:
        selector.selection = train.replicate(selector.selection, mesh)
    hooks = [train.finite_guard(cfg.method)]
    if selector is not None:
        hooks.append(selector)
    if cfg.checkpoint_dir:
        hooks.append(train.checkpoint_hook(
            cfg.checkpoint_dir, cfg.epochs, cfg.checkpoint_every,
            {"config": dataclasses.asdict(cfg)},
            extra=None if selector is None else (lambda: selector.selection)))
    plan = compaction.plan_for(cfg, state.params, state.opt_state, method_kwargs(
        cfg, problem.total_steps, problem.steps_per_epoch))
    epoch_fn = task.make_epoch(problem, bound, tx, mesh, plan)
    # Sampled training refuses edge sparsity, so a compaction plan and sampled blocks never meet.
    epoch = (sampled.compiled(epoch_fn) if plan is None else
             compaction.CompactedEpoch(epoch_fn, plan))
    state, loss = train.fit(epoch, state, inputs, cfg.epochs, start=first_epoch, hooks=hooks,
                            progress=f"{cfg.method} {cfg.dataset}" if cfg.progress else None)
    # Evaluation reads this process's copy (the same on every process).
    state, loss = distributed.gather((state, loss))
    if selector is not None:
        selector.selection = distributed.gather(selector.selection)
    if first_epoch >= cfg.epochs:
        loss = stored_loss  # a finished run resumed: no epoch ran, its last loss is stored
    params, extra = state.params, {}
    if selector is not None:
        params = selector.selection.params
        extra["selected_epoch"] = int(selector.selection.epoch)
    val = task.evaluate(problem, bound, params, "val")
    test = task.evaluate(problem, bound, params, "test")
    masks = sparsity.get_masks(state.opt_state)
    flops = flops_summary(problem, model, masks, sparsity.get_trace(state.opt_state))
    extra["training_mode"] = ("compacted" if plan is not None else
                              "sampled" if problem.blocks is not None else "full_graph")
    return record(cfg, time.perf_counter() - start, float(loss), val, test, masks, flops,
                  problem, **extra)


def edge_sparsity(masks) -> float:
    """The exact share of edges the masks prune: pruned entries of the edge-weight leaves over
    their size (0.0 when the model has no edge-weight leaf)."""
    leaves = [np.asarray(m, bool) for p, m in zip(*flatten_with_paths(masks)[:2])
              if models.is_edge_weight(p)]
    size = sum(m.size for m in leaves)
    return 0.0 if size == 0 else float(sum(int((~m).sum()) for m in leaves) / size)


def record(cfg, wall_time, loss, val, test, masks, flops, problem: tasks.Problem,
           selected_epoch: int | None = None, training_mode: str = "full_graph") -> dict:
    """The results record of one run (what the CLI writes as JSON).

    ``sparsity`` is the weight matrices' sparsity alone; ``edge_sparsity`` the edge-weight
    leaf's (:func:`edge_sparsity`, 0 without one); ``layer_sparsity`` lists both.

    Link runs add the baselines' metrics on the same test and validation pairs
    (``baselines``, ``val_baselines``: name -> metrics) and the epoch whose parameters were
    kept (``selected_epoch``; ``epochs`` when the last epoch is reported).
    ``training_mode`` is ``compacted`` when steps passed messages over the compacted kept
    edges (``compaction``), ``sampled`` on neighbour-sampled blocks (``sampled``; their
    fan-outs and sizes in ``data``), else ``full_graph``.
    """
    rec = {
        "config": dataclasses.asdict(cfg),
        "data": problem.info,
        "final_train_loss": loss,
        "val": val,
        "test": test,
        "sparsity": float(sparsity.masks.sparsity(masks, tasks.weight_matrices)),
        "edge_sparsity": edge_sparsity(masks),
        "layer_sparsity": {k: float(v) for k, v in
                           sparsity.masks.layer_sparsity(masks, tasks.prunable_params).items()},
        "flops": flops,
        "wall_time_s": wall_time,
        "training_mode": training_mode,
    }
    if problem.baselines is not None:
        rec["baselines"] = problem.baselines["test"]
        rec["val_baselines"] = problem.baselines["val"]
        rec["selected_epoch"] = cfg.epochs if selected_epoch is None else selected_epoch
    return rec

