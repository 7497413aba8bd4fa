"""The closed-form per-layer formulas, checked against hand counts without a model."""
import pytest

from sparsegnn_jax import flops


def test_linear_and_mlp_hand_counts():
    # [7, 16] @ [16, 128]: 2 * 7 * 16 * 128 FLOPs, plus 7 * 128 bias adds.
    assert flops.linear_flops(7, 16, 128) == 28672.0
    assert flops.linear_flops(7, 16, 128, density=0.25, bias=True) == 7168.0 + 896.0
    # The paper's link MLP 16-128-1 with biases on 7 rows.
    assert flops.mlp_flops(7, (16, 128, 1)) == 31367.0
    assert flops.mlp_flops(7, (16, 128, 1), densities=[0.5, 1.0], bias=False) == 14336.0 + 1792.0
    with pytest.raises(ValueError, match="two widths"):
        flops.mlp_flops(7, (16,))
    with pytest.raises(ValueError, match="entries"):
        flops.mlp_flops(7, (16, 128, 1), densities=[0.5])


def test_gnn_layer_hand_counts():
    n, e = 4, 10
    # GCN 3 -> 5: X W 2*4*3*5 = 120, per edge and feature a multiply and an add 2*10*5 = 100,
    # bias 4*5 = 20.
    assert flops.gcn_layer_flops(n, e, 3, 5) == 240.0
    assert flops.gcn_layer_flops(n, e, 3, 5, density=0.5, bias=False) == 160.0
    # SAGE 3 -> 2: mean 10*3 + 4*3, two products 2 * 2*4*3*2, their sum 4*2, bias 4*2.
    assert flops.sage_layer_flops(n, e, 3, 2) == 30 + 12 + 96 + 8 + 8
    # GAT 3 -> 2 heads x 2, averaged: projection 2*4*3*4 = 96, attention 4*4*4 = 64,
    # per edge 5*10*2 + 2*10*4 = 180, head mean 4*4 = 16, bias 4*2 = 8.
    assert flops.gat_layer_flops(n, e, 3, 2, heads=2, concat=False) == 96 + 64 + 180 + 16 + 8
    # GIN with MLP 3 -> 2 -> 2: sum 10*3, combine 2*4*3, MLP 2*4*3*2 + 8 + 2*4*2*2 + 8.
    assert flops.gin_layer_flops(n, e, (3, 2, 2)) == 30 + 24 + 48 + 8 + 32 + 8
