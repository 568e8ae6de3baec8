"""Settings of JAX's CPU backend that `fgsm-repro bench` measured to help, applied by
:class:`fgsm_repro.runtime.Runtime` (the CLI applies them by default; nothing is applied on import):

- ``reduce``: ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` in XLA_FLAGS, so that fused
  reductions (the max-norm constraint's column norms) run in XLA's own emitter, not YNNPACK.
- ``threefry``: JAX's unrolled threefry lowering (the one it uses on GPUs) on the CPU too, for the
  dropout masks drawn every step. Same algorithm, same bits.
- ``conv`` / ``attack``: YNNPACK off, per program (:func:`compiler_options`), for the programs of
  a convolutional model and for attack programs, where XLA's own convolutions and dots ran faster.

A user's own ``xla_cpu_experimental_ynn_fusion_type`` in XLA_FLAGS is left alone, and the flags
are only set for the jaxlib release they were measured with (XLA aborts on a flag it does not
know). What each is worth, measured: docs/performance.md.
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


NAMES = ("reduce", "threefry", "conv", "attack")  # the tunings a Runtime can pick
_selected: frozenset[str] = frozenset()  # none until fgsm_repro.runtime applies some


def parse(value: str | None) -> frozenset[str]:
    """The tunings named by `value` (FGSM_REPRO_CPU_TUNING): all ("1", empty, None), none ("0"),
    or a comma-separated list of NAMES."""
    value = (value or "1").strip()
    if value == "1":
        return frozenset(NAMES)
    if value == "0":
        return frozenset()
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    if unknown := sorted(names - set(NAMES)):
        raise ReproError(f"FGSM_REPRO_CPU_TUNING: unknown tuning {', '.join(unknown)} "
                         f"(use 1, 0 or a comma-separated list of {', '.join(NAMES)})")
    return names


def configure(names: frozenset[str]) -> None:
    """Select the tunings `names`: sets XLA_FLAGS (read when JAX's CPU backend starts, so before
    it does) and registers the threefry lowering. Called by :meth:`fgsm_repro.runtime.Runtime.apply`."""
    global _selected
    _selected = frozenset(names)
    set_xla_flags()
    unroll_threefry()


def selected() -> frozenset[str]:
    """The tunings in use."""
    return _selected


def enabled(name: str) -> bool:
    """Whether tuning `name` (one of NAMES) is on."""
    return name in _selected


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
    if not enabled("reduce") or "xla_cpu_experimental_ynn_fusion_type" in flags or not _measured_jaxlib():
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
    """The tunings in effect in this process (recorded with results): none when JAX runs on an
    accelerator, where XLA's CPU flags and the CPU lowering change nothing."""
    import jax

    return list(_applied) if jax.default_backend() == "cpu" else []
