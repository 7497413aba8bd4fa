"""Tests of the downloader against a local HTTP server on 127.0.0.1 (never the network)."""
import contextlib
import gzip
import hashlib
import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import sparsegnn_jax
from sparsegnn_jax import data
from sparsegnn_jax.data import download as dl
from sparsegnn_jax.data import parsers as dl_parsers


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.folder``; honours ``Range: bytes=N-`` unless told not to."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = srv.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "not found")
            return
        body = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        if srv.send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # cut_at: the connection drops after that many bytes of the body.
        self.wfile.write(body if srv.cut_at is None else body[:srv.cut_at])

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(folder, honour_range=True, cut_at=None, send_length=True):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.folder = pathlib.Path(folder)
    server.honour_range = honour_range
    server.cut_at = cut_at
    server.send_length = send_length
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _sha(b):
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def payload():
    return np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def test_fetch_complete_download(tmp_path, payload):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    with _serve(tmp_path / "srv") as (server, url):
        out = dl.fetch(f"{url}/blob.bin", tmp_path / "out/blob.bin", _sha(payload),
                       progress=False)
        assert out.read_bytes() == payload
        assert not (tmp_path / "out/blob.bin.part").exists()
        assert server.requests == [("/blob.bin", None)]
        # An existing file with the right digest is not fetched again.
        dl.fetch(f"{url}/blob.bin", out, _sha(payload), progress=False)
        assert len(server.requests) == 1


def test_fetch_resumes_from_part_file(tmp_path, payload):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(payload[:123_456])
    with _serve(tmp_path / "srv") as (server, url):
        dl.fetch(f"{url}/blob.bin", dest, _sha(payload), progress=True)
    assert server.requests == [("/blob.bin", "bytes=123456-")]
    assert dest.read_bytes() == payload
    assert not (tmp_path / "blob.bin.part").exists()


def test_fetch_restarts_when_server_ignores_range(tmp_path, payload):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    (tmp_path / "blob.bin.part").write_bytes(b"garbage that must not be kept")
    with _serve(tmp_path / "srv", honour_range=False) as (server, url):
        dl.fetch(f"{url}/blob.bin", tmp_path / "blob.bin", _sha(payload), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == payload


def test_fetch_part_already_complete(tmp_path, payload):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    (tmp_path / "blob.bin.part").write_bytes(payload)
    with _serve(tmp_path / "srv") as (server, url):
        dl.fetch(f"{url}/blob.bin", tmp_path / "blob.bin", _sha(payload), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == payload


def test_fetch_checksum_mismatch_removes_file(tmp_path, payload):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    dest = tmp_path / "blob.bin"
    with _serve(tmp_path / "srv") as (server, url):
        with pytest.raises(dl.ChecksumError) as info:
            dl.fetch(f"{url}/blob.bin", dest, "0" * 64, progress=False)
    msg = str(info.value)
    assert "sha256 mismatch" in msg and "0" * 64 in msg and _sha(payload) in msg
    assert "blob.bin" in msg
    assert not dest.exists() and not (tmp_path / "blob.bin.part").exists()


def test_fetch_unknown_digest_is_printed(tmp_path, payload):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    messages = []
    with _serve(tmp_path / "srv") as (server, url):
        dl.fetch(f"{url}/blob.bin", tmp_path / "blob.bin", None, progress=False,
                 log=messages.append)
    assert any(_sha(payload) in m and "no known digest" in m for m in messages)


def test_fetch_http_error_names_url(tmp_path):
    (tmp_path / "srv").mkdir()
    with _serve(tmp_path / "srv") as (server, url):
        with pytest.raises(OSError, match=r"could not download .*/missing\.bin: HTTP 404"):
            dl.fetch(f"{url}/missing.bin", tmp_path / "x", None, progress=False)


def test_sources_cover_loader_files():
    for name, sources in dl.SOURCES.items():
        assert sorted(s.final for s in sources) == sorted(data.DATASET_FILES[name])
    assert set(dl.SOURCES) == set(data.DATASET_FILES)


def test_known_digests_match_shared_sums(data_root):
    sums = {}
    for line in (data_root / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path.removeprefix("./")] = digest
    for path, digest in dl.KNOWN_SHA256.items():
        assert sums[path] == digest, path


def test_download_unknown_name_and_no_root(monkeypatch):
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*cora"):
        dl.download("nope", "/tmp")
    monkeypatch.delenv("SPARSEGNN_DATA", raising=False)
    with pytest.raises(ValueError, match="--root DIR or set SPARSEGNN_DATA"):
        dl.download("cora")


def test_cli_checksum_mismatch(tmp_path, capsys):
    """A corrupted mirror file: clean error message, exit status 2, nothing left behind."""
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "left_adjacency.csv").write_text("0 1\n1 0\n")
    (srv / "left_cell_labels.csv").write_text("K\nP\n")
    root = tmp_path / "root"
    with _serve(srv) as (server, url):
        status = dl.main(["drosophila-left", "--root", str(root), "--base-url", url, "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "error: drosophila-left:" in err and "sha256 mismatch" in err
    assert "Traceback" not in err
    assert not list((root / "drosophila").iterdir())


def test_cli_unknown_name(capsys):
    with pytest.raises(SystemExit) as info:
        dl.main(["nope", "--root", "/tmp"])
    assert info.value.code == 2
    assert "unknown dataset(s) nope" in capsys.readouterr().err


def _mirror(data_root, folder):
    """A mirror folder as the public servers lay files out (SNAP files gzipped)."""
    folder.mkdir()
    for p in (data_root / "planetoid").glob("ind.*"):
        shutil.copy(p, folder / p.name)
    for p in (data_root / "drosophila").glob("*.csv"):
        shutil.copy(p, folder / p.name)
    shutil.copy(data_root / "email_eu_core_temporal/email-Eu-core-temporal.txt.gz", folder)
    for p in (data_root / "email_eu_core").glob("*.txt"):
        (folder / (p.name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
    # The full a2q file is much longer than the prefix: append later lines.
    prefix = (data_root / "stackoverflow_a2q_prefix/sx-stackoverflow-a2q.first50k.txt")
    extra = "".join(f"{i} {i + 1} {1300000000 + i}\n" for i in range(5000)).encode()
    (folder / "sx-stackoverflow-a2q.txt.gz").write_bytes(
        gzip.compress(prefix.read_bytes() + b"\n" + extra))
    shutil.copy(data_root / "snap_collegemsg/CollegeMsg.txt.gz", folder)
    # The benchmarks' CSVs, rebuilt from the shared files (which the downloader rebuilds back).
    e = np.loadtxt(data_root / "dyglib_enron/enron.txt.gz", dtype=np.int64)
    (folder / "ml_enron.csv").write_text(",u,i,ts,label,idx\n" + "".join(
        f"{k},{u + 1},{i + 1},{float(t)},0,{k + 1}\n" for k, (u, i, t) in enumerate(e.tolist())))
    e = np.loadtxt(data_root / "dyglib_uslegis/uslegis.txt.gz", dtype=np.int64)
    (folder / "USLegis.csv").write_text("source,destination,timestamp,state_label,w\n" + "".join(
        f"{u},{i},{t},0,1\n" for u, i, t in e.tolist()))


def test_download_every_dataset_then_load(data_root, tmp_path):
    srv, root = tmp_path / "srv", tmp_path / "root"
    _mirror(data_root, srv)
    with _serve(srv) as (server, url):
        for name in dl.SOURCES:
            paths = dl.download(name, root, base_url=url, progress=False, log=lambda m: None)
            for p in paths:
                rel = p.relative_to(root).as_posix()
                assert (data_root / rel).read_bytes() == p.read_bytes(), rel
        n_requests = len(server.requests)
        # Everything is in place: a second run fetches nothing.
        for name in dl.SOURCES:
            dl.download(name, root, base_url=url, progress=False, log=lambda m: None)
        assert len(server.requests) == n_requests
    assert not list(root.rglob("*.part"))
    assert data.load("stackoverflow-prefix", root=root).num_edges == 50_000
    assert data.load("email-eu", root=root).num_classes == 42
    assert data.load("citeseer", root=root).num_nodes == 3327


def test_module_runs_as_script(data_root, tmp_path):
    srv, root = tmp_path / "srv", tmp_path / "root"
    srv.mkdir()
    for p in (data_root / "drosophila").glob("right_*.csv"):
        shutil.copy(p, srv / p.name)
    package_parent = pathlib.Path(sparsegnn_jax.__file__).parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(package_parent), os.environ.get("PYTHONPATH", "")]))
    with _serve(srv) as (server, url):
        proc = subprocess.run(
            [sys.executable, "-m", "sparsegnn_jax.data.download", "drosophila-right",
             "--root", str(root), "--base-url", url, "--quiet"],
            capture_output=True, text=True, env=env, timeout=120, cwd=package_parent)
    assert proc.returncode == 0, proc.stderr
    assert "drosophila-right: ok" in proc.stdout
    assert data.load("drosophila-right", root=root).num_nodes == 213


@pytest.mark.parametrize("gz_bytes, error, fragment, left", [
    # mtime=0: the same bytes in every process (pytest-xdist workers must collect equal ids)
    (gzip.compress(b"0 1\n1 2\n", mtime=0), dl.ChecksumError, "sha256 mismatch",
     ["email-Eu-core.txt.gz"]),
    (b"not gzip at all", dl.CorruptGzipError, "not a valid gzip file", []),
], ids=["valid-gzip-wrong-digest", "not-gzip"])
def test_derived_file_failure_leaves_no_partial_file(tmp_path, gz_bytes, error, fragment, left):
    """A wrong or undecodable download never becomes the derived file, and no temp file stays;
    an undecodable one is not kept either."""
    srv, root = tmp_path / "srv", tmp_path / "root"
    srv.mkdir()
    (srv / "email-Eu-core.txt.gz").write_bytes(gz_bytes)
    with _serve(srv) as (server, url):
        with pytest.raises(error, match=fragment):
            dl.download("email-eu", root, base_url=url, progress=False, log=lambda m: None)
    assert sorted(p.name for p in (root / "email_eu_core").iterdir()) == left


# A gzip header, then bytes that are no deflate stream.
CORRUPT_GZIP = gzip.compress(b"0 1 2\n" * 100)[:10] + b"garbage" * 20


def test_cli_corrupt_gzip_is_one_error_line_and_leaves_nothing(tmp_path, capsys):
    srv, root = tmp_path / "srv", tmp_path / "root"
    srv.mkdir()
    (srv / "email-Eu-core-temporal.txt.gz").write_bytes(CORRUPT_GZIP)
    with _serve(srv) as (server, url):
        status = dl.main(["email-eu-temporal", "--root", str(root), "--base-url", url,
                          "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: email-eu-temporal: http://")
    assert "email-Eu-core-temporal.txt.gz: not a valid gzip file (Error -3" in err
    assert "the download was removed" in err
    assert list((root / "email_eu_core_temporal").iterdir()) == []


@pytest.mark.parametrize("sha256", [True, False], ids=["known-digest", "no-digest"])
def test_download_cut_short_is_kept_and_resumed(tmp_path, payload, sha256):
    """The server announces the full length but the connection drops halfway: the part is
    kept (not trusted, not deleted), and the next run fetches only the rest."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/blob.bin").write_bytes(payload)
    dest, part = tmp_path / "blob.bin", tmp_path / "blob.bin.part"
    digest = _sha(payload) if sha256 else None
    with _serve(tmp_path / "srv", cut_at=100_000) as (server, url):
        with pytest.raises(OSError, match=r"blob\.bin (interrupted|incomplete).*run again to "
                                          r"resume from .*blob\.bin\.part"):
            dl.fetch(f"{url}/blob.bin", dest, digest, progress=False, log=lambda m: None)
    assert not dest.exists()
    assert part.read_bytes() == payload[:100_000]
    with _serve(tmp_path / "srv") as (server, url):
        dl.fetch(f"{url}/blob.bin", dest, digest, progress=False, log=lambda m: None)
    assert server.requests == [("/blob.bin", "bytes=100000-")]
    assert dest.read_bytes() == payload and not part.exists()


def test_truncated_gzip_without_length_is_not_renamed_into_place(tmp_path):
    """No Content-Length to compare: gzip integrity catches the cut, before the rename."""
    whole = gzip.compress(np.random.default_rng(1).integers(0, 9, 50_000).tobytes())
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/edges.txt.gz").write_bytes(whole[:-100])
    dest = tmp_path / "edges.txt.gz"
    with _serve(tmp_path / "srv", send_length=False) as (server, url):
        with pytest.raises(OSError, match=r"incomplete .*cut short.*run again to resume"):
            dl.fetch(f"{url}/edges.txt.gz", dest, None, progress=False, log=lambda m: None)
    assert not dest.exists()
    assert (tmp_path / "edges.txt.gz.part").read_bytes() == whole[:-100]


def test_gzip_bomb_is_refused_before_it_is_written_out(tmp_path, monkeypatch):
    srv, root = tmp_path / "srv", tmp_path / "root"
    srv.mkdir()
    (srv / "email-Eu-core.txt.gz").write_bytes(gzip.compress(b"0 1\n" * 250_000))  # 1 MB
    monkeypatch.setattr(dl_parsers, "MAX_DECOMPRESSED_BYTES", 100_000)
    with _serve(srv) as (server, url):
        with pytest.raises(dl.CorruptGzipError, match="decompresses to more than 100000 bytes"):
            dl.download("email-eu", root, base_url=url, progress=False, log=lambda m: None)
    assert list((root / "email_eu_core").iterdir()) == []
