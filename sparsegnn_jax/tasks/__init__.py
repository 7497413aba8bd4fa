"""The two tasks: temporal link prediction and node classification.

A task turns a resolved :class:`~sparsegnn_jax.config.RunConfig` into a :class:`Problem` (data,
graph, split, the epoch's inputs), builds the model, makes the epoch function, evaluates, and
says what one step's forward pass sees (for FLOPs). Everything that differs between the tasks
lives here (``link.py``, ``node.py``; what they share in ``common.py``); runs and sweeps call
:func:`get` and never switch on the task name.
"""
from sparsegnn_jax import data as sg_data

from .common import (Problem, WithInputs, dataset_of, edge_leaf_size, encoder, jit_with_inputs,
                     prunable_params, row_normalise, walk_features, weight_matrices)
from .link import (EVAL_SEED, MIN_STEPS_PER_EPOCH, RANKING_SEED, LinkTask, check_link_graph, cold_start_rate, link_decoder,
                   time_scale)
from .node import NodeTask, edge_saliency, warn_if_edgeless

__all__ = ["EVAL_SEED", "MIN_STEPS_PER_EPOCH", "RANKING_SEED", "LinkTask", "NodeTask", "Problem", "TASKS", "check_link_graph",
           "WithInputs", "cold_start_rate", "dataset_of", "edge_leaf_size", "edge_saliency",
           "encoder", "get", "jit_with_inputs", "link_decoder", "prunable_params", "row_normalise", "sg_data", "time_scale",
           "walk_features", "warn_if_edgeless", "weight_matrices"]

TASKS = {"link": LinkTask(), "node": NodeTask()}


def get(name: str):
    """The task object called ``name`` ("link" or "node")."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}") from None
