"""The benchmark suite: each workload (:mod:`fgsm_repro.bench.workloads`) timed in our JAX
implementation and in an equivalent eager PyTorch one (torchattacks for the attacks), interleaved
in one run after warm-up, with medians, the speed ratio, and achieved GFLOP/s against the
machine's measured matmul peak.

Each repetition runs both sides back to back (an ensemble member by member, the two sides
alternating, and which side goes first alternating between repetitions); the speed ratio is the
median over the repetitions of the ratio within each, so that a slow stretch of the machine
slows both sides of a ratio rather than one side's median. A data-parallel run adds a third side,
the same JAX workload on one device, to the same repetitions; its scaling is likewise the median
of the ratios within them. An attack, and the conv epochs, add their products alone
(:meth:`~fgsm_repro.bench.workloads.Workload.products`) as a side, to show how close to the bound
JAX's matrix products and convolutions come here by themselves (one device; not in data-parallel
runs). Extra sides run after the JAX and PyTorch pair. A short workload gets more repetitions
(:func:`~fgsm_repro.bench.timing.timed_reps`): a single run is noisy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import jax

from fgsm_repro.bench.products import Products
from fgsm_repro.bench.settings import BenchSettings
from fgsm_repro.bench.timing import (
    PEAK_REPS,
    Calls,
    matmul_peak_gflops,
    run_all,
    time_call,
    time_interleaved,
    timed_reps,
)
from fgsm_repro.bench.workloads import WORKLOADS
from fgsm_repro.errors import ReproError

TARGET_SPEEDUP, TARGET_ROOFLINE = 1.5, 0.9
FULL = BenchSettings()  # the full suite's sizes


def _products_side(products: Products) -> Calls:
    program, calls = products
    return [lambda: jax.block_until_ready([program(*args) for args in calls])]


def _scaling_fields(one_device_times: list[float], split_times: list[float]) -> dict:
    """The data-parallel side against the same workload on one device, from the same repetitions."""
    paired = [one / split for one, split in zip(one_device_times, split_times, strict=True)]
    return {"one_device_seconds": statistics.median(one_device_times), "one_device_runs": one_device_times,
            "scaling": statistics.median(paired), "scaling_runs": paired}


def _products_fields(products_times: list[float], jax_times: list[float], bound_s: float) -> dict:
    """The workload's products alone (:func:`_products_side`) against the whole workload."""
    products_s = statistics.median(products_times)
    return {"products_seconds": products_s, "products_runs": products_times,
            "products_share": statistics.median(p / j for p, j in zip(products_times, jax_times, strict=True)),
            "products_roofline_fraction": bound_s / products_s}


def _machine() -> dict:
    from fgsm_repro.results import device_info, versions

    info = {**device_info(), "versions": versions(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        from fgsm_repro.bench import torch_side

        torch_info = torch_side.versions()
    except ImportError:
        return info
    info["versions"] |= torch_info["versions"]
    info["torch_threads"] = torch_info["torch_threads"]
    return info


@contextlib.contextmanager
def _compiling_afresh():
    """Without JAX's persistent compilation cache, so that the record's compile times are
    compilations, not loads. JAX decides once per process whether to use the cache: it is reset,
    so that the switch counts (and again after)."""
    from jax.experimental.compilation_cache import compilation_cache

    was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was_on)
        compilation_cache.reset_cache()


def write_bench(record: dict, results_dir: Path) -> Path:
    """results/bench.json (bench.quick.json for a quick run, bench.dp<N>.json for a data-parallel one)."""
    from fgsm_repro.results import write_json

    settings = record["settings"]
    stem = ("bench" + (".quick" if settings["unit_scale"] < 1 else "")
            + (f".dp{record['devices']}" if settings["data_parallel"] else ""))
    return write_json(record, Path(results_dir) / f"{stem}.json")


def run_bench(names: list[str] | None = None, settings: BenchSettings = FULL,
              log: Callable[[str], None] = print) -> dict:
    """Time every workload (or `names`) on both sides, interleaved, compiling afresh; returns the
    bench record."""
    with _compiling_afresh():
        return _run_bench(names, settings, log)


def _run_bench(names: list[str] | None, settings: BenchSettings, log: Callable[[str], None]) -> dict:
    try:
        import torchattacks  # noqa: F401

        from fgsm_repro.bench import torch_side  # noqa: F401
    except ImportError:
        raise ReproError("the benchmark needs PyTorch and torchattacks: `make bench-deps` (torch==2.13.0, CPU "
                         "build, and torchattacks without its torchvision dependency)") from None
    unknown = sorted(set(names or []) - set(WORKLOADS))
    if unknown:
        raise ReproError(f"unknown workload(s) {unknown}; known: {sorted(WORKLOADS)}")
    from fgsm_repro.results import git_state

    git, start = git_state(), time.perf_counter()
    peak = matmul_peak_gflops()
    rows = []
    for w in (WORKLOADS[n] for n in names) if names else WORKLOADS.values():
        log(f"{w.name}: setting up")
        jax_calls, torch_calls = w.jax_calls(settings), w.torch_calls(settings)
        sides = {"jax": jax_calls, "torch": torch_calls}
        if settings.data_parallel:  # scaling: the JAX side on one device, interleaved in the same run
            sides["one_device"] = w.jax_calls(replace(settings, data_parallel=False))
        elif (products := w.products(settings)) is not None:  # products alone
            sides["products"] = _products_side(products)
        first_jax = sum(time_call(call) for call in jax_calls)  # compiles
        for name in [n for n in sides if n != "jax"]:  # warm-up
            run_all(sides[name])
        # A second JAX run: warm-up too, and it sets how many repetitions reach min_timed_seconds.
        reps = timed_reps(settings, time_call(functools.partial(run_all, jax_calls)))
        runs, peaks = {name: [] for name in sides}, []
        for rep in range(reps):  # interleaved: all sides (and the peak) see the same machine state
            peaks.append(max(matmul_peak_gflops(reps=PEAK_REPS).values()))
            # JAX and PyTorch take turns going first, as with two sides; the extra sides come after them.
            pair = ["jax", "torch"] if rep % 2 == 0 else ["torch", "jax"]
            order = pair + [name for name in sides if name not in pair]
            for name, seconds in zip(order, time_interleaved(*(sides[n] for n in order)), strict=True):
                runs[name].append(seconds)
        jax_times, torch_times = runs["jax"], runs["torch"]
        jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
        # Ratios within repetitions: see the module docstring.
        paired = [t / j for j, t in zip(jax_times, torch_times, strict=True)]
        flops = w.flops(settings)
        # The machine's speed drifts, so the bound uses the peak measured beside this workload's repetitions.
        workload_peak = statistics.median(peaks)
        bound_s = None if flops is None else flops / (workload_peak * 1e9)
        speedup, roofline = statistics.median(paired), None if bound_s is None else bound_s / jax_s
        rows.append({
            "name": w.name, "description": w.description, "units": w.width(settings), "flops": flops, "reps": reps,
            "jax_seconds": jax_s, "torch_seconds": torch_s, "jax_runs": jax_times, "torch_runs": torch_times,
            "jax_first_call_seconds": first_jax, "jax_compile_seconds": max(first_jax - jax_s, 0.0),
            "speedup": speedup, "speedup_runs": paired, "speedup_of_medians": torch_s / jax_s,
            "calls_interleaved": len(jax_calls) if len(jax_calls) == len(torch_calls) else 1,
            "jax_gflops": flops and flops / jax_s / 1e9, "torch_gflops": flops and flops / torch_s / 1e9,
            "matmul_peak_gflops": workload_peak, "matmul_peak_runs": peaks,
            "bound_seconds": bound_s, "jax_roofline_fraction": roofline,
            "torch_roofline_fraction": bound_s and bound_s / torch_s,
            "meets_target": bool(speedup >= TARGET_SPEEDUP or (roofline or 0) >= TARGET_ROOFLINE),
        } | w.record_fields(settings)
          | (_scaling_fields(runs["one_device"], jax_times) if "one_device" in runs else {})
          | (_products_fields(runs["products"], jax_times, bound_s) if "products" in runs else {}))
        log(f"{w.name}: jax {jax_s:.3f} s, torch {torch_s:.3f} s, speedup {speedup:.2f}x"
            + (f", {100 * roofline:.0f}% of the matmul bound" if roofline is not None else "")
            + (f" (its dense products alone: {100 * rows[-1]['products_roofline_fraction']:.0f}%)"
               if "products" in runs else ""))
    return {
        "kind": "benchmark",
        "target": f"each workload >= {TARGET_SPEEDUP}x faster than PyTorch eager, or >= "
                  f"{100 * TARGET_ROOFLINE:.0f}% of the arithmetic bound where that is lower",
        "settings": asdict(settings),
        "devices": jax.device_count(),
        "matmul_peak_gflops": peak,
        "workloads": rows,
        "provenance": {**git, "machine": _machine(), "wall_time_s": round(time.perf_counter() - start, 2),
                       "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    }
