"""The project folder (workdir): found from any folder inside it, or given; never the package's own
location. Configs given by their path, the `auto` profile, and the time-left estimates."""

import json
import shutil

import pytest
from conftest import REPO

from fgsm_repro import progress, workdir
from fgsm_repro.errors import ReproError
from tests.helpers import run_cli


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder of its own: the shipped configs, and a results folder with one result."""
    monkeypatch.delenv(workdir.ENV, raising=False)
    monkeypatch.delenv(workdir.RUNS_ENV, raising=False)
    root = tmp_path / "project"
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "results").mkdir()
    shutil.copy(REPO / "results" / "t1_softmax.paper.json", root / "results")
    (root / "notes" / "deeper").mkdir(parents=True)
    yield root
    workdir.use(None)


def _one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def test_the_workdir_is_the_nearest_folder_with_configs_from_a_subfolder(project, monkeypatch):
    monkeypatch.chdir(project / "notes" / "deeper")
    found = workdir.current()
    assert found.root == project.resolve()
    assert (found.configs, found.results, found.runs, found.baselines) == (
        project.resolve() / "configs", project.resolve() / "results", project.resolve() / "runs",
        project.resolve() / "tests" / "baselines")
    code, out, err = run_cli(["report"])  # its results/, not the checkout's
    assert code == 0, err
    assert (project / "results" / "REPORT.md").is_file() and str(project / "results" / "REPORT.md") in out


def test_workdir_option_and_environment_variable(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["report", "--workdir", str(project)])
    assert code == 0, err
    assert (project / "results" / "REPORT.md").is_file()
    (project / "results" / "REPORT.md").unlink()
    monkeypatch.setenv(workdir.ENV, str(project))
    code, _, err = run_cli(["report"])
    assert code == 0, err
    assert (project / "results" / "REPORT.md").is_file() and not (elsewhere / "results").exists()


def test_no_configs_folder_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(workdir.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(*run_cli(["reproduce", "T1.softmax", "--profile", "ci"])[::2])
    assert "no project folder" in line and "--workdir" in line
    line = _one_line_error(*run_cli(["report"])[::2])
    assert "no project folder" in line
    line = _one_line_error(*run_cli(["report", "--workdir", str(tmp_path)])[::2])
    assert line == f"error: --workdir {tmp_path}: not a project folder (it has no configs/ folder)"
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(ReproError):
        workdir.current()
    assert workdir.current(required=False) is None


def test_report_of_some_configs_shows_only_their_results(project, monkeypatch):
    monkeypatch.chdir(project)
    shutil.copy(REPO / "results" / "f2_logistic.paper.json", project / "results")
    code, out, err = run_cli(["report", "configs/f2_logistic.yaml"])
    assert code == 0, err
    table = out[out.index("of the configs named"):]
    assert "F2.adv" in table and "T1.softmax" not in table
    code, out, err = run_cli(["report", "T1.softmax"])
    assert code == 0 and "T1.softmax" in out and "F2.adv" not in out, err
    line = _one_line_error(*run_cli(["report", "nosuch.yaml"])[::2])
    assert line == "error: config file not found: nosuch.yaml"


@pytest.mark.mnist
def test_reproduce_runs_a_config_given_by_its_path_from_any_folder(tmp_path, monkeypatch, mnist_data_dir):
    """A config of one's own, outside any project folder: its results and runs go where asked, and
    the report does not take it for a result whose config is gone."""
    monkeypatch.delenv(workdir.ENV, raising=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    config = mine / "my_exp.yaml"
    config.write_text(f"inherit: {REPO / 'configs' / 'f2_logistic.yaml'}\n")
    monkeypatch.chdir(mine)  # no configs/ here or above
    code, out, err = run_cli(["reproduce", str(config), "--profile", "ci", "--results-dir", str(tmp_path / "res"),
                              "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(mnist_data_dir), "-q"])
    assert code == 0, err
    assert f"my_exp [ci] -> {tmp_path / 'res' / 'my_exp.ci.json'}" in " ".join(out.split())
    record = json.loads((tmp_path / "res" / "my_exp.ci.json").read_text())
    assert record["provenance"]["config_file"] == str(config.resolve())
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["my_exp.ci"]
    report = (tmp_path / "res" / "REPORT.md").read_text()
    assert "my_exp" in report and "**Stale**" not in report and "(**stale**" not in report
    assert sorted(p.name for p in mine.iterdir()) == ["my_exp.yaml"]  # nothing written beside it


def test_auto_is_paper_on_an_accelerator_and_fast_on_a_cpu(monkeypatch):
    import jax

    from fgsm_repro.workflows import resolve_profile

    assert resolve_profile("auto", "cpu") == ("fast", "no accelerator: JAX sees cpu")
    assert resolve_profile("auto", "gpu") == ("paper", "an accelerator: JAX sees gpu")
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert resolve_profile("auto")[0] == "paper"
    assert resolve_profile("ci") == ("ci", "asked for")
    with pytest.raises(ReproError, match="unknown profile 'huge'; choose one of auto, paper, fast, ci"):
        resolve_profile("huge")


def test_reproduce_auto_says_first_what_it_chose_and_the_other_profiles_projected_time(tmp_path, monkeypatch):
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    results = tmp_path / "results"
    results.mkdir()
    fast = json.loads((REPO / "results" / "t2_maxout240.fast.json").read_text())
    (results / "t2_maxout240.fast.json").write_text(json.dumps(fast))
    code, out, err = run_cli(["reproduce", "T2.clean1600", "--results-dir", str(results),
                              "--runs-dir", str(tmp_path / "runs")])  # auto -> fast, which skips it: runs nothing
    assert code == 0, err
    first = " ".join(out.splitlines()[0].split())
    assert first == ("profile auto -> fast (no accelerator: JAX sees cpu); the paper profile would take an unknown "
                     "time here (nothing recorded to project from): `make reproduce-all PROFILE=paper`")
    assert "t2_clean1600 [fast]: not run at this profile" in " ".join(out.split())
    from fgsm_repro.workflows import auto_line

    line = auto_line("fast", "no accelerator: JAX sees cpu", [REPO / "configs" / "t2_maxout240.yaml"], results,
                     None)  # timed at the fast profile: the paper profile's time is projected from it
    assert "; the paper profile would take projected ~" in line and " here: `make reproduce-all PROFILE=paper`" in line


def test_time_left_is_projected_from_seconds_per_epoch_or_unknown_never_a_wrong_at_least(tmp_path):
    from fgsm_repro.config import load_config

    config = REPO / "configs" / "t2_maxout240.yaml"
    fast, paper = (progress.planned_epochs(load_config(config, p)) for p in ("fast", "paper"))
    assert paper == 2 * (1000 + 200) and fast == 2 * (60 + 10)
    record = {"name": "t2_maxout240", "provenance": {"profile": "fast", "wall_time_s": 140.0}, "tables": {}}
    # from the fast run's wall time over its planned epochs, scaled to the paper profile's
    assert progress.estimate(config, "paper", {("t2_maxout240", "fast"): record}, None) == \
        progress.Estimate(140.0 / fast * paper, "projected")
    # the seconds per epoch its tables report, when larger (a resumed run's wall time is short)
    record["tables"] = {"training": [{"seconds_per_epoch": 2.0}, {"seconds_per_epoch": 4.0}]}
    assert progress.estimate(config, "paper", {("t2_maxout240", "fast"): record}, None).seconds == 3.0 * paper
    # ... and the training histories in the runs folder
    history = tmp_path / "t2_maxout240.fast" / "seed0-naive" / "history.json"
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps([{"epoch": 1, "seconds": 99.0}] + [{"epoch": e, "seconds": 5.0} for e in (2, 3)]))
    assert progress.estimate(config, "paper", {("t2_maxout240", "fast"): record}, tmp_path).seconds == 5.0 * paper
    # the same profile's last wall time, unless a projection is longer
    last = {"name": "t2_maxout240", "provenance": {"profile": "fast", "wall_time_s": 1e6}, "tables": {}}
    assert progress.estimate(config, "fast", {("t2_maxout240", "fast"): last}, None) == progress.Estimate(1e6,
                                                                                                       "last time")
    assert progress.estimate(config, "paper", {}, None) == progress.Estimate(None, "unknown")

    plan = progress.Plan(["a [paper]", "b [paper]"], [progress.Estimate(60.0, "last time"), progress.Estimate(None)])
    assert plan.begin(0).endswith("(last time 1:00); 0:00 elapsed, command time left unknown")
    assert "at least" not in plan.eta_line(30.0)
    plan = progress.Plan(["a [paper]", "b [paper]"], [progress.Estimate(60.0, "last time"),
                                                      progress.Estimate(7200.0, "projected")])
    assert plan.begin(1) == "experiment 2 of 2: b [paper] (projected ~2:00:00); 0:00 elapsed, command projected " \
                            "~2:00:00 left"
    assert progress.Plan(["a"], [60.0]).begin(0).endswith("command 1:00 left")
