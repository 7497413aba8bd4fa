"""Methods x sparsity grid x seeds on one dataset and model; writes results.csv and JSON records.

    python experiments/sweep.py --dataset=email-eu-temporal --model=mlp
    python experiments/sweep.py --task=node --dataset=drosophila-left --model=mlp --seeds=3

Flags, outputs and exit codes: ``python experiments/sweep.py --help`` and
``sparsegnn_jax.sweep_cli``.
"""
import sys

from sparsegnn_jax.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main())
