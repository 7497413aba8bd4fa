"""Sparse node features: bag-of-words inputs carried as a BCOO matrix, multiplied by nonzeros only.

A first layer's ``x @ kernel`` on ``[N, F]`` features with 1% nonzeros (Cora, CiteSeer) does
~100 times the arithmetic it needs, forward and backward. Features whose density is at most
:data:`MAX_DENSITY` are stored as a ``jax.experimental.sparse.BCOO`` in ``graph.nodes``; the
layers that transform before aggregating (GCN, GAT) multiply its stored entries only
(:func:`matmul`), the others densify it (:func:`to_dense`). Dropout on such features drops
stored entries (:func:`dropout_entries`): a zero entry dropped or kept is still zero, so the
result has the distribution of dropout on the dense matrix.

Under ``vmap`` over the kernel (a sweep's runs), the product loops over the batch
(``jax.custom_batching.sequential_vmap``) instead of vectorising: the vectorised gather
materialises ``batch x nnz x out`` values, which on CPU made it slower than the dense product
(Cora, 36 kernels: 400 ms against 225 ms forward + backward; BCOO's own product and a
vectorised gather / segment-sum alike), while a loop of small products keeps each in cache
(54 ms).
"""
from __future__ import annotations

import functools
import sys
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MAX_DENSITY", "dropout_entries", "from_dense", "is_sparse", "matmul",
           "should_be_sparse", "to_dense"]

#: Features whose share of nonzeros is at most this are carried sparse. Measured with
#: ``benchmarks/sparse_features.py`` (random entries, forward + backward vmapped over 3 and 36
#: kernels of width 16, 2-core CPU): at 2,708 x 1,433 the sparse product took 0.15-0.19 of the
#: dense one at 1.3% density and 0.19 (36 kernels) at 2%, was level around 3%, and 1.4-2.3 times
#: slower at 5%; at 3,327 x 3,703, 0.23-0.33 at 0.85% and 0.69-0.82 at 2%. The gathered
#: ``nnz x out`` block outgrows the cache as nonzeros grow, so the bound sits below the crossover.
MAX_DENSITY = 0.02


def should_be_sparse(features: Optional[np.ndarray]) -> bool:
    """Whether ``[N, F]`` features have at most :data:`MAX_DENSITY` nonzeros (2-D only)."""
    if features is None or np.ndim(features) != 2 or np.size(features) == 0:
        return False
    return bool(np.count_nonzero(features) <= MAX_DENSITY * np.size(features))


# jax.experimental.sparse is imported on first use: it imports scipy.linalg, about 0.2 s of
# every `import sparsegnn_jax`, and dense features never need it.
_SPARSE_MODULE = "jax.experimental.sparse"


def _bcoo() -> type:
    from jax.experimental import sparse  # first use: see _SPARSE_MODULE

    return sparse.BCOO


def from_dense(features) -> jax.experimental.sparse.BCOO:
    """``[N, F]`` float32 features as a BCOO matrix of their nonzeros, in row-major order."""
    return _bcoo().fromdense(jnp.asarray(features, jnp.float32))


def is_sparse(x) -> bool:
    """Whether ``x`` is a BCOO matrix (sparse features) rather than a dense array."""
    # No BCOO exists before its module is imported: asking sys.modules keeps dense runs from
    # importing it.
    module = sys.modules.get(_SPARSE_MODULE)
    return module is not None and isinstance(x, module.BCOO)


def to_dense(x) -> jax.Array:
    """``x`` as a dense array (dense input is returned unchanged)."""
    return x.todense() if is_sparse(x) else x


def dropout_entries(x: jax.experimental.sparse.BCOO, rate: float,
                    key: Optional[jax.Array]) -> jax.experimental.sparse.BCOO:
    """Inverted dropout of the stored entries of ``x``; the identity when ``key`` is None or
    ``rate`` is 0.

    Raises:
      ValueError: ``rate`` outside [0, 1).
    """
    if key is None or rate == 0.0:
        return x
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.data.shape)
    data = jnp.where(keep, x.data / (1.0 - rate), jnp.zeros_like(x.data))
    return _bcoo()((data, x.indices), shape=x.shape, indices_sorted=x.indices_sorted,
                       unique_indices=x.unique_indices)


def _scatter_products(values, gather_at, scatter_to, dense, num_rows: int) -> jax.Array:
    """``out[scatter_to[k]] += values[k] * dense[gather_at[k]]``, ``out`` of ``num_rows`` rows."""

    @jax.custom_batching.sequential_vmap
    def products(values, gather_at, scatter_to, dense):
        return jax.ops.segment_sum(values[:, None] * dense[gather_at], scatter_to,
                                   num_segments=num_rows)

    return products(values, gather_at, scatter_to, dense)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sparse_matmul(values, kernel, rows, cols, num_rows):
    return _scatter_products(values, cols, rows, kernel, num_rows)


def _sparse_matmul_fwd(values, kernel, rows, cols, num_rows):
    return _scatter_products(values, cols, rows, kernel, num_rows), (values, kernel, rows, cols)


def _sparse_matmul_bwd(num_rows, res, g):
    values, kernel, rows, cols = res
    # d kernel = x^T g over the stored entries; d values[k] = g[rows[k]] . kernel[cols[k]].
    d_kernel = _scatter_products(values, rows, cols, g, kernel.shape[0])
    d_values = jnp.sum(g[rows] * kernel[cols], axis=-1)
    return d_values, d_kernel, None, None


_sparse_matmul.defvjp(_sparse_matmul_fwd, _sparse_matmul_bwd)


def matmul(x, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` for dense or BCOO ``x`` ``[N, F]``; sparse ``x`` costs ``nnz x out``.

    Args:
      x: ``[N, F]`` dense array or 2-D BCOO matrix (no batch or dense dimensions).
      kernel: ``[F, out]``.

    Returns:
      ``[N, out]``.
    """
    if not is_sparse(x):
        return x @ kernel
    return _sparse_matmul(x.data.astype(kernel.dtype), kernel, x.indices[:, 0], x.indices[:, 1],
                          x.shape[0])
