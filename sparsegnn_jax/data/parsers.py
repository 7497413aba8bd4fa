"""Parsers for the on-disk graph formats: edge lists (SNAP, CSV with a header, DyGLib's
ml_<name>.csv), label files, Planetoid, dense CSV.

Every parser reads the whole file once and parses it with vectorised NumPy. Only when the
fast path finds a problem does a slow line-by-line pass run, to name the offending line:
errors are ``ValueError`` messages with the file name, the 1-based line number and the line.
"""
from __future__ import annotations

import gzip
import pathlib
import pickle
import re
import warnings
import zlib
from typing import Iterator, NamedTuple

import numpy as np

__all__ = [
    "CorruptGzipError",
    "DYGLIB_HEADER",
    "MAX_DECOMPRESSED_BYTES",
    "EdgeList",
    "PlanetoidData",
    "read_text",
    "gunzip_chunks",
    "parse_edge_list",
    "parse_node_labels",
    "parse_letter_labels",
    "parse_dense_adjacency",
    "load_planetoid",
    "load_pickle",
    "remap_nodes",
    "UnsafePickleError",
]

_COMMENT_CHARS = ("#", "%")
# The bytes np.fromstring(sep=" ") treats as separators: tab, LF, VT, FF, CR, space.
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


class EdgeList(NamedTuple):
    """Raw edges of a file, with the file's own node ids (not remapped).

    Attributes:
      src: [E] int64 source ids.
      dst: [E] int64 destination ids.
      times: [E] int64 timestamps, or None for a 2-column (static) list.
      header: the column names of the file's header line (lower-cased, stripped), or None
        for a file without one; :data:`DYGLIB_HEADER` for DyGLib's ``ml_<name>.csv``.
    """

    src: np.ndarray
    dst: np.ndarray
    times: np.ndarray | None
    header: tuple[str, ...] | None = None


# The header of DyGLib's processed files, ml_<name>.csv (preprocess_data.py writes the
# DataFrame with pandas' unnamed index column first): row index, source, destination, time,
# state label, edge index. Their node ids start at 1.
DYGLIB_HEADER = ("", "u", "i", "ts", "label", "idx")

# Column names a header may give the source, destination and time columns.
_HEADER_NAMES = {
    "src": ("src", "source", "u", "from", "sender", "user_id", "source_node"),
    "dst": ("dst", "destination", "target", "i", "to", "receiver", "item_id", "dest",
            "destination_node"),
    "t": ("t", "ts", "time", "timestamp"),
}


class PlanetoidData(NamedTuple):
    """A Planetoid graph in the standard (Kipf & Welling / Yang et al.) arrangement.

    Attributes:
      features: [N, F] float32 bag-of-words features (raw, not normalised).
      labels: [N] int32 class ids (0 for CiteSeer's isolated test-less nodes, as the reference).
      senders, receivers: [E] int64 adjacency-list edges as stored (duplicates kept).
      train, val, test: int32 index arrays of the standard split.
      num_classes: number of classes.
    """

    features: np.ndarray
    labels: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    num_classes: int


def _line_of(text: str, pos: int) -> tuple[int, str]:
    """1-based line number and content of the line holding character ``pos``."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    return text.count("\n", 0, pos) + 1, text[start:end]


def _line_error(path, lineno: int, line: str, why: str) -> ValueError:
    shown = line if len(line) <= 200 else line[:200] + "..."
    return ValueError(f"{path}: line {lineno}: {why}: {shown!r}")


# Largest decompressed size accepted from a .gz file. The biggest real one, the whole SNAP
# sx-stackoverflow-a2q, is ~0.5 GB; a gzip bomb of a few MB would otherwise fill the disk.
MAX_DECOMPRESSED_BYTES = 4 << 30


class CorruptGzipError(ValueError):
    """A ``.gz`` file that does not decompress, ends early or decompresses to too much.

    Attributes:
      truncated: the data is valid but ends before the gzip stream does (an interrupted
        download: fetching the rest may fix it).
    """

    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


def gunzip_chunks(path, max_bytes: int | None = None,
                  chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yields the decompressed content of a gzip file in chunks.

    Args:
      path: the ``.gz`` file.
      max_bytes: refuse more decompressed bytes than this (default
        :data:`MAX_DECOMPRESSED_BYTES`).
      chunk_size: decompressed bytes per chunk.

    Yields:
      Chunks of decompressed bytes, in order.

    Raises:
      CorruptGzipError: not gzip, corrupt, cut short (``truncated``) or larger than
        ``max_bytes``; the message names the file.
    """
    limit = MAX_DECOMPRESSED_BYTES if max_bytes is None else max_bytes
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(chunk_size), b""):
                total += len(chunk)
                if total > limit:
                    raise CorruptGzipError(f"{path}: decompresses to more than {limit} bytes; "
                                           "refusing it (a gzip bomb?)")
                yield chunk
    except EOFError as err:
        raise CorruptGzipError(f"{path}: not a valid gzip file (it ends before its compressed "
                               f"data does: cut short? {err})", truncated=True) from err
    except (OSError, zlib.error) as err:  # BadGzipFile is an OSError; bad deflate data zlib's
        raise CorruptGzipError(f"{path}: not a valid gzip file ({err})") from err


def read_text(path) -> str:
    """Read a text file (``.gz`` transparently) after checking it exists and has no NUL bytes.

    Args:
      path: file path (str or Path); names ending in ``.gz`` are gunzipped.

    Returns:
      The file's contents as ``str`` (decoded as UTF-8, undecodable bytes replaced).

    Raises:
      FileNotFoundError: the file does not exist.
      CorruptGzipError: a ``.gz`` file is not valid gzip or decompresses to more than
        :data:`MAX_DECOMPRESSED_BYTES`.
      ValueError: the file holds NUL bytes (names the line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    raw = b"".join(gunzip_chunks(path)) if path.suffix == ".gz" else path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    nul = text.find("\x00")
    if nul >= 0:
        lineno, line = _line_of(text, nul)
        raise _line_error(path, lineno, line.replace("\x00", "\\0"), "NUL byte in text file")
    return text


def _blank_comments(text: str) -> str:
    """Replace comment lines by empty lines, so line numbers stay those of the file."""
    if not any(c in text for c in _COMMENT_CHARS):
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped[:1] in _COMMENT_CHARS:
            lines[i] = ""
    return "\n".join(lines)


def _tokens_per_line(text: str) -> np.ndarray:
    """Number of whitespace-separated tokens on every line (vectorised over bytes)."""
    b = np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)
    if b.size == 0:
        return np.zeros(1, dtype=np.int64)
    ws = _WHITESPACE[b]
    starts = np.flatnonzero(~ws & np.concatenate([[True], ws[:-1]]))
    ends = np.concatenate([np.flatnonzero(b == 10), [b.size]])
    return np.diff(np.searchsorted(starts, ends), prepend=0)


def _first_bad_token(path, text: str, lines_to_check, kind: str, convert) -> ValueError:
    """Slow pass: find the first line whose tokens do not convert, for the error message."""
    lines = text.split("\n")
    for i in lines_to_check:
        for tok in lines[i].split():
            try:
                convert(tok)
            except ValueError:
                return _line_error(path, i + 1, lines[i], f"{tok!r} is not {kind}")
    return ValueError(f"{path}: could not parse the file as {kind} values")


def _parse_table(path, text: str, ncols=None, dtype=np.int64, kind="an integer"):
    """Parse whitespace-separated numbers into an [rows, ncols] array.

    Args:
      path: file name for messages.
      text: contents, comment lines already blanked.
      ncols: required column count; None takes the count of the first data line.
      dtype: np.int64 or np.float64.
      kind: description of a valid token, for messages.

    Returns:
      ([rows, ncols] array, 0-based line indices of the data lines).
    """
    counts = _tokens_per_line(text)
    data_lines = np.flatnonzero(counts > 0)
    if data_lines.size == 0:
        raise ValueError(f"{path}: empty file (no data lines)")
    if ncols is None:
        ncols = int(counts[data_lines[0]])
    bad = data_lines[counts[data_lines] != ncols]
    if bad.size:
        i = int(bad[0])
        line = text.split("\n")[i]
        raise _line_error(path, i + 1, line, f"expected {ncols} columns, found {int(counts[i])}")
    expected = data_lines.size * ncols
    convert = int if np.issubdtype(dtype, np.integer) else float
    try:
        values = np.fromstring(text, dtype=dtype, sep=" ")  # sep=" " matches any whitespace
    except ValueError:
        values = None
    if values is None or values.size != expected:
        raise _first_bad_token(path, text, data_lines, kind, convert)
    if np.issubdtype(dtype, np.integer):
        _check_int_range(path, text, data_lines, values, dtype)
    return values.reshape(-1, ncols), data_lines


def _check_int_range(path, text: str, data_lines, values: np.ndarray, dtype) -> None:
    """Raises for integers outside ``dtype``'s range, which np.fromstring silently clamps.

    Only a value at the edge of the range can be a clamped one, so files without such values
    (all real ones) skip the slow pass.
    """
    info = np.iinfo(dtype)
    if not ((values == info.max).any() or (values == info.min).any()):
        return
    lines = text.split("\n")
    for i in data_lines:
        for tok in lines[i].split():
            if not info.min <= int(tok) <= info.max:
                raise _line_error(path, int(i) + 1, lines[i],
                                  f"{tok!r} is outside the {np.dtype(dtype).name} range")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _header_columns(path, lineno: int, line: str, names: tuple) -> dict:
    """Column index of each role (``src``, ``dst``, optionally ``t``) named by a header."""
    roles = {}
    for col, name in enumerate(names):
        for role, options in _HEADER_NAMES.items():
            if name in options:
                if role in roles:
                    raise _line_error(path, lineno, line, f"the header names two {role} columns "
                                      f"({names[roles[role]]!r} and {name!r})")
                roles[role] = col
    if "src" not in roles or "dst" not in roles:
        raise _line_error(path, lineno, line,
                          "expected numbers or a header naming the source and destination "
                          "columns (src/source/u, dst/destination/i) and optionally the time "
                          "(t/ts/time/timestamp), e.g. 'src,dst,t' or DyGLib's "
                          "',u,i,ts,label,idx'")
    return roles


def _whole_numbers(path, text: str, data_lines, table, col: int, what: str) -> np.ndarray:
    """Column ``col`` as int64; raises naming the line of the first value that is not whole."""
    values = table[:, col]
    if values.dtype == np.int64:
        return values.copy()
    bad = ~(np.isfinite(values) & (values == np.round(values)) & (np.abs(values) <= 2.0**53))
    if bad.any():
        i = int(data_lines[int(np.argmax(bad))])
        line = text.split("\n")[i]
        raise _line_error(path, i + 1, line,
                          f"{what} {line.split()[col]!r} is not a whole number")
    return values.astype(np.int64)


def parse_edge_list(path, columns: int | None = None) -> EdgeList:
    """Parse an edge list: ``src dst t`` (temporal) or ``src dst`` (static) per line.

    Plain or ``.gz``; ``#`` / ``%`` comment lines and blank lines are skipped; tabs, spaces or
    commas (when the first line has one) separate the values. Self-loops and repeated edges are
    kept as they are (graph construction dedupes). The first line may be a header naming the
    columns: the source (``src``, ``source``, ``u``, ...), the destination (``dst``,
    ``destination``, ``i``, ...) and optionally the time (``t``, ``ts``, ``time``,
    ``timestamp``); other columns are read as numbers and dropped. With a header, values may be
    written as decimals (DyGLib's ``ml_<name>.csv`` has ``ts`` like ``36.0``) but ids and times
    must be whole numbers.

    Args:
      path: file path.
      columns: 2 or 3 to require a column count (with a header: 2 drops the time, 3 requires
        it); None detects it from the first data line.

    Returns:
      EdgeList with the file's own (not remapped) ids; ``header`` holds the header's names.

    Raises:
      FileNotFoundError: missing file.
      ValueError: empty file, NUL bytes, a header naming no source / destination column, a
        line with the wrong number of columns or a non-integer value (names the file, the
        1-based line number and shows the line).
    """
    if columns not in (None, 2, 3):
        raise ValueError(f"columns must be None, 2 or 3, got {columns!r}")
    text = _blank_comments(read_text(path))
    first = re.search(r"\S", text)
    if first is None:
        raise ValueError(f"{path}: empty file (no data lines)")
    lineno, line = _line_of(text, first.start())
    comma = "," in line
    fields = [f.strip() for f in (line.split(",") if comma else line.split())]
    if not any(f and not _is_number(f) for f in fields):
        if comma:
            text = text.replace(",", " ")
        table, data_lines = _parse_table(path, text, columns, np.int64, "an integer")
        if table.shape[1] not in (2, 3):
            i = int(data_lines[0])
            raise _line_error(path, i + 1, text.split("\n")[i], "expected 2 (src dst) or 3 "
                              f"(src dst time) columns, found {table.shape[1]}")
        times = table[:, 2].copy() if table.shape[1] == 3 else None
        return EdgeList(table[:, 0].copy(), table[:, 1].copy(), times)

    names = tuple(f.strip("\"'").strip().lower() for f in fields)
    roles = _header_columns(path, lineno, line, names)
    if columns == 3 and "t" not in roles:
        raise _line_error(path, lineno, line, "expected a time column (t, ts, time or "
                          "timestamp) in the header")
    # Blank the header, keeping the line numbers of the file.
    start = text.rfind("\n", 0, first.start()) + 1
    stop = text.find("\n", first.start())
    body = text[:start] + ("" if stop < 0 else text[stop:])
    if comma:
        body = body.replace(",", " ")
    decimals = re.search(r"[.eEnN]", body) is not None  # decimals, exponents, nan / inf
    dtype, kind = (np.float64, "a number") if decimals else (np.int64, "an integer")
    table, data_lines = _parse_table(path, body, len(names), dtype, kind)
    src = _whole_numbers(path, body, data_lines, table, roles["src"], "node id")
    dst = _whole_numbers(path, body, data_lines, table, roles["dst"], "node id")
    times = None
    if "t" in roles and columns != 2:
        times = _whole_numbers(path, body, data_lines, table, roles["t"], "time")
    return EdgeList(src, dst, times, names)


def parse_node_labels(path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a ``node label`` file (two integers a line).

    Args:
      path: file path (plain or ``.gz``).

    Returns:
      (node ids [M] int64, labels [M] int64) in file order.

    Raises:
      FileNotFoundError / ValueError as for :func:`parse_edge_list`.
    """
    text = _blank_comments(read_text(path))
    table, _ = _parse_table(path, text, 2, np.int64, "an integer")
    return table[:, 0].copy(), table[:, 1].copy()


def parse_letter_labels(path) -> list[str]:
    """Parse a file holding one label token (e.g. a letter ``K``) per line.

    Args:
      path: file path.

    Returns:
      The labels as a list of strings, one per non-blank line.

    Raises:
      ValueError: empty file, NUL bytes, or a line holding more than one token.
    """
    text = read_text(path)
    labels = []
    for i, line in enumerate(text.split("\n")):
        toks = line.replace(",", " ").split()
        if not toks:
            continue
        if len(toks) != 1:
            raise _line_error(path, i + 1, line, f"expected one label, found {len(toks)} tokens")
        labels.append(toks[0])
    if not labels:
        raise ValueError(f"{path}: empty file (no labels)")
    return labels


def parse_dense_adjacency(path) -> np.ndarray:
    """Parse a dense adjacency matrix: N lines of N numbers, comma or whitespace separated.

    Args:
      path: file path (no header row).

    Returns:
      [N, N] float64 matrix of (weighted) counts.

    Raises:
      ValueError: empty file, ragged rows, non-numeric values or a non-square matrix.
    """
    text = read_text(path).replace(",", " ")
    table, data_lines = _parse_table(path, text, None, np.float64, "a number")
    if table.shape[0] != table.shape[1]:
        raise ValueError(f"{path}: adjacency matrix must be square, got {table.shape[0]} rows "
                         f"of {table.shape[1]} columns")
    return table


def remap_nodes(*id_arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map arbitrary integer ids onto 0..N-1 (sorted order of the original ids).

    Args:
      *id_arrays: arrays of original ids; the node set is their union.

    Returns:
      (node_ids [N] int64: original id of each new index, [each array remapped to int32]).
    """
    allids = np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in id_arrays])
    node_ids, inverse = np.unique(allids, return_inverse=True)
    out, pos = [], 0
    for a in id_arrays:
        n = np.asarray(a).size
        out.append(inverse[pos:pos + n].astype(np.int32).reshape(np.shape(a)))
        pos += n
    return node_ids, out


# The globals a Planetoid pickle may name: NumPy array reconstruction, SciPy CSR matrices,
# the defaultdict(list) of the graph and the byte-string helper of Python-3 protocol-2 pickles.
# (module, name) as written in the file; Python-2 names (``__builtin__``) included.
_PLANETOID_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("scipy.sparse.csr", "csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("collections", "defaultdict"),
    ("__builtin__", "list"),
    ("builtins", "list"),
    ("_codecs", "encode"),
})


class UnsafePickleError(ValueError):
    """A pickle names a global outside what its format needs (it could run code)."""


class _PlanetoidUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_PLANETOID_GLOBALS`.

    Unpickling calls whatever global the file names, so a crafted file runs arbitrary code
    under ``pickle.load``; refusing every other global is the restriction the ``pickle``
    documentation recommends ("Restricting Globals"). No maintained package does this for a
    fixed allow-list more simply than overriding ``find_class``.
    """

    def __init__(self, file, path):
        super().__init__(file, encoding="latin1")  # Python-2 numpy buffers decode as latin1
        self._path = path

    def find_class(self, module, name):
        if (module, name) not in _PLANETOID_GLOBALS:
            raise UnsafePickleError(
                f"{self._path}: refusing to load {module}.{name}: a Planetoid file holds only "
                "NumPy arrays, SciPy CSR matrices, lists and dicts (this file may be crafted "
                "to run code)")
        return super().find_class(module, name)


def load_pickle(path):
    """Unpickle a Planetoid file, allowing only the classes such files hold.

    Args:
      path: a ``ind.<name>.<part>`` file.

    Returns:
      The unpickled object (NumPy array, SciPy CSR matrix or dict of lists).

    Raises:
      FileNotFoundError: the file does not exist.
      UnsafePickleError: the file names any other global (nothing of it is run).
      ValueError: the file is not a readable pickle.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    head = path.read_bytes()[:2]
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            # The pickles name scipy's old private module paths; scipy warns but loads them.
            warnings.simplefilter("ignore", DeprecationWarning)
            return _PlanetoidUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # pickle raises many types on corrupt input
        raise ValueError(f"{path}: not a readable Planetoid pickle ({type(err).__name__}: "
                         f"{err}; starts with {head!r})") from err


def _dense(x) -> np.ndarray:
    return np.asarray(x.todense() if hasattr(x, "todense") else x, dtype=np.float32)


def load_planetoid(folder, name: str) -> PlanetoidData:
    """Load ``ind.{name}.*`` Planetoid files with the standard split.

    Train = the first 20 nodes per class (``range(len(y))``), val = the next 500, test =
    ``test.index``. The test rows are reordered to their graph positions; CiteSeer's isolated
    nodes that have no test row get zero features and label 0, as in the reference code.

    Args:
      folder: directory holding the ``ind.{name}.{x,y,tx,ty,allx,ally,graph,test.index}`` files.
      name: ``"cora"``, ``"citeseer"`` (or ``"pubmed"``).

    Returns:
      PlanetoidData.

    Raises:
      FileNotFoundError: a file is missing. ValueError: a file is malformed.
    """
    folder = pathlib.Path(folder)
    parts = {k: load_pickle(folder / f"ind.{name}.{k}")
             for k in ("x", "y", "tx", "ty", "allx", "ally", "graph")}
    for k, v in parts.items():
        # The allowed globals could still build a dict where an array belongs.
        if (k == "graph") != isinstance(v, dict):
            want = "a dict of adjacency lists" if k == "graph" else "an array or sparse matrix"
            raise ValueError(f"{folder / f'ind.{name}.{k}'}: holds a {type(v).__name__}, "
                             f"expected {want}")
    index_path = folder / f"ind.{name}.test.index"
    text = _blank_comments(read_text(index_path))
    test_index = _parse_table(index_path, text, 1, np.int64, "an integer")[0][:, 0]

    allx, ally = _dense(parts["allx"]), np.asarray(parts["ally"], dtype=np.float32)
    tx, ty = _dense(parts["tx"]), np.asarray(parts["ty"], dtype=np.float32)
    if tx.shape[0] != test_index.size:
        raise ValueError(f"{index_path}: {test_index.size} test indices but "
                         f"ind.{name}.tx has {tx.shape[0]} rows")
    lo, hi = int(test_index.min()), int(test_index.max())
    if hi - lo + 1 != test_index.size:
        # CiteSeer: some test ids are isolated nodes without a row; pad with zeros.
        tx_full = np.zeros((hi - lo + 1, tx.shape[1]), np.float32)
        ty_full = np.zeros((hi - lo + 1, ty.shape[1]), np.float32)
        # Same placement as the reference implementation (rows in sorted-id slots).
        tx_full[np.sort(test_index) - lo] = tx
        ty_full[np.sort(test_index) - lo] = ty
        tx, ty = tx_full, ty_full
    features = np.concatenate([allx, tx], axis=0)
    onehot = np.concatenate([ally, ty], axis=0)
    # The reference reorders rows so that test row j lands on node test_index[j].
    order = np.sort(test_index)
    features[test_index] = features[order]
    onehot[test_index] = onehot[order]
    labels = onehot.argmax(axis=1).astype(np.int32)

    graph = parts["graph"]
    num_nodes = features.shape[0]
    senders, receivers = [], []
    for node, nbrs in graph.items():
        senders.extend([node] * len(nbrs))
        receivers.extend(nbrs)
    senders = np.asarray(senders, dtype=np.int64)
    receivers = np.asarray(receivers, dtype=np.int64)
    if senders.size and max(senders.max(), receivers.max()) >= num_nodes:
        raise ValueError(f"{folder / f'ind.{name}.graph'}: node id "
                         f"{max(senders.max(), receivers.max())} >= number of nodes {num_nodes}")
    ny = np.asarray(parts["y"]).shape[0]
    return PlanetoidData(
        features=features,
        labels=labels,
        senders=senders,
        receivers=receivers,
        train=np.arange(ny, dtype=np.int32),
        val=np.arange(ny, ny + 500, dtype=np.int32),
        test=np.sort(test_index).astype(np.int32),
        num_classes=int(onehot.shape[1]),
    )
