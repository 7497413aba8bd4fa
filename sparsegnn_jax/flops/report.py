"""A forward pass's FLOPs as an affine function of the weight densities.

``f(d) = fixed + sum_p d_p * weight_flops[p]``: :class:`FlopsReport` keeps both parts, so one
dense report gives the cost at any density (:func:`at_densities`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

__all__ = ["FlopsReport", "at_densities", "affine_parts", "density_map"]


@dataclasses.dataclass(frozen=True)
class FlopsReport:
    """Forward FLOPs of one pass, per layer and in total.

    Attributes:
      per_layer: ``{module path: FLOPs}`` at the densities the report was made with, e.g.
        ``{"layers/0": 4224.0, "layers/1": 258.0}``; the values sum to ``total``.
      total: FLOPs of the whole forward pass.
      weight_flops: ``{weight path: dense FLOPs}``: the FLOPs of the products with that weight
        matrix when it is dense (density 1). These are the terms that scale with density.
      densities: ``{weight path: density}`` used for this report (1.0 everywhere when dense).
      uncounted: ``"path (type)"`` of the modules no counter knows: what their own code
        computes is missing from ``total`` (``flops.forward`` warns about them).
      xla_total: XLA's count of the same dense forward pass when ``flops.forward`` was asked
        to check against it (``check=True``), else None.
    """

    per_layer: Mapping[str, float]
    total: float
    weight_flops: Mapping[str, float] = dataclasses.field(default_factory=dict)
    densities: Mapping[str, float] = dataclasses.field(default_factory=dict)
    uncounted: tuple[str, ...] = ()
    xla_total: float | None = None

    @property
    def fixed(self) -> float:
        """FLOPs that do not depend on any weight density (biases, aggregation, softmax)."""
        return self.total - sum(self.densities.get(p, 1.0) * f for p, f in self.weight_flops.items())

    @property
    def dense_total(self) -> float:
        """Total FLOPs of the same pass with every weight matrix dense."""
        return self.fixed + sum(self.weight_flops.values())


def at_densities(report: FlopsReport | Mapping[str, float] | float,
                 densities: Mapping[str, float] | float | None = None) -> float:
    """Forward FLOPs of the pass described by ``report`` when the weights have ``densities``.

    Args:
      report: a :class:`FlopsReport` (its ``fixed`` part stays, its ``weight_flops`` scale); or a
        dict ``{weight path: dense FLOPs}`` whose entries all scale with their path's density; or
        a float: dense FLOPs that all scale with one density.
      densities: ``{weight path: density}``, a single density for every weight, or None for the
        report's own densities (dense for a dict or a float).

    Returns:
      FLOPs as a float (a NumPy array when densities are arrays, e.g. from a vmapped sweep).
    """
    fixed, weights = affine_parts(report)
    if densities is None:
        densities = report.densities if isinstance(report, FlopsReport) else 1.0
    if isinstance(report, (int, float)) and isinstance(densities, Mapping):
        raise ValueError("at_densities: `densities` must be a single number when `report` is a "
                         "float (a dict of densities needs per-weight FLOPs to weight them)")
    dens = density_map(weights, densities, "densities")
    total = fixed
    for path, flops in weights.items():
        total = total + dens[path] * flops
    return total


def affine_parts(report) -> tuple[float, dict[str, float]]:
    """Splits a forward cost into the part that stays and the parts that scale with density.

    Args:
      report: a :class:`FlopsReport`, a dict ``{weight path: dense FLOPs}`` or a number (as for
        :func:`at_densities`).

    Returns:
      ``(fixed FLOPs, {weight path: dense FLOPs})``; a number becomes the single path ``""``.

    Raises:
      ValueError: ``report`` is none of those types.
    """
    if isinstance(report, FlopsReport):
        return report.fixed, dict(report.weight_flops)
    if isinstance(report, Mapping):
        return 0.0, {str(k): float(v) for k, v in report.items()}
    if isinstance(report, (int, float, np.floating, np.integer)):
        return 0.0, {"": float(report)}
    raise ValueError(f"expected a FlopsReport, a dict {{path: FLOPs}} or a number, got "
                     f"{type(report).__name__}")


def density_map(weights: Mapping[str, float], densities, name: str) -> dict[str, Any]:
    """``{weight path: density}`` for every path of ``weights``.

    Args:
      weights: ``{weight path: dense FLOPs}``; only its paths are used.
      densities: one density for every weight, or ``{weight path: density}`` (paths it leaves
        out are dense).
      name: the argument's name, for the error message.

    Raises:
      ValueError: ``densities`` names a path ``weights`` does not have.
    """
    if not isinstance(densities, Mapping):
        return {p: densities for p in weights}
    unknown = sorted(set(densities) - set(weights))
    if unknown:
        raise ValueError(f"`{name}` names weights the model does not have: {unknown}; known "
                         f"weights: {sorted(weights)}")
    # Weights without an entry were not pruned (excluded by the filter): dense.
    return {p: densities.get(p, 1.0) for p in weights}
