"""Temporal link prediction with a (sparse) GNN or the paper's MLP on walk embeddings.

    python experiments/link_pred.py --method=rigl
    python experiments/link_pred.py --dataset=email-eu-temporal --model=gcn --method=slr --sparsity=0.9
"""
import sys

from sparsegnn_jax.cli import main

if __name__ == "__main__":
    sys.exit(main("link"))
