"""The experiment command lines: bad input, kill and resume, determinism, non-finite loss.

On bad input a command line prints one ``error:`` line and exits non-zero without a traceback.
Most of those cases call ``cli.main`` in-process (an exception escaping it is what would print a
traceback); a few run the scripts as subprocesses, exactly as a user does, and one valid but
unusual edge file (self-loops, repeated edges) trains end to end. Kill and resume, determinism and
the non-finite guard run real trainings of the scripts."""
from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import math
import os
import pathlib
import pickle
import random
import re
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest
from helpers import (
    REPO,
    SCRIPTS,
    TIMEOUT,
    cli_main,
    damage_checkpoint,
    run_script,
    script_command,
)

from sparsegnn_jax import checkpoint, cli, config, data, files, runs, tasks, train

# Edge files: name -> (bytes, the fragment the error must contain).
BAD_FILES = {
    "text_in_numeric_column": (b"1 2 100\n2 x 200\n3 1 300\n",
                               r"bad.txt: line 2: 'x' is not an integer: '2 x 200'"),
    "float_time": (b"1 2 1.5\n2 3 2\n3 1 3\n", r"line 1: '1.5' is not an integer"),
    "too_few_columns": (b"1 2 100\n2\n3 1 300\n", r"line 2: expected 3 columns, found 1: '2'"),
    "one_column": (b"1\n2\n3\n",
                   r"line 1: expected 2 \(src dst\) or 3 \(src dst time\) columns, found 1"),
    "five_columns": (b"1 2 3 4 5\n", r"expected 2 \(src dst\) or 3 \(src dst time\) columns, "
                                     r"found 5"),
    "nul_bytes": (b"1 2 100\n2 3\x00 200\n3 1 300\n", r"line 2: NUL byte in text file"),
    "empty": (b"", r"bad.txt: empty file \(no data lines\)"),
    "only_comments": (b"# src dst t\n\n", r"empty file \(no data lines\)"),
    "id_overflow": (b"99999999999999999999 2 100\n2 3 200\n",
                    r"line 1: '99999999999999999999' is outside the int64 range"),
    "one_node": (b"7 7 100\n", r"has 1 node: link prediction needs at least 2 nodes"),
    "one_node_many_loops": (b"7 7 1\n7 7 2\n7 7 3\n7 7 4\n7 7 5\n",
                            r"has 1 node: link prediction needs at least 2 nodes"),
    "self_loops_only": (b"1 1 1\n2 2 2\n3 3 3\n4 4 4\n5 5 5\n",
                        r"all 5 edges are self-loops: no link between two nodes"),
    "two_nodes": (b"1 2 1\n2 1 2\n1 2 3\n2 1 4\n1 1 5\n",
                  r"has 2 nodes: link prediction needs at least 3"),
    "three_edges": (b"1 2 100\n2 3 200\n3 1 300\n",
                    r"has 3 edges: too few to split chronologically .*\(the val part would be "
                    r"empty\); need at least 4 edges"),
}


def _main(task, argv, capsys):
    """Runs ``cli.main``; returns (exit code, stdout, stderr). argparse errors exit too."""
    return cli_main(task, argv, capsys)


def assert_one_error_line(err: str, fragment: str):
    """stderr holds exactly one line: ``error: ...`` matching ``fragment``."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert re.search(fragment, lines[0]), (fragment, lines[0])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGNN_CACHE", str(tmp_path / "walk-cache"))


# ----------------------------------------------------------------------------------------------
# Malformed edge files.


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_edge_file(case, tmp_path, capsys):
    content, fragment = BAD_FILES[case]
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    code, out, err = _main("link", [f"--dataset=file:{path}", "--epochs=1",
                                    f"--out={tmp_path / 'out'}", "--no-progress"], capsys)
    assert code == 2
    assert_one_error_line(err, fragment)
    assert out == ""


def test_bad_gzip_missing_file_and_folder(tmp_path, capsys):
    gz = tmp_path / "edges.txt.gz"
    gz.write_bytes(b"\x1f\x8b not really gzip")
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"1 2 3\n2 3 4\n")[:-6])  # truncated stream
    cases = [
        (f"file:{gz}", r"edges.txt.gz: not a valid gzip file"),
        (f"file:{broken}", r"broken.txt.gz: not a valid gzip file"),
        (f"file:{tmp_path / 'missing.txt'}", r"file not found: .*missing.txt"),
        (f"file:{tmp_path}", r"is a folder, not an edge-list file"),
        ("file:", r"dataset 'file:' names no file"),
    ]
    for dataset, fragment in cases:
        code, _, err = _main("link", [f"--dataset={dataset}", f"--out={tmp_path / 'out'}",
                                      "--no-progress"], capsys)
        assert code == 2, dataset
        assert_one_error_line(err, fragment)


def test_edge_file_for_node_classification_needs_labels(tmp_path, capsys):
    path = tmp_path / "edges.txt"
    path.write_text("1 2\n2 3\n3 1\n")
    code, _, err = _main("node", [f"--dataset=file:{path}", f"--out={tmp_path}",
                                  "--no-progress"], capsys)
    assert code == 2
    assert_one_error_line(err, r"has no node labels; node classification needs a labelled")


# ----------------------------------------------------------------------------------------------
# Invalid arguments.

INVALID_ARGS = [
    # (task, flags, exit code, fragment of the error line)
    ("node", ["--sparsity=1.0"], 2, r"--sparsity must be in \[0, 1\), got 1.0"),
    ("node", ["--sparsity=-0.1"], 2, r"--sparsity must be in \[0, 1\), got -0.1"),
    ("node", ["--sparsity=nan"], 2, r"--sparsity must be in \[0, 1\), got nan"),
    ("node", ["--update-every=0"], 2, r"--update-every must be positive, got 0"),
    ("link", ["--update-every=-5"], 2, r"--update-every must be positive, got -5"),
    ("node", ["--drop-fraction=0"], 2, r"--drop-fraction must be in \(0, 1\], got 0.0"),
    ("node", ["--drop-fraction=1.5"], 2, r"--drop-fraction must be in \(0, 1\], got 1.5"),
    ("node", ["--end-fraction=0"], 2, r"--end-fraction must be in \(0, 1\], got 0.0"),
    ("node", ["--epochs=0"], 2, r"--epochs must be positive, got 0"),
    ("node", ["--hidden=-1"], 2, r"--hidden must be positive, got -1"),
    ("link", ["--batch-size=0"], 2, r"--batch-size must be positive, got 0"),
    ("node", ["--checkpoint-every=-1"], 2, r"--checkpoint-every must be >= 0, got -1"),
    ("node", ["--seed=-1"], 2, r"--seed must be >= 0, got -1"),
    ("node", ["--dataset=nope"], 2, r"unknown dataset 'nope'; known: citeseer, cora, .*"
                                    r"synthetic-temporal, uci, uslegis, or file:PATH"),
    ("node", ["--dataset=cora", "--data-root=/nonexistent/sparsegnn"], 2,
     r"data root /nonexistent/sparsegnn is not a directory: .* python -m "
     r"sparsegnn_jax.data.download cora"),
    ("node", ["--distribution=nope"], 2,
     r"unknown (--distribution=|distribution )'nope'; known: uniform, uniform_dense_first, erk"),
    ("node", ["--dropout=1.5"], 2, r"dropout must be in \[0, 1\), got 1.5"),
]

ARGPARSE_ERRORS = [
    ("node", ["--method=foo"], r"argument --method: invalid choice: 'foo'"),
    ("node", ["--model=foo"], r"argument --model: invalid choice: 'foo'"),
    ("node", ["--optimizer=rmsprop"], r"argument --optimizer: invalid choice: 'rmsprop'"),
    ("link", ["--decoder=nope"], r"argument --decoder: invalid choice: 'nope'"),
    ("node", ["--lr=abc"], r"argument --lr: invalid float value: 'abc'"),
    ("node", ["--epochs=1.5"], r"argument --epochs: invalid int value: '1.5'"),
    ("node", ["--no-such-flag"], r"unrecognized arguments: --no-such-flag"),
]


@pytest.mark.parametrize("task,flags,code,fragment", INVALID_ARGS,
                         ids=[" ".join(c[1]) for c in INVALID_ARGS])
def test_invalid_argument(task, flags, code, fragment, tmp_path, capsys):
    # A later flag wins, so "--epochs=0" in ``flags`` overrides the short default.
    got, out, err = _main(task, ["--epochs=1", *flags, f"--out={tmp_path}", "--no-progress"],
                          capsys)
    assert got == code
    assert_one_error_line(err, fragment)
    assert not list(tmp_path.glob("*.json"))


def test_unknown_distribution_fails_before_loading_data(tmp_path, capsys, no_data_loading):
    code, _, err = _main("node", ["--distribution=nope", f"--out={tmp_path}", "--no-progress"],
                         capsys)
    assert code == 2
    assert_one_error_line(err, r"--distribution='nope'")


def test_out_of_memory_is_one_error_line(tmp_path, capsys, monkeypatch):
    def exhausted(cfg):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                         "allocate 25000000000 bytes.\nBufferAssignment ...")

    monkeypatch.setattr(runs, "run", exhausted)
    code, _, err = _main("link", [f"--out={tmp_path}", "--no-progress"], capsys)
    assert code == 2
    assert_one_error_line(err, r"out of memory \(RESOURCE_EXHAUSTED: Out of memory while "
                               r"trying to allocate 25000000000 bytes.\)")
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("task,flags,fragment", ARGPARSE_ERRORS,
                         ids=[" ".join(c[1]) for c in ARGPARSE_ERRORS])
def test_argparse_rejects_with_usage(task, flags, fragment, tmp_path, capsys):
    got, _, err = _main(task, flags + [f"--out={tmp_path}"], capsys)
    assert got == 2
    assert "Traceback" not in err
    assert err.startswith("usage: experiments/")
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"experiments/{SCRIPTS[task]}: error: ")
    assert re.search(fragment, last), last


def test_out_or_checkpoint_dir_that_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    code, _, err = _main("node", [f"--out={a_file}", "--no-progress"], capsys)
    assert code == 2
    assert_one_error_line(err, r"--out='.*a_file' is not a usable folder: File exists")
    code, _, err = _main("node", [f"--out={tmp_path}", f"--checkpoint-dir={a_file}",
                                  "--checkpoint-every=1", "--no-progress"], capsys)
    assert code == 2
    assert_one_error_line(err, r"--checkpoint-dir='.*a_file' is a file, not a folder")
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("flag", ["--out", "--checkpoint-dir"])
def test_unwritable_output_folder_fails_before_loading_data(flag, tmp_path, capsys,
                                                            monkeypatch, no_data_loading):
    folder = tmp_path / "results"
    folder.mkdir()
    # Root writes through a chmod 555 folder, so os.access stands for a read-only one here.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: (
        pathlib.Path(path) != folder and real_access(path, mode)))
    flags = ([f"--out={folder}"] if flag == "--out" else
             [f"--out={tmp_path}", f"--checkpoint-dir={folder}", "--checkpoint-every=1"])
    code, out, err = _main("node", flags + ["--no-progress"], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, rf"^error: {flag}='.*results' is not writable$")


def test_long_dataset_path_gives_a_short_distinct_run_name(tmp_path):
    deep = tmp_path.joinpath(*["d" * 100] * 3)
    names = [cli.run_name("link", config.RunConfig(dataset=f"file:{deep}/edges{i}.txt"))
             for i in (1, 2)]
    assert names[0] != names[1]
    assert all(len(n) == len("link__gcn_rigl_s0.9_seed0") + 60 for n in names)
    assert names[0].startswith("link_file__") and names[0].endswith(
        "_edges1.txt_gcn_rigl_s0.9_seed0")
    files.write_json_atomic(tmp_path / f"{names[0]}.json", {})  # short enough for a file name
    assert (tmp_path / f"{names[0]}.json").is_file()
    # Short names are as before.
    assert cli.run_name("link", config.RunConfig(dataset="file:/data/edges.txt")) == (
        "link_file__data_edges.txt_gcn_rigl_s0.9_seed0")


def test_warnings_are_shown_as_one_line_each(capsys):
    with cli.warning_lines():
        warnings.warn("first line\nmore detail", UserWarning)
        warnings.warn("another", RuntimeWarning)
    assert capsys.readouterr().err == "warning: first line\nwarning: another\n"


def stored_config(task: str, flags: list[str]) -> dict:
    """The config a run of ``flags`` stores with its checkpoints."""
    parsed = cli.build_parser(task).parse_args(flags)
    return dataclasses.asdict(config.resolve(cli.config_from_args(task, parsed)))


def test_resume_from_a_checkpoint_of_another_run(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    flags = [f"--out={tmp_path}", f"--checkpoint-dir={ckpt}", "--resume", "--epochs=5",
             "--no-progress"]
    checkpoint.save(ckpt, 3, {"x": np.zeros(3, np.float32)}, {"epoch": 3})
    code, _, err = _main("node", flags, capsys)
    assert code == 2
    assert_one_error_line(err, r"--resume: the checkpoint .*ckpt \(step 3\) holds no run "
                               r"configuration to check against")
    # Same config, but another state: the tree structures differ.
    checkpoint.save(ckpt, 3, {"x": np.zeros(3, np.float32)},
                    {"epoch": 3, "config": stored_config("node", flags)})
    code, _, err = _main("node", flags, capsys)
    assert code == 2
    # The API error goes on with both tree structures; the user sees its first line.
    assert_one_error_line(err, r"checkpoint .*step_00000003 does not match the target state: "
                               r"1 stored leaves vs \d+ in the target")


RESUME_RUN = ["--dataset=synthetic-sbm", "--model=gcn", "--method=rigl", "--sparsity=0.9",
              "--epochs=10", "--seed=0"]


def _checkpoint_of(ckpt, flags):
    """A checkpoint as the run ``flags`` leaves it after its last epoch (a stand-in state)."""
    checkpoint.save(ckpt, 10, {"x": np.zeros(3, np.float32)},
                    {"epoch": 10, "loss": 0.25, "config": stored_config("node", flags)})


@pytest.mark.parametrize("change, fragment", [
    (["--sparsity=0.5"], r"sparsity: 0\.9 in the checkpoint, 0\.5 requested"),
    (["--method=set"], r"method: 'rigl' in the checkpoint, 'set' requested"),
    (["--method=dense"], r"method: 'rigl' in the checkpoint, 'dense' requested"),
    (["--seed=1"], r"seed: 0 in the checkpoint, 1 requested"),
    (["--epochs=5"], r"epochs: 10 in the checkpoint, 5 requested"),
    (["--hidden=32", "--lr=0.1"], r"hidden: 16 in the checkpoint, 32 requested; lr: 0\.01 in "
                                  r"the checkpoint, 0\.1 requested"),
])
def test_resume_refuses_another_runs_checkpoint_before_loading_data(change, fragment, tmp_path,
                                                                    capsys, no_data_loading):
    ckpt = tmp_path / "ckpt"
    _checkpoint_of(ckpt, RESUME_RUN + [f"--checkpoint-dir={ckpt}"])
    out = tmp_path / "out"
    code, stdout, err = _main("node", RESUME_RUN + change + [
        f"--checkpoint-dir={ckpt}", "--resume", f"--out={out}", "--no-progress"], capsys)
    assert code == 2 and stdout == ""
    assert_one_error_line(err, r"^error: --resume: the checkpoint .*ckpt is of another run: "
                               + fragment)
    assert list(out.iterdir()) == []
    assert checkpoint.list_steps(ckpt) == [10]


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "step_00000004").mkdir()  # no commit marker: not a checkpoint
    cases = [(tmp_path / "missing", "does not exist"), (empty, "holds no complete checkpoint")]
    for folder, why in cases:
        code, _, err = _main("node", RESUME_RUN + [f"--checkpoint-dir={folder}", "--resume",
                                                   f"--out={tmp_path / 'out'}", "--no-progress"],
                             capsys)
        assert code == 2
        assert_one_error_line(err, rf"--resume: nothing to resume: .*{folder.name} {why}; run "
                                   r"without --resume to start training")
    assert not (tmp_path / "missing").exists()
    # The default folder is the run's own: a run never checkpointed has nothing to resume.
    code, _, err = _main("node", RESUME_RUN + ["--resume", f"--out={tmp_path / 'out'}",
                                               "--no-progress"], capsys)
    assert code == 2
    assert_one_error_line(err, r"nothing to resume: .*node_synthetic-sbm_gcn_rigl_s0\.9_seed0"
                               r"\.ckpt does not exist")


def test_script_refuses_to_resume_another_run(tmp_path, cli_env):
    """The issue's case through the script: every differing field is named, nothing written."""
    ckpt = tmp_path / "ckpt"
    _checkpoint_of(ckpt, RESUME_RUN + [f"--checkpoint-dir={ckpt}"])
    proc = run_script("node", RESUME_RUN + ["--method=dense", "--sparsity=0.5", "--seed=1",
                                            "--epochs=5", f"--checkpoint-dir={ckpt}",
                                            "--resume"], tmp_path / "out", cli_env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error_line(proc.stderr, r"is of another run: method: 'rigl' in the checkpoint, "
                                       r"'dense' requested; sparsity: 0\.9 in the checkpoint, "
                                       r"0\.5 requested; epochs: 10 in the checkpoint, 5 "
                                       r"requested; seed: 0 in the checkpoint, 1 requested \(")
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------------------------
# The scripts themselves.


@pytest.mark.parametrize("task,flags,code,fragment", [
    ("link", ["--dataset=file:{bad}"], 2, r"line 2: 'x' is not an integer: '2 x 200'"),
    ("link", ["--dataset=file:{missing}"], 2, r"file not found: .*missing.txt"),
    ("node", ["--sparsity=1.0"], 2, r"^error: --sparsity must be in \[0, 1\), got 1.0$"),
    ("node", ["--method=foo"], 2, r"argument --method: invalid choice: 'foo'"),
    ("link", ["--dataset=file:{corrupt}"], 2,
     r"^error: .*corrupt\.txt\.gz: not a valid gzip file \(Error -3 while decompressing"),
], ids=["text-column", "missing-file", "sparsity-1", "unknown-method", "corrupt-gzip"])
def test_scripts_exit_cleanly_on_bad_input(task, flags, code, fragment, tmp_path, cli_env):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 100\n2 x 200\n3 1 300\n")
    # A gzip header, then bytes that are no deflate stream (zlib.error inside).
    corrupt = tmp_path / "corrupt.txt.gz"
    corrupt.write_bytes(gzip.compress(b"1 2 3\n" * 100)[:10] + b"garbage" * 20)
    flags = [f.format(bad=bad, missing=tmp_path / "missing.txt", corrupt=corrupt)
             for f in flags]
    proc = run_script(task, flags, tmp_path / "out", cli_env)
    assert proc.returncode == code
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(fragment, last), proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


class _RunsCommand:
    """Pickles as ``os.system(command)``: a crafted Planetoid file."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_crafted_planetoid_file_is_refused_and_runs_nothing(tmp_path, cli_env):
    folder = tmp_path / "root" / "planetoid"
    folder.mkdir(parents=True)
    marker = tmp_path / "marker"
    for part in ("y", "tx", "ty", "allx", "ally", "graph"):
        (folder / f"ind.cora.{part}").write_bytes(pickle.dumps(np.eye(3), protocol=2))
    (folder / "ind.cora.x").write_bytes(pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=2))
    (folder / "ind.cora.test.index").write_text("0\n1\n")
    proc = run_script("node", ["--dataset=cora", f"--data-root={folder.parent}", "--epochs=1"],
                      tmp_path / "out", cli_env)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, r"planetoid/ind\.cora\.x: sha256 [0-9a-f]{64} is not that "
                                       r"of the published file .* refusing to read it as "
                                       r"dataset 'cora'")
    assert not marker.exists()
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_self_loops_and_repeated_edges_are_valid(tmp_path, cli_env):
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
    src[:10] = dst[:10]  # ten self-loops
    rows = [f"{s}\t{d} {t}" for t, (s, d) in enumerate(zip(src, dst))]
    rows += rows[:20]  # twenty repeated events (same pair, same time)
    path = tmp_path / "edges.txt"
    path.write_text("# src dst time\n" + "\n".join(rows) + "\n")
    ds = data.load(f"file:{path}")
    assert ds.num_edges == 220 and int((ds.senders == ds.receivers).sum()) >= 10
    proc = run_script("link", [f"--dataset=file:{path}", "--epochs=1"], tmp_path / "out",
                      cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    split = data.temporal_link_split(ds)
    assert record["data"]["num_nodes"] == ds.num_nodes == len(np.unique(np.r_[src, dst]))
    assert record["data"]["train_edges"] == len(split.train_edges) < 154  # deduplicated
    assert all(np.isfinite(v) for v in record["test"].values() if not isinstance(v, dict))


# ----------------------------------------------------------------------------------------------
# Kill and resume, determinism, non-finite loss: real training runs of the scripts.
#
# Their compiled programs go to the JAX compilation cache of ``cli_env``, so only the first run
# of a configuration pays for XLA compilation. A cache file is written without a lock, so no two
# processes use the cache at the same time: the run that is killed compiles without it.

NODE_EPOCHS = 10
NODE_ARGS = ["--dataset=synthetic-sbm", "--model=gcn", "--method=rigl", "--sparsity=0.9",
             f"--epochs={NODE_EPOCHS}", "--checkpoint-every=1"]
LINK_EPOCHS = 4
LINK_ARGS = ["--dataset=synthetic-temporal", "--model=gcn", "--method=rigl", "--sparsity=0.9",
             f"--epochs={LINK_EPOCHS}", "--checkpoint-every=1"]


def run_ok(task, args, out, env) -> subprocess.CompletedProcess:
    proc = run_script(task, args, out, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def _uncached(env: dict) -> dict:
    env = dict(env)
    env.pop("JAX_COMPILATION_CACHE_DIR")
    return env


def run_name(task: str, args: list[str]) -> str:
    """The file stem the command line gives this run's JSON and checkpoint folder."""
    parsed = cli.build_parser(task).parse_args(args)
    return cli.run_name(task, cli.config_from_args(task, parsed))


def results(out, task, args) -> dict:
    return json.loads((pathlib.Path(out) / f"{run_name(task, args)}.json").read_text())


def ckpt_dir(out, task, args) -> pathlib.Path:
    return pathlib.Path(out) / f"{run_name(task, args)}.ckpt"


def template_state(task: str, args: list[str]):
    """A freshly initialised TrainState of the run ``args`` describe: the restore target.

    A run that keeps its best validation epoch checkpoints ``(state, selection)``.
    """
    return _template_state(task, tuple(args))


@functools.lru_cache(maxsize=None)
def _template_state(task: str, args: tuple):
    parsed = cli.build_parser(task).parse_args(list(args))
    cfg = config.resolve(cli.config_from_args(task, parsed))
    problem = tasks.get(task).prepare(cfg)
    _, params = train.split_model(tasks.get(task).build_model(problem, cfg.seed))
    state = train.init_state(params, runs.build_optimizer(problem), jax.random.key(cfg.seed))
    if task == "link" and cfg.select == "best_val":
        return state, train.no_selection(state.params)
    return state


def _leaf_data(x) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def assert_states_bitwise_equal(a, b):
    """Every leaf (params, masks, optimizer moments, counters, key, step) bit for bit."""
    paths_a = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for path, x, y in zip(paths_a, leaves_a, leaves_b):
        x, y = _leaf_data(x), _leaf_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        # Compare the bytes: NaN == NaN and -0.0 != 0.0, unlike a value comparison.
        assert x.tobytes() == y.tobytes(), f"{path} differs"


def _metrics(record: dict) -> dict:
    """What a results JSON reports about the trained model (not timing or paths)."""
    return {k: record[k] for k in ("final_train_loss", "val", "test", "sparsity",
                                   "layer_sparsity", "flops", "data")}


def kill_and_resume(task, args, tmp, env, seed):
    """Runs ``args`` uninterrupted and, in parallel, a copy SIGKILLed after a random epoch.

    Returns ``(full_out, resumed_out, k, killed_at)``: output folders of the uninterrupted and
    the killed-then-resumed run, the random epoch and the last checkpoint when it was killed.
    """
    epochs = int(next(a for a in args if a.startswith("--epochs=")).split("=")[1])
    k = random.Random(seed).randint(1, epochs - 1)
    full, resumed = tmp / "full", tmp / "resumed"
    full_proc = subprocess.Popen(script_command(task, args, full), cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(script_command(task, args, resumed), cwd=REPO, env=_uncached(env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts = ckpt_dir(resumed, task, args)
    deadline = time.monotonic() + TIMEOUT
    try:
        while victim.poll() is None and time.monotonic() < deadline:
            step = checkpoint.latest_step(ckpts)
            if step is not None and step >= k:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if victim.poll() is None and time.monotonic() >= deadline:
            victim.kill()
        _, victim_err = victim.communicate(timeout=TIMEOUT)
    assert victim.returncode == -signal.SIGKILL, (
        f"the run ended (exit {victim.returncode}) before epoch {k}'s checkpoint was seen: "
        f"{victim_err[-2000:]}")
    killed_at = checkpoint.latest_step(ckpts)
    assert killed_at is not None and k <= killed_at < epochs
    assert not (resumed / f"{run_name(task, args)}.json").exists()
    _, full_err = full_proc.communicate(timeout=TIMEOUT)
    assert full_proc.returncode == 0, full_err[-3000:]
    run_ok(task, args + ["--resume"], resumed, env)
    return full, resumed, k, killed_at


def check_resumed_equals_full(task, args, full, resumed):
    template = template_state(task, args)
    state_full, meta_full = checkpoint.restore(ckpt_dir(full, task, args), template)
    state_resumed, meta_resumed = checkpoint.restore(ckpt_dir(resumed, task, args), template)
    if not isinstance(state_full, train.TrainState):
        # The best-validation selection is part of what a resumed run must restore exactly.
        assert_states_bitwise_equal(state_full[1], state_resumed[1])
        assert int(state_full[1].epoch) >= 1
        state_full, state_resumed = state_full[0], state_resumed[0]
    epochs = int(next(a for a in args if a.startswith("--epochs=")).split("=")[1])
    assert meta_full["epoch"] == meta_resumed["epoch"] == epochs
    # The comparison must cover the masks and the optimizer's moments, not just the params.
    kinds = {np.asarray(_leaf_data(x)).dtype.kind for x in jax.tree.leaves(state_full.opt_state)}
    assert "b" in kinds and "f" in kinds
    assert int(state_full.step) > epochs - 1
    assert_states_bitwise_equal(state_full, state_resumed)
    assert _metrics(results(full, task, args)) == _metrics(results(resumed, task, args))


@pytest.fixture(scope="module")
def node_runs(tmp_path_factory, cli_env):
    tmp = tmp_path_factory.mktemp("node_kill")
    return kill_and_resume("node", NODE_ARGS, tmp, cli_env, seed=7)


@pytest.mark.slow
def test_node_run_killed_and_resumed_is_bitwise_equal_to_uninterrupted(node_runs):
    full, resumed, k, killed_at = node_runs
    check_resumed_equals_full("node", NODE_ARGS, full, resumed)


@pytest.mark.slow
def test_link_run_killed_and_resumed_is_bitwise_equal_to_uninterrupted(tmp_path, cli_env):
    full, resumed, k, killed_at = kill_and_resume("link", LINK_ARGS, tmp_path, cli_env, seed=3)
    check_resumed_equals_full("link", LINK_ARGS, full, resumed)


@pytest.mark.slow
def test_two_identical_runs_are_bitwise_equal(node_runs, tmp_path, cli_env):
    full, _, _, _ = node_runs
    again = tmp_path / "again"
    run_ok("node", NODE_ARGS, again, cli_env)
    template = template_state("node", NODE_ARGS)
    first, _ = checkpoint.restore(ckpt_dir(full, "node", NODE_ARGS), template)
    second, _ = checkpoint.restore(ckpt_dir(again, "node", NODE_ARGS), template)
    assert_states_bitwise_equal(first, second)
    assert _metrics(results(full, "node", NODE_ARGS)) == _metrics(
        results(again, "node", NODE_ARGS))


def test_non_finite_loss_stops_with_exit_3_and_keeps_last_good_checkpoint(tmp_path, cli_env):
    # Adam moves every weight by about lr per step whatever the gradient: lr=1e30 makes the
    # activations, hence the loss of the second step, overflow.
    args = NODE_ARGS + ["--lr=1e30"]
    proc = run_script("node", args, tmp_path, cli_env)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: non-finite training loss")
    assert "at step 2" in lines[-1] and "(method rigl)" in lines[-1]
    ckpts = ckpt_dir(tmp_path, "node", args)
    assert checkpoint.list_steps(ckpts) == [1]
    # Same structure as the normal run: only the learning rate differs.
    state, meta = checkpoint.restore(ckpts, template_state("node", NODE_ARGS))
    assert meta["epoch"] == 1 and math.isfinite(meta["loss"])
    assert int(state.step) == 1
    assert not (tmp_path / f"{run_name('node', args)}.json").exists()


@pytest.mark.slow
def test_resume_of_a_finished_run_and_past_a_damaged_latest_checkpoint(tmp_path, cli_env):
    args = ["--dataset=synthetic-sbm", "--model=gcn", "--method=rigl", "--epochs=2",
            "--checkpoint-every=1"]
    run_ok("node", args, tmp_path, cli_env)
    first = results(tmp_path, "node", args)
    # A finished run resumed trains no epoch and keeps its last loss (it was NaN).
    proc = run_ok("node", args + ["--resume"], tmp_path, cli_env)
    assert proc.stderr == ""
    assert results(tmp_path, "node", args)["final_train_loss"] == first["final_train_loss"]
    # The latest checkpoint damaged: one warning naming it, epoch 2 trained again from step 1.
    damage_checkpoint(ckpt_dir(tmp_path, "node", args) / "step_00000002", "arrays")
    proc = run_ok("node", args + ["--resume"], tmp_path, cli_env)
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"warning: checkpoint {ckpt_dir(tmp_path, 'node', args)}"
                           "/step_00000002 is unreadable (ValueError: ")
    assert line.endswith("; using step 1 instead")
    # One short line, not the storage layer's dump: bounded apart from the paths it names.
    assert len(line.replace(str(tmp_path), "")) < 400
    assert _metrics(results(tmp_path, "node", args)) == _metrics(first)


def test_compilation_cache_folder_and_opt_out(tmp_path, cli_env):
    # In a fresh interpreter: the opt-out sets nothing, then the cache goes to
    # $SPARSEGNN_CACHE/jax; JAX_COMPILATION_CACHE_DIR wins when set.
    code = ("import jax; from sparsegnn_jax import cli; "
            "print(cli.use_compilation_cache(False), jax.config.jax_compilation_cache_dir, "
            "cli.use_compilation_cache(True), jax.config.jax_compilation_cache_dir)")
    env = {k: v for k, v in cli_env.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["SPARSEGNN_CACHE"] = str(tmp_path / "cache")

    def run(extra=None):
        out = subprocess.run([sys.executable, "-c", code], env=env | (extra or {}),
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run() == ["None", "None"] + [str(tmp_path / "cache" / "jax")] * 2
    mine = str(tmp_path / "mine")
    assert run({"JAX_COMPILATION_CACHE_DIR": mine}) == ["None", mine, mine, mine]
