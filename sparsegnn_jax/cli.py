"""Command line of the experiments: ``--name=value`` flags -> ``RunConfig`` -> one run.

Errors a user can cause (bad flags, missing or malformed data) end with one ``error:`` line on
stderr and exit code 2; a non-finite loss ends with exit code 3, Ctrl-C with 130, and in a
multi-process run the failure of another process with 4. No traceback reaches the user.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import pathlib
import sys
import warnings

import jax

from sparsegnn_jax import config, distributed, files, method_settings, plugins, runs, tasks, walks
from sparsegnn_jax.sparsity import registry
from sparsegnn_jax.sparsity import structure as structure_lib


def build_parser(task: str) -> argparse.ArgumentParser:
    """The flags of ``experiments/link_pred.py`` (task "link") or ``node_class.py`` ("node").

    Method and dataset names come from the registries as they are when it is called: build it
    after the plug-ins are loaded (:func:`sparsegnn_jax.plugins.start`).
    """
    spec = tasks.get(task)
    default_dataset = spec.default_dataset
    p = argparse.ArgumentParser(
        prog=f"experiments/{spec.script}.py",
        description=(f"Train a (sparse) GNN for {spec.title}. Unset hyper-parameters take the "
                     "paper's values for --model=mlp and Kipf & Welling's for message-passing "
                     "models."))
    add_dataset_flag(p, default_dataset, f"dataset name or file:PATH (default {default_dataset})")
    add_model_flag(p, "gcn")
    p.add_argument("--method", default="rigl", choices=(*registry.names(), *registry.aliases()))
    p.add_argument("--sparsity", type=float, default=None,
                   help="sparsity of the weight matrices (default 0.9; 1 - N/M with "
                        "--structure)")
    p.add_argument("--edge-sparsity", type=float, default=0.0,
                   help="message-passing models: share of the graph's edges the method prunes "
                        "(a learnable per-edge weight, pruned like a layer; default 0: the "
                        "graph is fixed, no edge weights)")
    p.add_argument("--compact-edges", default="auto", choices=("auto", "off"),
                   help="with --edge-sparsity: auto (default) passes messages over the kept "
                        "edges only while the edge mask stays fixed (same parameters, less "
                        "time); off always over the masked graph")
    add_method_flags(p)
    p.add_argument("--end-fraction", type=float, default=None,
                   help="fraction of training after which masks stop changing (RigL / SET)")
    add_schedule_flags(p)
    add_lottery_flags(p)
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from the parameters of a --method=dense run's checkpoint "
                        "folder (same task, dataset and model) instead of a fresh init")
    add_epochs_flag(p)
    add_width_and_step_flags(p)
    p.add_argument("--num-layers", type=int, default=None)
    p.add_argument("--optimizer", default=None, choices=("sgd", "adam"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--fanout", default=None, metavar="F1,F2",
                   help="train on neighbour-sampled mini-batches: in-edges sampled per node at "
                        "each hop, one per layer (e.g. 15,10); default: the whole graph")
    if spec.scores_pairs:
        p.add_argument("--decoder", default=None, choices=config.DECODERS,
                       help="pair decoder: GNNs default mlp_hadamard; mlp defaults to mlp_pair "
                            "([x_u, x_v, x_u*x_v, |x_u-x_v|]), mlp_concat is the paper's")
        p.add_argument("--target-fraction", type=float, default=None,
                       help="latest share of training edges held out of the training-time "
                            "message-passing graph as targets (default 0.2)")
        p.add_argument("--features", default=None,
                       choices=sorted({f for fs in config.FEATURES.values() for f in fs}),
                       help="node inputs: ids | struct | ids+struct (GNNs, default ids+struct); "
                            "walks | walks+struct (mlp, default walks+struct)")
        p.add_argument("--train-negatives", default=None, choices=config.TRAIN_NEGATIVES,
                       help="training negatives from all nodes (uniform, default) or from "
                            "nodes with history")
        add_link_eval_flags(p)
        p.add_argument("--pair-features", default=None, choices=config.PAIR_FEATURES,
                       help="the decoder also reads each pair's event history known at "
                            "prediction time (history, default) or not (none)")
        p.add_argument("--select", default=None, choices=config.SELECTIONS,
                       help="report the best validation ROC-AUC epoch (best_val, default) or "
                            "the last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save the training state every N epochs (and at the end)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (default: <out>/<run name>.ckpt when checkpointing)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint of this run")
    add_runtime_flags(p, out="runs", out_help="folder for the results JSON (default runs/)",
                      devices_help="data-parallel devices: minibatches are split over them")
    return p


# ---------------------------------------------------------------------------------------------
# Flags shared by the run and sweep command lines (sparsegnn_jax.sweep_cli): defined once here.


def add_dataset_flag(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--dataset``: a registered name (built-in or a plug-in's) or ``file:PATH``."""
    p.add_argument("--dataset", default=default, help=help)


def add_model_flag(p: argparse.ArgumentParser, default: str) -> None:
    """``--model``: one of the built-in models."""
    p.add_argument("--model", default=default, choices=config.MODELS)


def add_epochs_flag(p: argparse.ArgumentParser) -> None:
    """``--epochs`` (default: the model's and task's, see ``config.resolve``)."""
    p.add_argument("--epochs", type=int, default=None)


def add_width_and_step_flags(p: argparse.ArgumentParser) -> None:
    """``--hidden``, ``--lr`` and ``--weight-decay`` (default: the model's and task's, see
    ``config.resolve``); sweeps take them too, e.g. to train at another paper's setting."""
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """How a method prunes and regrows, beside its name and sparsity: ``--structure
    --edge-scores --distribution --update-every --drop-fraction``."""
    p.add_argument("--structure", default=None, metavar="nm:N:M",
                   help="N:M structured masks: every weight matrix keeps N of every M "
                        "consecutive inputs (e.g. nm:2:4; sparsity 1 - N/M); static, one_shot, "
                        "snip, set, rigl, admm and slr keep it. Default: unstructured")
    p.add_argument("--edge-scores", default=None, choices=config.EDGE_SCORES,
                   help="static / SET / RigL with edge sparsity: which edges the initial "
                        "mask keeps (default resistance: 1/deg(u) + 1/deg(v), edges at "
                        "low-degree nodes first; random: uniform; saliency, node task with "
                        "--init-from: those whose removal would raise the dense model's loss "
                        "most); the other methods ignore it")
    p.add_argument("--distribution", default=None,
                   help="uniform | uniform_dense_first | erk | er (default: uniform, the "
                        "paper's; erk for link prediction with a GNN)")
    p.add_argument("--update-every", type=int, default=None,
                   help="mask-update period dT (RigL / SET) or multiplier period (ADMM / SLR)")
    p.add_argument("--drop-fraction", type=float, default=None,
                   help="initial RigL / SET drop fraction, cosine-decayed (default: the "
                        "paper's 0.5, decayed to 0.005)")


def add_lottery_flags(p: argparse.ArgumentParser, rounds_help: str = "") -> None:
    """The lottery methods' rounds (imp, ugs): ``--rounds --prune-per-round --rewind-step
    --edge-prune-per-round --l1-weights --l1-edges``; other methods refuse them."""
    p.add_argument("--rounds", type=int, default=None,
                   help="imp / ugs: rounds of training, pruning and rewinding (default 5); "
                        "the final sparsity is 1 - (1 - p)^rounds" + rounds_help)
    p.add_argument("--prune-per-round", type=float, default=None,
                   help="imp / ugs: share p of each layer's kept weights pruned per round "
                        "(default 0.2)")
    p.add_argument("--rewind-step", type=int, default=None,
                   help="imp: the step of the first round whose weights later rounds restart "
                        "from (default 0: the initialisation)")
    p.add_argument("--edge-prune-per-round", type=float, default=None,
                   help="imp / ugs, message-passing models: share of the kept edges pruned per "
                        "round (ugs default 0.05; imp default: edges kept)")
    p.add_argument("--l1-weights", type=float, default=None,
                   help="ugs: L1 weight of the weight mask scores (default 1e-2)")
    p.add_argument("--l1-edges", type=float, default=None,
                   help="ugs: L1 weight of the edge mask scores (default 1e-2)")


def add_link_eval_flags(p: argparse.ArgumentParser) -> None:
    """Link prediction's split and evaluation protocol: ``--split --eval-protocol
    --dyglib-setting --dyglib-negatives``."""
    add_split_flag(p)
    p.add_argument("--eval-protocol", default=None, choices=config.EVAL_PROTOCOLS,
                   help="evaluation pairs: uniform (default) or dyglib (DyGLib's split, "
                        "negatives and streamed batches of 200, exactly)")
    p.add_argument("--dyglib-setting", default=None, choices=config.DYGLIB_SETTINGS,
                   help="with --eval-protocol=dyglib: transductive (default) or "
                        "inductive (events touching a node unseen in training)")
    p.add_argument("--dyglib-negatives", default=None, choices=config.DYGLIB_NEGATIVES,
                   help="with --eval-protocol=dyglib: DyGLib's negative sampling "
                        "strategy, random (default), historical or inductive")


def add_runtime_flags(p: argparse.ArgumentParser, *, out: str, out_help: str,
                      devices_help: str) -> None:
    """Where data comes from and results go, and how the process runs: ``--data-root
    --devices --out --no-progress --no-compilation-cache --import``, the multi-process flags."""
    p.add_argument("--data-root", default=None,
                   help="folder of the real datasets (default: $SPARSEGNN_DATA)")
    p.add_argument("--devices", type=int, default=1, help=devices_help)
    p.add_argument("--out", default=out, help=out_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_compilation_cache_flag(p)
    plugins.add_import_flag(p)
    distributed.add_flags(p)


# Longest dataset part of a run name: a file name may have 255 bytes, and the JSON's temp
# file adds a dot, ".json" and a 17-character suffix to the stem.
_MAX_DATASET_CHARS = 60


def add_compilation_cache_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--no-compilation-cache`` (see :func:`use_compilation_cache`)."""
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="do not keep compiled programs on disk between runs (default: "
                             "kept in $SPARSEGNN_CACHE/jax, else ~/.cache/sparsegnn_jax/jax)")


def use_compilation_cache(enabled: bool = True) -> pathlib.Path | None:
    """Keeps XLA's compiled programs on disk, so a repeated command skips most compilation.

    The folder is ``jax`` in the package's cache folder (``$SPARSEGNN_CACHE``, else
    ``~/.cache/sparsegnn_jax``) unless JAX already has one (``JAX_COMPILATION_CACHE_DIR``).
    Must run before the first compilation (JAX fixes its cache then).

    Returns:
      The cache folder, or None when ``enabled`` is false (nothing is changed then).
    """
    if not enabled:
        return None
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir",
                          str(walks.default_cache_dir() / "jax"))
    return pathlib.Path(jax.config.jax_compilation_cache_dir)


def add_split_flag(p: argparse.ArgumentParser) -> None:
    """``--split``: how link prediction cuts a graph's edges (run and sweep CLIs)."""
    p.add_argument("--split", default=None, choices=config.LINK_SPLITS,
                   help="link train / val / test split: temporal (by time) or random (seeded, "
                        "by node pair); default temporal when the graph has timestamps, "
                        "random when it has none")


def add_schedule_flags(p: argparse.ArgumentParser) -> None:
    """Per-layer sparsities and the SLR / ADMM schedule: flags of the run and sweep CLIs."""
    p.add_argument("--layer-sparsity", action="append", default=None, metavar="PATH=S",
                   help="fix a layer's sparsity, e.g. encoder/layers/1/kernel=0 (repeatable or "
                        "comma-separated); the other layers share --sparsity by --distribution")
    p.add_argument("--penalty-epochs", type=int, default=None,
                   help="SLR / ADMM reweighting (penalty) epochs before the hard prune "
                        "(default: a quarter of --epochs)")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="SLR / ADMM masked retraining epochs after the hard prune (default: a "
                        "quarter of --epochs); the dense warm start is the rest of --epochs")
    p.add_argument("--rho", type=float, default=None,
                   help="SLR / ADMM penalty weight (default 0.01 link, 0.02 node)")
    p.add_argument("--initial-step-size", type=float, default=None,
                   help="SLR's initial multiplier step s_0 (default: --rho)")


def run_name(task: str, cfg: config.RunConfig) -> str:
    """File stem of a run's outputs: task, dataset, model, method, sparsity, N:M structure
    (only when set), edge sparsity (only when the run has edge weights), seed.

    A dataset spelled longer than 60 characters (a deep ``file:PATH``) keeps its start and
    end around a hash of the whole, so names stay short enough and distinct.
    """
    dataset = cfg.dataset.replace(":", "_").replace("/", "_")
    if len(dataset) > _MAX_DATASET_CHARS:
        digest = hashlib.sha256(cfg.dataset.encode()).hexdigest()[:12]
        dataset = f"{dataset[:20]}-{digest}-{dataset[-26:]}"
    edges = "" if cfg.edge_sparsity is None else f"_e{cfg.edge_sparsity:g}"
    level = f"s{cfg.sparsity:g}"
    if registry.get(cfg.method).rounds is not None:  # the sparsity follows from the rounds
        level = f"r{cfg.rounds or method_settings.LOTTERY_DEFAULTS['rounds']}"
    return (f"{task}_{dataset}_{cfg.model}_{cfg.method}_{level}"
            f"{structure_suffix(cfg.structure)}{edges}_seed{cfg.seed}")


def structure_suffix(structure: str | None) -> str:
    """``_nm2-4`` for ``--structure=nm:2:4`` (file names must tell it from an unstructured run
    at the same sparsity), ``""`` without a structure."""
    nm = structure_lib.parse(structure)
    return "" if nm is None else f"_nm{nm.n}-{nm.m}"


#: Flags of the runtime (see ``distributed.add_flags``), not of the run.
DISTRIBUTED_FLAGS = ("coordinator", "num_processes", "process_id", "peer_timeout")


def config_from_args(task: str, args: argparse.Namespace) -> config.RunConfig:
    fields = {k: v for k, v in vars(args).items()
              if k not in ("out", "no_progress", "no_compilation_cache", "imports")
              and k not in DISTRIBUTED_FLAGS}
    fields["layer_sparsity"] = config.parse_layer_sparsity(fields["layer_sparsity"])
    fields["sparsity"] = method_settings.structure_sparsity(fields["structure"], fields["sparsity"])
    # 0 (the default) means no edge weights at all, so such a run is the run it always was.
    fields["edge_sparsity"] = None if fields["edge_sparsity"] == 0 else fields["edge_sparsity"]
    cfg = config.RunConfig(task=task, progress=not args.no_progress, **fields)
    if cfg.checkpoint_dir is None and (cfg.checkpoint_every or cfg.resume):
        cfg.checkpoint_dir = str(pathlib.Path(args.out) / f"{run_name(task, cfg)}.ckpt")
    return cfg


def error_line(err: BaseException) -> str:
    """The first line of an error's message: what the user sees after ``error:``.

    Some API errors append details on further lines (e.g. whole tree structures when a
    checkpoint does not match the run); their first line already names what is wrong.
    """
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def warning_lines():
    """Shows the warnings raised inside as one ``warning: <message>`` line each on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines() or [category.__name__]
        print(f"warning: {text[0]}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(task: str, argv: list[str] | None = None) -> int:
    """Runs one experiment from command-line flags.

    Args:
      task: "link" or "node".
      argv: the flags (default ``sys.argv[1:]``).

    Returns:
      The exit code: 0 on success, 2 for bad input (flags, files, data, a plug-in or
      ``--import`` module that fails) or a graph too large for the device's memory, 3 for a
      non-finite loss, 4 when another process of a multi-process run failed, 130 when
      interrupted. Errors print one ``error: ...`` line on stderr. Only process 0 writes and
      prints.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    with warning_lines():
        failed = start(argv)
        if failed:
            return failed
        args = build_parser(task).parse_args(argv)
        return _run_and_report(task, args)


def start(argv: list[str]) -> int:
    """What every experiment command line does before parsing its flags: the compilation
    cache (unless ``--no-compilation-cache``), then the installed plug-ins and the ``--import``
    modules (:func:`sparsegnn_jax.plugins.start`), whose names the full parser then accepts.

    Returns:
      0, or 2 after printing one ``error:`` line when a plug-in or module failed.
    """
    # Before any plug-in runs: code at import time may compile, and JAX fixes its cache then.
    pre = argparse.ArgumentParser(add_help=False)
    add_compilation_cache_flag(pre)
    use_compilation_cache(not pre.parse_known_args(argv)[0].no_compilation_cache)
    failed = plugins.start(argv)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 2
    return 0


def _run_and_report(task: str, args: argparse.Namespace) -> int:
    several = False
    try:
        several = distributed.initialize_from_flags(args)
        args.devices = distributed.mesh_size(args.devices)
        out = files.output_dir(args.out, "--out")
        cfg = config_from_args(task, args)
        if cfg.checkpoint_dir and pathlib.Path(cfg.checkpoint_dir).exists() and not (
                pathlib.Path(cfg.checkpoint_dir).is_dir()):
            raise ValueError(f"--checkpoint-dir={cfg.checkpoint_dir!r} is a file, not a folder")
        if cfg.checkpoint_dir:
            files.check_writable_dir(cfg.checkpoint_dir, "--checkpoint-dir")
        result = runs.run(cfg)
        path = out / f"{run_name(task, cfg)}.json"
        if distributed.is_main_process():
            files.write_json_atomic(path, result)
    except FloatingPointError as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 3
    except (ValueError, KeyError, OSError) as err:
        # OSError covers FileNotFoundError and unusable paths (a file where a folder is needed,
        # permissions, a full disk).
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err):
            print(f"error: out of memory ({error_line(err)}); a checkpoint folder "
                  "(--checkpoint-dir) keeps the trained state", file=sys.stderr)
            return 2
        if not several:
            raise
        distributed.exit_after_peer_failure(
            f"a process of this run failed or stopped answering: {error_line(err)}")
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if distributed.is_main_process():
        print(summary(result, path))
    return 0


def _metric_text(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))


def summary(result: dict, path) -> str:
    """What a run prints: per-layer sparsity, then one line of test metrics (a lottery run
    then one line of its rounds and one of its ticket's FLOPs).

    Link runs show ROC-AUC and AP first, the seen / new breakdown, the selected epoch and the
    best non-learned baseline on the same pairs.
    """
    layers = ", ".join(f"{k}={v:.4f}" for k, v in result["layer_sparsity"].items())
    t = result["test"]
    lines = [f"layer sparsity: {layers}"]
    line = f"test {_metric_text(t)}"
    if "baselines" in result:
        groups = " ".join(f"{g}_roc_auc={t[g]['roc_auc']:.4f}" for g in ("seen", "new")
                          if g in t and t[g]["roc_auc"] is not None)
        name, best = max(result["baselines"].items(), key=lambda kv: kv[1]["roc_auc"])
        line += (f" {groups} epoch={result['selected_epoch']} | best baseline {name} "
                 f"roc_auc={best['roc_auc']:.4f} ap={best['ap']:.4f}")
    edges = ("" if result["config"].get("edge_sparsity") is None
             else f"edge_sparsity={result['edge_sparsity']:.4f} ")
    lines.append(f"{line} | sparsity={result['sparsity']:.4f} {edges}"
                 f"train_flops={result['flops']['training']:.3e} "
                 f"({result['flops']['training_relative']:.3f}x dense) "
                 f"time={result['wall_time_s']:.1f}s -> {path}")
    if "rounds" in result:
        lines.append("rounds: " + "; ".join(
            f"{e['round']}: sparsity={e['sparsity']:.4f} edge_sparsity={e['edge_sparsity']:.4f} "
            f"train_flops={e['training_flops']:.3e}" for e in result["rounds"]))
        lines.append(f"ticket: step_flops={result['flops']['step_ticket']:.3e} "
                     f"own_training_flops={result['flops']['training_ticket']:.3e}")
    return "\n".join(lines)
