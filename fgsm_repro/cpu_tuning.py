"""Two settings of JAX's CPU backend that the benchmark measured to help (``fgsm-repro bench``;
numbers in the issue notes and results/bench.json), applied by default:

- ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` in XLA_FLAGS: XLA otherwise hands fused
  reductions to YNNPACK, and the max-norm constraint (column norms of p + update, then the
  rescale) ran there at ~11 GB/s — 29 ms of a 100 ms training step of the 1600-unit maxout
  network. XLA's own emitter does it in half the time. Set in the environment when fgsm_repro is
  imported, so it applies if JAX's backend has not started yet; a user's own
  ``xla_cpu_experimental_ynn_fusion_type`` in XLA_FLAGS is left alone, and the flag is only
  added for the jaxlib release it was measured with (XLA aborts on a flag it does not know).
- The unrolled threefry lowering (the one JAX uses on GPUs) for the CPU too: JAX lowers
  threefry2x32 on the CPU as a rolled 5-iteration loop to save compile time, and the dropout
  masks of every step then cost 5 small loop iterations each. Same algorithm, same bits.

``FGSM_REPRO_CPU_TUNING=0`` turns both off.
"""

from __future__ import annotations

import os

REDUCE_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
MEASURED_WITH_JAXLIB = "0.10."  # the flag's name is experimental: only for the release it was measured with
_applied: list[str] = []


def enabled() -> bool:
    return os.environ.get("FGSM_REPRO_CPU_TUNING", "1") != "0"


def set_xla_flags() -> None:
    """Add the reduce-fusion flag to XLA_FLAGS (read when JAX's CPU backend starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if not enabled() or "xla_cpu_experimental_ynn_fusion_type" in flags:
        return
    try:
        from importlib.metadata import version

        if not version("jaxlib").startswith(MEASURED_WITH_JAXLIB):
            return
    except Exception:  # no jaxlib metadata: leave XLA alone
        return
    os.environ["XLA_FLAGS"] = f"{flags} {REDUCE_FLAG}".strip()
    _applied.append(REDUCE_FLAG)


def unroll_threefry() -> None:
    """Lower threefry2x32 unrolled on the CPU (JAX internals: skipped if they moved)."""
    if not enabled() or "threefry_unrolled" in _applied:
        return
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    if rule is None:
        return
    mlir.register_lowering(threefry2x32.threefry2x32_p, rule, platform="cpu", inline=False)
    _applied.append("threefry_unrolled")


def applied() -> list[str]:
    """The tunings in effect in this process (recorded with benchmark results)."""
    return list(_applied)
