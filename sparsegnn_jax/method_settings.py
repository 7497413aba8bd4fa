"""How a run's method settings beyond the method's name resolve: N:M structures and lottery
rounds. ``config.resolve`` calls :func:`resolve_structure` and :func:`resolve_rounds`; the
configuration type is ``config.RunConfig`` (annotations only: this module sits below it).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from sparsegnn_jax.sparsity import registry
from sparsegnn_jax.sparsity import structure as structure_lib

if TYPE_CHECKING:
    from sparsegnn_jax.config import RunConfig

#: ``RunConfig.sparsity``'s default: the sparsity of a run that names none.
DEFAULT_SPARSITY = 0.9


def flag(name: str) -> str:
    """The command-line spelling of a config field."""
    return "--" + name.replace("_", "-")


def structure_sparsity(text: str | None, sparsity: float | None, flag: str = "--sparsity"):
    """The sparsity of a run with ``--structure=text``: ``1 - N/M`` when ``sparsity`` is None,
    else ``sparsity`` checked against it; without a structure ``sparsity`` (0.9 when None).

    Raises:
      ValueError: naming ``--structure`` for a malformed value, or ``flag`` when it disagrees.
    """
    nm = structure_lib.parse(text, "--structure")
    if nm is None:
        return DEFAULT_SPARSITY if sparsity is None else sparsity
    if sparsity is not None and abs(sparsity - nm.sparsity) > 1e-9:
        raise ValueError(f"{flag}={sparsity:g} contradicts --structure={nm}, which keeps "
                         f"{nm.n} of every {nm.m} weights (sparsity {nm.sparsity:g}); leave "
                         f"{flag} unset")
    return nm.sparsity


def resolve_structure(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``structure`` normalised (``"nm:N:M"`` or None) and checked against the
    method, sparsity and distribution."""
    nm = structure_lib.parse(cfg.structure, "--structure")
    if nm is None:
        return dataclasses.replace(cfg, structure=None)
    spec = registry.get(cfg.method)
    if not spec.takes_structure():
        known = [n for n in registry.names() if registry.get(n).takes_structure()]
        raise ValueError(f"--structure={nm} cannot be kept by --method={cfg.method}; methods "
                         f"that keep an N:M structure: {', '.join(known)}")
    structure_sparsity(str(nm), cfg.sparsity)
    if cfg.distribution not in (None, "uniform"):
        raise ValueError(f"--distribution={cfg.distribution} contradicts --structure={nm}, "
                         f"which fixes every weight matrix at density {nm.n}/{nm.m}; leave "
                         f"--distribution unset")
    return dataclasses.replace(cfg, structure=str(nm), distribution="uniform")


#: The fields of lottery methods and their defaults (UGS's from the authors' Cora GCN command;
#: the edge share is the method's :attr:`~registry.RoundSpec.edge_prune_per_round`).
LOTTERY_DEFAULTS = dict(rounds=5, prune_per_round=0.2, rewind_step=0, l1_weights=1e-2,
                        l1_edges=1e-2)
LOTTERY_FIELDS = ("rounds", "prune_per_round", "rewind_step", "edge_prune_per_round",
                  "l1_weights", "l1_edges")


def lottery_sparsity(prune_per_round: float, rounds: int) -> float:
    """The nominal weight sparsity after ``rounds`` rounds: ``1 - (1 - p)^rounds``."""
    return 1.0 - (1.0 - prune_per_round) ** rounds


def resolve_rounds(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the lottery fields checked and filled, the sparsity derived from them and
    the edge-weight leaf enabled where the method prunes edges; other methods refuse them."""
    spec = registry.get(cfg.method)
    given = [name for name in LOTTERY_FIELDS if getattr(cfg, name) is not None]
    if spec.rounds is None:
        if given:
            lottery = [n for n in registry.names() if registry.get(n).rounds is not None]
            raise ValueError(f"{flag(given[0])} applies to the lottery methods "
                             f"({', '.join(lottery)}) only; leave it unset with "
                             f"--method={cfg.method}")
        return cfg
    reads = ("rounds",) + spec.options
    for name in given:
        if name not in reads:
            raise ValueError(f"{flag(name)} has no effect with --method={cfg.method}; "
                             "leave it unset")
    cfg = dataclasses.replace(cfg, **{name: LOTTERY_DEFAULTS[name] for name in reads
                                      if getattr(cfg, name) is None and name in LOTTERY_DEFAULTS})
    if cfg.edge_prune_per_round is None and "edge_prune_per_round" in reads:
        cfg.edge_prune_per_round = spec.rounds.edge_prune_per_round
    if isinstance(cfg.rounds, bool) or not isinstance(cfg.rounds, int) or cfg.rounds < 1:
        raise ValueError(f"--rounds must be an integer >= 1, got {cfg.rounds!r}")
    if not 0.0 < cfg.prune_per_round < 1.0:
        raise ValueError(f"--prune-per-round must be in (0, 1), got {cfg.prune_per_round}")
    if cfg.edge_prune_per_round is not None and not 0.0 <= cfg.edge_prune_per_round < 1.0:
        raise ValueError(f"--edge-prune-per-round must be in [0, 1), got "
                         f"{cfg.edge_prune_per_round}")
    if cfg.rewind_step is not None and cfg.rewind_step < 0:
        raise ValueError(f"--rewind-step must be >= 0, got {cfg.rewind_step}")
    for name in ("l1_weights", "l1_edges"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag(name)} must be a finite number >= 0, got {value}")
    if cfg.distribution not in (None, "uniform"):
        raise ValueError(f"--distribution={cfg.distribution} is not supported with "
                         f"--method={cfg.method}: lottery methods prune the same share of every "
                         "layer's kept weights each round (uniform); leave it unset")
    if cfg.layer_sparsity:
        raise ValueError(f"--layer-sparsity is not supported with --method={cfg.method}: "
                         "every layer loses --prune-per-round of its weights each round")
    derived = lottery_sparsity(cfg.prune_per_round, cfg.rounds)
    if cfg.sparsity != DEFAULT_SPARSITY and not math.isclose(cfg.sparsity, derived):
        raise ValueError(f"--sparsity is derived with --method={cfg.method}: the final sparsity "
                         f"is 1 - (1 - p)^rounds = {derived:.6g} (--prune-per-round="
                         f"{cfg.prune_per_round}, --rounds={cfg.rounds}); leave it unset")
    cfg.sparsity, cfg.distribution = derived, "uniform"
    prunes_edges = spec.rounds.needs_edges or bool(cfg.edge_prune_per_round)
    if cfg.model == "mlp" and prunes_edges:
        what = ("learns a graph mask (the edges' scores)" if spec.rounds.needs_edges
                else "prunes edges with --edge-prune-per-round")
        raise ValueError(f"--method={cfg.method} {what}; --model=mlp passes no messages over "
                         "edges: use a message-passing model (gcn, sage, gat, gin)")
    if cfg.edge_sparsity:
        raise ValueError(f"--edge-sparsity has no effect with --method={cfg.method}: rounds "
                         "start from the whole graph and prune --edge-prune-per-round of its "
                         "kept edges each round")
    if prunes_edges:
        cfg.edge_sparsity = 0.0  # the edge-weight leaf, every edge kept at first
    return cfg
