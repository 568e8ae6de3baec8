"""The regression check itself: its tolerances come from measured variability and cover every
compared number, it still fails on a real change, and a failure says whether the host differs."""

import copy
import json

import pytest
from conftest import REPO

from fgsm_repro.config import experiment_configs
from fgsm_repro.experiments.common import Context
from fgsm_repro.experiments.runner import run_config
from tests.regression import BASELINES, TOLERANCES, compared_metric, explain, floor, mismatches, tolerances


def _baseline(name: str) -> dict:
    return json.loads((BASELINES / f"{name}.ci.json").read_text())


def test_every_compared_number_has_a_measured_tolerance_no_tighter_than_its_floor():
    measured = json.loads(TOLERANCES.read_text())["experiments"]
    for name in experiment_configs():
        assert name in measured, f"{name}: no measured tolerances (make tolerances)"
        entry = measured[name]
        for claim, metrics in _baseline(name)["measured"].items():
            for metric, value in metrics.items():
                if not compared_metric(metric, value) or isinstance(value, bool) or value is None:
                    continue
                m = entry["metrics"].get(f"{claim}/{metric}")
                assert m is not None, (name, claim, metric)
                assert m["baseline"] == value, f"{name} {claim}/{metric}: baseline re-recorded, tolerances not"
                assert m["tolerance"] >= floor(metric)
                assert len([v for v in m["values"].values() if v is not None]) >= 3, (name, claim, metric)


@pytest.mark.parametrize("name", sorted(experiment_configs()))
def test_a_recorded_number_moved_past_its_tolerance_fails_the_check(name):
    recorded = _baseline(name)
    tol = tolerances(name)
    problems, compared = mismatches(recorded, recorded, tol)
    assert not problems and compared >= 1
    for claim, metrics in recorded["measured"].items():
        for metric, value in metrics.items():
            if value is None or not compared_metric(metric, value):
                continue
            moved = copy.deepcopy(recorded)
            key = f"{claim}/{metric}"
            moved["measured"][claim][metric] = (not value) if isinstance(value, bool) else (
                value + tol.get(key, floor(metric)) + 0.05)
            problems, _ = mismatches(recorded, moved, tol)
            assert [p.split(":")[0] for p in problems] == [key]


def test_a_failure_names_the_recording_host_when_it_differs():
    recorded = _baseline("t1_convmaxout")
    fresh = copy.deepcopy(recorded)
    fresh["provenance"]["device"]["cpu_info"] = {"model_name": "AMD EPYC 9B45", "vendor": "AuthenticAMD",
                                                 "family": "26", "model": "2", "isa": ["avx2", "avx512f"]}
    fresh["provenance"]["versions"]["jaxlib"] = "0.11.2"
    fresh["measured"]["T1.convmaxout"]["clean_error"] = 0.0
    message = explain(recorded, fresh, mismatches(recorded, fresh, tolerances("t1_convmaxout"))[0])
    assert "T1.convmaxout/clean_error" in message
    assert "family 26" in message and "jaxlib 0.10.2 -> 0.11.2" in message and "make tolerances" in message
    same = explain(recorded, recorded, ["T1.convmaxout/clean_error: 0.0"])
    assert "Same CPU and JAX" in same


@pytest.mark.slow
@pytest.mark.mnist
def test_a_perturbed_training_setting_fails_the_check(tmp_path, mnist_data_dir):
    """Weight decay 1e-3 instead of 0 (a setting the paper leaves open, chosen on validation):
    the softmax regression's weights shrink and its FGSM confidence falls, past the tolerance."""
    config = tmp_path / "t1_softmax.yaml"
    config.write_text(f"inherit: {REPO / 'configs' / 't1_softmax.yaml'}\n"
                      "profiles: {ci: {trainings: {model: {grid: {weight_decay: [0.001]}}}}}\n")
    ctx = Context(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                  show_progress=False)
    fresh = json.loads(run_config(config, "ci", ctx).read_text())
    problems, _ = mismatches(_baseline("t1_softmax"), fresh, tolerances("t1_softmax"))
    assert problems, "a real change passed the regression check"
