"""Lottery runs: an outer loop of rounds over ``train.fit`` (IMP, UGS).

A lottery method (a registry entry with a :class:`~sparsity.registry.RoundSpec`) with
``cfg.rounds = R`` trains ``R + 1`` times, each a full run of ``cfg.epochs`` epochs from a fresh
optimizer state:

* training 0 at the masks given (all True), after which the method's rewind point is taken
  (IMP: the params after ``--rewind-step`` steps; UGS: the initialisation);
* after training ``r < R``, the method's ``next_masks`` prunes ``--prune-per-round`` of each
  layer's kept weights (and ``--edge-prune-per-round`` of the kept edges) and training
  ``r + 1`` restarts from the rewind point at the new masks (pruned weights 0);
* training ``r`` is the training of the ticket found after ``r`` rounds: its record (metrics
  with model selection within that training, sparsities after round ``r``, and the training
  FLOPs of trainings ``0..r``) is round ``r``'s. The run's record is round ``R``'s.

A method whose searches do not train the ticket itself (``RoundSpec.ticket_training``, UGS: its
searches train mask scores) trains each ticket on its own after the search that found it: the
searches at the masks of rounds ``0..R-1`` and the tickets of rounds ``1..R``, ``2R`` trainings,
all counted in the FLOPs.

The rounds are deterministic (every training draws its data order from the run's seed), so a run
with ``R`` rounds is the first ``R`` rounds of a longer one: a sweep trains the longest and
writes a row per round, and a run resumed with more rounds continues where the shorter one
stopped. With ``cfg.checkpoint_dir`` the masks, the rewind point and the finished rounds'
records are saved after every round's pruning (step = the number of rounds done).
"""
from __future__ import annotations

import dataclasses
import time

import jax

from sparsegnn_jax import checkpoint, config, method_settings, models, runs, sparsity, tasks, train
from sparsegnn_jax import flops as sg_flops
from sparsegnn_jax.sparsity import lottery, registry

__all__ = ["check_resumable", "round_optimizer", "run", "run_rounds"]


def _edge_filter(path: str, leaf) -> bool:
    return models.is_edge_weight(path)


def round_optimizer(problem: tasks.Problem, masks=None, round_index: int = 0):
    """The method's transformation for round ``round_index`` at ``masks`` (None: all True);
    a method that draws (UGS's score jitter) gets a key of the run's seed and the round."""
    cfg = problem.cfg
    spec = registry.get(cfg.method)
    kw = dict(masks=masks, filter_fn=tasks.prunable_params)
    if spec.needs_key:
        kw["key"] = jax.random.fold_in(jax.random.key(cfg.seed), round_index)
    kw |= spec.plan(config.method_options(cfg), problem.total_steps, problem.steps_per_epoch)
    if "edge_filter" in spec.accepted_kwargs():
        kw["edge_filter"] = _edge_filter
    return registry.sparsifier(cfg.method, runs.inner_optimizer(cfg, problem.total_steps), **kw)


# Fields a run resumed from a round checkpoint may change: how it is carried out, and the
# number of rounds (with the sparsity it implies), since fewer rounds are a prefix of more.
_ROUND_CHANGES = ("rounds", "sparsity")


def check_resumable(cfg: config.RunConfig) -> int:
    """The rounds done in ``cfg.checkpoint_dir``, if it holds a lottery run of ``cfg``.

    Raises:
      ValueError: no folder, no complete checkpoint, a checkpoint of another run (naming the
        differing fields), or one past ``cfg.rounds``.
    """
    if cfg.checkpoint_dir is None:
        raise ValueError("--resume needs a checkpoint folder (--checkpoint-dir)")
    if not checkpoint.list_steps(cfg.checkpoint_dir):
        raise ValueError(f"--resume: nothing to resume: {cfg.checkpoint_dir} holds no complete "
                         "checkpoint; run without --resume to start training")
    step, meta = checkpoint.read_metadata(cfg.checkpoint_dir)
    differences = [d for d in runs.config_differences(meta.get("config", {}), cfg)
                   if d.split(":")[0] not in _ROUND_CHANGES]
    if "round" not in meta or differences:
        why = "; ".join(differences) or "not a lottery run's round checkpoint"
        raise ValueError(f"--resume: the checkpoint {cfg.checkpoint_dir} is of another run: "
                         f"{why} (resume with the same settings, or start a new run)")
    if meta["round"] > cfg.rounds:
        raise ValueError(f"--resume: the checkpoint {cfg.checkpoint_dir} is after round "
                         f"{meta['round']}, past --rounds={cfg.rounds}")
    return int(meta["round"])


def run(cfg: config.RunConfig) -> dict:
    """Trains and evaluates a lottery run; returns the record of its last round, with
    ``rounds`` (one summary per round: sparsities, training FLOPs so far, test metrics)."""
    return run_rounds(cfg)[-1]


def run_rounds(cfg: config.RunConfig, problem: tasks.Problem | None = None) -> list[dict]:
    """Trains a lottery run of ``cfg.rounds`` rounds; returns one record per round (1..R).

    Args:
      cfg: a configuration of a lottery method (resolved here).
      problem: a prepared problem to reuse (its data must match ``cfg``).

    Returns:
      Records as ``runs.run`` writes them, round ``r``'s with ``config.rounds = r`` and
      ``config.sparsity`` the nominal ``1 - (1 - p)^r``; ``flops`` holds ``training`` (every
      training up to this round's ticket), ``training_rounds`` (each of them, in order),
      ``training_ticket`` (the ticket's own training) and ``step_ticket`` (``3 f_S`` of the
      ticket's masks, one step); ``rounds`` lists the summaries of rounds ``1..r``.

    Raises:
      ValueError: a bad configuration, a ``--rewind-step`` past a round's steps, or a
        checkpoint that cannot be resumed (:func:`check_resumable`).
    """
    cfg = config.resolve(cfg)
    spec = registry.get(cfg.method)
    if spec.rounds is None:
        raise ValueError(f"--method={cfg.method} is not a lottery method (no rounds)")
    done = check_resumable(cfg) if cfg.resume else 0
    start = time.perf_counter()
    task = tasks.get(cfg.task)
    problem = dataclasses.replace(problem or task.prepare(cfg), cfg=cfg)
    if (cfg.rewind_step or 0) >= problem.total_steps:
        raise ValueError(f"--rewind-step={cfg.rewind_step} must be below the steps of a round "
                         f"({problem.total_steps})")
    model = task.build_model(problem, cfg.seed)
    bound, initial = train.split_model(model)
    fractions = lottery.prune_fractions(initial, cfg.prune_per_round, cfg.edge_prune_per_round,
                                        tasks.prunable_params, _edge_filter)
    masks, rewind_to, records, per_training = None, initial, [], []
    if done:
        template = {"masks": sparsity.masks.all_true(initial), "rewind": initial}
        saved, meta = checkpoint.restore(cfg.checkpoint_dir, template)
        masks, rewind_to = saved["masks"], saved["rewind"]
        records, per_training = meta["records"], meta["training_rounds"]
    # A round's update reads its masks from the state, so one compiled epoch serves all rounds.
    search = _Trainer(problem, bound, round_optimizer(problem), initial,
                      selects_masks=spec.rounds.masks_at_best)
    ticket_trainer = (_Trainer(problem, bound, _ticket_optimizer(problem), initial)
                      if spec.rounds.ticket_training else search)
    step_inputs, _ = task.flops_inputs(problem)
    dense_step = sg_flops.forward(model, step_inputs)

    def ticket(r, result):
        state, loss, selected, _ = result
        trace = sparsity.get_trace(state.opt_state)
        records.append(_round_record(problem, model, bound, state, loss, selected,
                                     sparsity.get_masks(state.opt_state), trace, per_training, r,
                                     records, time.perf_counter() - start))

    def save(r, masks):
        if cfg.checkpoint_dir:
            checkpoint.save(cfg.checkpoint_dir, r, {"masks": masks, "rewind": rewind_to},
                            {"config": dataclasses.asdict(cfg), "round": r,
                             "records": records, "training_rounds": per_training})

    def train_at(trainer, r, masks, tx):
        result = trainer(masks, rewind_to, tx, f"{cfg.method} round {r}/{cfg.rounds}")
        per_training.append(float(sg_flops.training_from_trace(
            dense_step, sparsity.get_trace(result[0].opt_state))))
        return result

    # Without a ticket training of its own, training r is round r's ticket and the search of
    # round r + 1; with one (UGS), a search at masks r, then the ticket at masks r + 1.
    last = cfg.rounds if ticket_trainer is search else cfg.rounds - 1
    for r in range(done, last + 1):
        result = train_at(search, r, masks, round_optimizer(problem, masks, r))
        state = result[0]
        if r == 0:
            rewind_to = spec.rounds.rewind_point(state.opt_state, initial)
        if ticket_trainer is search and r > 0:
            ticket(r, result)
        if r == cfg.rounds:
            break
        chosen = result[3] if spec.rounds.masks_at_best else state
        masks = spec.rounds.next_masks(chosen.params, chosen.opt_state,
                                       sparsity.get_masks(chosen.opt_state), fractions)
        if ticket_trainer is not search:
            ticket(r + 1, train_at(ticket_trainer, r + 1, masks,
                                   _ticket_optimizer(problem, masks)))
        save(r + 1, masks)
    return records


def _ticket_optimizer(problem: tasks.Problem, masks=None):
    """A ticket's own training: the inner optimizer at the fixed ``masks``."""
    cfg = problem.cfg
    return lottery.at_masks(runs.inner_optimizer(cfg, problem.total_steps), masks,
                            tasks.prunable_params, cfg.method)


class _Trainer:
    """One training of ``cfg.epochs`` epochs at given masks, from the rewound params; its epoch
    is compiled once (the masks live in the state)."""

    def __init__(self, problem, bound, tx, initial, selects_masks: bool = False):
        cfg = problem.cfg
        task = tasks.get(cfg.task)
        self.problem, self.initial = problem, initial
        self.epoch = jax.jit(task.make_epoch(problem, bound, tx))
        score = task.validation_score(problem, bound) if cfg.select == "best_val" else None
        if selects_masks:  # a search whose masks come from its best validation epoch (UGS)
            score = task.search_score(problem, bound)
        self.score = None if score is None else tasks.jit_with_inputs(score)

    def __call__(self, masks, rewind_to, tx, description):
        cfg = self.problem.cfg
        params = self.initial if masks is None else lottery.rewind(rewind_to, masks)
        # Rewound weights are values of the dense model: masked, not rescaled.
        state = train.init_state(params, tx, jax.random.key(cfg.seed), rescale=False)
        hooks = [train.finite_guard(cfg.method)]
        if self.score is not None:
            selector = train.BestOnValidation(self.score, train.no_selection(state.params))
            hooks += [selector, _BestState(selector)]
        state, loss = train.fit(self.epoch, state, self.problem.inputs, cfg.epochs, hooks=hooks,
                                progress=description if cfg.progress else None)
        if self.score is None:
            return state, float(loss), None, state
        return state, float(loss), hooks[1].selection, hooks[2].state or state


class _BestState:
    """A hook after a :class:`train.BestOnValidation`: the whole training state (params and
    optimizer state, e.g. UGS's scores) of the epoch it selected."""

    def __init__(self, selector: train.BestOnValidation):
        self.selector, self.state, self._epoch = selector, None, 0

    def __call__(self, epochs_done: int, state: train.TrainState, loss) -> None:
        epoch = int(self.selector.selection.epoch)
        if epoch != self._epoch:
            self.state, self._epoch = state, epoch


def _round_record(problem, model, bound, state, loss, selected, masks, trace, per_training,
                  r: int, earlier: list, wall_time: float) -> dict:
    """The record of round ``r``'s ticket, trained in training ``r``."""
    cfg = problem.cfg
    task = tasks.get(cfg.task)
    round_cfg = dataclasses.replace(cfg, rounds=r,
                                    sparsity=method_settings.lottery_sparsity(
                                        cfg.prune_per_round, r))
    round_problem = dataclasses.replace(problem, cfg=round_cfg)
    params, extra = state.params, {}
    if selected is not None:
        params = selected.params
        extra["selected_epoch"] = int(selected.epoch)
    val = task.evaluate(round_problem, bound, params, "val")
    test = task.evaluate(round_problem, bound, params, "test")
    flops = runs.flops_summary(round_problem, model, masks, trace)
    step_inputs, _ = task.flops_inputs(round_problem)
    total = float(sum(per_training))  # every training so far: the searches and tickets
    flops |= {"training": total, "training_relative": total / flops["training_dense"],
              "training_ticket": flops["training"], "training_rounds": list(per_training),
              "step_ticket": 3.0 * sg_flops.forward(model, step_inputs, masks).total}
    rec = runs.record(round_cfg, wall_time, loss, val, test, masks, flops, round_problem,
                      **extra)
    summary = {"round": r, "sparsity": rec["sparsity"], "edge_sparsity": rec["edge_sparsity"],
               "training_flops": total, "test": test}
    rec["rounds"] = [e["rounds"][-1] for e in earlier] + [summary]
    return rec
