"""Results tables and plots of sweep ``results.csv`` files; the paper's density-vs-step figure.

Reading (:func:`read_results`, :func:`load_rows`) -> seed statistics (:func:`summarise`) ->
markdown (:func:`markdown_tables`) and PNG plots (:func:`write_plots`, :func:`plot_density`).
Columns come from :data:`sparsegnn_jax.sweeps.CSV_FIELDS`; method order and labels from the
method registry (:mod:`sparsegnn_jax.sparsity.registry`), so a method registered at runtime
appears in the tables under its label. Plots need matplotlib (``pip install -e ".[plots]"``);
everything else does not.

:func:`main` is the command line of ``experiments/report.py``::

    python experiments/report.py runs/sweep/results.csv --out docs/results/email-eu-temporal_mlp
    python experiments/report.py a/results.csv b/results.csv --out report --density-trace

It writes ``DIR/results.md`` (printed too): per (dataset, model) the test accuracy (and
macro-F1 for node classification) as mean +- std over seeds in %, with one row per sparsity
(the dense model first) and one column per method; training FLOPs relative to dense; and RigL
against SLR per sparsity (accuracy difference in points, training-FLOPs ratio). PNG plots per
(dataset, model): ``<dataset>_<model>_accuracy.png`` (and ``_macro_f1.png`` for node tasks) and
``<dataset>_<model>_flops.png``. With ``--density-trace``: ``density_vs_step.png``, the density
of each ``--density-methods`` method (default SLR and RigL) over training, from the schedules
the runs use.

Exit codes: 0 done, also when results.md was written but the plots were skipped because
matplotlib is not installed (one ``warning:`` line on stderr says so); 2 bad input (missing
CSV, missing columns, bad values), or only plots were asked for and matplotlib is missing.
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import re
import statistics
import sys
from typing import Iterable, Sequence

import numpy as np

from sparsegnn_jax import config, plugins, runs, sweeps
from sparsegnn_jax.sparsity import registry

__all__ = [
    "DENSITY_METHODS", "NUMERIC_COLUMNS", "PLOTS_HINT", "REQUIRED_COLUMNS", "TEXT_COLUMNS",
    "PlotsUnavailable", "build_parser", "compare", "comparison_table", "dense_cell",
    "density_trace", "flops_table", "format_mean_std", "format_sparsity", "load_rows", "main",
    "markdown_tables", "mean_std", "method_label", "method_sort_key", "metric_table",
    "plot_accuracy", "plot_density", "plot_flops", "read_results", "safe_name", "sparse_methods",
    "sparsity_grid", "sparsity_x", "summarise", "write_plots",
]
#: Columns read as text; ``seed`` is an integer and every other column of
#: :data:`sparsegnn_jax.sweeps.CSV_FIELDS` a number.
TEXT_COLUMNS = ("dataset", "model", "method")
#: The columns of :data:`sparsegnn_jax.sweeps.CSV_FIELDS` the report cannot do without.
REQUIRED_COLUMNS = ("dataset", "model", "method", "sparsity", "seed", "test_accuracy",
                    "training_flops", "training_flops_relative")
#: Columns parsed to float (empty cells become None: link rows have no macro-F1).
NUMERIC_COLUMNS = tuple(c for c in sweeps.CSV_FIELDS if c not in TEXT_COLUMNS + ("seed",))
BASELINE_PREFIX, BASELINE_SUFFIX = "baseline_", "_roc_auc"
#: Methods of the density-vs-step figure unless others are asked for.
DENSITY_METHODS = ("slr", "rigl")
PLOTS_HINT = 'plots need matplotlib: pip install -e ".[plots]"'
# Line colours of the density figure, in the order of its methods.
_DENSITY_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive")
# Sparsities are grouped after rounding, so 0.9 read from two files is one row.
_SPARSITY_DIGITS = 9


class PlotsUnavailable(ImportError):
    """matplotlib is not installed; the message says how to install it."""


# ---------------------------------------------------------------------------------------------
# Loading


def _parse_float(value: str | None, path, line: int, column: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}, line {line}: column {column!r} must be a number, "
                         f"got {value!r}") from None


def read_results(path: str | os.PathLike) -> list[dict]:
    """Typed rows of one results CSV.

    Args:
      path: a ``results.csv`` written by ``experiments/sweep.py``.

    Returns:
      One dict per row: strings for dataset / model / method, int seed, floats (or None for
      empty cells) for the numeric columns, and ``source`` = "path:line". A run with edge
      weights (``edge_sparsity`` not blank) gets the method ``"<method> (edges <s>)"``, so
      each edge sparsity is a column of its own in the tables.

    Raises:
      FileNotFoundError: the file does not exist (the message names it).
      ValueError: a required column is missing (named) or a value is not a number (file, line
        and column named).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results CSV not found: {path}")
    raw_rows = sweeps.read_csv(path)
    # The header is the keys of any row; a file without rows is caught by load_rows.
    header = [k for k in raw_rows[0] if k is not None] if raw_rows else list(REQUIRED_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} "
                         f"(found: {', '.join(header)})")
    rows = []
    # Line 1 is the header, so the first data row is line 2.
    for line, raw in enumerate(raw_rows, start=2):
        row = {column: raw[column] for column in TEXT_COLUMNS}
        row["method"] = row["method"].strip()
        row["source"] = f"{path}:{line}"
        try:
            row["seed"] = int(float(raw["seed"]))
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: column 'seed' must be an integer, "
                             f"got {raw['seed']!r}") from None
        for column in NUMERIC_COLUMNS:
            row[column] = _parse_float(raw.get(column), path, line, column)
        if row["sparsity"] is None:
            raise ValueError(f"{path}, line {line}: column 'sparsity' is empty")
        if row["method"] == "dense":
            row["sparsity"] = 0.0
        if (row.get("edge_sparsity") is not None and row["method"] != "dense"
                and not _prunes_in_rounds(row["method"])):
            # Runs with edge weights are columns of their own, one per edge sparsity. The dense
            # method prunes no edge either: with the weights unpruned it is the dense model. A
            # lottery method's rows are its rounds, each at the edge sparsity it reached.
            row["method"] = f"{row['method']} (edges {row['edge_sparsity']:g})"
        rows.append(row)
    return rows


def _prunes_in_rounds(method: str) -> bool:
    """Whether ``method`` is a registered lottery method (False for unknown names)."""
    try:
        return registry.get(method).rounds is not None
    except ValueError:
        return False


def load_rows(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Typed rows of several results CSVs (see :func:`read_results`).

    A run (dataset, model, method, sparsity, seed) present more than once - a sweep re-run into
    another folder - counts once: the row read last wins, so later files override earlier ones.

    Args:
      paths: results CSV files.

    Returns:
      The rows, in file order.

    Raises:
      FileNotFoundError / ValueError: as :func:`read_results`; ValueError also when the files
        hold no rows at all.
    """
    if not paths:
        raise ValueError("no results CSV given")
    by_run: dict[tuple, dict] = {}
    for path in paths:
        for row in read_results(path):
            key = (row["dataset"], row["model"], row["method"], _sp(row["sparsity"]), row["seed"])
            by_run.pop(key, None)
            by_run[key] = row
    if not by_run:
        raise ValueError(f"no result rows in {', '.join(map(str, paths))}")
    return list(by_run.values())


# ---------------------------------------------------------------------------------------------
# Summary


def _sp(s: float) -> float:
    return round(float(s), _SPARSITY_DIGITS)


def mean_std(values: Iterable[float | None]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (n - 1; 0 for one value) of the non-missing values.

    Returns None when every value is missing.
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), std


def _mean(values: Iterable[float | None]) -> float | None:
    ms = mean_std(values)
    return None if ms is None else ms[0]


def _split_edges(method: str) -> tuple[str, str]:
    """``"rigl (edges 0.5)"`` -> ``("rigl", " (edges 0.5)")``; other names -> ``(name, "")``."""
    base, sep, rest = method.partition(" (edges ")
    return (base, sep + rest) if sep else (method, "")


def method_sort_key(method: str) -> tuple:
    """Registered methods in registration order (each edge sparsity after its method's runs
    without edge weights), others after them alphabetically."""
    order = registry.names()
    base, edges = _split_edges(method)
    if base in order:
        return order.index(base), edges
    return len(order), method


def method_label(method: str) -> str:
    """A method's name in tables and plots: its registry label (with the edge sparsity of
    ``"<method> (edges <s>)"``), else the name itself."""
    base, edges = _split_edges(method)
    return registry.get(base).label + edges if base in registry.names() else method


def summarise(rows: Iterable[dict]) -> dict:
    """Seed statistics per dataset, model, method and sparsity.

    Args:
      rows: typed rows (:func:`load_rows`).

    Returns:
      ``summary[dataset][model]`` = ``{"task": "link" | "node", "seeds": sorted seeds,
      "methods": {method: {sparsity: cell}}}`` with methods in table order and sparsities
      ascending (dense at 0.0). A cell is ``{"n": runs, "seeds": [...],
      "accuracy": (mean, std) | None, "macro_f1": ..., "roc_auc": ..., "ap": ...,
      "training_flops": mean, "training_flops_relative": mean, "inference_flops": mean}``;
      metrics are fractions (not %). The task is "node" when any row of the group has a
      macro-F1.
    """
    groups: dict[tuple, dict] = {}
    for row in rows:
        g = groups.setdefault((row["dataset"], row["model"]), {})
        g.setdefault(row["method"], {}).setdefault(_sp(row["sparsity"]), []).append(row)
    summary: dict = {}
    for (dataset, model), by_method in sorted(groups.items()):
        methods = {}
        seeds, node = set(), False
        for method in sorted(by_method, key=method_sort_key):
            cells = {}
            for s in sorted(by_method[method]):
                runs_ = by_method[method][s]
                seeds.update(r["seed"] for r in runs_)
                node |= any(r["test_macro_f1"] is not None for r in runs_)
                cells[s] = {
                    "n": len(runs_),
                    "seeds": sorted(r["seed"] for r in runs_),
                    "accuracy": mean_std(r["test_accuracy"] for r in runs_),
                    "macro_f1": mean_std(r["test_macro_f1"] for r in runs_),
                    "roc_auc": mean_std(r["test_roc_auc"] for r in runs_),
                    "ap": mean_std(r["test_ap"] for r in runs_),
                    "training_flops": _mean(r["training_flops"] for r in runs_),
                    "training_flops_relative": _mean(r["training_flops_relative"] for r in runs_),
                    "inference_flops": _mean(r["inference_flops"] for r in runs_),
                    "roc_auc_seen": mean_std(r.get("test_roc_auc_seen") for r in runs_),
                    "roc_auc_new": mean_std(r.get("test_roc_auc_new") for r in runs_),
                }
            methods[method] = cells
        summary.setdefault(dataset, {})[model] = {
            "task": "node" if node else "link", "seeds": sorted(seeds), "methods": methods,
            "baselines": _baselines(r for cells in by_method.values() for rs in cells.values()
                                    for r in rs)}
    return summary


def _baselines(rows: Iterable[dict]) -> dict:
    """``{baseline: (mean, std)}`` of test ROC-AUC over seeds (one value per seed: every run of
    a seed scores the same pairs)."""
    per_seed: dict[str, dict[int, float]] = {}
    for row in rows:
        for column, value in row.items():
            if (column.startswith(BASELINE_PREFIX) and column.endswith(BASELINE_SUFFIX)
                    and value is not None):
                name = column[len(BASELINE_PREFIX):-len(BASELINE_SUFFIX)]
                per_seed.setdefault(name, {})[row["seed"]] = value
    return {name: mean_std(v.values()) for name, v in per_seed.items()}


def baselines_table(group: dict) -> str | None:
    """Baselines' test ROC-AUC in % beside the dense model's, best first (None without any)."""
    if not group.get("baselines"):
        return None
    n_seeds = len(group["seeds"])
    rows = sorted(group["baselines"].items(), key=lambda kv: -kv[1][0])
    body = [[name, format_mean_std(ms, None, n_seeds)] for name, ms in rows]
    dense = dense_cell(group)
    if dense is not None and dense["roc_auc"] is not None:
        body.insert(0, ["model (dense)",
                        format_mean_std(dense["roc_auc"], dense["n"], n_seeds)])
    return _table(["score", "test ROC-AUC (%)"], body)



def sparse_methods(group: dict) -> list[str]:
    """The group's methods other than dense, in table order."""
    return [m for m in group["methods"] if m != "dense"]


def sparsity_grid(group: dict) -> list[float]:
    """Every weight sparsity of the group's sparse methods, ascending: 0 too when a method
    pruned only the edges (``--edge-sparsity`` with ``--sparsity=0``)."""
    return sorted({s for m in sparse_methods(group) for s in group["methods"][m]})


def dense_cell(group: dict) -> dict | None:
    """The dense model's cell of a group (None when there is no dense run)."""
    return group["methods"].get("dense", {}).get(0.0)


def compare(group: dict, a: str = "rigl", b: str = "slr") -> list[dict]:
    """Method ``a`` against method ``b`` at every sparsity both were trained at.

    Args:
      group: ``summary[dataset][model]``.
      a, b: method names (default RigL against SLR).

    Returns:
      Rows ``{"sparsity", "accuracy_a", "accuracy_b", "accuracy_diff", "flops_ratio"}``:
      mean accuracies in %, ``accuracy_diff`` = a - b in percentage points, ``flops_ratio`` =
      mean training FLOPs of a / of b (None when a value is missing or b's FLOPs are 0).
    """
    ca, cb = group["methods"].get(a, {}), group["methods"].get(b, {})
    out = []
    for s in sorted(set(ca) & set(cb)):
        acc_a, acc_b = ca[s]["accuracy"], cb[s]["accuracy"]
        fa, fb = ca[s]["training_flops"], cb[s]["training_flops"]
        out.append({
            "sparsity": s,
            "accuracy_a": None if acc_a is None else 100 * acc_a[0],
            "accuracy_b": None if acc_b is None else 100 * acc_b[0],
            "accuracy_diff": (None if acc_a is None or acc_b is None
                              else 100 * (acc_a[0] - acc_b[0])),
            "flops_ratio": None if fa is None or not fb else fa / fb,
        })
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


def format_sparsity(s: float) -> str:
    """0.9921875 -> "99.21875%" (exact for the paper grid, no trailing zeros)."""
    return f"{format(100 * s, '.10g')}%"


def format_mean_std(ms: tuple[float, float] | None, n: int | None = None,
                    n_expected: int | None = None) -> str:
    """A fraction's (mean, std) as "85.12 ± 0.34" in %; "(n=k)" when seeds are missing."""
    if ms is None:
        return "n/a"
    text = f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"
    if n is not None and n_expected is not None and n != n_expected:
        text += f" (n={n})"
    return text


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def metric_table(group: dict, metric: str = "accuracy") -> str:
    """Rows = dense then each sparsity, columns = sparse methods, cells = mean ± std in %.

    The dense model (one run per seed) is the common sparsity-0 baseline of every method, so
    its row repeats it under each column. A group with only dense runs gets one "Dense" column.
    """
    methods = sparse_methods(group) or ["dense"]
    n_seeds = len(group["seeds"])
    body = []
    dense = dense_cell(group)
    if dense is not None:
        cell = format_mean_std(dense[metric], dense["n"], n_seeds)
        body.append(["dense"] + [cell] * len(methods))
    for s in sparsity_grid(group):
        row = [format_sparsity(s)]
        for m in methods:
            c = group["methods"][m].get(s)
            row.append("-" if c is None else format_mean_std(c[metric], c["n"], n_seeds))
        body.append(row)
    return _table(["sparsity"] + [method_label(m) for m in methods], body)


def _format_ratio(v: float | None) -> str:
    if v is None:
        return "n/a"
    # Three decimals down to 0.1, three significant digits below (0.0625, 0.00781).
    return f"{v:.3f}" if v >= 0.1 else f"{v:.3g}"


def flops_table(group: dict) -> str:
    """Mean training FLOPs relative to dense training, per sparsity (rows) and method (columns)."""
    methods = sparse_methods(group) or ["dense"]
    body = []
    dense = dense_cell(group)
    if dense is not None:
        body.append(["dense"] + [_format_ratio(dense["training_flops_relative"])] * len(methods))
    for s in sparsity_grid(group):
        row = [format_sparsity(s)]
        for m in methods:
            c = group["methods"][m].get(s)
            row.append("-" if c is None else _format_ratio(c["training_flops_relative"]))
        body.append(row)
    return _table(["sparsity"] + [method_label(m) for m in methods], body)


def comparison_table(group: dict, a: str = "rigl", b: str = "slr") -> str | None:
    """Method a against b per sparsity (accuracy in %, difference in points, FLOPs ratio)."""
    rows = compare(group, a, b)
    if not rows:
        return None
    la, lb = method_label(a), method_label(b)

    def pct(v):
        return "n/a" if v is None else f"{v:.2f}"

    body = [[format_sparsity(r["sparsity"]), pct(r["accuracy_a"]), pct(r["accuracy_b"]),
             "n/a" if r["accuracy_diff"] is None else f"{r['accuracy_diff']:+.2f}",
             _format_ratio(r["flops_ratio"])] for r in rows]
    return _table(["sparsity", f"{la} acc. (%)", f"{lb} acc. (%)",
                   f"{la} - {lb} (points)", f"{la} / {lb} training FLOPs"], body)


def markdown_tables(summary: dict, sources: Sequence[str] = ()) -> str:
    """The whole report as markdown: one section per dataset and model.

    Args:
      summary: :func:`summarise` output.
      sources: CSV paths named at the top (optional).

    Returns:
      Markdown text ending in a newline.
    """
    out = ["# Results", ""]
    if sources:
        out += ["From " + ", ".join(f"`{s}`" for s in sources) + ".", ""]
    out += ["Test metrics in %, mean ± sample standard deviation over seeds; (n=k) marks a cell "
            "with fewer seeds than its section. The dense row is the dense model, the sparsity-0 "
            "baseline shared by every method. Training FLOPs are relative to dense training "
            "of the same model and data.", ""]
    for dataset, models in summary.items():
        for model, group in models.items():
            seeds = ", ".join(map(str, group["seeds"]))
            task = "node classification" if group["task"] == "node" else "link prediction"
            out += [f"## {dataset} / {model}", "",
                    f"Task: {task}; seeds: {seeds}.", "",
                    ]
            if group["task"] == "link":
                out += ["### Test ROC-AUC (%)", "", metric_table(group, "roc_auc"), "",
                        "### Test ROC-AUC (%) on pairs touching a node without training "
                        "history", "", metric_table(group, "roc_auc_new"), ""]
                table = baselines_table(group)
                if table is not None:
                    out += ["### Non-learned baselines on the same test pairs", "", table, ""]
            out += ["### Test accuracy (%)", "", metric_table(group, "accuracy"), ""]
            if group["task"] == "node":
                out += ["### Test macro-F1 (%)", "", metric_table(group, "macro_f1"), ""]
            out += ["### Training FLOPs relative to dense (mean)", "", flops_table(group), ""]
            cmp = comparison_table(group)
            if cmp is not None:
                out += ["### RigL against SLR", "", cmp, ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Plots


def _figure_class():
    """matplotlib's Figure, imported on first use (plots are an optional extra).

    A bare Figure renders through the Agg canvas on savefig, so no pyplot state or GUI backend
    is touched.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise PlotsUnavailable(f"{PLOTS_HINT} ({err})") from None
    return Figure


def sparsity_x(s: float) -> float:
    """Plot position of a sparsity: -log2(1 - s), so 50%, 75%, 87.5%, ... are evenly spaced."""
    return -math.log2(1.0 - s)


def _sparsity_axis(ax, grid: Sequence[float]) -> None:
    ticks = [sparsity_x(s) for s in grid]
    # A tick closer than 0.2 to the last labelled one keeps its mark but not its label, so
    # dense custom grids stay readable; the paper grid is labelled in full.
    labels, last = [], -math.inf
    for s, x in zip(grid, ticks):
        keep = x - last >= 0.2
        labels.append(format_sparsity(s) if keep else "")
        last = x if keep else last
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlabel("sparsity (log scale in 1 - sparsity)")
    ax.grid(True, alpha=0.3)


def _title(dataset: str, model: str) -> str:
    return f"{dataset} / {model}"


def plot_accuracy(group: dict, path: str | os.PathLike, metric: str = "accuracy", *,
                  title: str = "") -> pathlib.Path:
    """Test metric vs sparsity, one line per method (error bars: std over seeds).

    The dense model is a horizontal line with a band of +- one std.

    Args:
      group: ``summary[dataset][model]``.
      path: PNG file to write.
      metric: "accuracy" or "macro_f1" (also "roc_auc", "ap").
      title: figure title.

    Returns:
      The written path.

    Raises:
      PlotsUnavailable: matplotlib is not installed.
    """
    fig = _figure_class()(figsize=(8, 4.5))
    ax = fig.add_subplot()
    grid = [s for s in sparsity_grid(group) if s > 0]
    for m in sparse_methods(group):
        pts = [(s, c[metric]) for s, c in group["methods"][m].items() if s > 0 and c[metric]]
        if not pts:
            continue
        ax.errorbar([sparsity_x(s) for s, _ in pts], [100 * v[0] for _, v in pts],
                    yerr=[100 * v[1] for _, v in pts], marker="o", ms=4, capsize=3,
                    label=method_label(m))
    dense = dense_cell(group)
    if dense is not None and dense[metric] is not None:
        mean, std = (100 * v for v in dense[metric])
        ax.axhline(mean, color="k", ls="--", lw=1, label="Dense")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color="k", alpha=0.08, lw=0)
    if grid:
        _sparsity_axis(ax, grid)
    name = {"accuracy": "accuracy", "macro_f1": "macro-F1", "roc_auc": "ROC-AUC",
            "ap": "average precision"}.get(metric, metric)
    ax.set_ylabel(f"test {name} (%)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_flops(group: dict, path: str | os.PathLike, *, title: str = "") -> pathlib.Path:
    """Mean training FLOPs vs sparsity, one line per method, log y axis; dense as a line.

    Args:
      group: ``summary[dataset][model]``.
      path: PNG file to write.
      title: figure title.

    Returns:
      The written path.

    Raises:
      PlotsUnavailable: matplotlib is not installed.
    """
    fig = _figure_class()(figsize=(8, 4.5))
    ax = fig.add_subplot()
    grid = [s for s in sparsity_grid(group) if s > 0]
    for m in sparse_methods(group):
        pts = [(s, c["training_flops"]) for s, c in group["methods"][m].items()
               if s > 0 and c["training_flops"]]
        if pts:
            ax.plot([sparsity_x(s) for s, _ in pts], [v for _, v in pts], marker="o", ms=4,
                    label=method_label(m))
    dense = dense_cell(group)
    if dense is not None and dense["training_flops"]:
        ax.axhline(dense["training_flops"], color="k", ls="--", lw=1, label="Dense")
    ax.set_yscale("log")
    if grid:
        _sparsity_axis(ax, grid)
    ax.set_ylabel("training FLOPs")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def density_trace(sparsity: float = 0.9, steps: int = 1000, task: str = "link",
                  methods: Sequence[str] = DENSITY_METHODS) -> dict:
    """Density of each method at every training step, from its registry entry.

    A method's factory arguments are those of a run of the paper's MLP over ``steps`` steps
    (:func:`sparsegnn_jax.runs.method_kwargs`, one step per epoch); its
    :attr:`~sparsegnn_jax.sparsity.registry.MethodSpec.sparsity_at` gives the sparsity in force
    at each step, and the density is one minus it. Densities are of the forward and backward
    passes: a method that takes a dense gradient every ``update_every`` steps (RigL's regrowth)
    does not change its density there, so that period is returned separately.

    Args:
      sparsity: target sparsity in [0, 1).
      steps: training steps (the step budget).
      task: "link" or "node" (selects the paper's mask-update period).
      methods: registered method names.

    Returns:
      ``{"step": [0..steps-1], <method>: [density per step] for each method,
      "dense_gradient_every": {method: update_every} of the methods with dense-gradient steps}``
      plus, when a method has SLR-style phases, ``"phased"`` (the first such method) and its
      ``"dense_steps"`` and ``"penalty_steps"``. Densities are Python floats.

    Raises:
      ValueError: sparsity or steps out of range, no method, or an unknown method.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"--density-sparsity must be in [0, 1), got {sparsity}")
    if steps <= 0:
        raise ValueError(f"--density-steps must be positive, got {steps}")
    if not methods:
        raise ValueError("--density-methods must name at least one method")
    step = np.arange(steps)
    trace: dict = {"step": step.tolist(), "dense_gradient_every": {}}
    for method in methods:
        cfg = config.resolve(config.RunConfig(task=task, model="mlp", sparsity=sparsity,
                                              method=method))
        kw = runs.method_kwargs(cfg, steps, 1)
        spec = registry.get(method)
        trace[method] = (1.0 - np.asarray(spec.sparsity_at(kw, step, sparsity))).tolist()
        if spec.dense_gradient_steps(kw, steps) > 0 and "update_every" in kw:
            trace["dense_gradient_every"][method] = kw["update_every"]
        if "phased" not in trace and {"dense_steps", "penalty_steps"} <= set(kw):
            trace.update(phased=method, dense_steps=kw["dense_steps"],
                         penalty_steps=kw["penalty_steps"])
    return trace


def plot_density(path: str | os.PathLike, sparsity: float = 0.9, steps: int = 1000,
                 task: str = "link", methods: Sequence[str] = DENSITY_METHODS) -> pathlib.Path:
    """The paper's method figure: density vs training step, one line per method (SLR, RigL).

    The phases of the first phased method (dense, penalty, masked retraining) are shaded; dense
    gradient steps are marked; the legend gives each method's mean density, the fraction of
    dense training FLOPs it spends.

    Args:
      path: PNG file to write.
      sparsity, steps, task, methods: as :func:`density_trace`.

    Returns:
      The written path.

    Raises:
      PlotsUnavailable: matplotlib is not installed.
      ValueError: as :func:`density_trace`.
    """
    trace = density_trace(sparsity, steps, task, methods)
    fig = _figure_class()(figsize=(7, 4))
    ax = fig.add_subplot()
    colors = {m: _DENSITY_COLORS[i % len(_DENSITY_COLORS)] for i, m in enumerate(methods)}
    if "phased" in trace:
        d, p = trace["dense_steps"], trace["penalty_steps"]
        phased = trace["phased"]
        for lo, hi, label, alpha in ((0, d, "dense", 0.10), (d, d + p, "penalty", 0.18),
                                     (d + p, steps, "masked retraining", 0.04)):
            if hi > lo:
                ax.axvspan(lo, hi, color=colors[phased], alpha=alpha, lw=0)
                ax.text((lo + hi) / 2, 1.04, f"{method_label(phased)}: {label}", ha="center",
                        va="bottom", fontsize="small")
    for m in methods:
        ax.step(trace["step"], trace[m], where="post", color=colors[m], lw=2,
                label=f"{method_label(m)} (mean density {statistics.fmean(trace[m]):.3f})")
    for m, every in trace["dense_gradient_every"].items():
        updates = list(range(every, steps, every))
        if updates:
            ax.plot(updates, [trace[m][t] for t in updates], "|", color=colors[m], ms=12,
                    label=f"{method_label(m)} mask update (every {every} steps)")
    ax.set_xlim(0, steps)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("density (fraction of weights active)")
    ax.set_title(f"Density during training at {format_sparsity(sparsity)} sparsity", pad=18)
    ax.legend(loc="center left", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def safe_name(text: str) -> str:
    """A file-name-safe version of a dataset or model name ("file:/a/b.csv" -> "file_a_b.csv")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def write_plots(summary: dict, out: str | os.PathLike) -> list[pathlib.Path]:
    """Accuracy (ROC-AUC for link, macro-F1 for node tasks too) and FLOPs plots of every
    dataset and model.

    Returns:
      The written PNG paths.

    Raises:
      PlotsUnavailable: matplotlib is not installed.
    """
    out = pathlib.Path(out)
    written = []
    for dataset, models in summary.items():
        for model, group in models.items():
            if not any(s > 0 for s in sparsity_grid(group)):
                continue   # only edges pruned: nothing to draw against the weight sparsity
            stem = f"{safe_name(dataset)}_{safe_name(model)}"
            title = _title(dataset, model)
            written.append(plot_accuracy(group, out / f"{stem}_accuracy.png", title=title))
            second = "macro_f1" if group["task"] == "node" else "roc_auc"
            written.append(plot_accuracy(group, out / f"{stem}_{second}.png", second,
                                         title=title))
            written.append(plot_flops(group, out / f"{stem}_flops.png", title=title))
    return written


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``experiments/report.py``."""
    p = argparse.ArgumentParser(
        prog="experiments/report.py",
        description="Tables and plots of one or more sweep results.csv files; the paper's "
                    "density-vs-step figure.",
        epilog="Exit codes: 0 done (also when plots are skipped for lack of matplotlib after "
               "results.md was written: a warning says so); 2 bad input, or only plots asked "
               "for and matplotlib missing.")
    p.add_argument("csv", nargs="*", help="results.csv files of experiments/sweep.py")
    p.add_argument("--out", required=True, help="folder for results.md and the PNG plots")
    p.add_argument("--density-trace", action="store_true",
                   help="also write density_vs_step.png (from the methods' schedules)")
    p.add_argument("--density-methods", default=",".join(DENSITY_METHODS),
                   help="comma-separated methods of the density figure "
                        f"(default {','.join(DENSITY_METHODS)})")
    p.add_argument("--density-sparsity", type=float, default=0.9,
                   help="sparsity of the density figure (default 0.9)")
    p.add_argument("--density-steps", type=int, default=1000,
                   help="step budget of the density figure (default 1000)")
    p.add_argument("--no-plots", action="store_true", help="only write results.md")
    plugins.add_import_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line of ``experiments/report.py``; returns its exit code.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      0 when done, also when results.md was written but matplotlib is missing (the plots are
      skipped with one ``warning:`` line on stderr); 2 on bad input (one ``error:`` line), or
      when only plots were asked for and matplotlib is missing, or a plug-in or ``--import``
      module failed.
    """
    # Plug-ins first: the labels and order of their methods come from the registry.
    failed = plugins.start(argv)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    out = pathlib.Path(args.out)
    density_methods = [m.strip() for m in args.density_methods.split(",") if m.strip()]
    wrote_tables = False
    try:
        if not args.csv and not args.density_trace:
            raise ValueError("give at least one results CSV (or --density-trace)")
        summary = None
        if args.csv:
            summary = summarise(load_rows(args.csv))
            text = markdown_tables(summary, args.csv)
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.md").write_text(text)
            wrote_tables = True
            print(text, end="")
            print(f"wrote {out / 'results.md'}")
        if args.density_trace:
            # Validate before plotting, so a bad flag is exit 2 even without matplotlib.
            density_trace(args.density_sparsity, args.density_steps, methods=density_methods)
        if args.no_plots:
            return 0
        written = write_plots(summary, out) if summary else []
        if args.density_trace:
            written.append(plot_density(out / "density_vs_step.png", args.density_sparsity,
                                        args.density_steps, methods=density_methods))
        for path in written:
            print(f"wrote {path}")
    except PlotsUnavailable as err:
        if wrote_tables:
            # The tables are the report; the plots are an optional extra.
            print(f"warning: {err}; results.md was written, plots were skipped",
                  file=sys.stderr)
            return 0
        print(f"error: {err}; nothing was written", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
