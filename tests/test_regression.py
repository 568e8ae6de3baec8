"""Regression: re-run the `ci` profile of every experiment and compare with the baselines
recorded in tests/baselines/<experiment>.ci.json (`make baselines`, i.e. `fgsm-repro reproduce
--profile ci --update-baselines`; a plain ci run never writes them).

Each number is compared within the tolerance measured for it (tests/regression.py,
tests/baselines/tolerances.json, docs/regression.md): floating-point rounding differs between
CPU generations and jaxlib releases, and a small network trained for a few epochs amplifies it.
"""

import json

import pytest

from fgsm_repro.config import experiment_configs, load_config
from fgsm_repro.experiments.common import Context
from fgsm_repro.experiments.runner import run_config
from fgsm_repro.results import config_changed
from tests.regression import BASELINES, explain, mismatches, shipped, tolerances

RECORDED = BASELINES  # this checkout's tests/baselines/

pytestmark = [pytest.mark.mnist, pytest.mark.regression, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """One runs folder for the module: an experiment that reuses another's training (x_transfer,
    a_rubbish_mnist, s8_generalization …) restores it when that experiment ran first, as in
    `make reproduce-all`, instead of training it again. A restored training gives the numbers a
    fresh one does (tests/test_kill.py), so the order of the tests changes only their time."""
    return tmp_path_factory.mktemp("runs")


@pytest.mark.parametrize("name", sorted(experiment_configs()))
def test_ci_profile_matches_recorded_numbers(name, tmp_path, runs_dir, mnist_data_dir, request):
    if load_config(experiment_configs()[name], "ci").data.dataset == "cifar10":
        request.getfixturevalue("cifar_data_dir")  # imported like MNIST when it is not there yet
    recorded_file = RECORDED / f"{name}.ci.json"
    if not recorded_file.is_file():
        assert name not in shipped(), f"no ci baseline for the shipped config {name}: run `make baselines`"
        pytest.skip(f"{name}: no ci baseline yet for this config of your own; `make baselines` records one")
    recorded = json.loads(recorded_file.read_text())
    ctx = Context(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=runs_dir,
                  show_progress=False)
    fresh = json.loads(run_config(experiment_configs()[name], "ci", ctx).read_text())

    # The recorded run ran what the ci config runs now (compared across config formats).
    assert config_changed({**recorded, "name": name}) is False, "ci config changed: re-record its numbers"
    assert fresh["provenance"]["dataset"]["sha256"] == recorded["provenance"]["dataset"]["sha256"]
    problems, compared = mismatches(recorded, fresh, tolerances(name))
    assert compared >= 1
    assert not problems, explain(recorded, fresh, problems)
    for figure in fresh["figures"].values():
        assert (tmp_path / "results" / figure).is_file()
