"""Several processes and devices: JAX's distributed runtime, meshes, global arrays, gathering.

Every process of a multi-process run executes the same program. :func:`initialize` starts JAX's
runtime (``jax.distributed.initialize``) from the ``--coordinator / --num-processes /
--process-id`` flags or, when they are absent, from a cluster launcher JAX detects itself
(SLURM, Open MPI, Kubernetes indexed jobs). ``jax.devices()`` then lists the devices of every
process and a :class:`jax.sharding.Mesh` may span them:

* data-parallel training (``train.data_mesh``): every process loads the same data, which enters
  the mesh replicated (:func:`replicate`); each device takes its slice of every batch and XLA
  all-reduces the gradients, so every process holds the same parameters and masks;
* sweeps (:func:`shard_runs`): the vmapped run axis is split over the mesh (padded to a
  multiple of its size with :func:`pad_runs`), each device trains its runs with no
  communication, and :func:`gather` brings the results to every process.

Only process 0 writes results (:func:`is_main_process`).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: Mesh axis name of a sweep's run axis.
RUN_AXIS = "runs"

#: Exit code of a process that ends because another process of its run failed.
PEER_FAILED = 4

#: JAX's own waiting times (seconds) when ``--peer-timeout`` is not given.
DEFAULT_TIMEOUTS = {"initialization_timeout": 300, "heartbeat_timeout_seconds": 100,
                    "shutdown_timeout_seconds": 300}


# ----------------------------------------------------------------------------------------------
# Starting the runtime.


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--coordinator --num-processes --process-id --peer-timeout`` to ``parser``."""
    group = parser.add_argument_group(
        "several processes (JAX's distributed runtime; without these flags a SLURM, Open MPI "
        "or Kubernetes launch is detected from its environment)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0, which serves the coordination service there")
    group.add_argument("--num-processes", type=int, default=None,
                       help="processes in the run (one per host, usually)")
    group.add_argument("--process-id", type=int, default=None, help="this process, 0..N-1")
    group.add_argument("--peer-timeout", type=int, default=None, metavar="SECONDS",
                       help="how long a process waits for the others to start, answer and "
                            "finish before it fails (default: JAX's 300 / 100 / 300 s)")


def launcher_in_environment(environ: Mapping[str, str] = os.environ) -> str | None:
    """The multi-process launcher JAX would detect in ``environ``, or None.

    Mirrors the checks of JAX's cluster detection (which has no public "is a cluster present"
    call) and requires more than one process, so a one-task SLURM job stays single-process.
    """
    def count(name):
        value = environ.get(name, "")
        return int(value) if value.isdigit() else 0

    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
    if all(v in environ for v in slurm) and count("SLURM_NTASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in environ and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "ompi"
    if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
        return "kubernetes"
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, peer_timeout: int | None = None,
               environ: Mapping[str, str] = os.environ) -> bool:
    """Starts JAX's distributed runtime when the flags or a cluster launcher ask for it.

    Must run before any JAX computation. On CPU the collectives go over gloo (TCP).

    Args:
      coordinator: ``HOST:PORT`` of process 0; with ``num_processes`` and ``process_id``.
      num_processes: the number of processes.
      process_id: this process, ``0 <= process_id < num_processes``.
      peer_timeout: seconds to wait for the other processes to connect, between their
        heartbeats and at shutdown (default: JAX's).
      environ: where to look for a cluster launcher when no flag is given.

    Returns:
      True when the runtime was started (a multi-process run), False for a single process.

    Raises:
      ValueError: some of the three flags are given but not all, or they are inconsistent.
    """
    flags = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}
    given = [name for name, value in flags.items() if value is not None]
    if given and len(given) < len(flags):
        missing = ", ".join(name for name in flags if name not in given)
        raise ValueError(f"{', '.join(given)} given without {missing}")
    if given and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id={process_id} must be in 0..{num_processes - 1} "
                         f"(--num-processes={num_processes})")
    if given and ":" not in coordinator:
        raise ValueError(f"--coordinator={coordinator!r} must be HOST:PORT")
    if not given and launcher_in_environment(environ) is None:
        return False
    timeouts = dict(DEFAULT_TIMEOUTS)
    if peer_timeout is not None:
        if peer_timeout < 1:
            raise ValueError(f"--peer-timeout must be >= 1 second, got {peer_timeout}")
        timeouts = {name: peer_timeout for name in timeouts}
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id, **timeouts)
    return True


def initialize_from_flags(args: argparse.Namespace) -> bool:
    """:func:`initialize` with the flags of :func:`add_flags`."""
    return initialize(args.coordinator, args.num_processes, args.process_id, args.peer_timeout)


def is_main_process() -> bool:
    """Whether this process writes the results (process 0, or the only process)."""
    return jax.process_index() == 0


def mesh_size(requested: int) -> int:
    """The devices of a run's mesh: ``requested``, or every device of a multi-process run.

    A multi-process run with the default of one device uses all devices: a mesh must reach
    every process.
    """
    if jax.process_count() > 1 and requested == 1:
        return jax.device_count()
    return requested


def exit_after_peer_failure(message: str) -> None:
    """Prints ``error: message`` and ends this process at once with :data:`PEER_FAILED`.

    A process whose peer died cannot pass JAX's shutdown barrier: the normal exit would wait
    for the dead peer, then abort. Ending here keeps the one error line and the exit code.
    """
    print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(PEER_FAILED)


# ----------------------------------------------------------------------------------------------
# Meshes and global arrays.


def device_mesh(num_devices: int, axis: str) -> Mesh:
    """A 1-D mesh of ``num_devices`` devices named ``axis``, the same number from each process.

    Raises:
      ValueError: fewer devices exist, or the count is not a multiple of the processes (with
        the flag that fakes CPU devices on one host).
    """
    available = jax.devices()
    processes = jax.process_count()
    if num_devices < 1 or num_devices > len(available):
        raise ValueError(
            f"--devices={num_devices}: {len(available)} device(s) available "
            f"({available[0].platform}); on CPU, set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={max(num_devices, 1)} to split it")
    if num_devices % processes:
        raise ValueError(f"--devices={num_devices} must be a multiple of the {processes} "
                         "processes (each process brings the same number of devices)")
    per_process = num_devices // processes
    devices = [d for p in range(processes)
               for d in [d for d in available if d.process_index == p][:per_process]]
    return Mesh(np.asarray(devices), (axis,))


def _global(x, sharding: NamedSharding):
    """``x`` (the same full value on every process) as one array placed by ``sharding``."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.jit(lambda y: y, out_shardings=sharding)(x)
    return jax.make_array_from_process_local_data(sharding, x, np.shape(x))


def replicate(tree, mesh: Mesh | None):
    """Places every array of ``tree`` on all devices of ``mesh`` (no-op without a mesh).

    Every process passes its own copy of the same values (each loads the data itself).
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: _global(x, sharding), tree)


def shard_runs(tree, mesh: Mesh | None):
    """Splits the leading (run) axis of every leaf over ``mesh`` (no-op without a mesh).

    The leading axis must be a multiple of the mesh size (see :func:`pad_runs`).
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.tree.map(lambda x: _global(x, sharding), tree)


def padded_size(num_runs: int, num_devices: int) -> int:
    """The smallest multiple of ``num_devices`` that holds ``num_runs``."""
    return -(-num_runs // num_devices) * num_devices


def pad_runs(tree, size: int):
    """Extends the leading axis of every leaf to ``size`` by repeating its last entry.

    The copies are real runs (of the last configuration), so nothing special happens in them;
    :func:`unpad_runs` drops them.
    """
    def pad(x):
        extra = size - x.shape[0]
        if extra == 0:
            return x
        return jax.numpy.concatenate([x, jax.numpy.repeat(x[-1:], extra, axis=0)])

    return jax.tree.map(pad, tree)


def unpad_runs(tree, size: int):
    """The first ``size`` entries of the leading axis of every leaf."""
    return jax.tree.map(lambda x: x[:size], tree)


def gather(tree):
    """Every leaf as an array of this process alone, with its full (global) value.

    Sharded leaves are all-gathered (a collective: every process must call this); replicated
    ones are read from a local device. Arrays that are already local stay as they are.
    """
    def local(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if not x.is_fully_replicated:
            replicated = NamedSharding(x.sharding.mesh, PartitionSpec())
            x = jax.jit(lambda y: y, out_shardings=replicated)(x)
        return x.addressable_data(0)

    return jax.tree.map(local, tree)


def text_of_main_process(text: str) -> str:
    """Process 0's ``text`` on every process (a collective; ``text`` itself on one process).

    E.g. what process 0 read from a results file that the other hosts cannot see.
    """
    if jax.process_count() == 1:
        return text
    data = np.frombuffer(text.encode(), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
    buffer = np.zeros(size, np.uint8)
    if is_main_process():
        buffer[:] = data
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode()
