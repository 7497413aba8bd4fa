"""Argument validators of the sparsity functions, schedules and methods, and the checks that
run while training (:func:`raise_if`, :func:`warn_if`, :func:`method_errors`).

Concrete values are checked where a function or method is built; traced values (inside
``jax.jit`` / ``jax.vmap``) cannot be inspected and pass unchecked.
"""
from __future__ import annotations

import contextlib
import logging
import numbers
import threading
import warnings
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
    "raise_first",
    "warn_if",
    "MethodError",
    "method_errors",
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


class MethodError(ValueError):
    """A sparsity method's check failed while training (see :func:`raise_if`)."""


# The last MethodError a check raised on the host inside a jitted computation: XLA wraps it in
# a JaxRuntimeError, and :func:`method_errors` raises it again unwrapped.
_last_error: dict = {}
_last_error_lock = threading.Lock()


class _QuietMethodErrors(logging.Filter):
    """Drops JAX's log record (a full traceback on stderr) of a callback that raised a
    :class:`MethodError`: the error itself reaches the caller, whose traceback suffices."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], MethodError))


for _logger in ("jax._src.debugging", "jax._src.callback"):
    logging.getLogger(_logger).addFilter(_QuietMethodErrors())


def raise_if(flag, message) -> None:
    """Raises :class:`MethodError` (a ``ValueError``) with ``message`` when ``flag`` holds, also
    from inside ``jax.jit``.

    Outside ``jit`` (a concrete ``flag``) it raises at once. Inside, a ``jax.debug.callback``
    raises on the host, only on a step where ``flag`` holds (a ``lax.cond`` skips it
    otherwise); XLA hands the error to the caller wrapped in a ``JaxRuntimeError`` whose text
    contains ``message`` (no traceback is logged on stderr), and :func:`method_errors` turns it
    back into the :class:`MethodError`. Under ``vmap`` the cond becomes a select, so the callback
    runs on every step and checks ``flag`` itself.

    Args:
      flag: a bool scalar or array (any True entry fails).
      message: the error's text, or a function of the flag's value (a NumPy array) returning it.
    """
    raise_first([(flag, flag, message)])


def raise_first(checks) -> None:
    """:func:`raise_if` for several checks at once, in one host callback under ``jit``.

    Args:
      checks: ``(flag, payload, message)`` triples; the first whose ``flag`` holds raises
        ``message`` (a string, or a function of ``payload`` as a NumPy array).
    """
    checks = list(checks)
    if not checks:
        return

    def fail(flags, payloads):
        for flag, payload, (_, _, message) in zip(flags, payloads, checks):
            if np.any(flag):
                return MethodError(message(np.asarray(payload)) if callable(message)
                                   else message)
        return None

    flags = [flag for flag, _, _ in checks]
    payloads = [payload for _, payload, _ in checks]
    if all(is_concrete(x) for x in flags + payloads):
        error = fail([np.asarray(f) for f in flags], payloads)
        if error is not None:
            raise error
        return

    def report(flags, payloads):
        error = fail(flags, payloads)
        if error is not None:
            with _last_error_lock:
                _last_error["error"] = error
            raise error

    any_flag = jnp.any(jnp.stack([jnp.any(f) for f in flags]))
    jax.lax.cond(any_flag, lambda a: jax.debug.callback(report, *a), lambda a: None,
                 (flags, payloads))


def warn_if(flag, message, category=UserWarning) -> None:
    """Issues ``warnings.warn(message, category)`` when ``flag`` holds, also inside ``jax.jit``
    (through a ``jax.debug.callback`` on the steps where it holds).

    Args:
      flag: a bool scalar or array (any True entry warns).
      message: the warning's text, or a function of the flag's value (a NumPy array).
      category: the warning's class.
    """
    def warn(value):
        if np.any(value):
            warnings.warn(message(np.asarray(value)) if callable(message) else message,
                          category, stacklevel=2)

    if is_concrete(flag):
        warn(np.asarray(flag))
        return
    jax.lax.cond(jnp.any(flag), lambda f: jax.debug.callback(warn, f), lambda f: None, flag)


@contextlib.contextmanager
def method_errors():
    """Inside, a sparsity method's check that fails in a jitted computation raises its own
    :class:`MethodError` (the first line of its text is the method's message), not the
    ``JaxRuntimeError`` XLA wraps it in.

    Checks whose facts are static (a method placed before another transformation in an
    ``optax.chain``) raise while the function is traced and need no wrapper; this one is for
    the checks of values (a changed injected sparsity, params changed outside any chain, masks
    keeping more weights than allowed at a mask update)::

        with sg.method_errors():
            params, state = train_step(params, state)   # a jax.jit / nnx.jit function
            jax.block_until_ready(params)

    Other errors pass through unchanged.
    """
    with _last_error_lock:
        _last_error.clear()
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        with _last_error_lock:
            error = _last_error.pop("error", None)
        if error is not None and str(error) in str(err):
            raise MethodError(str(error)) from None
        raise
