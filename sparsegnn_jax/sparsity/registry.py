"""Sparsity methods by name, for command lines and configs."""
from __future__ import annotations

import inspect

import optax

# Function imports: the package re-exports ``admm`` (the function), which shadows the module.
from sparsegnn_jax.sparsity.admm import admm, slr
from sparsegnn_jax.sparsity.dst import rigl, set_
from sparsegnn_jax.sparsity.pruning import dense, gradual_magnitude, one_shot, static_sparse

METHODS = {
    "dense": dense,
    "static": static_sparse,
    "one_shot": one_shot,
    "gmp": gradual_magnitude,
    "admm": admm,
    "slr": slr,
    "set": set_,
    "rigl": rigl,
}


def sparsifier(name: str, inner: optax.GradientTransformation,
               **cfg) -> optax.GradientTransformationExtraArgs:
    """Builds the sparsity method called ``name`` around ``inner``.

    Args:
      name: one of ``dense, static, one_shot, gmp, admm, slr, set, rigl`` (the CLI's --method).
      inner: the optimizer to wrap.
      **cfg: the method's keyword arguments (e.g. ``sparsity``, ``update_every``).

    Returns:
      The method's ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: for an unknown name or a keyword the method does not take.
    """
    if name not in METHODS:
        raise ValueError(f"unknown sparsity method {name!r}; known: {', '.join(METHODS)}")
    factory = METHODS[name]
    accepted = [p for p in inspect.signature(factory).parameters if p != "inner"]
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ValueError(f"sparsity method {name!r} does not take {', '.join(unknown)}; "
                         f"it takes: {', '.join(accepted)}")
    return factory(inner, **cfg)
