"""Several processes and devices, for real: two JAX processes on 127.0.0.1 and four emulated CPU
devices.

One launch of two processes (a mesh of their two CPU devices, gloo collectives) covers:

* data-parallel RigL over the two processes against one device with the same global batch;
* a sweep split over the two processes against the unsharded sweep (3 sparsities x 2 seeds:
  the sparsity axis needs padding).

The one-device references run in the same launch, after the collective part, without a mesh:
process 1 trains the reference of the data-parallel training while process 0 runs the
unsharded sweep (reusing the problem it prepared and the evaluation it compiled for the sharded
sweep). A slow test also splits the sweep over four emulated devices of one process, and one
runs ``experiments/sweep.py`` on two processes (method groups of 1 and 3 runs, process 0's
progress bar on) against the same command on one, CSV row for row. The sweeps
are slow tests (they run in CI): without them the default run starts the two processes, trains
across them and checks the checkpoint refusal, at a third of the launch's time.

The runs use SGD: sharded gradients are summed in another order (differences ~1e-8), which Adam's
normalisation would blow up for weights whose gradient is near zero. A killed process ends the
other through the command line, and the flags fail cleanly, in-process. Checkpoints refuse
several processes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, TIMEOUT, assert_csv_rows_agree, read_csv_rows

from sparsegnn_jax import cli, distributed

# The sweeps and the kill test are slow tests (they run in CI): the default run keeps the
# two-process training and its one-device reference.
SLOW = os.environ.get("SPARSEGNN_SLOW_TESTS") == "1"

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    from sparsegnn_jax import config, distributed, runs, sparsity, sweeps, tasks, train

    out, coordinator, process_id, *jobs = sys.argv[1:]
    if coordinator != "-":
        # Room for the other process's one-device reference before the exit barrier.
        distributed.initialize(coordinator, 2, int(process_id), peer_timeout=300)
    PROBLEMS = {}


    def prepared(cfg):
        # The problem of cfg, prepared once per process (a reference reuses it).
        if repr(cfg) not in PROBLEMS:
            PROBLEMS[repr(cfg)] = tasks.get(cfg.task).prepare(cfg)
        return PROBLEMS[repr(cfg)]


    def data_parallel(devices):
        cfg = config.resolve(config.RunConfig(
            task="link", dataset="synthetic-temporal", model="gcn", method="rigl", sparsity=0.9,
            epochs=3, batch_size=256, update_every=4, optimizer="sgd", lr=0.05, progress=False))
        task = tasks.get("link")
        problem = prepared(cfg)
        bound, params = train.split_model(task.build_model(problem, 0))
        tx = runs.build_optimizer(problem)
        mesh = train.data_mesh(devices) if devices > 1 else None
        # The library's loop, with the non-finite guard reading every epoch's loss and params.
        state, _ = train.fit(jax.jit(task.make_epoch(problem, bound, tx, mesh)),
                             train.replicate(train.init_state(params, tx, jax.random.key(0)), mesh),
                             train.replicate(problem.inputs, mesh), cfg.epochs,
                             hooks=[train.finite_guard("rigl")])
        state = distributed.gather(state)
        leaves = lambda tree: [np.asarray(x).tolist() for x in jax.tree.leaves(tree)]
        return {"params": leaves(state.params),
                "masks": leaves(sparsity.get_masks(state.opt_state)),
                "mask_updates": int(sparsity.get_trace(state.opt_state).mask_updates),
                "processes": jax.process_count(),
                "mesh_devices": 1 if mesh is None else mesh.size}


    def sweep(devices):
        cfg = config.resolve(config.RunConfig(
            task="link", dataset="synthetic-temporal", model="mlp", method="rigl", epochs=2,
            progress=False))
        problem = prepared(cfg)
        rows = [sweeps.csv_row(r) for r in sweeps.run_group(
            dataclasses.replace(cfg, devices=devices), [0.5, 0.75, 0.9], [0, 1], batching="vmap",
            problem=problem)]
        return {"rows": rows, "processes": jax.process_count()}


    def checkpointed(devices):
        cfg = config.RunConfig(task="node", dataset="synthetic-sbm", model="gcn", epochs=1,
                               devices=devices, checkpoint_dir=out + ".ckpt", progress=False)
        try:
            runs.run(cfg)
        except ValueError as err:
            return str(err)


    # A job is KIND:DEVICES (every process runs it) or KIND:DEVICES@I (only process I does).
    results = {}
    for job in jobs:
        name, _, only = job.partition("@")
        if only and int(only) != jax.process_index():
            continue
        kind, devices = name.split(":")
        results[name] = {"train": data_parallel, "sweep": sweep,
                         "checkpoint": checkpointed}[kind](int(devices))
    with open(f"{out}.{jax.process_index()}.json", "w") as f:
        json.dump(results, f)
""")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish_all(procs, timeout: float) -> list[subprocess.CompletedProcess]:
    """Waits for every process until one ``timeout`` ends; kills them all if one fails or time
    runs out (a peer stuck waiting for a dead one must not outlive the test)."""
    deadline = time.monotonic() + timeout
    try:
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            if proc.returncode != 0:
                break
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def launches(cli_env, tmp_path_factory):
    """Job results of the two-process launch (with the one-device references) and, in the slow
    run, of the four-device launch started with it.

    Process 0's results win over process 1's for a job both run (process 1 gets no sweep rows).
    """
    folder = tmp_path_factory.mktemp("distributed")
    coordinator = f"127.0.0.1:{free_port()}"
    two_jobs = ["checkpoint:2", "train:2", "train:1@1"] + (["sweep:2", "sweep:1@0"] if SLOW else [])
    commands = [[sys.executable, "-c", SCRIPT, str(folder / "two"), coordinator, str(i),
                 *two_jobs] for i in range(2)]
    envs = [cli_env, cli_env]
    if SLOW:
        commands.append([sys.executable, "-c", SCRIPT, str(folder / "four"), "-", "0", "sweep:4"])
        envs.append(dict(cli_env, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c, e in zip(commands, envs)]
    for done in finish_all(procs, TIMEOUT):
        assert done.returncode == 0, done.stderr[-3000:]
    outputs = ["two.1.json", "two.0.json"] + (["four.0.json"] if SLOW else [])
    merged = {}
    for name in outputs:
        merged |= json.loads((folder / name).read_text())
    return merged


def test_two_processes_train_like_one_device(launches):
    one, two = launches["train:1"], launches["train:2"]
    assert (two["processes"], two["mesh_devices"]) == (2, 2)
    assert one["mesh_devices"] == 1
    assert two["mask_updates"] == one["mask_updates"] >= 2   # masks really changed
    for a, b in zip(one["masks"], two["masks"], strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(one["params"], two["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _assert_same_rows(rows, expected):
    """Same runs in the same order, every column equal (numbers to float32 precision) except
    the wall time."""
    assert len(rows) == len(expected) == 6
    for row, ref in zip(rows, expected):
        assert row.keys() == ref.keys()
        for key in ref:
            if key == "wall_time_s":
                continue
            if isinstance(ref[key], float):
                assert row[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key
            else:
                assert row[key] == ref[key], key


@pytest.mark.slow
def test_sweep_over_two_processes_gives_the_unsharded_rows(launches):
    assert launches["sweep:2"]["processes"] == 2
    _assert_same_rows(launches["sweep:2"]["rows"], launches["sweep:1"]["rows"])
    assert [(r["sparsity"], r["seed"]) for r in launches["sweep:1"]["rows"]] == [
        (0.5, 0), (0.5, 1), (0.75, 0), (0.75, 1), (0.9, 0), (0.9, 1)]


@pytest.mark.slow
def test_sweep_over_four_devices_gives_the_unsharded_rows(launches):
    _assert_same_rows(launches["sweep:4"]["rows"], launches["sweep:1"]["rows"])


def test_checkpoints_refuse_several_processes(launches):
    assert launches["checkpoint:2"] == ("checkpoints (--checkpoint-every, --resume) are not "
                                        "supported with several processes")


def _sweep_cli(out, *flags) -> list[str]:
    """``experiments/sweep.py`` on method groups of 1 (dense) and 3 runs (static, RigL): none
    divides two processes, so every group is padded. With the progress bar (process 0's)."""
    return [sys.executable, str(REPO / "experiments" / "sweep.py"), "--model=mlp",
            "--methods=dense,static,rigl", "--sparsities=0.5,0.75,0.9", "--seeds=1",
            "--epochs=2", f"--out={out}", *flags]


@pytest.mark.slow
def test_sweep_cli_over_two_processes_writes_the_single_process_csv(tmp_path, cli_env):
    # Process 0 alone shows a progress bar: reading its loss must not be a collective the other
    # process never joins (it was: gloo aborted with "Received data size doesn't match").
    # Split over processes the runs are vmapped; one process vmaps them too here (on CPU it
    # would train them one after another, equal only within float noise: tests/test_sweeps.py).
    coordinator = f"127.0.0.1:{free_port()}"
    commands = [_sweep_cli(tmp_path / "two", f"--coordinator={coordinator}",
                           "--num-processes=2", f"--process-id={i}", "--peer-timeout=300")
                for i in range(2)] + [_sweep_cli(tmp_path / "one", "--batching=vmap")]
    procs = [subprocess.Popen(c, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    for done in finish_all(procs, TIMEOUT):
        assert done.returncode == 0, done.stderr[-3000:]
    two = read_csv_rows(tmp_path / "two" / "results.csv")
    one = read_csv_rows(tmp_path / "one" / "results.csv")
    assert [(r["method"], r["sparsity"]) for r in one] == [("dense", "0.0")] + [
        (m, s) for m in ("static", "rigl") for s in ("0.5", "0.75", "0.9")]
    assert_csv_rows_agree(two, one)


@pytest.mark.slow
def test_killed_process_ends_the_other_with_an_error(tmp_path, cli_env):
    coordinator = f"127.0.0.1:{free_port()}"
    # The training of the launches above (so its compiled program may come from the cache).
    commands = [[sys.executable, str(REPO / "experiments" / "link_pred.py"), "--model=gcn",
                 "--method=rigl", "--sparsity=0.9", "--optimizer=sgd", "--lr=0.05",
                 "--update-every=4", "--batch-size=256", "--select=last", "--epochs=100000",
                 f"--out={tmp_path}", f"--coordinator={coordinator}", "--num-processes=2",
                 f"--process-id={i}", "--peer-timeout=10"] for i in range(2)]
    procs = [subprocess.Popen(c, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for c in commands]
    stderr = bytearray()

    def read_stderr():
        while chunk := procs[0].stderr.read1(4096):
            stderr.extend(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        # The progress bar of process 0 counts a finished epoch: both processes are training.
        while not re.search(rb"\| *[1-9]\d*/100000", bytes(stderr)):
            assert procs[0].poll() is None, bytes(stderr).decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the two processes never started training"
            time.sleep(0.2)
        procs[1].kill()
        killed = time.monotonic()
        code = procs[0].wait(timeout=60)
        reader.join(timeout=10)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    text = bytes(stderr).decode(errors="replace")
    assert code == distributed.PEER_FAILED, text[-3000:]
    assert time.monotonic() - killed < 30
    assert "error: a process of this run failed or stopped answering" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("flags, fragment", [
    (["--coordinator=127.0.0.1:1234"], "--coordinator given without --num-processes, --process-id"),
    (["--num-processes=2", "--process-id=0"], "--process-id given without --coordinator"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=2", "--process-id=2"],
     r"--process-id=2 must be in 0..1"),
    (["--coordinator=somehost", "--num-processes=2", "--process-id=0"], "must be HOST:PORT"),
])
def test_incomplete_process_flags_fail_cleanly(flags, fragment, tmp_path, capsys):
    code = cli.main("node", [*flags, f"--out={tmp_path}", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(f"^error: .*{fragment}", err, re.MULTILINE), err


def test_launchers_are_detected_only_with_several_processes():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
    assert distributed.launcher_in_environment(slurm) == "slurm"
    assert distributed.launcher_in_environment(slurm | {"SLURM_NTASKS": "1"}) is None
    assert distributed.launcher_in_environment({"SLURM_NTASKS": "2"}) is None
    assert distributed.launcher_in_environment(
        {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}) == "ompi"
    assert distributed.launcher_in_environment(
        {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "0"}) == "kubernetes"
    assert distributed.launcher_in_environment({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    assert distributed.launcher_in_environment({}) is None
    assert distributed.initialize(environ={}) is False


def test_run_axis_padding_repeats_the_last_run_and_is_dropped():
    assert [distributed.padded_size(n, 4) for n in (1, 3, 4, 5, 12)] == [4, 4, 4, 8, 12]
    tree = {"w": jnp.arange(6.0).reshape(3, 2), "step": jnp.asarray([5, 6, 7])}
    padded = distributed.pad_runs(tree, 4)
    np.testing.assert_array_equal(padded["w"], [[0, 1], [2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["step"], [5, 6, 7, 7])
    back = distributed.unpad_runs(padded, 3)
    np.testing.assert_array_equal(back["w"], tree["w"])
    np.testing.assert_array_equal(back["step"], tree["step"])
