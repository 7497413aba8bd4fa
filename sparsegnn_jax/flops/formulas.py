"""Closed-form FLOPs of single layers, usable without a model (e.g. for planning a run).

Counts follow the convention of :mod:`sparsegnn_jax.flops`: a product ``[B, n] @ [n, m]`` costs
``density * 2 * B * n * m``, a bias add one FLOP per output element.
"""
from __future__ import annotations

__all__ = [
    "linear_flops",
    "mlp_flops",
    "gcn_layer_flops",
    "sage_layer_flops",
    "gat_layer_flops",
    "gin_layer_flops",
]


def linear_flops(rows: int, in_dim: int, out_dim: int, density: float = 1.0,
                 bias: bool = False) -> float:
    """FLOPs of ``x @ W (+ b)`` for ``x`` of shape ``[rows, in_dim]``.

    Args:
      rows: number of input rows (batch size, nodes, pairs).
      in_dim: input width.
      out_dim: output width.
      density: fraction of nonzero entries of ``W``.
      bias: whether a bias is added (``rows * out_dim`` FLOPs, independent of density).

    Returns:
      ``density * 2 * rows * in_dim * out_dim + (rows * out_dim if bias else 0)``.
    """
    return density * 2.0 * rows * in_dim * out_dim + (float(rows * out_dim) if bias else 0.0)


def mlp_flops(rows: int, dims, densities=None, bias: bool = True) -> float:
    """FLOPs of an MLP ``dims[0] -> dims[1] -> ... -> dims[-1]`` on ``rows`` inputs.

    Args:
      rows: number of inputs.
      dims: layer widths including input and output, e.g. ``(16, 128, 1)``.
      densities: None (dense), one density for every layer, or one per weight matrix.
      bias: whether every layer adds a bias.

    Returns:
      Sum of :func:`linear_flops` over the layers (activations are not counted).
    """
    dims = list(dims)
    n = len(dims) - 1
    if n < 1:
        raise ValueError(f"mlp_flops: `dims` needs at least two widths, got {dims}")
    if densities is None:
        densities = [1.0] * n
    elif isinstance(densities, (int, float)):
        densities = [float(densities)] * n
    densities = list(densities)
    if len(densities) != n:
        raise ValueError(f"mlp_flops: `densities` has {len(densities)} entries for {n} layers")
    return sum(linear_flops(rows, dims[i], dims[i + 1], densities[i], bias) for i in range(n))


def gcn_layer_flops(num_nodes: int, num_edges: int, in_dim: int, out_dim: int,
                    density: float = 1.0, bias: bool = True) -> float:
    """FLOPs of one GCN layer ``A_hat (X W) + b`` on a graph with ``num_edges`` edges.

    ``num_edges`` counts every stored edge, self loops included. Per edge and output feature: one
    multiply by the normalisation coefficient and one add into the receiver's sum.

    Returns:
      ``density * 2 N F_in F_out + 2 E F_out + (N F_out if bias)``.
    """
    return (linear_flops(num_nodes, in_dim, out_dim, density, bias)
            + 2.0 * num_edges * out_dim)


def sage_layer_flops(num_nodes: int, num_edges: int, in_dim: int, out_dim: int,
                     density_self: float = 1.0, density_neigh: float = 1.0,
                     bias: bool = True) -> float:
    """FLOPs of one GraphSAGE-mean layer ``X W_self + mean_{j in N(i)} x_j W_neigh + b``.

    The mean: one add per edge and input feature into the receiver's sum, one division per node
    and input feature. Then two products and the add combining them.

    Returns:
      ``E F_in + N F_in + (d_s + d_n) 2 N F_in F_out + N F_out + (N F_out if bias)``.
    """
    return (float(num_edges * in_dim + num_nodes * in_dim)
            + linear_flops(num_nodes, in_dim, out_dim, density_self)
            + linear_flops(num_nodes, in_dim, out_dim, density_neigh)
            + float(num_nodes * out_dim) + (float(num_nodes * out_dim) if bias else 0.0))


def gat_layer_flops(num_nodes: int, num_edges: int, in_dim: int, out_dim: int, heads: int = 1,
                    density: float = 1.0, bias: bool = True, concat: bool = True) -> float:
    """FLOPs of one GAT layer with ``heads`` heads of width ``out_dim`` each.

    Terms: the projection ``X W`` to ``heads * out_dim``; per node and head the two attention
    dot products ``a_src . h`` and ``a_dst . h`` (2 out_dim each); per edge and head the logit sum
    (1), the softmax's max, subtract, sum and divide (4; the exponential is a transcendental, left
    out); per edge, head and feature the weighting multiply and the sum add (2); when heads are
    averaged (``concat=False``) one add per node, head and feature plus a divide per node and
    feature.

    Returns:
      The sum of those terms plus a bias add per output element.
    """
    hf = heads * out_dim
    proj = linear_flops(num_nodes, in_dim, hf, density)
    attn = 2.0 * 2.0 * num_nodes * hf  # attention vectors are 1-D, never pruned
    edge = float(num_edges * heads * 5 + num_edges * hf * 2)
    out_width = hf if concat else out_dim
    merge = 0.0 if concat else float(num_nodes * hf)
    return proj + attn + edge + merge + (float(num_nodes * out_width) if bias else 0.0)


def gin_layer_flops(num_nodes: int, num_edges: int, dims, densities=None,
                    bias: bool = True) -> float:
    """FLOPs of one GIN layer ``MLP((1 + eps) x + sum_{j in N(i)} x_j)``.

    The sum: one add per edge and input feature; the combine: a multiply and an add per node and
    input feature; then the MLP of widths ``dims`` on every node.

    Returns:
      ``E F_in + 2 N F_in + mlp_flops(N, dims, densities, bias)``.
    """
    f_in = dims[0]
    return (float(num_edges * f_in + 2 * num_nodes * f_in)
            + mlp_flops(num_nodes, dims, densities, bias))
