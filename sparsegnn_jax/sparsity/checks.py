"""What every sparsity method checks about how it is used and what its rule returns.

* **Placement** (static, :func:`check_last_in_chain`): a method zeroes pruned weights by
  emitting ``-p``, so nothing may change its update before ``optax.apply_updates``. Its place
  in an ``optax.chain`` is known while the chain runs its ``init`` or ``update`` (eagerly or
  while ``jax.jit`` / ``nnx.jit`` traces it), so a method followed by another transformation
  raises a plain ``ValueError`` there, before any computation runs.
* **Params outside the masks** (values, :func:`outside_masks`): a rescale outside any chain
  (e.g. the caller scales the updates itself) is seen only in the next step's params.
* **Keep counts** (values, :func:`over_counts`): masks that keep more weights than the
  sparsity allows.
* **A changed injected sparsity** (values, :func:`counts_changed`).

The value checks raise through :func:`validation.raise_if`, all of one step in one host
callback; under ``jit`` the caller sees a ``JaxRuntimeError`` unless the call runs inside
:func:`validation.method_errors`.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "check_last_in_chain",
    "outside_masks",
    "over_counts",
    "count_checks",
    "counts_changed",
    "dense_params_message",
    "over_counts_message",
    "counts_changed_message",
]


def _chain_codes() -> dict:
    """The code objects of ``optax.chain``'s and ``optax.named_chain``'s init / update."""
    chain = optax.chain(optax.identity())
    named = optax.named_chain(("a", optax.identity()))
    return {chain.init.__code__: "chain_init", chain.update.__code__: "chain_update",
            named.init.__code__: "named", named.update.__code__: "named"}


_CHAIN_CODES = _chain_codes()


def _followers(frame, child) -> Optional[int]:
    """How many transformations follow the element an ``optax.chain`` frame is running (None
    when the frame is not a chain's, or its locals are not laid out as expected)."""
    kind = _CHAIN_CODES.get(frame.f_code)
    if kind is None:
        return None
    local = frame.f_locals
    if kind == "chain_update":
        fns, current = local.get("update_fns"), local.get("fn")
    elif kind == "chain_init":
        # ``tuple(fn(params) for fn in init_fns)``: the element is the generator's ``fn``.
        fns = local.get("init_fns")
        current = None if child is None else child.f_locals.get("fn")
    else:
        fns = [name for name, _ in local.get("transforms", ())]
        current = local.get("name")
    if fns is None or current is None:
        return None
    for i, fn in enumerate(fns):
        if fn is current or (kind == "named" and fn == current):
            return len(fns) - 1 - i
    return None


def check_last_in_chain(name: str) -> None:
    """Raises ``ValueError`` when the calling method runs inside an ``optax.chain`` (or
    ``optax.named_chain``, at any nesting) that has transformations after it.

    Called from a method's ``init`` and ``update``: the chain's frames are on the Python stack
    then, also while ``jax.jit`` traces the call, so the error surfaces at trace time with the
    method's message first. Transformations before the method, or a chain that is the
    method's inner optimizer, are fine.
    """
    frame, child = sys._getframe(1), None
    while frame is not None:
        after = _followers(frame, child)
        if after:
            raise ValueError(
                f"{name}: the sparsity method is followed by {after} other transformation"
                f"{'s' if after > 1 else ''} in an optax.chain, which would change its update "
                f"(e.g. optax.chain(sg.{name}(...), optax.scale_by_learning_rate(...))): the "
                f"method sets pruned weights to 0 by emitting -p, so a rescale after it leaves "
                f"the weights silently dense. Put the sparsity method last in the chain, or "
                f"make the chain its inner optimizer: sg.{name}(optax.chain(...), ...)")
        frame, child = frame.f_back, frame


def outside_masks(params, masks, flags) -> jax.Array:
    """Per prunable layer (bool vector), whether a weight is non-zero where its mask is False:
    one reduction per layer."""
    return jnp.stack([jnp.any((p != 0) & ~m) for p, m, f in
                      zip(jax.tree.leaves(params), jax.tree.leaves(masks), flags) if f])


def dense_params_message(name: str, paths) -> Callable:
    """The message of :func:`outside_masks` flags (per prunable layer, in ``paths`` order)."""
    def message(outside) -> str:
        layers = [p for p, o in zip(paths, np.asarray(outside).reshape(-1, len(paths)).any(0))
                  if o]
        return (f"{name}: the params passed to update() are not zero outside the method's "
                f"masks (layers {layers}): something changed the method's update before "
                f"optax.apply_updates (a transformation after it, or a rescale of the updates), "
                f"and the weights are silently dense. Put the sparsity method last in the "
                f"chain, or make the chain its inner optimizer: sg.{name}(optax.chain(...), ...)")
    return message


def over_counts(masks, counts, flags) -> tuple[jax.Array, jax.Array]:
    """``(kept, allowed)``: per prunable layer (int32 vectors) the masks' True count and the
    keep count."""
    kept = [jnp.sum(m, dtype=jnp.int32) for m, f in zip(jax.tree.leaves(masks), flags) if f]
    allowed = [jnp.asarray(c, jnp.int32) for c, f in zip(jax.tree.leaves(counts), flags) if f]
    return jnp.stack(kept), jnp.stack(allowed)


def count_checks(name: str, masks, counts, flags, paths, when: str) -> list:
    """The :func:`validation.raise_first` check that no prunable layer of ``masks`` keeps more
    weights than ``counts`` (``[]`` without prunable layers); ``paths`` name every leaf."""
    if not any(flags):
        return []
    kept, allowed = over_counts(masks, counts, flags)
    return [(jnp.any(kept > allowed), jnp.stack([kept, allowed]),
             over_counts_message(name, [p for p, f in zip(paths, flags) if f], when))]


def over_counts_message(name: str, paths, when: str) -> Callable:
    """The message for ``(kept, allowed)`` stacked as one ``[2, layers]`` array (leading run
    axes allowed): names the first layer that keeps more weights than allowed."""
    def message(value) -> str:
        value = np.asarray(value).reshape(-1, 2, len(paths))
        run = int(np.argmax((value[:, 0] > value[:, 1]).any(-1)))
        kept, allowed = value[run]
        bad = [i for i in range(len(paths)) if kept[i] > allowed[i]]
        layers = ", ".join(f"{paths[i]!r} keeps {int(kept[i])}, allowed {int(allowed[i])}"
                           for i in bad)
        return (f"{name}: the masks {when} keep more weights than the sparsity allows "
                f"({layers}): the rule must keep at most ctx.keep_counts weights per layer "
                f"(sg.masks.select_top does). A method that manages its own counts (a "
                f"gradual schedule, a dense phase) declares it: "
                f"sg.sparse_method(..., own_counts=True)")
    return message


def counts_changed(counts, stored) -> jax.Array:
    """Whether any keep count differs from the one stored at ``init``."""
    return jnp.any(jnp.stack([jnp.any(c != s) for c, s in
                              zip(jax.tree.leaves(counts), jax.tree.leaves(stored))]))


def counts_changed_message(name: str) -> str:
    """The message of :func:`counts_changed`."""
    return (f"{name}: the sparsity changed after init (e.g. an injected hyperparameter): keep "
            f"counts are fixed when the state is created; call tx.init again (or start a new "
            f"method) to train at another sparsity")
