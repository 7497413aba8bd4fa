"""Train/val/test splits: chronological and random link splits, negative sampling, stratified
node splits."""
from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "NodeSplit",
    "LinkSplit",
    "temporal_link_split",
    "random_link_split",
    "choose_split",
    "LINK_SPLITS",
    "link_split_of",
    "edge_keys",
    "pair_codes",
    "check_num_nodes",
    "sample_negatives",
    "random_pairs",
    "known_pairs",
    "find_pairs",
    "node_split",
]


@dataclasses.dataclass(frozen=True, eq=False)
class NodeSplit:
    """Node index sets of a node-classification split.

    Attributes:
      train, val, test: sorted int32 node indices (disjoint).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class LinkSplit:
    """A link-prediction split, chronological or random (then "time order" below is the
    split's shuffled order).

    Attributes:
      num_nodes: number of nodes N.
      train_edges, val_edges, test_edges: [E_s, 2] int32 (src, dst) pairs in time order, each
        split deduplicated keeping the first occurrence. A pair may appear in several splits
        (a repeated interaction is a legitimate future link).
      graph_senders, graph_receivers: [E_t] int32 edges of the message-passing graph: the
        training edges only, so no validation or test link leaks into the encoder.
      train_times, val_times, test_times: [E_s] int64 time of each pair's first occurrence in
        its split, or None for a static dataset.
      train_index: [n_train] indices into the dataset's edges of every raw (not deduplicated)
        training edge, in time order - what a temporal walk over the past may use.
      target_edges: [E_g, 2] the training targets: the pairs of the latest ``target_fraction``
        of the training period (deduplicated), or every training pair when it is 0.
      history_senders, history_receivers: the message-passing graph while training: the
        training edges before the targets' period (every training edge when
        ``target_fraction`` is 0), so a model learns to predict links it cannot see.
      history_index: indices into the dataset's edges of the raw history edges, in time order.
      val_index, test_index: indices into the dataset's edges of the part's raw events, in
        time order (``train_index``, ``val_index``, ``test_index`` together: the whole stream).
    """

    num_nodes: int
    train_edges: np.ndarray
    val_edges: np.ndarray
    test_edges: np.ndarray
    graph_senders: np.ndarray
    graph_receivers: np.ndarray
    train_times: np.ndarray | None = None
    val_times: np.ndarray | None = None
    test_times: np.ndarray | None = None
    train_index: np.ndarray | None = None
    target_edges: np.ndarray | None = None
    history_senders: np.ndarray | None = None
    history_receivers: np.ndarray | None = None
    history_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    test_index: np.ndarray | None = None

    @property
    def all_edges(self) -> np.ndarray:
        """[E, 2] every known positive pair (train, val and test) - the set negatives avoid."""
        return np.concatenate([self.train_edges, self.val_edges, self.test_edges], axis=0)


def _dedupe_first(edges: np.ndarray, times, num_nodes: int):
    """Drop repeated (src, dst) pairs, keeping the first occurrence and the original order."""
    _, first = np.unique(pair_codes(edges[:, 0], edges[:, 1], num_nodes), return_index=True)
    first.sort()
    return edges[first], (None if times is None else times[first])


def _cut_sizes(n: int, train: float, val: float) -> tuple[int, int]:
    """Numbers of training and validation edges among ``n`` (the rest is test)."""
    # The epsilon keeps 10 * (0.7 + 0.1) = 7.999... from losing an edge to rounding.
    n_train = int(np.floor(n * train + 1e-9))
    n_val = int(np.floor(n * (train + val) + 1e-9)) - n_train
    return n_train, n_val


def _empty_parts(n: int, train: float, val: float) -> list[str]:
    """Names of the parts asked for (positive fraction) that ``n`` edges leave empty.

    An empty part cannot be trained on or evaluated, so it is an error rather than a NaN metric
    later; a part whose fraction is 0 (``val=0``, or ``train + val == 1``) is empty on purpose.
    """
    n_train, n_val = _cut_sizes(n, train, val)
    n_test = n - n_train - n_val
    wanted = (("train", n_train, True), ("val", n_val, val > 0),
              ("test", n_test, train + val < 1.0 - 1e-9))
    return [name for name, size, asked in wanted if asked and size == 0]


def _min_edges(train: float, val: float, start: int, limit: int = 1_000_000) -> int | None:
    """Smallest edge count >= ``start`` that fills every part asked for (None past ``limit``)."""
    for m in range(max(start, 1), limit):
        if not _empty_parts(m, train, val):
            return m
    return None


def _check_link_split_args(ds, train: float, val: float, target_fraction: float) -> None:
    """The checks every link split makes first (see :func:`temporal_link_split`)."""
    if not (0.0 < train < 1.0) or not (0.0 <= val < 1.0) or train + val > 1.0 + 1e-9:
        raise ValueError(f"need 0 < train < 1, 0 <= val < 1 and train + val <= 1; "
                         f"got train={train}, val={val}")
    if not 0.0 <= target_fraction < 1.0:
        raise ValueError(f"--target-fraction must be in [0, 1), got {target_fraction}")
    check_num_nodes(ds.num_nodes)
    if ds.num_nodes < 2:
        # No pair (src != dst) exists to sample as a negative, nor a link to predict.
        raise ValueError(f"dataset {ds.name!r} has {ds.num_nodes} node"
                         f"{'' if ds.num_nodes == 1 else 's'}: link prediction needs at "
                         "least 2 nodes")


def _check_parts(ds, n: int, train: float, val: float, what: str, how: str) -> None:
    """Raises when ``n`` items (edges, or distinct pairs) leave a part asked for empty."""
    empty = _empty_parts(n, train, val)
    if empty:
        need = _min_edges(train, val, start=n + 1)
        need_text = f"; need at least {need} {what}" if need else ""
        raise ValueError(
            f"dataset {ds.name!r} has {n} {what if n != 1 else what[:-1]}: too few to split "
            f"{how} into train/val/test = {train:g}/{val:g}/{1 - train - val:g} "
            f"(the {' and '.join(empty)} part{'' if len(empty) == 1 else 's'} would be "
            f"empty){need_text}")


def temporal_link_split(ds, train: float = 0.7, val: float = 0.1,
                        target_fraction: float = 0.0) -> LinkSplit:
    """Split a dataset's edges chronologically into train / val / test.

    Edges are sorted by time with a stable sort (file order breaks ties; a static dataset keeps
    its file order); the first ``train`` fraction are training edges, the next ``val`` fraction
    validation, the rest test. So no test edge is earlier than any training edge.

    Args:
      ds: a Dataset (needs ``num_nodes``, ``senders``, ``receivers``, ``times``).
      train: fraction of edges (by count, before dedup) used for training.
      val: fraction used for validation; the remaining ``1 - train - val`` is test.
      target_fraction: fraction of the training edges (the latest ones) held out of the
        training-time message-passing graph as training targets; 0 trains on every training
        pair with all of them in the graph.

    Returns:
      LinkSplit; the evaluation message-passing graph holds the training edges only.

    Raises:
      ValueError: fractions outside (0, 1) or summing to more than 1, fewer than 2 nodes or
        more than :data:`MAX_NODES`, or
        so few edges that a part with a positive fraction would be empty (e.g. 3 edges with
        the default fractions leave no validation edge; 4 is the minimum).
    """
    _check_link_split_args(ds, train, val, target_fraction)
    n = np.asarray(ds.senders).size
    _check_parts(ds, n, train, val, "edges", "chronologically")
    times = None if ds.times is None else np.asarray(ds.times, dtype=np.int64)
    order = np.arange(n) if times is None else np.argsort(times, kind="stable")
    n_train, n_val = _cut_sizes(n, train, val)
    return link_split_of(ds, order[:n_train], order[n_train:n_train + n_val],
                         order[n_train + n_val:], target_fraction)


def random_link_split(ds, seed: int = 0, train: float = 0.7, val: float = 0.1,
                      target_fraction: float = 0.0) -> LinkSplit:
    """Split a graph's node pairs at random into train / val / test (graphs without times).

    The distinct undirected pairs ``{u, v}`` are shuffled (seeded) and cut ``train`` / ``val``
    / rest by count; every event of a pair (repeats, both directions) goes to its pair's part,
    so no test link is in the training graph, which the tasks make symmetric. Within a part,
    events follow the shuffled order, which stands for time: the training targets
    (``target_fraction``, the "latest" training events) are random pairs too.

    A static graph's stored edge order usually follows node ids (networkx, SciPy, sorted
    edge lists); cut chronologically, every test link then lies among the last nodes, most of
    them without a training edge. This split spreads the parts over the whole graph.

    Args:
      ds: a Dataset (``num_nodes``, ``senders``, ``receivers``; ``times`` are ignored).
      seed: seed of the shuffle (same seed, same split).
      train, val, target_fraction: as :func:`temporal_link_split`, but ``train`` and ``val``
        count distinct undirected pairs.

    Returns:
      LinkSplit (``*_times`` hold the dataset's times of the parts' pairs, if any).

    Raises:
      ValueError: as :func:`temporal_link_split` (too few distinct pairs for a part), or a
        negative or non-integer seed.
    """
    seed = check_seed(seed)
    _check_link_split_args(ds, train, val, target_fraction)
    src = np.asarray(ds.senders, np.int64)
    dst = np.asarray(ds.receivers, np.int64)
    pairs, pair_of = np.unique(pair_codes(np.minimum(src, dst), np.maximum(src, dst),
                                          ds.num_nodes), return_inverse=True)
    _check_parts(ds, pairs.size, train, val, "distinct pairs", "at random")
    rank = np.empty(pairs.size, np.int64)
    rank[np.random.default_rng(seed).permutation(pairs.size)] = np.arange(pairs.size)
    event_rank = rank[pair_of.reshape(-1)]
    order = np.lexsort((np.arange(src.size), event_rank))  # by pair rank, then stored order
    n_train, n_val = _cut_sizes(pairs.size, train, val)
    ranks = event_rank[order]
    first_val, first_test = np.searchsorted(ranks, [n_train, n_train + n_val])
    return link_split_of(ds, order[:first_val], order[first_val:first_test],
                         order[first_test:], target_fraction)


#: Link splits: ``temporal`` (:func:`temporal_link_split`) and ``random``
#: (:func:`random_link_split`).
LINK_SPLITS = ("random", "temporal")


def choose_split(ds, split: str | None = None) -> str:
    """The link split a run uses: ``split`` if given, else ``"temporal"`` when the dataset
    has timestamps and ``"random"`` when it has none.

    ``"temporal"`` on a graph without timestamps cuts it in its stored edge order, which the
    caller asked for (e.g. an edge list written in time order), with a warning: a graph's
    stored order is often by node id.

    Raises:
      ValueError: ``split`` is not one of :data:`LINK_SPLITS` (naming ``--split``).
    """
    if split is None:
        return "temporal" if ds.times is not None else "random"
    if split not in LINK_SPLITS:
        raise ValueError(f"--split must be one of {', '.join(LINK_SPLITS)}, got {split!r}")
    if split == "temporal" and ds.times is None:
        warnings.warn(f"dataset {ds.name!r} has no timestamps: --split=temporal cuts its edges "
                      "in their stored order (--split=random shuffles them)", stacklevel=2)
    return split


def link_split_of(ds, train_index, val_index, test_index,
                  target_fraction: float = 0.0) -> LinkSplit:
    """The :class:`LinkSplit` of given train / validation / test events (any protocol's cut).

    Args:
      ds: a Dataset.
      train_index, val_index, test_index: indices into the dataset's edges, each in time order;
        training events after the first validation event are not expected.
      target_fraction: as :func:`temporal_link_split`.
    """
    if not 0.0 <= target_fraction < 1.0:
        raise ValueError(f"--target-fraction must be in [0, 1), got {target_fraction}")
    src = np.asarray(ds.senders, dtype=np.int32)
    dst = np.asarray(ds.receivers, dtype=np.int32)
    times = None if ds.times is None else np.asarray(ds.times, dtype=np.int64)
    train_index, val_index, test_index = (np.asarray(i, np.int64)
                                          for i in (train_index, val_index, test_index))
    n_train = train_index.size

    def events(index):
        return np.stack([src[index], dst[index]], axis=1)

    parts = [_dedupe_first(events(i), None if times is None else times[i], ds.num_nodes)
             for i in (train_index, val_index, test_index)]
    (tr, tr_t), (va, va_t), (te, te_t) = parts
    # The latest target_fraction of the training edges are targets; at least one edge stays in
    # each of the history and the targets.
    n_history = min(max(int(np.floor(n_train * (1.0 - target_fraction) + 1e-9)), 1), n_train - 1)
    if target_fraction == 0.0:
        targets, history = tr, tr
        n_history = n_train
    else:
        targets, _ = _dedupe_first(events(train_index[n_history:]), None, ds.num_nodes)
        history = events(train_index[:n_history])
    return LinkSplit(
        num_nodes=int(ds.num_nodes),
        train_edges=tr, val_edges=va, test_edges=te,
        graph_senders=tr[:, 0].copy(), graph_receivers=tr[:, 1].copy(),
        train_times=tr_t, val_times=va_t, test_times=te_t,
        train_index=train_index,
        target_edges=targets,
        history_senders=history[:, 0].copy(), history_receivers=history[:, 1].copy(),
        history_index=train_index[:n_history],
        val_index=val_index, test_index=test_index,
    )


def pair_codes(src, dst, num_nodes: int) -> np.ndarray:
    """int64 codes ``src * N + dst`` of pairs, for membership tests in NumPy (never overflow).

    Args:
      src, dst: [E] integer node ids in ``[0, num_nodes)``.
      num_nodes: N.
    """
    return np.asarray(src, np.int64) * num_nodes + np.asarray(dst, np.int64)


def edge_keys(edges, num_nodes: int) -> np.ndarray:
    """The distinct directed edges as sorted (src, dst) rows, for membership tests on device.

    Rows are in lexicographic order, which :func:`known_pairs` searches. Two int32 columns
    index any graph of up to 2**31 - 1 nodes without 64-bit integers in JAX (a single key
    ``src * N + dst`` would overflow int32 above 46,340 nodes).

    Args:
      edges: [E, 2] integer (src, dst) pairs (or a tuple (senders, receivers)).
      num_nodes: N.

    Returns:
      [U, 2] int32 sorted unique (src, dst) rows.

    Raises:
      ValueError: a node id outside ``[0, num_nodes)``, or ``num_nodes`` above int32.
    """
    check_num_nodes(num_nodes)
    if isinstance(edges, (tuple, list)) and len(edges) == 2:
        src, dst = (np.asarray(a, dtype=np.int64).ravel() for a in edges)
    else:
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        src, dst = edges[:, 0], edges[:, 1]
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
        raise ValueError(f"edges hold node ids outside [0, num_nodes={num_nodes})")
    codes = np.unique(pair_codes(src, dst, num_nodes))
    return np.stack([codes // num_nodes, codes % num_nodes], axis=1).astype(np.int32)


MAX_NODES = 2**31 - 1


def check_num_nodes(num_nodes: int) -> int:
    """Returns ``num_nodes``; raises ValueError when int32 node ids cannot index it."""
    if num_nodes > MAX_NODES:
        raise ValueError(f"num_nodes={num_nodes}: node ids are int32, at most {MAX_NODES} nodes")
    return num_nodes


def sample_negatives(key, num_nodes: int, num: int, edge_keys, rounds: int = 16,
                     nodes=None) -> jax.Array:
    """Uniformly random non-edges (src != dst) by rejection against known edge keys.

    Each round draws a fresh pair (:func:`random_pairs`) for every slot whose pair is a known
    edge (:func:`known_pairs`), and the rounds stop as soon as no slot holds one: the result is
    the pairs ``rounds`` full rounds would give (a round changes no slot that is not an edge),
    at the cost of the rounds needed. After ``rounds`` rounds a slot still holding an edge has
    probability ``density**(rounds + 1)``: negligible for sparse graphs. Jit-able with
    ``num_nodes``, ``num`` and ``rounds`` static; the result depends only on ``key``.

    Args:
      key: jax PRNG key.
      num_nodes: N (static).
      num: number of pairs to return (static).
      edge_keys: [U, 2] sorted (src, dst) rows of all known edges (see :func:`edge_keys`).
      rounds: at most this many resampling rounds for rejected pairs (static).
      nodes: optional [M] distinct node ids (M >= 2) to draw both ends from (e.g. the nodes
        with history); None draws from all ``num_nodes``.

    Returns:
      [num, 2] int32 pairs.
    """
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be >= 2 to sample pairs with src != dst, got {num_nodes}")
    check_num_nodes(num_nodes)
    if nodes is None:
        nodes = jnp.arange(num_nodes, dtype=jnp.int32)
    return _sample_negatives(key, jnp.asarray(edge_keys, jnp.int32).reshape(-1, 2),
                             jnp.asarray(nodes, jnp.int32), num, rounds)


def random_pairs(key, nodes, num: int) -> tuple[jax.Array, jax.Array]:
    """``num`` uniformly random pairs of distinct entries of ``nodes`` (one ``randint`` call).

    Args:
      key: jax PRNG key.
      nodes: [M] node ids, M >= 2.
      num: number of pairs (static).

    Returns:
      ``(src, dst)``, two [num] int32 arrays with ``src != dst`` position by position.
    """
    m = nodes.shape[0]
    # Row 0: the source position among M; row 1: the destination among the M - 1 others
    # (src's own position skipped), so src != dst without rejection.
    pos = jax.random.randint(key, (2, num), 0, jnp.asarray([[m], [m - 1]], jnp.int32),
                             dtype=jnp.int32)
    src, dst = pos[0], pos[1]
    dst = dst + (dst >= src).astype(jnp.int32)
    return nodes[src], nodes[dst]


def find_pairs(edge_keys, src, dst) -> tuple[jax.Array, jax.Array]:
    """Where each pair ``(src, dst)`` is among the rows of ``edge_keys``.

    A binary search on the two columns in lexicographic order: ``bit_length(U)`` steps of
    two gathers each, int32 throughout.

    Args:
      edge_keys: [U, 2] int32 sorted unique (src, dst) rows (see :func:`edge_keys`),
        possibly empty.
      src, dst: [num] int32 node ids.

    Returns:
      ``(row, found)``: [num] int32 row of the pair (clipped to ``[0, U - 1]``, meaningless
      where not found; 0 when ``U == 0``) and [num] bool whether it is there.
    """
    size = edge_keys.shape[0]
    if size == 0:
        return jnp.zeros(src.shape, jnp.int32), jnp.zeros(src.shape, dtype=bool)
    key_src, key_dst = edge_keys[:, 0], edge_keys[:, 1]

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2  # not (lo + hi) // 2: that overflows int32 near 2**30 rows
        at = jnp.minimum(mid, size - 1)
        below = (key_src[at] < src) | ((key_src[at] == src) & (key_dst[at] < dst))
        open_ = lo < hi
        return (jnp.where(open_ & below, mid + 1, lo), jnp.where(open_ & ~below, mid, hi))

    start = (jnp.zeros(src.shape, jnp.int32), jnp.full(src.shape, size, jnp.int32))
    lo, _ = jax.lax.fori_loop(0, int(size).bit_length(), halve, start)
    at = jnp.minimum(lo, size - 1)
    return at, (key_src[at] == src) & (key_dst[at] == dst)


def known_pairs(edge_keys, src, dst) -> jax.Array:
    """[num] bool: whether each pair ``(src, dst)`` is a row of ``edge_keys`` (sorted unique
    int32 (src, dst) rows, see :func:`edge_keys`; :func:`find_pairs` also gives the row)."""
    return find_pairs(edge_keys, src, dst)[1]


@functools.partial(jax.jit, static_argnames=("num", "rounds"))
def _sample_negatives(key, keys_arr, nodes, num: int, rounds: int):
    # Jitted once per (shapes, N, num, rounds): eager dispatch of the loop is slow.
    # One split gives every round its key: round r draws with keys[r] whether or not the
    # loop stops early, so stopping cannot change a pair.
    keys = jax.random.split(key, rounds + 1)
    src, dst = random_pairs(keys[0], nodes, num)

    def still_rejected(carry):
        done, _, _, bad = carry
        return (done < rounds) & bad.any()

    def redraw(carry):
        done, src, dst, bad = carry
        new_src, new_dst = random_pairs(keys[done + 1], nodes, num)
        src, dst = jnp.where(bad, new_src, src), jnp.where(bad, new_dst, dst)
        return done + 1, src, dst, known_pairs(keys_arr, src, dst)

    carry = (jnp.zeros((), jnp.int32), src, dst, known_pairs(keys_arr, src, dst))
    _, src, dst, _ = jax.lax.while_loop(still_rejected, redraw, carry)
    return jnp.stack([src, dst], axis=1)


EVAL_PROTOCOLS = ("uniform", "dyglib")


def evaluation_pairs(split: LinkSplit, part: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed positive and negative pairs on which a part ("val" / "test") is scored under
    the ``"uniform"`` protocol: the part's distinct pairs, each against one uniformly random
    non-edge (both ends random, ``src != dst``, no known edge of any part). Deterministic in
    ``seed``; a model and the baselines score the same pairs. (``"dyglib"``: ``data.dyglib``.)

    Returns:
      ``(positives [P, 2], negatives [P, 2])`` int32.
    """
    if part not in ("val", "test"):
        raise ValueError(f"part must be 'val' or 'test', got {part!r}")
    offset = 0 if part == "val" else 1
    pos = split.val_edges if part == "val" else split.test_edges
    keys = edge_keys(split.all_edges, split.num_nodes)
    neg = sample_negatives(jax.random.key(10_000 + 2 * seed + offset), split.num_nodes,
                           int(pos.shape[0]), keys)
    return np.asarray(pos, np.int32), np.asarray(neg, np.int32)


def check_seed(seed) -> int:
    """Returns ``seed`` as an int; raises ValueError unless it is a non-negative integer.

    NumPy's generators reject negative seeds with a message that does not say which argument
    was wrong.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def node_split(labels, seed: int = 0, train: float = 0.6, val: float = 0.2) -> NodeSplit:
    """Stratified random node split: every class is split in the given proportions.

    Per class with n nodes: ``round(n * train)`` train, ``round(n * val)`` val (capped by what
    is left), the rest test. Nodes with a negative label are left out of every set.

    Args:
      labels: [N] integer class ids.
      seed: seed of the permutation (same seed, same split).
      train: fraction of each class for training.
      val: fraction of each class for validation.

    Returns:
      NodeSplit of sorted int32 index arrays.

    Raises:
      ValueError: fractions out of range or a negative / non-integer seed.
    """
    if not (0.0 < train <= 1.0) or not (0.0 <= val <= 1.0) or train + val > 1.0 + 1e-9:
        raise ValueError(f"need 0 < train <= 1, 0 <= val <= 1 and train + val <= 1; "
                         f"got train={train}, val={val}")
    check_seed(seed)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for c in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_tr = int(round(idx.size * train))
        n_va = min(int(round(idx.size * val)), idx.size - n_tr)
        parts[0].append(idx[:n_tr])
        parts[1].append(idx[n_tr:n_tr + n_va])
        parts[2].append(idx[n_tr + n_va:])
    tr, va, te = (np.sort(np.concatenate(p)).astype(np.int32) if p else np.zeros(0, np.int32)
                  for p in parts)
    return NodeSplit(tr, va, te)
