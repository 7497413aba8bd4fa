"""Analytic FLOPs of forward passes and whole training runs, from weight shapes and mask densities.

Convention
----------
* A matrix product ``[B, n] @ [n, m]`` costs ``2 * B * n * m`` FLOPs: one multiply and one add per
  multiply-accumulate (MAC). FLOPs = 2 x MACs.
* A sparse weight matrix costs its density times the dense cost (``density * 2 * B * n * m``): only
  the kept weights are multiplied. Density is the fraction of True entries of the layer's mask.
* Node features count as dense ``[N, F]`` inputs, also when they are carried sparse
  (``models.sparse_inputs``: bag-of-words features whose first-layer product runs over their
  nonzeros only): the paper's analytic count, not the arithmetic the product performs.
* A bias add costs one FLOP per output element; it never scales with density (biases are not
  pruned).
* Message aggregation costs one FLOP per edge per feature for each elementwise step, counted per
  layer type: GCN one normalisation multiply and one sum add per edge and output feature; SAGE
  one sum add per edge and input feature plus one division per node and feature for the mean;
  GAT, per head, the attention logits (two dot products per node, one add per edge), the
  softmax (max, subtract, sum and divide per edge; the exponential is a transcendental and is
  left out, as XLA reports it apart) and the weighting (multiply + add per edge and feature);
  GIN one sum add per edge and input feature, ``(1 + eps) * x + sum`` per node and feature, then
  its MLP. The exact counts are in the ``*_layer_flops`` functions of :mod:`.formulas`.
* Edge sparsity: an ``Encoder`` with an edge-weight leaf (``num_edges``) gates its graph's
  first edges. Every per-edge term above, in every layer, is counted only for the kept edges:
  the leaf is a "weight" whose dense cost is the per-edge FLOPs of the edges it gates, summed
  over layers, so its mask density scales it per step and per run exactly as a kernel's
  density scales the products (a RigL mask update of the edges counts its dense gradient the
  same way). A masked graph then costs what the graph with the pruned edges deleted costs.
* Link decoders cost per pair: the dot decoder ``2 * d``; the MLP decoder its combine step
  (``d`` multiplies for the Hadamard mode, nothing for concatenation) and its MLP.
* Left out: activations (ReLU, LeakyReLU, sigmoid, log-softmax), dropout, the exponentials of the
  softmax, gather / scatter / embedding look-ups (memory traffic, not arithmetic), and graph
  normalisation constants such as GCN's ``D^-1/2 A D^-1/2`` coefficients, computed once per graph.
* Training (Evci et al. 2020, "Rigging the Lottery", appendix H): one step costs ``3 f`` - the
  forward pass ``f`` plus a backward pass of ``2 f`` (gradients w.r.t. activations and w.r.t.
  weights). A dense step costs ``3 f_D``, a sparse one ``3 f_S``. A RigL mask update step needs
  the dense weight gradient, so it costs ``2 f_S + f_D``; with an update every ``dT`` steps this
  averages ``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` per step. SET regrows at random and costs
  ``3 f_S``. ADMM / SLR train dense during their dense and penalty phases (``3 f_D``) and sparse
  during retraining (``3 f_S``). Gradual magnitude pruning sums ``3 f(density_t)`` over its steps.

Every forward pass cost is affine in the layer densities:
``f(d) = fixed + sum_p d_p * weight_flops[p]`` where ``p`` runs over weight paths (the same path
strings as ``sparsegnn_jax.masks.layer_sparsity``, e.g. ``"encoder/layers/0/kernel"``) and
``fixed`` collects everything that does not shrink with sparsity (biases, aggregation,
softmax). :class:`FlopsReport` stores both parts, so one dense report gives the cost at any
density (:func:`at_densities`), which is what :func:`training` integrates over a run.

Modules: :mod:`.formulas` (closed-form per-layer counts), :mod:`.report` (:class:`FlopsReport`
and its affine algebra), :mod:`.counting` (counting a model: one counter per module type,
:func:`register_counter` for modules of your own, :class:`InputSizes` what a counter sees),
:mod:`.forward_pass` (:func:`forward` and :func:`inference` on given inputs and masks),
:mod:`.xla` (XLA's count of the same pass, :func:`xla_forward`, to check against),
:mod:`.training_runs` (totals of training runs per method).

Completeness: a module type with neither a counter nor a declaration as a container is named in
an :class:`UncountedModuleWarning` (``strict=True``: :class:`UncountedModuleError`), so a count
never silently leaves out what such a module computes; ``forward(..., check=True)`` also
compares the dense count with XLA's and warns (:class:`FlopsMismatchWarning`) beyond a stated
tolerance.
"""
from __future__ import annotations

from sparsegnn_jax.flops.counting import (
    FlopsTally,
    InputSizes,
    LayerCounter,
    UncountedModuleError,
    UncountedModuleWarning,
    count,
    count_children,
    join_path,
    register_counter,
)
from sparsegnn_jax.flops.forward_pass import forward, inference, mask_densities
from sparsegnn_jax.flops import formulas
from sparsegnn_jax.flops.formulas import (
    gat_layer_flops,
    gcn_layer_flops,
    gin_layer_flops,
    linear_flops,
    mlp_flops,
    sage_layer_flops,
)
from sparsegnn_jax.flops.report import FlopsReport, at_densities
from sparsegnn_jax.flops.xla import FlopsMismatchWarning, xla_forward
# The module is not named `training`: the function re-exported here would then shadow it
# (`import sparsegnn_jax.flops.training as m` would give the function).
from sparsegnn_jax.flops.training_runs import (
    rigl_step_flops,
    training,
    training_from_trace,
)

__all__ = [
    "FlopsMismatchWarning",
    "FlopsReport",
    "FlopsTally",
    "InputSizes",
    "LayerCounter",
    "UncountedModuleError",
    "UncountedModuleWarning",
    *formulas.__all__,
    "forward",
    "inference",
    "at_densities",
    "count",
    "count_children",
    "join_path",
    "mask_densities",
    "register_counter",
    "rigl_step_flops",
    "training",
    "training_from_trace",
    "xla_forward",
]
