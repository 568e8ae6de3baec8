"""`fgsm-repro bench`: our JAX implementation against PyTorch (+ torchattacks) on the same
workloads, machine and run.

- :mod:`~fgsm_repro.bench.settings` — :class:`BenchSettings`, how much a run times;
- :mod:`~fgsm_repro.bench.workloads` — the workloads (:data:`WORKLOADS`), one class per kind;
- :mod:`~fgsm_repro.bench.geometry`, :mod:`~fgsm_repro.bench.products` — the conv layers as the
  FLOPs count them, and the workloads' products alone;
- :mod:`~fgsm_repro.bench.timing` — interleaved timing, repetitions, the matmul peak;
- :mod:`~fgsm_repro.bench.torch_side` — all of the PyTorch side (torch is an optional extra);
- :mod:`~fgsm_repro.bench.suite` — :func:`run_bench` and :func:`write_bench`.
"""

from fgsm_repro.bench.settings import BenchSettings
from fgsm_repro.bench.suite import run_bench, write_bench
from fgsm_repro.bench.workloads import WORKLOADS

__all__ = ["WORKLOADS", "BenchSettings", "run_bench", "write_bench"]
