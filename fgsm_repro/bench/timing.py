"""How the benchmark times: each call after a pause, the sides of a workload interleaved call by
call, as many repetitions as a short workload needs, and the machine's matmul peak."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from fgsm_repro.bench.settings import BenchSettings

Calls = list[Callable[[], Any]]  # a side of a workload: its calls, each timed on its own

PEAK_REPS = 5  # matmuls per peak measurement beside each timed repetition
MAX_REPS = 25  # however short the workload (each repetition also pauses SETTLE_S per side)
# A pause before each timed run: the other side's worker threads spin for a while after its last
# call, and would slow this one (docs/performance.md).
SETTLE_S = 0.5


def time_call(fn: Callable[[], Any], settle: float = 0.0) -> float:
    """The seconds `fn` takes, after a pause of `settle` seconds."""
    time.sleep(settle)
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def run_all(calls: Calls) -> list[Any]:
    return [call() for call in calls]


def time_interleaved(*sides: Calls, first: int = 0, settle: float = SETTLE_S) -> list[float]:
    """Run every side once and return their times (a side's time is the sum of its calls, each
    after a `settle` pause). With as many calls on every side (the members of an ensemble), the
    calls alternate — call 0 of each side, then call 1 of each, … — the sides in turn from side
    `first` (a0 b0 a1 b1 …, or b0 a0 b1 a1 … with `first`=1), so that all sides run through the
    same stretches of this shared machine, whose speed changes for seconds at a time; else each
    side runs whole, one after the other from side `first`."""
    if len({len(side) for side in sides}) > 1:
        sides = tuple([functools.partial(run_all, side)] for side in sides)
    order = [(first + k) % len(sides) for k in range(len(sides))]
    times = [0.0] * len(sides)
    for i in range(len(sides[0])):
        for k in order:
            times[k] += time_call(sides[k][i], settle)
    return times


def timed_reps(s: BenchSettings, run_seconds: float) -> int:
    """Repetitions of a workload whose JAX side runs in `run_seconds`: at least ``s.reps``, and
    enough to time it for ``s.min_timed_seconds``, up to MAX_REPS."""
    return max(s.reps, min(MAX_REPS, math.ceil(s.min_timed_seconds / max(run_seconds, 1e-9))))


_matmul = jax.jit(jnp.matmul)


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> dict[str, float]:
    """Best fp32 (n×n)·(n×n) GFLOP/s of jax and of torch (if installed) on this machine."""
    flops = 2.0 * n ** 3
    a = jax.random.uniform(jax.random.PRNGKey(0), (n, n), jnp.float32)
    jax.block_until_ready(_matmul(a, a))
    out = {"jax": flops / min(time_call(lambda: jax.block_until_ready(_matmul(a, a))) for _ in range(reps)) / 1e9}
    try:
        from fgsm_repro.bench import torch_side
    except ImportError:
        return out
    out["torch"] = flops / torch_side.matmul_seconds(n, reps) / 1e9
    return out
