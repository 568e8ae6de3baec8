"""`fgsm-repro bench`: our JAX implementation against PyTorch (+ torchattacks) on the same
workloads, machine and run. See :mod:`fgsm_repro.bench.suite`."""

from fgsm_repro.bench.suite import WORKLOADS, BenchSettings, run_bench, write_bench

__all__ = ["WORKLOADS", "BenchSettings", "run_bench", "write_bench"]
