"""Argument validators of the sparsity functions, schedules and methods.

Concrete values are checked where a function or method is built; traced values (inside
``jax.jit`` / ``jax.vmap``) cannot be inspected and pass unchecked.
"""
from __future__ import annotations

import numbers
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "check_sparsity",
    "check_step",
    "check_fraction",
    "check_greater",
    "raise_if",
]


def is_concrete(x) -> bool:
    """True unless ``x`` is a tracer (a value inside ``jit`` / ``vmap`` / ``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def _is_concrete_number(x) -> bool:
    return isinstance(x, (numbers.Number, np.number)) and not isinstance(x, bool)


def check_sparsity(value, name: str = "sparsity"):
    """Raises ``ValueError`` unless every concrete sparsity in ``value`` lies in ``[0, 1)``.

    Args:
      value: a scalar; an array (a sweep grid, checked element-wise); or a ``{path: sparsity}``
        dict, whose entries are checked under the name ``name[path]``. Traced values pass.
      name: the argument's name, used in the error message.

    Returns:
      ``value`` unchanged.

    Raises:
      ValueError: naming ``name`` and the offending values (NaN and non-numbers included).
    """
    if isinstance(value, Mapping):
        for path, entry in value.items():
            check_sparsity(entry, f"{name}[{path!r}]")
        return value
    if not is_concrete(value):
        return value
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if arr.ndim != 0:
        bad = arr[~((arr >= 0) & (arr < 1))]
        if bad.size:
            raise ValueError(f"{name} must be in [0, 1), got {bad.tolist()} in {arr.tolist()}")
        return value
    if not 0.0 <= float(arr) < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def check_step(value, name: str, *, positive: bool = False,
               allow_none: bool = False) -> Optional[int]:
    """Validates a step index or a step count.

    Args:
      value: a Python / NumPy / JAX integer scalar (bools are rejected); traced values (e.g. an
        injected hyperparameter inside ``jit``) are returned unchecked.
      name: the argument's name, used in the error message.
      positive: require ``value > 0`` instead of ``value >= 0``.
      allow_none: accept None (returned unchanged).

    Returns:
      ``value`` as a Python int (None when allowed and given; a traced value unchanged).

    Raises:
      ValueError: ``"{name} must be an integer step..."`` for a non-integer,
        ``"{name} must be > 0"`` / ``">= 0"`` for one out of range.
    """
    if value is None and allow_none:
        return None
    if not is_concrete(value):
        # A traced step (an ``optax.inject_hyperparams`` hyperparameter inside jit): unchecked.
        return value
    is_int = (not isinstance(value, bool) and np.ndim(value) == 0
              and np.issubdtype(np.asarray(value).dtype, np.integer))
    if not is_int:
        raise ValueError(f"{name} must be an integer step{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    step = int(value)
    if step < 0 or (positive and step == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return step


def check_fraction(value, name: str) -> None:
    """Raises ``ValueError`` unless a concrete ``value`` lies in ``(0, 1]``; callables pass.

    Args:
      value: a number or a schedule ``step -> fraction``.
      name: the argument's name, used in the error message.
    """
    if callable(value) or not is_concrete(value):
        return
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0:
        value = np.asarray(value).item()  # an injected hyperparameter: a 0-d array
    if not _is_concrete_number(value) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] or a schedule step -> fraction, got {value!r}")


def check_greater(value, name: str, bound) -> None:
    """Raises ``ValueError`` when a concrete number ``value`` is not ``> bound``; others pass.

    Args:
      value: the number to check (arrays and traced values are not inspected).
      name: the argument's name, used in the error message.
      bound: the exclusive lower bound.
    """
    if _is_concrete_number(value) and not float(value) > bound:
        raise ValueError(f"{name} must be > {bound}, got {value!r}")


def raise_if(flag, message) -> None:
    """Raises ``ValueError(message)`` when ``flag`` holds, also from inside ``jax.jit``.

    Outside ``jit`` (a concrete ``flag``) it raises at once. Inside, a ``jax.debug.callback``
    raises on the host, only on a step where ``flag`` holds (a ``lax.cond`` skips it
    otherwise); the error reaches the caller as a ``JaxRuntimeError`` whose text contains
    ``message``. Under ``vmap`` the cond becomes a select, so the callback runs on every step and
    checks ``flag`` itself.

    Args:
      flag: a bool scalar or array (any True entry fails).
      message: the error's text, or a function of the flag's value (a NumPy array) returning it.
    """
    def text(value) -> str:
        return message(value) if callable(message) else message

    if is_concrete(flag):
        if np.any(np.asarray(flag)):
            raise ValueError(text(np.asarray(flag)))
        return

    def report(value):
        if np.any(value):
            raise ValueError(text(np.asarray(value)))

    jax.lax.cond(jnp.any(flag), lambda f: jax.debug.callback(report, f), lambda f: None, flag)
