"""The comparison behind tests/test_regression.py: which recorded numbers are compared, with which
tolerance, and the message a mismatch gives.

Tolerances (absolute, in the metric's unit) come from tests/baselines/tolerances.json, derived
from measured variability by tests/baselines/measure_variability.py (`make tolerances`; its
docstring states the rule, docs/regression.md the measurements). A metric it does not list gets
the floor of its kind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

BASELINES = Path(__file__).resolve().parent / "baselines"
TOLERANCES = BASELINES / "tolerances.json"

# Floors per kind of metric: a few test examples (or rubbish draws) that a jaxlib release or
# another CPU may move in a run whose trajectory is otherwise stable.
FLOOR = {"error": 1.0, "clean_error": 0.5, "confidence": 1.5, "rubbish": 2.0}


def floor(metric: str) -> float | None:
    """The floor tolerance of `metric`, or None for a number not compared (times, sizes, counts)."""
    if metric == "clean_error":
        return FLOOR["clean_error"]
    if metric.endswith(("error", "_target_hit")) or metric.startswith("error_") or metric == "agreement":
        return FLOOR["error"]
    if "_to_" in metric or "_eps_" in metric:  # transfer-matrix cells and robustness-curve points (errors)
        return FLOOR["error"]
    if metric == "share_piecewise_linear":
        return FLOOR["rubbish"]
    if metric.startswith("confidence") or metric.startswith("fgsm_confidence"):
        return FLOOR["confidence"]
    if metric == "rate" or metric.endswith("_success") or "_share_" in metric:  # rubbish and fooling rates
        return FLOOR["rubbish"]
    return None


def compared_metric(metric: str, value) -> bool:
    """Whether the regression test compares `metric` (a verdict must not flip; a number of a
    compared kind must stay within its tolerance)."""
    if isinstance(value, bool):
        return True
    return isinstance(value, int | float) and floor(metric) is not None


def shipped(path: Path = TOLERANCES) -> set[str]:
    """The project's own configs: those whose variability was measured (a user's configs are not)."""
    return set(json.loads(path.read_text()).get("experiments", {}))


def tolerances(name: str, path: Path = TOLERANCES) -> dict[str, float]:
    """claim/metric -> tolerance of experiment `name`, as derived from measured variability."""
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text()).get("experiments", {}).get(name, {}).get("metrics", {})
    return {key: m["tolerance"] for key, m in metrics.items() if "tolerance" in m}


def mismatches(recorded: dict, fresh: dict, tolerance: dict[str, float]) -> tuple[list[str], int]:
    """The compared numbers of `fresh` (a results record) outside `recorded`'s by more than their
    tolerance, one line each, and how many were compared."""
    found, compared = [], 0
    for claim, metrics in recorded["measured"].items():
        for metric, value in metrics.items():
            if value is None or not compared_metric(metric, value):
                continue
            compared += 1
            now = fresh["measured"].get(claim, {}).get(metric)
            key = f"{claim}/{metric}"
            if isinstance(value, bool):
                if now != value:
                    found.append(f"{key}: {now} (recorded {value}; a verdict must not flip)")
                continue
            tol = tolerance.get(key, floor(metric))
            if not isinstance(now, int | float) or not math.isfinite(now) or abs(now - value) > tol + 1e-9:
                found.append(f"{key}: {now} (recorded {value:.4g} ± {tol:g})")
    return found, compared


def explain(recorded: dict, fresh: dict, problems: list[str]) -> str:
    """The failure message: the numbers out of tolerance, and whether the host or the stack differs
    from the one that recorded the baseline (then the tolerance may need that host's measurement)."""
    from fgsm_repro.results import describe_cpu

    then, now = recorded["provenance"], fresh["provenance"]
    then_cpu = then["device"].get("cpu_info") or then["device"].get("cpu")
    now_cpu = now["device"].get("cpu_info") or now["device"].get("cpu")
    lines = [f"{len(problems)} number(s) outside the tolerance measured for them:", *(f"  {p}" for p in problems)]
    differs = []
    if isinstance(then_cpu, str) and isinstance(now_cpu, dict):  # a record from before cpu_info
        if then_cpu != now_cpu.get("model_name"):
            differs.append(f"recorded on {then_cpu}, run on {describe_cpu(now_cpu)}")
        else:
            differs.append(f"recorded on {then_cpu} of an unrecorded family and ISA, run on {describe_cpu(now_cpu)}")
    elif then_cpu != now_cpu:
        differs.append(f"recorded on {describe_cpu(then_cpu)}, run on {describe_cpu(now_cpu)}")
    for package in ("jax", "jaxlib"):
        if then["versions"].get(package) != now["versions"].get(package):
            differs.append(f"{package} {then['versions'].get(package)} -> {now['versions'].get(package)}")
    if differs:
        lines.append("The host or stack differs from the baseline's (" + "; ".join(differs) + "). If the change "
                     "under test cannot move these numbers, measure this host's spread with `make tolerances` "
                     "and see docs/regression.md.")
    else:
        lines.append("Same CPU and JAX as the baseline: the change under test moved these numbers. Re-record with "
                     "`make baselines` only if that is intended.")
    return "\n".join(lines)
