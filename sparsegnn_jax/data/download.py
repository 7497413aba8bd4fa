"""Download the real datasets from their public addresses into a data root.

Usage::

    python -m sparsegnn_jax.data.download NAME [NAME ...] --root DIR [--base-url URL]

NAME is a dataset name of :func:`sparsegnn_jax.data.load` (or ``all``). Downloads resume from
a ``.part`` file with an HTTP Range request, are checked against known SHA-256 digests (an
unknown digest is printed instead) and are renamed into place only when complete and correct:
the length the server announced, gzip integrity for ``.gz`` files (and a cap on the
decompressed size), then the digest. A download cut short keeps its ``.part`` to be resumed; a
corrupt one is removed. Exit status: 0 done, 1 the network or server failed (run again),
2 bad input or bad data (unknown name, checksum mismatch, corrupt gzip).
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import http.client
import os
import pathlib
import sys
import urllib.error
import urllib.request

import numpy as np
from tqdm.auto import tqdm

from ..files import atomic_write
from .datasets import ENV_VAR
from .digests import KNOWN_SHA256, sha256sum
from .parsers import DYGLIB_HEADER, CorruptGzipError, gunzip_chunks, parse_edge_list

__all__ = ["ChecksumError", "CorruptGzipError", "Source", "SOURCES", "fetch", "download",
           "sha256sum", "main"]

_SNAP = "https://snap.stanford.edu/data"
_PLANETOID = "https://github.com/kimiyoung/planetoid/raw/master/data"
_GRASPOLOGIC = ("https://github.com/graspologic-org/graspologic/raw/main/graspologic/"
                "datasets/drosophila")
_PREFIX_LINES = 50_000
# DyGLib's Enron and US Legis: DGB publishes them only inside one Zenodo archive (record
# 7213796), so each comes from a public copy of the very file, pinned to a commit; the file
# derived from it is checked against the published conversion's digest.
_ENRON = ("https://raw.githubusercontent.com/ComplexData-MILA/TGX/"
          "8076211960947d9ecb694cdd8d09f057474d2dfb/data/ml_enron.csv")
_USLEGIS = ("https://raw.githubusercontent.com/hisanor013/SLMI2/"
            "2e31355327f02a890d54dd2ac639646334cbfbd8/data/USLegis/USLegis.csv")


class ChecksumError(ValueError):
    """A downloaded or derived file does not have the expected SHA-256 digest."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One file to fetch, and optionally a file derived from it.

    Attributes:
      url: public address of the original.
      path: where the download goes, relative to the data root.
      derive: None, ``"gunzip"`` (decompress to ``target``), ``"head"`` (the first
        ``_PREFIX_LINES`` lines of the gzipped download, without the last newline, to
        ``target``) or ``"events"`` (a CSV edge list with a header to gzipped ``src dst time``
        lines: see :func:`_write_events`).
      target: relative path of the derived file.
    """

    url: str
    path: str
    derive: str | None = None
    target: str | None = None

    @property
    def final(self) -> str:
        """Relative path of the file the loader reads."""
        return self.target or self.path


def _planetoid(name: str) -> list[Source]:
    return [Source(f"{_PLANETOID}/ind.{name}.{k}", f"planetoid/ind.{name}.{k}")
            for k in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")]


def _drosophila(side: str) -> list[Source]:
    return [Source(f"{_GRASPOLOGIC}/{side}_{k}.csv", f"drosophila/{side}_{k}.csv")
            for k in ("adjacency", "cell_labels")]


SOURCES: dict[str, list[Source]] = {
    "email-eu-temporal": [
        Source(f"{_SNAP}/email-Eu-core-temporal.txt.gz",
               "email_eu_core_temporal/email-Eu-core-temporal.txt.gz")],
    "email-eu": [
        Source(f"{_SNAP}/email-Eu-core.txt.gz", "email_eu_core/email-Eu-core.txt.gz",
               "gunzip", "email_eu_core/email-Eu-core.txt"),
        Source(f"{_SNAP}/email-Eu-core-department-labels.txt.gz",
               "email_eu_core/email-Eu-core-department-labels.txt.gz",
               "gunzip", "email_eu_core/email-Eu-core-department-labels.txt")],
    "stackoverflow-prefix": [
        Source(f"{_SNAP}/sx-stackoverflow-a2q.txt.gz",
               "stackoverflow_a2q_prefix/sx-stackoverflow-a2q.txt.gz",
               "head", "stackoverflow_a2q_prefix/sx-stackoverflow-a2q.first50k.txt")],
    "cora": _planetoid("cora"),
    "citeseer": _planetoid("citeseer"),
    "drosophila-left": _drosophila("left"),
    "drosophila-right": _drosophila("right"),
    "uci": [Source(f"{_SNAP}/CollegeMsg.txt.gz", "snap_collegemsg/CollegeMsg.txt.gz")],
    "enron": [Source(_ENRON, "dyglib_enron/ml_enron.csv", "events",
                     "dyglib_enron/enron.txt.gz")],
    "uslegis": [Source(_USLEGIS, "dyglib_uslegis/USLegis.csv", "events",
                       "dyglib_uslegis/uslegis.txt.gz")],
}


def _is_good(path: pathlib.Path, sha256: str | None) -> bool:
    """Whether a finished file exists with the expected digest (any digest when unknown)."""
    return path.is_file() and (sha256 is None or sha256sum(path) == sha256)


def _verify(path: pathlib.Path, sha256: str | None, label: str, log) -> None:
    """Check a finished file's digest; on a mismatch remove it and raise ChecksumError."""
    digest = sha256sum(path)
    if sha256 is None:
        log(f"sha256 {digest}  {label} (no known digest to check against)")
        return
    if digest != sha256:
        path.unlink(missing_ok=True)
        raise ChecksumError(f"{label}: sha256 mismatch: expected {sha256}, got {digest}; "
                            f"the file was removed, run the command again to retry")


def _check_gzip(part: pathlib.Path, url: str) -> None:
    """Decompresses a downloaded ``.gz`` once (capped); a corrupt one is removed.

    Raises:
      OSError: the stream ends early (``part`` is kept, to be resumed).
      CorruptGzipError: not valid gzip or too large once decompressed (``part`` is removed).
    """
    try:
        for _ in gunzip_chunks(part):
            pass
    except CorruptGzipError as err:
        reason = str(err).removeprefix(f"{part}: ")
        if err.truncated:
            raise OSError(f"download of {url} is incomplete ({reason}); run again to resume "
                          f"from {part}, or delete it to start over") from err
        part.unlink(missing_ok=True)
        raise CorruptGzipError(f"{url}: {reason}; the download was removed") from err


def _receive(response, part: pathlib.Path, offset: int, url: str, label: str,
             progress: bool) -> None:
    """Appends (or writes, ``offset`` 0) the response body to ``part``; checks its length.

    Raises:
      OSError: the connection broke or fewer bytes came than the server announced (``part``
        keeps what arrived, to be resumed).
    """
    length = response.headers.get("Content-Length")
    expected = int(length) if length is not None else None
    received = 0
    with open(part, "ab" if offset else "wb") as out, tqdm(
            total=None if expected is None else offset + expected, initial=offset, unit="B",
            unit_scale=True, unit_divisor=1024, desc=label, disable=not progress,
            leave=False) as bar:
        try:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:  # IncompleteRead is no OSError
            raise OSError(f"download of {url} interrupted ({type(err).__name__}: {err}); "
                          f"run again to resume from {part}") from err
    if expected is not None and received < expected:
        raise OSError(f"download of {url} incomplete: got {received} of {expected} bytes; "
                      f"run again to resume from {part}")


def fetch(url: str, dest, sha256: str | None = None, progress: bool = True,
          timeout: float = 60.0, log=print) -> pathlib.Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial download.

    An existing ``dest`` with the right digest (or any ``dest`` when no digest is known) is
    kept. A ``.part`` file is continued with an HTTP Range request; a server that ignores the
    Range header makes the download start over. The finished file is checked - length against
    the server's Content-Length, gzip integrity and decompressed size for ``.gz`` names, the
    digest - and only then renamed onto ``dest`` (atomic on one file system). This is not
    :func:`atomic_write`: its temp file is deleted on failure, while ``dest.part`` must survive
    an interrupted download to be resumed.

    Args:
      url: address to fetch (http, https or file).
      dest: destination path.
      sha256: expected hex digest, or None to print the computed one.
      progress: show a tqdm progress bar.
      timeout: socket timeout in seconds.
      log: function used for messages.

    Returns:
      ``dest`` as a Path.

    Raises:
      ChecksumError: the download's digest differs (the ``.part`` file is removed).
      CorruptGzipError: a ``.gz`` download is not valid gzip or decompresses to too much (the
        ``.part`` file is removed).
      OSError: the server or network failed, or the download is cut short (message names the
        URL; the ``.part`` file is kept for the next attempt).
    """
    dest = pathlib.Path(dest)
    if _is_good(dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "sparsegnn_jax-downloader"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Range not satisfiable: the partial file already holds the whole download.
            response = None
        else:
            raise OSError(f"could not download {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise OSError(f"could not download {url}: {getattr(err, 'reason', err)}") from err
    if response is not None:
        with response:
            if offset and getattr(response, "status", 200) != 206:
                offset = 0  # the server sent the whole file: start over
            _receive(response, part, offset, url, dest.name, progress)
    if dest.suffix == ".gz":
        _check_gzip(part, url)
    _verify(part, sha256, f"{url} -> {dest}", log)
    os.replace(part, dest)
    return dest


def _write_events(src: pathlib.Path, out) -> None:
    """Writes an edge list CSV as the loaders' events file, byte for byte as published.

    ``src dst time`` lines in time order (a stable sort: ties keep the file's order, which is
    DyGLib's), DyGLib's 1-based ``ml_`` ids made 0-based (other files keep their ids), gzip
    level 9 with neither a name nor a time stamp in its header.
    """
    edges = parse_edge_list(src, columns=3)
    shift = 1 if edges.header == DYGLIB_HEADER else 0
    order = np.argsort(edges.times, kind="stable")
    lines = zip((edges.src[order] - shift).tolist(), (edges.dst[order] - shift).tolist(),
                edges.times[order].tolist())
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=out, mtime=0) as gz:
        gz.write("".join(f"{a} {b} {t}\n" for a, b, t in lines).encode())


def _derive(source: Source, root: pathlib.Path, log) -> pathlib.Path:
    """Write the derived file (decompressed, or the line prefix) atomically and check it.

    Raises:
      CorruptGzipError: the download does not decompress (it is removed, so that the next
        run fetches it again) or decompresses to too much.
      ChecksumError: the derived file is not the published one.
    """
    src, target = root / source.path, root / source.target
    expected = KNOWN_SHA256.get(source.target)
    if _is_good(target, expected):
        return target

    def write(out):
        if source.derive == "events":
            _write_events(src, out)
            return
        lines_left = _PREFIX_LINES
        for chunk in gunzip_chunks(src):
            if source.derive == "head" and chunk.count(b"\n") >= lines_left:
                end = -1
                for _ in range(lines_left):
                    end = chunk.index(b"\n", end + 1)
                out.write(chunk[:end])  # the published prefix file has no final newline
                return
            lines_left -= chunk.count(b"\n")
            out.write(chunk)

    try:
        return atomic_write(target, write, mode="wb",
                            verify=lambda tmp: _verify(tmp, expected,
                                                       f"{target} (from {src.name})", log))
    except CorruptGzipError as err:
        src.unlink(missing_ok=True)
        raise CorruptGzipError(f"could not decompress {src} ({err}); it was removed, run "
                               "again to download it anew") from err
    except ValueError as err:
        if source.derive != "events" or isinstance(err, ChecksumError):
            raise
        src.unlink(missing_ok=True)  # not the edge list it should be: fetch it anew
        raise ValueError(f"{err}; the download was removed, run again to fetch it "
                         "anew") from err


def download(name: str, root=None, base_url: str | None = None, progress: bool = True,
             log=print) -> list[pathlib.Path]:
    """Download one named dataset into ``root`` (the layout :func:`load` reads).

    Args:
      name: a dataset name of :data:`SOURCES`.
      root: data root; default ``$SPARSEGNN_DATA``.
      base_url: fetch every file from ``BASE_URL/<original file name>`` instead (a mirror).
      progress: show progress bars.
      log: function used for messages.

    Returns:
      Paths of the dataset's files as the loader reads them.

    Raises:
      ValueError: unknown name or no root. ChecksumError / CorruptGzipError / OSError: as
        :func:`fetch` and the derivation of decompressed files.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; downloadable: {', '.join(sorted(SOURCES))} "
                         "(the synthetic datasets need no download)")
    if root is None:
        root = os.environ.get(ENV_VAR) or None
    if root is None:
        raise ValueError(f"no data root: pass --root DIR or set {ENV_VAR}")
    root = pathlib.Path(root).expanduser()
    out = []
    for source in SOURCES[name]:
        url = source.url
        if base_url:
            url = base_url.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
        final = root / source.final
        if source.derive and _is_good(final, KNOWN_SHA256.get(source.final)):
            out.append(final)  # already derived: no need for the (possibly large) original
            continue
        fetch(url, root / source.path, KNOWN_SHA256.get(source.path), progress=progress, log=log)
        out.append(_derive(source, root, log) if source.derive else root / source.path)
    return out


def main(argv=None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sparsegnn_jax.data.download",
        description="Download real graph datasets into a data root (the folder that "
                    f"{ENV_VAR} names).")
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help=f"dataset(s): {', '.join(sorted(SOURCES))}, or all")
    parser.add_argument("--root", default=os.environ.get(ENV_VAR),
                        help=f"data root (default: ${ENV_VAR})")
    parser.add_argument("--base-url", default=None,
                        help="fetch files from BASE_URL/<file name> instead (a mirror)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    names = sorted(SOURCES) if "all" in args.names else args.names
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(sorted(SOURCES))} or all")
    if not args.root:
        parser.error(f"no data root: pass --root DIR or set {ENV_VAR}")
    for name in names:
        try:
            paths = download(name, args.root, args.base_url, progress=not args.quiet)
        except ValueError as err:  # bad data: checksum, corrupt gzip
            print(f"error: {name}: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # network, server, disk: running again may help
            print(f"error: {name}: {err}", file=sys.stderr)
            return 1
        print(f"{name}: ok ({len(paths)} file{'s' if len(paths) != 1 else ''} in {args.root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
