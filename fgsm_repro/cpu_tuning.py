"""Settings of JAX's CPU backend that the benchmark measured to help (``fgsm-repro bench``;
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
- YNNPACK off (:func:`compiler_options`, per program) for the programs of a convolutional model
  (its training epoch, evaluation and attacks) and for attack programs (a forward pass and the
  gradient to the input). XLA 0.10 hands dots and convolutions to YNNPACK too; its forward
  convolution ran the conv maxout net's second layer at ~120 GFLOP/s against ~175 for XLA's own
  (Eigen), XLA's kernel gradient (:func:`fgsm_repro.models.conv_nhwc`) at 8–50 GFLOP/s against
  90–175, and FGSM on the 240-unit maxout net took 335 ms per 10k images against 310. Dense
  training epochs keep it (the adversarial epochs measured 5–10% slower without).

Those numbers are from an AMD EPYC (Zen, ~170 GFLOP/s fp32 matmul peak on its 2 cores). On an Intel
Xeon (Sapphire Rapids, AVX-512, ~380 GFLOP/s) each tuning was measured again alone, its variants
compiled side by side in one process and timed interleaved (medians of 5–15 paired repetitions;
session 14's notes on issue 4): the reduce flag made the 1600-unit clean epoch 1.34x faster (8.31 →
6.12 s; all YNNPACK off instead: 1.18x, so dense training keeps YNNPACK's dots), the unrolled threefry
5% more (5.87 s), YNNPACK off the conv epoch 2.96x (19.4 → 6.5 s; the reduce flag alone changed
nothing there) and FGSM and PGD-10 1.15x and 1.13x.

``FGSM_REPRO_CPU_TUNING=0`` turns all of them off; a comma-separated list of names picks some
(``reduce``, ``threefry``, ``conv``, ``attack``: e.g. ``FGSM_REPRO_CPU_TUNING=reduce,conv``), so each
can be measured alone on another CPU. An unknown name is an error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from fgsm_repro.errors import ReproError

REDUCE_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
MEASURED_WITH_JAXLIB = "0.10."  # the flag's name is experimental: only for the release it was measured with
WITHOUT_YNNPACK = {"xla_cpu_experimental_ynn_fusion_type": ""}  # no YNNPACK fusion of any type
CONV_TUNING, ATTACK_TUNING = "conv_programs_without_ynnpack", "attack_programs_without_ynnpack"
_applied: list[str] = []


NAMES = ("reduce", "threefry", "conv", "attack")  # the tunings FGSM_REPRO_CPU_TUNING can pick


def selected() -> frozenset[str]:
    """The tunings FGSM_REPRO_CPU_TUNING asks for: all ("1", unset), none ("0"), or a list."""
    value = os.environ.get("FGSM_REPRO_CPU_TUNING", "1").strip()
    if value in ("1", ""):
        return frozenset(NAMES)
    if value == "0":
        return frozenset()
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    if unknown := sorted(names - set(NAMES)):
        raise ReproError(f"FGSM_REPRO_CPU_TUNING: unknown tuning {', '.join(unknown)} "
                         f"(use 1, 0 or a comma-separated list of {', '.join(NAMES)})")
    return names


def enabled(name: str) -> bool:
    """Whether tuning `name` (one of NAMES) is on."""
    return name in selected()


@functools.cache  # read once: compiler_options runs on every evaluation / attack call
def _measured_jaxlib() -> bool:
    try:
        from importlib.metadata import version

        return version("jaxlib").startswith(MEASURED_WITH_JAXLIB)
    except Exception:  # no jaxlib metadata: leave XLA alone
        return False


def set_xla_flags() -> None:
    """Add the reduce-fusion flag to XLA_FLAGS (read when JAX's CPU backend starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    try:
        wanted = enabled("reduce")
    except ReproError:  # the CLI reports it (cli.main); importing the models or attacks raises it
        return
    if not wanted or "xla_cpu_experimental_ynn_fusion_type" in flags or not _measured_jaxlib():
        return
    os.environ["XLA_FLAGS"] = f"{flags} {REDUCE_FLAG}".strip()
    _applied.append(REDUCE_FLAG)


def compiler_options(model: Any = None, *, attack: bool = False) -> dict[str, str] | None:
    """XLA options for a program that runs `model`: YNNPACK off where the model convolves (a
    module with ``convolutional = True``) or the program is an `attack`, when JAX runs on the CPU;
    None (XLA's defaults) else. A user's own ``xla_cpu_experimental_ynn_fusion_type`` in
    XLA_FLAGS is left alone."""
    import jax

    convolutional = getattr(model, "convolutional", False)
    tuning = CONV_TUNING if convolutional else ATTACK_TUNING
    wanted = enabled("conv") if convolutional else attack and enabled("attack")
    if (not wanted or not _measured_jaxlib()
            or "xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", "").replace(REDUCE_FLAG, "")
            or jax.default_backend() != "cpu"):
        return None
    if tuning not in _applied:
        _applied.append(tuning)
    return dict(WITHOUT_YNNPACK)


def jit_per_model(fun: Callable, *, attack: bool = False, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` for a `fun` whose first argument is a (static) Flax module:
    each call compiles with :func:`compiler_options` of that module (and `attack`)."""
    jitted: dict[tuple, Callable] = {}

    @functools.wraps(fun)
    def call(model, *args, **kwargs):
        import jax

        options = compiler_options(model, attack=attack)
        key = tuple(sorted((options or {}).items()))
        if key not in jitted:
            jitted[key] = jax.jit(fun, compiler_options=options, **jit_kwargs)
        return jitted[key](model, *args, **kwargs)

    return call


def unroll_threefry() -> None:
    """Lower threefry2x32 unrolled on the CPU (JAX internals: skipped if they moved)."""
    if not enabled("threefry") or "threefry_unrolled" in _applied:
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
