"""Atomic file writes: the old file survives any failure and no temp file is left behind."""
import math
import os
import stat

import pytest

from sparsegnn_jax import files, sweeps


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_creates_parents_and_writes_text_and_bytes(tmp_path):
    text = files.atomic_write(tmp_path / "a/b/out.txt", lambda f: f.write("héllo\n"))
    assert text == tmp_path / "a/b/out.txt"
    assert text.read_bytes() == "héllo\n".encode("utf-8")
    blob = files.atomic_write(tmp_path / "out.bin", lambda f: f.write(b"\0\1\2"), mode="wb")
    assert blob.read_bytes() == b"\0\1\2"
    assert _names(tmp_path) == ["a", "out.bin"] and _names(tmp_path / "a/b") == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_failing_writer_keeps_old_file_and_removes_temp(tmp_path, error):
    target = tmp_path / "results.json"
    target.write_text("old")

    def write(f):
        f.write("half of the new cont")
        raise error

    with pytest.raises(type(error)):
        files.atomic_write(target, write)
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["results.json"]


def test_failing_writer_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError):
        files.atomic_write(tmp_path / "new.txt", lambda f: 1 / 0)
    assert _names(tmp_path) == []


def test_failing_verify_keeps_old_file_and_sees_finished_temp(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    seen = []

    def verify(tmp):
        seen.append((tmp.parent, tmp.read_bytes()))
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum mismatch"):
        files.atomic_write(target, lambda f: f.write(b"new"), mode="wb", verify=verify)
    assert seen == [(tmp_path, b"new")]
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["data.bin"]


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        files.atomic_write(tmp_path / "x", lambda f: None, mode="a")
    assert _names(tmp_path) == []


def test_write_json_atomic_writes_sorted_indented_json(tmp_path):
    obj = {"b": [1, 2.5, None], "a": {"y": math.nan, "x": float("inf")}}
    path = files.write_json_atomic(tmp_path / "ours/run.json", obj)
    assert path.read_text() == (
        '{\n  "a": {\n    "x": Infinity,\n    "y": NaN\n  },\n'
        '  "b": [\n    1,\n    2.5,\n    null\n  ]\n}')


def test_write_json_atomic_keeps_old_file_when_object_is_not_serialisable(tmp_path):
    target = files.write_json_atomic(tmp_path / "run.json", {"ok": 1})
    with pytest.raises(TypeError):
        files.write_json_atomic(target, {"bad": object()})
    assert target.read_text() == '{\n  "ok": 1\n}'
    assert _names(tmp_path) == ["run.json"]


def test_write_csv_atomic_quotes_and_round_trips(tmp_path):
    rows = [{"dataset": 'with, comma and "quotes"\nand a newline', "seed": 1},
            {"dataset": "plain", "seed": ""}]
    files.write_csv_atomic(tmp_path / "ours.csv", rows, ["dataset", "seed"])
    assert (tmp_path / "ours.csv").read_bytes() == (
        b'dataset,seed\r\n"with, comma and ""quotes""\nand a newline",1\r\nplain,\r\n')
    assert sweeps.read_csv(tmp_path / "ours.csv")[0]["dataset"] == rows[0]["dataset"]


def test_write_csv_atomic_keeps_old_file_on_unknown_field(tmp_path):
    target = files.write_csv_atomic(tmp_path / "r.csv", [{"a": 1}], ["a"])
    with pytest.raises(ValueError):
        files.write_csv_atomic(target, [{"a": 2}, {"b": 3}], ["a"])
    assert target.read_bytes() == b"a\r\n1\r\n"
    assert _names(tmp_path) == ["r.csv"]


def test_written_file_has_the_default_permissions(tmp_path):
    """Like a plain open(): a temp file's private 0600 mode must not reach the target."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    ours = files.atomic_write(tmp_path / "ours.txt", lambda f: f.write("x"))
    assert ours.stat().st_mode == plain.stat().st_mode


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_file_mode_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = files.write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_output_dir_creates_and_refuses_unusable_folders(tmp_path):
    assert files.output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"--out='.*f' is not a usable folder: File exists"):
        files.output_dir(a_file)
    with pytest.raises(ValueError, match=r"--ckpt='.*f/sub' is not a usable folder: .*f is a file"):
        files.check_writable_dir(a_file / "sub", "--ckpt")
    assert not (tmp_path / "new").exists()
    assert files.check_writable_dir(tmp_path / "new" / "deeper", "--ckpt")
    assert not (tmp_path / "new").exists()  # checked, not created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_output_dir_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"--out='.*ro' is not writable"):
            files.output_dir(ro)
        with pytest.raises(ValueError, match=r"--out='.*ro/sub' is not a usable folder"):
            files.output_dir(ro / "sub")
    finally:
        ro.chmod(0o755)
