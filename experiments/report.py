"""Tables and plots of one or more sweep results.csv files; the paper's density-vs-step figure.

    python experiments/report.py runs/sweep/results.csv --out docs/results/email-eu-temporal_mlp
    python experiments/report.py a/results.csv b/results.csv --out report --density-trace

Flags, outputs and exit codes: ``python experiments/report.py --help`` and
``sparsegnn_jax.report``.
"""
import sys

from sparsegnn_jax.report import main

if __name__ == "__main__":
    sys.exit(main())
