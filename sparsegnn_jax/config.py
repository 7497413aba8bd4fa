"""Run configuration and the one table of paper defaults.

A :class:`RunConfig` names everything that defines one run. Fields left as ``None`` are filled by
:func:`resolve` from :data:`DEFAULTS` (the paper's hyper-parameters for ``model="mlp"``, Kipf &
Welling's for message-passing models); a field the chosen model does not read (e.g. ``hidden``
for the paper's fixed node MLP) is rejected when set, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import math

from sparsegnn_jax.data.dyglib import NEGATIVE_STRATEGIES as DYGLIB_NEGATIVES
from sparsegnn_jax.data.splits import EVAL_PROTOCOLS, LINK_SPLITS
from sparsegnn_jax.sparsity import distributions, registry
from sparsegnn_jax.method_settings import DEFAULT_SPARSITY, flag, resolve_rounds, resolve_structure

TASKS = ("link", "node")
GNN_MODELS = ("gcn", "sage", "gat", "gin")
MODELS = GNN_MODELS + ("mlp",)
DECODERS = ("dot", "mlp_hadamard", "mlp_concat", "mlp_pair")
# Node inputs of link predictors. Message passing: a learnt row per node id (nodes without
# history share one learnt row), structural features of the message-passing graph
# (features.temporal_structure), or both. The paper MLP: walk embeddings (zero for nodes
# without history), optionally with the same structural features.
FEATURES = {"gnn": ("ids", "struct", "ids+struct"), "mlp": ("walks", "walks+struct")}
TRAIN_NEGATIVES = ("uniform", "history")
# Per-pair inputs of the link decoder: the pair's and its nodes' event history known at
# prediction time (history.PAIR_FEATURE_COLUMNS), or none.
PAIR_FEATURES = ("history", "none")
DYGLIB_SETTINGS = ("transductive", "inductive")
SELECTIONS = ("best_val", "last")


@dataclasses.dataclass
class RunConfig:
    """Everything that defines one run; ``None`` fields take the defaults of :data:`DEFAULTS`."""

    task: str = "link"                     # "link" | "node"
    dataset: str = "synthetic-temporal"
    model: str = "gcn"
    method: str = "rigl"
    sparsity: float = DEFAULT_SPARSITY
    # "nm:N:M": N of every M consecutive inputs of each weight matrix kept (sparsity.structure);
    # the sparsity must then be 1 - N/M and the distribution uniform. None: unstructured.
    structure: str | None = None
    distribution: str | None = None        # None: uniform (the paper's), erk for link GNNs
    update_every: int | None = None        # dT for RigL / SET, multiplier period for ADMM / SLR
    drop_fraction: float | None = None     # None: the paper's cosine 0.5 -> 0.005
    end_fraction: float | None = None      # fraction of training after which masks stop changing
    epochs: int | None = None
    hidden: int | None = None
    num_layers: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None           # "sgd" (nesterov, cosine lr) | "adam"
    batch_size: int | None = None
    dropout: float | None = None
    decoder: str | None = None             # link decoder: dot | mlp_hadamard | mlp_concat | mlp_pair
    embedding_dim: int | None = None       # walk-embedding width for model="mlp" (8 link, 64 node)
    # Link prediction only (see tasks.LinkTask):
    target_fraction: float | None = None   # latest share of training edges held out as targets
    features: str | None = None            # GNN node inputs: ids | struct | ids+struct
    train_negatives: str | None = None     # uniform | history: where training negatives come from
    eval_protocol: str | None = None       # uniform (data.evaluation_pairs) | dyglib (data.dyglib)
    # random | temporal (data.choose_split): None is temporal on a graph with timestamps and
    # random without; the record's data.split says which was used.
    split: str | None = None
    pair_features: str | None = None       # history | none: the decoder's per-pair inputs
    dyglib_setting: str | None = None      # transductive | inductive (--eval-protocol=dyglib)
    dyglib_negatives: str | None = None    # random | historical | inductive (DyGLib's)
    select: str | None = None              # best_val (keep the best validation AUC epoch) | last
    rho: float | None = None
    # SLR / ADMM schedule (see sparsity.registry): None keeps the default split of the run,
    # half dense, a quarter penalty, a quarter retraining; set, the dense warm start is what is
    # left of --epochs.
    penalty_epochs: int | None = None      # reweighting (penalty) epochs before the hard prune
    retrain_epochs: int | None = None      # masked retraining epochs after it
    initial_step_size: float | None = None  # SLR's multiplier step s_0 (None: rho)
    layer_sparsity: dict | None = None     # {layer path: sparsity} overriding the distribution
    # Message-passing models: None keeps the graph's edges fixed (no edge parameter); a number,
    # 0 included, gives the encoder its learnable edge-weight leaf (models.Encoder, num_edges),
    # pruned by the method to exactly this sparsity, never redistributed over the layers.
    edge_sparsity: float | None = None
    # Lottery methods (imp, ugs: a registry entry with a RoundSpec): ``rounds`` rounds of
    # training -> pruning -> rewinding, then the ticket's own training; None fields take
    # LOTTERY_DEFAULTS, and other methods refuse them.
    rounds: int | None = None
    prune_per_round: float | None = None       # share of each layer's kept weights per round
    rewind_step: int | None = None             # IMP: later rounds restart from this step's params
    edge_prune_per_round: float | None = None  # share of the kept edges per round (UGS 0.05)
    l1_weights: float | None = None            # UGS: L1 weight of the weight scores
    l1_edges: float | None = None              # UGS: L1 weight of the edge scores (graph mask)
    # Which edges the initial mask of a method that starts sparse (static, SET, RigL) keeps:
    # "resistance" (graphs.resistance_scores, ties at random), "random", or "saliency" (node
    # task, with --init-from: tasks.edge_saliency of that dense model); None resolves to
    # "resistance" for those methods with edge weights and stays None otherwise.
    edge_scores: str | None = None
    # With edge weights: "auto" trains on the compacted kept edges while the edge mask stays
    # fixed (sparsegnn_jax.compaction; the same parameters as "off", which always trains on
    # the masked graph). The record's training_mode says which ran.
    compact_edges: str = "auto"
    init_from: str | None = None           # checkpoint folder of a dense run to start from
    # Message-passing models: "15,10" trains on neighbour-sampled blocks (sampling.py), in-edges
    # sampled per node at hop 1, 2, ... (one per layer); None trains on the whole graph.
    fanout: str | None = None
    seed: int = 0
    data_root: str | None = None
    checkpoint_dir: str | None = None      # where checkpoints go (None: no checkpoints)
    checkpoint_every: int = 0              # epochs between checkpoints (0: only the final one)
    resume: bool = False                   # continue from the latest checkpoint in checkpoint_dir
    devices: int = 1                       # data-parallel devices (minibatches split over them)
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
    """The defaults of one (task, model family) and the fields that family does not read."""

    values: dict
    fixed: dict  # field -> why it has no effect (setting it is an error)


# The paper's MLPs have fixed architectures (link: 2d -> 128 -> 1, node: 64 -> 256 -> 128 -> C
# with dropout 0.1); message-passing models follow Kipf & Welling for node classification. The
# link MLP reads [x_u, x_v, x_u * x_v, |x_u - x_v|] by default (mlp_pair): on the paper's
# concatenation (mlp_concat; with --features=walks exactly its 16-128-1) it cannot form a
# similarity of the two nodes and lost to Adamic-Adar on email-eu-temporal. Link
# GNNs use no weight decay: the initial pair logits of a GCN on random embeddings are ~1e-3, and
# an L2 term fed through Adam outweighs such gradients and collapses sparse models to a constant.
# Link GNNs spread their sparsity by ERK (RigL's default, Evci et al. 2020): under uniform 90%
# the decoder's [64, 1] output layer keeps 6 weights, a bottleneck that cost RigL 0.02-0.05
# test ROC-AUC against dense (CollegeMsg: uniform 0.849, ERK 0.861, dense 0.869); ERK keeps
# such a small layer dense and prunes the large ones more, at the same global sparsity.
_LINK_ONLY = "link prediction only"
_NODE_FIXED = dict(target_fraction=_LINK_ONLY, features=_LINK_ONLY, train_negatives=_LINK_ONLY,
                   eval_protocol=_LINK_ONLY, select=_LINK_ONLY, pair_features=_LINK_ONLY,
                   dyglib_setting=_LINK_ONLY, dyglib_negatives=_LINK_ONLY, split=_LINK_ONLY)
# Link prediction on temporal graphs (any model): the latest 20% of the training edges are the
# training targets, unseen by message passing, so new nodes' links are learnt, not ruled out;
# the parameters of the best validation ROC-AUC epoch are kept; the decoder reads each pair's
# history (has it met, how often, how long ago; its nodes' activity).
_LINK_PROTOCOL = dict(target_fraction=0.2, train_negatives="uniform", eval_protocol="uniform",
                      select="best_val", pair_features="history")

DEFAULTS = {
    ("link", "mlp"): ModelDefaults(
        dict(epochs=50, hidden=128, num_layers=2, lr=0.1, weight_decay=5e-4, optimizer="sgd",
             batch_size=1024, dropout=0.0, decoder="mlp_pair", embedding_dim=8,
             distribution="uniform",
             features="walks+struct", **_LINK_PROTOCOL),
        dict(num_layers="the paper's link MLP has two layers",
             dropout="the paper's link MLP has no dropout")),
    ("node", "mlp"): ModelDefaults(
        dict(epochs=40, hidden=256, num_layers=2, lr=0.1, weight_decay=1e-3, optimizer="adam",
             batch_size=128, dropout=0.1, decoder="mlp_hadamard", embedding_dim=64,
             distribution="uniform"),
        dict(hidden="the paper's node MLP is fixed at 64 -> 256 -> 128 -> classes",
             num_layers="the paper's node MLP is fixed at three layers",
             dropout="the paper's node MLP has dropout 0.1",
             decoder="node classification has no link decoder", **_NODE_FIXED)),
    ("link", "gnn"): ModelDefaults(
        dict(epochs=20, hidden=64, num_layers=2, lr=0.01, weight_decay=0.0, optimizer="adam",
             batch_size=1024, dropout=0.0, decoder="mlp_hadamard", embedding_dim=None,
             features="ids+struct", distribution="erk", **_LINK_PROTOCOL),
        dict(embedding_dim="walk embeddings feed only --model=mlp")),
    ("node", "gnn"): ModelDefaults(
        dict(epochs=200, hidden=16, num_layers=2, lr=0.01, weight_decay=5e-4, optimizer="adam",
             batch_size=None, dropout=0.5, decoder="mlp_hadamard", embedding_dim=None,
             distribution="uniform"),
        dict(embedding_dim="walk embeddings feed only --model=mlp",
             decoder="node classification has no link decoder", **_NODE_FIXED)),
}

# Per task: the paper's mask-update period dT for RigL / SET and its ADMM / SLR penalty weight.
TASK_DEFAULTS = {"link": dict(update_every=500, rho=0.01),
                 "node": dict(update_every=1000, rho=0.02)}


def model_family(model: str) -> str:
    """``"mlp"`` for the paper's MLPs, ``"gnn"`` for message-passing models."""
    return "mlp" if model == "mlp" else "gnn"


def check_sparsity(value: float, flag: str = "--sparsity") -> float:
    """Returns ``value`` if it is a sparsity a run accepts: in [0, 1) (so neither NaN nor Inf).

    Raises:
      ValueError: naming ``flag`` and the value.
    """
    if not 0.0 <= value < 1.0:  # False for NaN
        raise ValueError(f"{flag} must be in [0, 1), got {value}")
    return value


def resolve(cfg: RunConfig) -> RunConfig:
    """Fills the ``None`` fields and validates every choice, naming the bad argument.

    Raises:
      ValueError: an unknown choice, a value out of range, or a field set that the chosen model
        does not read.
    """
    cfg = dataclasses.replace(cfg)
    if cfg.task not in TASKS:
        raise ValueError(f"task must be 'link' or 'node', got {cfg.task!r}")
    if cfg.method not in registry.names() and cfg.method not in registry.aliases():
        raise ValueError(f"unknown --method={cfg.method!r}; known methods: "
                         f"{', '.join(registry.names())}")
    # A factory name (e.g. gradual_magnitude) is recorded under the method's registry name.
    cfg = dataclasses.replace(cfg, method=registry.canonical_name(cfg.method))
    if cfg.model not in MODELS:
        raise ValueError(f"unknown --model={cfg.model!r}; known models: {', '.join(MODELS)}")
    check_sparsity(cfg.sparsity)
    cfg = resolve_rounds(cfg)
    cfg = resolve_structure(cfg)
    if cfg.compact_edges not in ("auto", "off"):
        raise ValueError(f"--compact-edges must be auto or off, got {cfg.compact_edges!r}")
    if cfg.edge_sparsity is not None:
        check_sparsity(cfg.edge_sparsity, "--edge-sparsity")
        if cfg.model == "mlp":
            raise ValueError("--edge-sparsity has no effect with --model=mlp (it passes no "
                             "messages over edges); leave it unset")
        if cfg.edge_sparsity and not registry.get(cfg.method).sparse:
            raise ValueError(f"--edge-sparsity has no effect with --method={cfg.method} (it "
                             "prunes nothing); leave it unset")
    cfg = _resolve_edge_scores(cfg)
    if cfg.distribution is not None and cfg.distribution not in distributions.DISTRIBUTIONS:
        raise ValueError(f"unknown --distribution={cfg.distribution!r}; known: "
                         f"{', '.join(distributions.DISTRIBUTIONS)}")
    defaults = DEFAULTS[(cfg.task, model_family(cfg.model))]
    for name, why in defaults.fixed.items():
        # The fixed value itself is accepted, so resolving a resolved config changes nothing.
        if getattr(cfg, name) not in (None, defaults.values.get(name)):
            raise ValueError(f"{flag(name)} has no effect with --model={cfg.model} for the "
                             f"{cfg.task} task ({why}); leave it unset")
    for name, value in defaults.values.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    if cfg.rho is None:
        cfg.rho = TASK_DEFAULTS[cfg.task]["rho"]
    if cfg.end_fraction is None:
        cfg.end_fraction = 1.0
    _check_ranges(cfg)
    _check_fanout(cfg)
    return cfg


def _check_fanout(cfg: RunConfig) -> None:
    """Normalises ``cfg.fanout`` to ``"15,10"`` form; refuses what sampling cannot train."""
    from sparsegnn_jax import sampling  # numpy-only; imported here to keep config light

    fanouts = sampling.parse_fanouts(cfg.fanout)
    if fanouts is None:
        cfg.fanout = None
        return
    cfg.fanout = ",".join(map(str, fanouts))
    if cfg.model == "mlp":
        raise ValueError("--fanout has no effect with --model=mlp (it passes no messages "
                         "over edges); leave it unset")
    if len(fanouts) != cfg.num_layers:
        raise ValueError(f"--fanout={cfg.fanout} gives {len(fanouts)} hops; the model has "
                         f"--num-layers={cfg.num_layers}: give one fan-out per layer")
    if cfg.edge_sparsity is not None:
        raise ValueError("--fanout cannot be combined with --edge-sparsity: the edge-weight "
                         "leaf is aligned with the whole graph's edge list, which a sampled "
                         "block does not hold; train edge sparsity on the whole graph")
    if cfg.devices > 1:
        raise ValueError("--fanout runs on one device; leave --devices unset")


EDGE_SCORES = ("resistance", "random", "saliency")

def _resolve_edge_scores(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``edge_scores`` checked and its default filled in (see the field)."""
    starts_sparse = registry.get(cfg.method).takes_initial_scores()
    if cfg.edge_scores is None:
        if starts_sparse and cfg.edge_sparsity is not None:
            return dataclasses.replace(cfg, edge_scores="resistance")
        return cfg
    if cfg.edge_scores not in EDGE_SCORES:
        raise ValueError(f"unknown --edge-scores={cfg.edge_scores!r}; known: "
                         f"{', '.join(EDGE_SCORES)}")
    if cfg.edge_sparsity is None:
        raise ValueError("--edge-scores has no effect without --edge-sparsity (no edge "
                         "weights); leave it unset")
    if not starts_sparse:
        known = [n for n in registry.names() if registry.get(n).takes_initial_scores()]
        raise ValueError(f"--edge-scores has no effect with --method={cfg.method}: it chooses "
                         f"the initial edge mask of the methods that start sparse "
                         f"({', '.join(known)}); leave it unset")
    if cfg.edge_scores == "saliency" and (cfg.task != "node" or not cfg.init_from):
        raise ValueError("--edge-scores=saliency ranks the edges by a trained node classifier's "
                         "loss: it needs --task=node (node_class.py) and --init-from, the "
                         "checkpoint of a dense run")
    return cfg


def _check_ranges(cfg: RunConfig) -> None:
    if not 0.0 < cfg.end_fraction <= 1.0:
        raise ValueError(f"--end-fraction must be in (0, 1], got {cfg.end_fraction}")
    if cfg.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {cfg.seed}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"--lr must be a positive finite number, got {cfg.lr}")
    if cfg.weight_decay < 0 or not math.isfinite(cfg.weight_decay):
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {cfg.weight_decay}")
    for name in ("epochs", "hidden", "num_layers"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{flag(name)} must be positive, got {getattr(cfg, name)}")
    if cfg.batch_size is not None and cfg.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {cfg.batch_size}")
    if cfg.devices < 1:
        raise ValueError(f"--devices must be >= 1, got {cfg.devices}")
    if cfg.devices > 1 and cfg.batch_size is not None and cfg.batch_size % cfg.devices:
        raise ValueError(f"--batch-size={cfg.batch_size} must be divisible by "
                         f"--devices={cfg.devices}")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
    if cfg.update_every is not None and cfg.update_every <= 0:
        raise ValueError(f"--update-every must be positive, got {cfg.update_every}")
    if cfg.drop_fraction is not None and not 0.0 < cfg.drop_fraction <= 1.0:
        raise ValueError(f"--drop-fraction must be in (0, 1], got {cfg.drop_fraction}")
    if cfg.optimizer not in ("sgd", "adam"):
        raise ValueError(f"--optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
    _check_method_schedule(cfg)
    if cfg.target_fraction is not None:  # set (by default) exactly for link prediction
        _check_link(cfg)
    if cfg.decoder not in DECODERS:
        raise ValueError(f"--decoder must be one of {', '.join(DECODERS)}, got {cfg.decoder!r}")


def _check_method_schedule(cfg: RunConfig) -> None:
    for name in ("penalty_epochs", "retrain_epochs"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:
            raise ValueError(f"{flag(name)} must be >= 0, got {getattr(cfg, name)}")
    phases = (cfg.penalty_epochs or 0) + (cfg.retrain_epochs or 0)
    if phases > cfg.epochs:
        raise ValueError(f"--penalty-epochs + --retrain-epochs ({phases}) must fit in "
                         f"--epochs={cfg.epochs}")
    for name in ("rho", "initial_step_size"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag(name)} must be a positive finite number, got {value}")
    for path, value in (cfg.layer_sparsity or {}).items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"--layer-sparsity={path}={value}: a sparsity must be in [0, 1)")


def parse_layer_sparsity(items) -> dict | None:
    """``--layer-sparsity`` values (``PATH=S``, each possibly comma-separated) as a dict.

    Args:
      items: the flag's values (None or empty: no override).

    Returns:
      ``{path: sparsity}`` in the order given, or None without items.

    Raises:
      ValueError: an item that is not ``PATH=NUMBER`` or a path given twice.
    """
    out = {}
    for item in (p.strip() for text in items or () for p in text.split(",")):
        if not item:
            continue
        path, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not path or number is None:
            raise ValueError(f"--layer-sparsity expects PATH=SPARSITY (e.g. "
                             f"encoder/layers/1/kernel=0), got {item!r}")
        if path in out:
            raise ValueError(f"--layer-sparsity gives {path!r} twice")
        out[path] = number
    return out or None


def _check_link(cfg: RunConfig) -> None:
    if not 0.0 <= cfg.target_fraction < 1.0:
        raise ValueError(f"--target-fraction must be in [0, 1), got {cfg.target_fraction}")
    known = FEATURES[model_family(cfg.model)]
    if cfg.features not in known:
        raise ValueError(f"--features must be one of {', '.join(known)} for --model={cfg.model}, "
                         f"got {cfg.features!r}")
    if cfg.eval_protocol == "dyglib":
        cfg.dyglib_setting = cfg.dyglib_setting or "transductive"
        cfg.dyglib_negatives = cfg.dyglib_negatives or "random"
    else:
        for name in ("dyglib_setting", "dyglib_negatives"):
            if getattr(cfg, name) is not None:
                raise ValueError(f"{flag(name)} needs --eval-protocol=dyglib")
    if cfg.split is not None and cfg.split not in LINK_SPLITS:
        raise ValueError(f"--split must be one of {', '.join(LINK_SPLITS)}, got {cfg.split!r}")
    if cfg.eval_protocol == "dyglib" and cfg.split == "random":
        raise ValueError("--split=random has no effect with --eval-protocol=dyglib (DyGLib's "
                         "split is by time); leave --split unset")
    choices = dict(train_negatives=TRAIN_NEGATIVES, eval_protocol=EVAL_PROTOCOLS,
                   select=SELECTIONS, pair_features=PAIR_FEATURES)
    if cfg.eval_protocol == "dyglib":
        choices |= dict(dyglib_setting=DYGLIB_SETTINGS, dyglib_negatives=DYGLIB_NEGATIVES)
    for name, known_values in choices.items():
        if getattr(cfg, name) not in known_values:
            raise ValueError(f"{flag(name)} must be one of {', '.join(known_values)}, "
                             f"got {getattr(cfg, name)!r}")
    if cfg.pair_features == "history":
        if cfg.decoder == "dot":
            raise ValueError("--pair-features=history needs an MLP decoder (--decoder=dot has "
                             "nowhere to put them); pass --pair-features=none or another "
                             "--decoder")
        if cfg.target_fraction == 0.0:
            raise ValueError("--pair-features=history needs --target-fraction > 0: with every "
                             "training pair in the history, every positive has 'met' and the "
                             "features give the label away; pass --pair-features=none")


def method_options(cfg: RunConfig) -> dict:
    """What a method's :attr:`~registry.MethodSpec.plan` reads from a resolved ``cfg``."""
    spec = registry.get(cfg.method)
    options = {name: getattr(cfg, name) for name in spec.options}
    options["default_update_every"] = TASK_DEFAULTS[cfg.task]["update_every"]
    return options
