"""Regression: re-run the `ci` profile of every experiment and compare with the baselines
recorded in tests/baselines/<experiment>.ci.json (`make baselines`, i.e. `fgsm-repro reproduce
--profile ci --update-baselines`; a plain ci run never writes them).

Tolerances (absolute, percentage points): the runs are deterministic for a given seed, JAX
version and machine, so differences come only from floating-point reductions that differ
across CPUs and thread counts; they move a few test examples (or rubbish draws) at most.
"""

import json

import pytest

from fgsm_repro.config import experiment_configs, load_config
from fgsm_repro.experiments.common import Context
from fgsm_repro.experiments.runner import run_config
from fgsm_repro.results import BASELINES_DIR, config_changed

TOLERANCE = {"error": 1.0, "clean_error": 0.5, "confidence": 1.5, "rubbish": 2.0}
RECORDED = BASELINES_DIR

pytestmark = [pytest.mark.mnist, pytest.mark.regression, pytest.mark.slow]


def _tolerance(metric: str) -> float | None:
    if metric == "clean_error":
        return TOLERANCE["clean_error"]
    if metric.endswith(("error", "_target_hit")) or metric.startswith("error_") or metric == "agreement":
        return TOLERANCE["error"]
    if "_to_" in metric or "_eps_" in metric:  # transfer-matrix cells and robustness-curve points (errors)
        return TOLERANCE["error"]
    if metric == "share_piecewise_linear":
        return TOLERANCE["rubbish"]
    if metric.startswith("confidence") or metric.startswith("fgsm_confidence"):
        return TOLERANCE["confidence"]
    if metric == "rate" or metric.endswith("_success") or "_share_" in metric:  # rubbish and fooling rates
        return TOLERANCE["rubbish"]
    return None


@pytest.mark.parametrize("name", sorted(experiment_configs()))
def test_ci_profile_matches_recorded_numbers(name, tmp_path, mnist_data_dir, request):
    if load_config(experiment_configs()[name], "ci").data.dataset == "cifar10":
        request.getfixturevalue("cifar_data_dir")  # imported like MNIST when it is not there yet
    recorded_file = RECORDED / f"{name}.ci.json"
    assert recorded_file.is_file(), f"no ci baseline: run `make baselines` ({name})"
    recorded = json.loads(recorded_file.read_text())
    ctx = Context(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                  show_progress=False)
    fresh = json.loads(run_config(experiment_configs()[name], "ci", ctx).read_text())

    # The recorded run ran what the ci config runs now (compared across config formats).
    assert config_changed({**recorded, "name": name}) is False, "ci config changed: re-record its numbers"
    assert fresh["provenance"]["dataset"]["sha256"] == recorded["provenance"]["dataset"]["sha256"]
    compared = 0
    for claim, metrics in recorded["measured"].items():
        for metric, value in metrics.items():
            if isinstance(value, bool):  # a qualitative verdict must not flip
                assert fresh["measured"][claim][metric] == value, (claim, metric)
                compared += 1
                continue
            tol = _tolerance(metric)
            if tol is None or value is None:
                continue
            assert fresh["measured"][claim][metric] == pytest.approx(value, abs=tol), (claim, metric)
            compared += 1
    assert compared >= 1
    for figure in fresh["figures"].values():
        assert (tmp_path / "results" / figure).is_file()
