"""Node classification with a (sparse) GNN or the paper's MLP on walk embeddings.

    python experiments/node_class.py --dataset=cora --model=gcn --method=dense
    python experiments/node_class.py --dataset=drosophila-left --model=mlp --method=rigl --sparsity=0.96875
"""
import sys

from sparsegnn_jax.cli import main

if __name__ == "__main__":
    sys.exit(main("node"))
