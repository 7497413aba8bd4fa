"""The registry of sparsity methods: one :class:`MethodSpec` per method, read by everything else.

Runs turn a configuration into a method's keyword arguments with :meth:`MethodSpec.plan`; sweeps
take their method list from :func:`names`; ``flops.training`` integrates
:meth:`MethodSpec.sparsity_at` and :meth:`MethodSpec.dense_gradient_steps`; reports take the
order and labels from here and draw the density-vs-step figure from ``sparsity_at``. Adding a
method is its factory (one file) plus one :func:`register` call; nothing else lists method names.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import numpy as np
import optax

# Function imports: the package re-exports ``admm`` (the function), which shadows the module.
from sparsegnn_jax.sparsity.admm import admm, slr
from sparsegnn_jax.sparsity.dst import rigl, sparse_evolutionary
from sparsegnn_jax.sparsity.lottery import find_rewind_state, imp, imp_next_masks
from sparsegnn_jax.sparsity.pruning import dense, gradual_magnitude, one_shot, static_sparse
from sparsegnn_jax.sparsity.schedules import cosine_drop, paper_drop
from sparsegnn_jax.sparsity.snip import snip
from sparsegnn_jax.sparsity.ugs import ugs, ugs_next_masks

#: A method's plan: ``plan(options, total_steps, steps_per_epoch) -> factory keyword arguments``.
#: ``options`` maps every name in :attr:`MethodSpec.options` to the run's value (``None``: unset)
#: plus ``"default_update_every"``, the task's paper mask-update period.
PlanFn = Callable[[Mapping[str, Any], int, int], dict]


def _no_kwargs(options, total_steps, steps_per_epoch) -> dict:
    return {}


def _final_sparsity(kwargs, steps, final):
    return np.broadcast_to(np.asarray(final, np.float64), np.shape(steps))


def _no_dense_gradients(kwargs, steps: int) -> float:
    return 0.0


def _no_check(kwargs, steps: int) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class RoundSpec:
    """How a lottery method (rounds of training, pruning and rewinding) goes from one round to
    the next; ``sparsegnn_jax.rounds`` runs the loop.

    Attributes:
      next_masks: ``next_masks(params, opt_state, masks, fractions) -> masks`` after a round
        (``fractions``: ``{path: share of the kept entries to prune}``).
      rewind_point: ``rewind_point(opt_state, initial_params) -> params`` of the first round's
        final state: the values the kept weights of every later round restart from.
      edge_prune_per_round: the default share of the kept edges each round prunes (None: the
        edges are pruned only when asked).
      needs_edges: the method learns a graph mask, the encoder's edge-weight leaf, which a
        message-passing model then always gets.
      ticket_training: each ticket is trained on its own at its fixed masks (UGS: the
        authors' "fix mask" run; the search runs train scores, not the ticket); otherwise the
        training at a round's masks is both that ticket's training and the next round's search.
      masks_at_best: the next masks are chosen from the search's state at its best validation
        epoch (UGS, as its authors: later the L1 term drives every score towards 0) rather
        than at its end (runs without model selection: at its end).
    """

    next_masks: Callable
    rewind_point: Callable
    edge_prune_per_round: float | None = None
    needs_edges: bool = False
    ticket_training: bool = False
    masks_at_best: bool = False


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What the rest of the package knows about one sparsity method.

    Attributes:
      name: the ``--method`` value.
      factory: ``factory(inner, **kwargs) -> optax.GradientTransformationExtraArgs``; it takes
        ``sparsity``, ``distribution`` and ``filter_fn`` when :attr:`sparse`, and ``key`` when
        :attr:`needs_key`.
      label: the name in tables and plots.
      plan: run configuration -> the factory's schedule arguments (phase lengths, update
        periods); see :data:`PlanFn`.
      options: the run-configuration fields :attr:`plan` reads (e.g. ``update_every``).
      sparsity_at: ``sparsity_at(kwargs, steps, final) -> sparsity in force during each step``
        (NumPy, vectorised over ``steps``) of a layer whose target is ``final``, for the
        factory arguments ``kwargs``; FLOPs and the density figure integrate it.
      dense_gradient_steps: ``dense_gradient_steps(kwargs, steps) -> float``: how many steps of
        a run of ``steps`` compute the dense weight gradient (RigL's regrowth) instead of the
        sparse one; each costs ``f_D - f_S`` more than a sparse step.
      dense_gradient_at: ``dense_gradient_at(kwargs, step) -> bool`` (jnp-traceable in
        ``step``): whether the ``update`` at ``step`` reads the gradient of pruned weights (a
        RigL mask update). Compacted training (``compaction``) computes those steps on the
        whole graph; a method with :attr:`dense_gradient_steps` but without this predicate
        trains on the masked graph throughout.
      flops_requires: factory arguments ``flops.training`` needs given explicitly to count a
        run (their factory defaults would be a guess about the run, e.g. RigL's dT).
      check: ``check(kwargs, steps)`` raises ValueError when the arguments cannot describe a run
        of ``steps`` steps (e.g. phases longer than the run).
      sparse: whether the method takes a target sparsity (``dense`` does not).
      needs_key: whether the factory takes a PRNG ``key`` (random masks or regrowth).
      in_sweeps: whether a sweep runs the method unless told which methods to run.
      aliases: other names :func:`get`, :func:`sparsifier` and ``flops.training`` accept for
        the method (the built-in methods' factory names, e.g. ``gradual_magnitude`` for
        ``gmp``); records and tables always use :attr:`name`.
      rounds: a :class:`RoundSpec` for a lottery method: its factory builds one round (a run
        at fixed ``masks``) and a run is an outer loop of rounds (``sparsegnn_jax.rounds``);
        the factory then takes ``masks`` and ``filter_fn``, not ``sparsity``.
    """

    name: str
    factory: Callable[..., optax.GradientTransformationExtraArgs]
    label: str
    plan: PlanFn = _no_kwargs
    options: tuple[str, ...] = ()
    sparsity_at: Callable[[Mapping[str, Any], Any, Any], Any] = _final_sparsity
    dense_gradient_steps: Callable[[Mapping[str, Any], int], float] = _no_dense_gradients
    dense_gradient_at: Callable[[Mapping[str, Any], Any], Any] | None = None
    flops_requires: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any], int], None] = _no_check
    sparse: bool = True
    needs_key: bool = False
    in_sweeps: bool = True
    aliases: tuple[str, ...] = ()
    rounds: RoundSpec | None = None

    def accepted_kwargs(self) -> list[str]:
        """The factory's keyword arguments (everything but ``inner``)."""
        return [p for p in inspect.signature(self.factory).parameters if p != "inner"]

    def dense_gradient_predicate(self, kwargs: Mapping[str, Any]) -> Callable | None:
        """``step -> bool``: whether the step reads the gradient of pruned weights, for the
        factory arguments ``kwargs``; None when the method does not say (then any step may)."""
        if self.dense_gradient_at is not None:
            return lambda step: self.dense_gradient_at(kwargs, step)
        if self.dense_gradient_steps is _no_dense_gradients:
            return lambda step: step < 0  # never, as a traced bool
        return None

    def takes_initial_scores(self) -> bool:
        """Whether the method starts from a mask chosen by ``scores`` (its factory takes them:
        static, SET, RigL), so a run can choose which edges that mask keeps."""
        return "scores" in self.accepted_kwargs()

    def takes_structure(self) -> bool:
        """Whether the method keeps an N:M structure (its factory takes ``structure``)."""
        return "structure" in self.accepted_kwargs()


_REGISTRY: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Adds ``spec`` to the registry under ``spec.name``; returns it.

    Raises:
      ValueError: when the name or an alias is taken (unless ``replace``) or the factory does
        not take the arguments the spec promises.
    """
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"sparsity method {spec.name!r} is already registered")
    for alias in (spec.name, *spec.aliases):
        owner = _ALIASES.get(alias, alias if alias in _REGISTRY else None)
        if owner is not None and owner != spec.name:
            raise ValueError(f"sparsity method {spec.name!r}: the name {alias!r} already names "
                             f"method {owner!r}")
    accepted = set(spec.accepted_kwargs())
    needed = ({"masks", "filter_fn"} if spec.rounds is not None
              else {"sparsity", "distribution", "filter_fn"} if spec.sparse else {"filter_fn"})
    needed |= {"key"} if spec.needs_key else set()
    missing = sorted(needed - accepted)
    if missing:
        raise ValueError(f"method {spec.name!r}: its factory must take {', '.join(missing)}")
    old = _REGISTRY.get(spec.name)
    for alias in () if old is None else old.aliases:
        _ALIASES.pop(alias, None)
    _REGISTRY[spec.name] = spec  # a replaced method keeps its place in the order
    _ALIASES.update({alias: spec.name for alias in spec.aliases})
    return spec


def unregister(name: str) -> None:
    """Removes a method and its aliases (a no-op for unknown names)."""
    spec = _REGISTRY.pop(name, None)
    for alias in () if spec is None else spec.aliases:
        _ALIASES.pop(alias, None)


def canonical_name(name: str) -> str:
    """The registered name of method ``name`` (itself, or the method an alias stands for).

    Raises:
      ValueError: for an unknown name, listing the known names and aliases.
    """
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(f"unknown sparsity method {name!r}; known: {', '.join(_REGISTRY)} "
                     f"(aliases: {', '.join(_ALIASES)})")


def get(name: str) -> MethodSpec:
    """The spec of method ``name`` (a registered name or an alias).

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    return _REGISTRY[canonical_name(name)]


def aliases() -> dict[str, str]:
    """``{alias: registered name}`` of every registered method."""
    return dict(_ALIASES)


def names() -> tuple[str, ...]:
    """Registered method names, in registration order (the order of tables and plots)."""
    return tuple(_REGISTRY)


def sweep_defaults() -> tuple[str, ...]:
    """The methods a sweep runs unless told otherwise (registration order)."""
    return tuple(name for name, spec in _REGISTRY.items() if spec.in_sweeps)


def sparsifier(name: str, inner: optax.GradientTransformation,
               **cfg) -> optax.GradientTransformationExtraArgs:
    """Builds the sparsity method called ``name`` around ``inner``.

    Args:
      name: a registered method (:func:`names`; the built-in ones are the CLI's --method values
        ``dense, static, one_shot, gmp, admm, slr, set, rigl, snip``) or an alias (the factories'
        names ``static_sparse``, ``gradual_magnitude``, ``sparse_evolutionary``, ``set_``).
      inner: the optimizer to wrap.
      **cfg: the method's keyword arguments (e.g. ``sparsity``, ``update_every``).

    Returns:
      The method's ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: for an unknown name or a keyword the method does not take.
    """
    spec = get(name)
    accepted = spec.accepted_kwargs()
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ValueError(f"sparsity method {name!r} does not take {', '.join(unknown)}; "
                         f"it takes: {', '.join(accepted)}")
    return spec.factory(inner, **cfg)


# ---------------------------------------------------------------------------------------------
# The built-in methods. Phases follow the paper's SLR budget scaled to the run: half dense, a
# quarter penalty, a quarter masked retraining (20 / 10 / 10 of 40 epochs). One-shot prunes
# where SLR does; gradual magnitude pruning ramps from 10% to 50% of the run, then retrains.


def _pruned_after(step_of: Callable[[Mapping[str, Any]], int]):
    """``sparsity_at`` of a method that is dense before one step and at its target after."""

    def sparsity_at(kwargs, steps, final):
        steps = np.asarray(steps)
        return np.where(steps < step_of(kwargs), 0.0, np.asarray(final, np.float64))

    return sparsity_at


def _one_shot_plan(options, total_steps, steps_per_epoch) -> dict:
    return dict(prune_step=total_steps // 2 + total_steps // 4)


def _gmp_plan(options, total_steps, steps_per_epoch) -> dict:
    every = options.get("update_every") or max(1, steps_per_epoch)
    return dict(begin_step=total_steps // 10, end_step=total_steps // 2, every=every)


def gmp_sparsity(steps, final, begin_step, end_step, every, initial_sparsity=0.0, power=3.0):
    """Zhu & Gupta (2017) sparsity in force during each of ``steps`` (NumPy, vectorised).

    The mask changes at steps ``begin_step + k * every`` (up to ``end_step``); between changes
    the sparsity of the latest change holds; before ``begin_step`` the network is dense.
    """
    steps = np.asarray(steps)
    last = begin_step + np.floor((steps - begin_step) / every) * every
    last = np.minimum(last, end_step)
    if end_step == begin_step:
        progress = np.where(last >= end_step, 1.0, 0.0)
    else:
        progress = np.clip((last - begin_step) / (end_step - begin_step), 0.0, 1.0)
    s = final + (initial_sparsity - final) * (1.0 - progress) ** power
    return np.where(steps < begin_step, 0.0, s)


def _gmp_sparsity_at(kwargs, steps, final):
    if kwargs.get("schedule") is not None:
        # A schedule callable replaces the polynomial one; every weight follows it.
        return np.asarray(kwargs["schedule"](np.asarray(steps)), np.float64)
    return gmp_sparsity(steps, final, kwargs.get("begin_step", 0), kwargs.get("end_step", 1000),
                        kwargs.get("every", 100), kwargs.get("initial_sparsity", 0.0),
                        kwargs.get("power", 3.0))


def _phased_plan(options, total_steps, steps_per_epoch) -> dict:
    """ADMM / SLR phases: ``penalty_epochs`` and ``retrain_epochs`` when given (the dense warm
    start is the rest of the run), else half dense, a quarter penalty, a quarter retraining."""
    every = options.get("update_every") or max(1, steps_per_epoch)
    penalty, retrain = options.get("penalty_epochs"), options.get("retrain_epochs")
    penalty_steps = total_steps // 4 if penalty is None else penalty * steps_per_epoch
    retrain_steps = (total_steps - total_steps // 2 - total_steps // 4 if retrain is None
                     else retrain * steps_per_epoch)
    return dict(rho=options["rho"], dense_steps=total_steps - penalty_steps - retrain_steps,
                penalty_steps=penalty_steps, update_every=every)


def _slr_plan(options, total_steps, steps_per_epoch) -> dict:
    return _phased_plan(options, total_steps, steps_per_epoch) | dict(
        initial_step_size=options.get("initial_step_size"))


def _check_phases(kwargs, steps: int) -> None:
    dense_steps, penalty_steps = kwargs.get("dense_steps", 0), kwargs.get("penalty_steps", 1000)
    if dense_steps < 0 or penalty_steps < 0 or dense_steps + penalty_steps > steps:
        raise ValueError(f"phases dense_steps={dense_steps} + penalty_steps={penalty_steps} "
                         f"must be >= 0 and fit in steps={steps}")


def _check_gmp(kwargs, steps: int) -> None:
    if kwargs.get("every", 100) < 1:
        raise ValueError(f"`every` must be >= 1, got {kwargs['every']}")
    # The schedule's end is needed to count FLOPs, unless a schedule callable replaces it.
    if kwargs.get("end_step") is None and kwargs.get("schedule") is None:
        raise ValueError("method 'gmp' needs `end_step` (or a `schedule`)")


def default_update_every(paper_period: int, horizon: int) -> int:
    """The paper's dT, shortened on small runs so that masks change at least ten times."""
    return max(1, min(paper_period, horizon // 10))


def _dst_plan(options, total_steps, steps_per_epoch) -> dict:
    end_fraction = options.get("end_fraction")
    end_step = (None if end_fraction is None or end_fraction >= 1.0
                else max(1, int(end_fraction * total_steps)))
    horizon = end_step or total_steps
    update_every = options.get("update_every") or default_update_every(
        options["default_update_every"], horizon)
    drop = options.get("drop_fraction")
    schedule = paper_drop(horizon) if drop is None else cosine_drop(drop, horizon)
    return dict(update_every=update_every, drop_fraction=schedule, end_step=end_step)


def _rigl_dense_gradient_steps(kwargs, steps: int) -> float:
    """RigL's steps with a dense gradient, as the RigL paper averages them (appendix H).

    Over the ``updating`` steps that can change masks, one in ``dT + 1`` is an update step.
    """
    end_step = kwargs.get("end_step")
    updating = steps if end_step is None else min(max(end_step, 0), steps)
    return updating / (kwargs.get("update_every", 100) + 1.0)


def _rigl_dense_gradient_at(kwargs, step):
    """RigL's mask-update steps (``dst.rigl``'s schedule): ``t > 0``, ``t % dT == 0``, up to
    ``end_step``."""
    due = (step > 0) & (step % kwargs.get("update_every", 100) == 0)
    end_step = kwargs.get("end_step")
    return due if end_step is None else due & (step <= end_step)


_DST_OPTIONS = ("update_every", "drop_fraction", "end_fraction")

# Registration order is the order of tables and plots.
register(MethodSpec("dense", dense, "Dense", sparse=False,
                    sparsity_at=lambda kwargs, steps, final: np.zeros(np.shape(steps))))
_phase_end = _pruned_after(lambda kw: kw.get("dense_steps", 0) + kw.get("penalty_steps", 1000))
_PHASED_OPTIONS = ("update_every", "rho", "penalty_epochs", "retrain_epochs")
register(MethodSpec("slr", slr, "SLR", plan=_slr_plan,
                    options=_PHASED_OPTIONS + ("initial_step_size",),
                    sparsity_at=_phase_end, check=_check_phases))
register(MethodSpec("admm", admm, "ADMM", plan=_phased_plan, options=_PHASED_OPTIONS,
                    sparsity_at=_phase_end, check=_check_phases))
register(MethodSpec("gmp", gradual_magnitude, "GMP", plan=_gmp_plan, options=("update_every",),
                    sparsity_at=_gmp_sparsity_at, check=_check_gmp,
                    aliases=("gradual_magnitude",)))
register(MethodSpec("set", sparse_evolutionary, "SET", plan=_dst_plan, options=_DST_OPTIONS,
                    needs_key=True, aliases=("sparse_evolutionary", "set_")))
register(MethodSpec("rigl", rigl, "RigL", plan=_dst_plan, options=_DST_OPTIONS, needs_key=True,
                    dense_gradient_steps=_rigl_dense_gradient_steps,
                    dense_gradient_at=_rigl_dense_gradient_at,
                    flops_requires=("update_every",)))
# Static masks and one-shot pruning are reference points, run on request.
register(MethodSpec("static", static_sparse, "Static", needs_key=True, in_sweeps=False,
                    aliases=("static_sparse",)))
register(MethodSpec("one_shot", one_shot, "One-shot", plan=_one_shot_plan,
                    sparsity_at=_pruned_after(lambda kw: kw.get("prune_step", 0)),
                    flops_requires=("prune_step",), in_sweeps=False, aliases=("oneshot",)))
# SNIP prunes in the first update, from that step's (dense) gradients: step 0 runs dense.
register(MethodSpec("snip", snip, "SNIP", sparsity_at=_pruned_after(lambda kw: 1),
                    in_sweeps=False))



def round_sparsity_at(kwargs, steps, final):
    """Sparsity in force at each step of a lottery run: ``rounds + 1`` trainings of
    ``steps_per_round`` steps each, training ``r`` at the masks after ``r`` rounds of pruning,
    a layer reaching ``final`` after the last round at a constant rate per round
    (``1 - (1 - final)^(r / rounds)``; exact keep counts: ``lottery.round_keep_counts``)."""
    rounds, per_round = kwargs["rounds"], kwargs["steps_per_round"]
    done = np.minimum(np.asarray(steps) // max(per_round, 1), rounds)
    density = (1.0 - np.asarray(final, np.float64)) ** (done / max(rounds, 1))
    return 1.0 - density


def _check_rounds(kwargs, steps: int) -> None:
    rounds, per_round = kwargs.get("rounds", 0), kwargs.get("steps_per_round", 0)
    if rounds < 0 or per_round < 1 or (rounds + 1) * per_round != steps:
        raise ValueError(f"a lottery run of rounds={rounds} has rounds + 1 trainings of "
                         f"steps_per_round={per_round} >= 1 steps: steps must be "
                         f"{(rounds + 1) * per_round}, got {steps}")


def _imp_plan(options, total_steps, steps_per_epoch) -> dict:
    return dict(rewind_step=options.get("rewind_step") or 0)


def _ugs_plan(options, total_steps, steps_per_epoch) -> dict:
    return dict(l1_weights=options["l1_weights"], l1_edges=options["l1_edges"])


_LOTTERY = dict(sparsity_at=round_sparsity_at, check=_check_rounds,
                flops_requires=("rounds", "steps_per_round"), in_sweeps=False)
# Lottery methods: rounds of training at fixed masks, pruning and rewinding.
register(MethodSpec("imp", imp, "IMP", plan=_imp_plan,
                    options=("prune_per_round", "edge_prune_per_round", "rewind_step"),
                    rounds=RoundSpec(imp_next_masks,
                                     lambda opt_state, init: find_rewind_state(opt_state).params),
                    **_LOTTERY))
register(MethodSpec("ugs", ugs, "UGS", plan=_ugs_plan, needs_key=True,
                    options=("prune_per_round", "edge_prune_per_round", "l1_weights", "l1_edges"),
                    rounds=RoundSpec(ugs_next_masks, lambda opt_state, init: init,
                                     edge_prune_per_round=0.05, needs_edges=True,
                                     ticket_training=True, masks_at_best=True),
                    **_LOTTERY))

#: Name -> factory of the built-in methods (kept for existing callers; prefer :func:`get`).
METHODS = {name: spec.factory for name, spec in _REGISTRY.items()}
