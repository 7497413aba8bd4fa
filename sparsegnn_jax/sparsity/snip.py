"""SNIP (Lee et al., ICLR 2019): prune once at initialisation by connection sensitivity.

Written with :func:`~sparsegnn_jax.sparsity.custom.sparse_method` exactly as a user would, with
``init_from_grads=True`` so that the rule sees the first batch's gradients.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from sparsegnn_jax.sparsity import masks as masks_lib
from sparsegnn_jax.sparsity.custom import MaskContext, sparse_method

__all__ = ["snip", "connection_sensitivity"]


def connection_sensitivity(grads, params):
    """SNIP's scores ``|g * w|`` (the paper normalises them by their sum, which does not
    change which weights are the largest)."""
    return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def _snip_masks(ctx: MaskContext):
    return masks_lib.select_top(connection_sensitivity(ctx.grads, ctx.params), ctx.keep_counts,
                                ctx.prunable, ctx.structure)


def snip(inner: optax.GradientTransformation, sparsity=0.9, distribution="uniform",
         filter_fn: Optional[Callable] = None,
         structure=None) -> optax.GradientTransformationExtraArgs:
    """SNIP: masks chosen once from the first batch's connection sensitivity, then fixed.

    At the first ``update`` (step 0) each prunable layer keeps its keep-count largest
    ``|g * w|``, with ``g`` that step's gradient at the dense initial params and ``w`` those
    params; the masks never change after. The selection is **per layer**, like every method
    here: ``distribution`` sets each layer's keep count (uniform by default), so the paper's
    single global top-k over all layers is not reproduced (with ``"erk"`` or a
    ``{path: sparsity}`` dict the per-layer budget can follow another rule). Step 0's update
    is masked by the chosen masks; its forward and backward pass were dense, and the trace
    counts them so.

    Args:
      inner: the optimizer.
      sparsity: target sparsity in [0, 1).
      distribution: ``"uniform"``, ``"uniform_dense_first"``, ``"erk"``, ``"er"`` or a
        ``{layer-path: sparsity}`` dict.
      filter_fn: which leaves are prunable (``masks.default_filter`` when None).
      structure: None, or N:M structured masks (``sg.structure.NM(2, 4)`` or ``"nm:2:4"``;
        ``sparsity`` must be ``1 - n/m``): each weight matrix keeps the ``n`` largest
        ``|g * w|`` of every ``m`` consecutive inputs.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    References:
      Lee, Ajanthan & Torr, "SNIP: Single-shot network pruning based on connection
      sensitivity", ICLR 2019.
    """
    return sparse_method(inner, init_masks=_snip_masks, sparsity=sparsity,
                         distribution=distribution, filter_fn=filter_fn, init_from_grads=True,
                         structure=structure, name="snip")
