"""Data parallelism with JAX's own sharding: one mesh axis ``data`` over the devices; each
minibatch is split along it, parameters are replicated, and XLA's SPMD partitioner inserts the
gradient all-reduce. Random bits (dropout, noise) do not depend on the split
(``jax_threefry_partitionable``), so a data-parallel run is the single-device run up to float
rounding of the reductions.

Several hosts (or processes): set ``FGSM_REPRO_DISTRIBUTED=1`` and the CLI calls
:func:`initialize_distributed` first; the mesh then spans every process's devices, and
evaluation outputs split across processes are gathered on each (:func:`to_host`).
On one CPU host, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fgsm_repro.errors import ReproError
from fgsm_repro.processes import distributed

AXIS = "data"


def data_mesh(batch_size: int | None = None) -> Mesh:
    """A 1-D mesh over all devices; `batch_size` must split evenly across them."""
    devices = jax.devices()
    if batch_size is not None and batch_size % len(devices):
        raise ReproError(f"data parallelism: batch size {batch_size} does not split across {len(devices)} devices")
    return Mesh(np.asarray(devices), (AXIS,))


def split_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside a jitted function: lay `x` out with its leading (batch) axis across the mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(AXIS)))


def put_batch(x, mesh: Mesh | None):
    """Outside jit: place a host array across the mesh (a jitted function then runs split), or on
    the default device without one (``jax.device_put``, which placed FGSM's batches faster than
    ``jnp.asarray``: docs/performance.md)."""
    return jax.device_put(x, None if mesh is None else NamedSharding(mesh, PartitionSpec(AXIS)))


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when FGSM_REPRO_DISTRIBUTED=1. The cluster is detected
    (Slurm, Open MPI, Cloud TPU) or given by JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID. CPU devices of different processes reduce through
    gloo (unless JAX_CPU_COLLECTIVES_IMPLEMENTATION says otherwise)."""
    if not distributed():
        return
    given = {}
    for variable, argument in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if variable in os.environ:
            try:
                given[argument] = int(os.environ[variable])
            except ValueError:
                raise ReproError(f"{variable}={os.environ[variable]!r} is not a whole number") from None
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**given)
    except (RuntimeError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReproError(f"FGSM_REPRO_DISTRIBUTED=1 but jax.distributed.initialize failed: {first_line}") from None


def to_host(x: jax.Array) -> np.ndarray:
    """`x` as one host array. Split across the devices of several processes, it is gathered from
    all of them, and every process gets the whole."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicate(tree, mesh: Mesh):
    """The arrays of `tree` replicated over `mesh` (through the host: another process's devices
    cannot be written directly); arrays already replicated so are returned as they are."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def put(p):
        if isinstance(p, jax.Array) and p.sharding.is_equivalent_to(replicated, p.ndim):
            return p
        return jax.device_put(np.asarray(p), replicated)

    return jax.tree.map(put, tree)


def put_eval_batch(x, mesh: Mesh | None):
    """An evaluation batch on the device(s): split across `mesh` when there is one and the batch
    divides evenly, else uncommitted on the default device (JAX then places it beside the
    parameters, on one process or several: tested)."""
    return put_batch(x, mesh if mesh is not None and len(x) % mesh.size == 0 else None)
