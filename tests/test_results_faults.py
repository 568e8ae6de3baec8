"""Faulty results files: a record of the wrong shape is named as unreadable (at the top of the
report, and on the terminal) while the rest of the report is built, never a traceback; a result
whose config is gone or no longer loads is marked stale, saying why, and `reproduce --stale` says
when there is nothing to re-run.

The fuzz test draws new cases every run and counts them (printed at the end of the test run);
docs/guarantees.md quotes the counts.
"""

import copy
import functools
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fgsm_repro.report as report
import fgsm_repro.results as results
import fgsm_repro.trainings as trainings
from fgsm_repro.config import experiment_configs, load_config
from fgsm_repro.experiments import runner
from fgsm_repro.results import scan_results, stale_reason
from tests.helpers import count_case, run_cli

INTACT = "t1_softmax.fast.json"  # beside every broken record: its section must still be built


def _record(name: str) -> dict:
    return json.loads((REPO / "results" / name).read_text())


# The shipped configs, read once for all the tests below that ask for `configs_read_once`: they
# do not change meanwhile, and parsing their YAML is most of the time of a report of two records.
_load_once = functools.cache(lambda path, profile, overrides: load_config(path, profile, **json.loads(overrides)))
_left_to_paper_once = functools.cache(report._left_to_paper)


@pytest.fixture
def configs_read_once(monkeypatch):
    for module in (results, report, trainings):
        monkeypatch.setattr(module, "load_config", lambda path, profile="paper", **overrides:
                            _load_once(Path(path), profile, json.dumps(overrides, sort_keys=True)))
    monkeypatch.setattr(report, "_left_to_paper", _left_to_paper_once)


def _report(results_dir: Path) -> tuple[str, str]:
    """`fgsm-repro report --results-dir`: the report and the terminal's stderr (exit 0)."""
    code, _, err = run_cli(["report", "--results-dir", str(results_dir)])
    assert code == 0 and "Traceback" not in err, err
    return (results_dir / "REPORT.md").read_text(), err


# --- records of the wrong shape --------------------------------------------------------------------

DELETE = object()


def _set(*path_value):
    """A change of a record: the value at the path (the last argument; DELETE deletes the key)."""
    *path, value = path_value

    def change(record):
        node = record
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return change


WRONG_SHAPES = {  # what the trial found, and its kin: field changed -> what the reason names
    "no dataset": (_set("provenance", "dataset", DELETE), "field 'provenance.dataset': Field required"),
    "claim not a dict": (_set("measured", "T1.softmax", 5), "field 'measured.T1.softmax': Input should be a valid"),
    "error a string": (_set("measured", "T1.softmax", "error", "99.9"), "field 'measured.T1.softmax.error'"),
    "error past a float": (_set("measured", "T1.softmax", "error", 10**400), "field 'measured.T1.softmax.error'"),
    "error a bool": (_set("measured", "T1.softmax", "error", True), "field 'measured.T1.softmax.error'"),
    "holds a string": (_set("measured", "S5.l1", {"holds": "yes"}), "field 'measured.S5.l1.holds'"),
    "ci95 a string": (_set("ci95", {"T1.softmax": {"error": "0.1"}}), "field 'ci95.T1.softmax.error'"),
    "name a list": (_set("name", ["t1_softmax"]), "field 'name'"),
    "unknown profile": (_set("provenance", "profile", "slow"), "field 'provenance.profile'"),
    "claims a string": (_set("claims", "T1.softmax"), "field 'claims'"),
    "seeds a number": (_set("provenance", "seeds", 3), "field 'provenance.seeds'"),
    "wall time a string": (_set("provenance", "wall_time_s", "9 s"), "field 'provenance.wall_time_s'"),
    "table rows not dicts": (_set("tables", {"selection": "abc"}), "field 'tables.selection'"),
    "sha256 a number": (_set("provenance", "dataset", "sha256", 0), "field 'provenance.dataset.sha256'"),
    "no measured": (_set("measured", DELETE), "field 'measured': Field required"),
    "a lone surrogate": (_set("description", "\ud800"), "UnicodeEncodeError"),
}


@pytest.mark.parametrize("case", list(WRONG_SHAPES))
def test_a_record_of_the_wrong_shape_is_named_unreadable_and_the_rest_reported(tmp_path, configs_read_once, case):
    change, reason = WRONG_SHAPES[case]
    shutil.copy(REPO / "results" / INTACT, tmp_path)
    record = _record("t1_softmax.paper.json")
    change(record)
    (tmp_path / "t1_softmax.paper.json").write_text(json.dumps(record))
    records, unreadable = scan_results(tmp_path)
    assert [r["_file"] for r in records] == [INTACT]
    assert len(unreadable) == 1 and unreadable[0].startswith("t1_softmax.paper.json: ") and reason in unreadable[0]
    text, err = _report(tmp_path)
    assert "1 results file(s) could not be read" in text and f"`{unreadable[0]}`" in text
    assert f"warning: unreadable results file {unreadable[0]}" in err
    assert f"file `results/{INTACT}`" in text  # the rest is built


def test_nan_and_infinite_values_are_read_and_left_off_the_figure(tmp_path, configs_read_once):
    record = _record(INTACT)
    record["measured"]["T1.softmax"].update(error=float("nan"), confidence_mistakes=float("inf"))
    (tmp_path / INTACT).write_text(json.dumps(record))
    assert scan_results(tmp_path).unreadable == []
    text, _ = _report(tmp_path)
    assert "| T1.softmax | error | 99.90 | nan |" in text
    assert report.claim_points(scan_results(tmp_path).records) == []


# --- results whose config is gone or no longer loads ----------------------------------------------

@pytest.fixture
def configs(tmp_path, monkeypatch) -> Path:
    """A copy of configs/ that results, report and `reproduce` read instead of the shipped one
    (which the tests leave alone)."""
    folder = tmp_path / "configs"
    shutil.copytree(REPO / "configs", folder)
    for module in (results, report, runner):
        monkeypatch.setattr(module, "experiment_configs", lambda config_dir=folder: experiment_configs(config_dir))
    return folder


def test_a_result_whose_config_is_gone_or_broken_is_stale_and_reproduce_stale_says_so(tmp_path, configs):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    for name in ("t1_softmax", "f4_sweep", "s8_generalization", "f2_logistic"):
        shutil.copy(REPO / "results" / f"{name}.paper.json", results_dir)
    (configs / "f4_sweep.yaml").unlink()
    (configs / "s8_generalization.yaml").rename(configs / "s8_renamed.yaml")
    (configs / "f2_logistic.yaml").write_text((configs / "f2_logistic.yaml").read_text() + "nosuch: 1\n")

    records = {r["name"]: r for r in scan_results(results_dir).records}
    assert stale_reason(records["t1_softmax"]) is None
    for name in ("f4_sweep", "s8_generalization"):  # deleted, renamed
        assert stale_reason(records[name]) == f"its config {name}.yaml is gone (deleted or renamed)"
    broken = stale_reason(records["f2_logistic"])
    assert broken.startswith("its config no longer loads: ") and "f2_logistic.yaml: field 'nosuch'" in broken
    assert "\n" not in broken

    text, _ = _report(results_dir)
    for name in ("f4_sweep", "s8_generalization"):
        assert (f"**Stale**: its config {name}.yaml is gone (deleted or renamed); no config is left to re-run it: "
                f"restore its config, or delete `results/{name}.paper.json`.") in text
    assert f"**Stale**: {broken}; `fgsm-repro reproduce --stale --profile paper` re-runs it." in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for claim in ("F2.adv", "F4.sweep", "S8.agree_rbf"):  # the claims table says so too
        assert all("(**stale**: its config" in row for row in rows if row.startswith(f"| {claim} |")), claim
    assert not any("stale" in row for row in rows if row.startswith("| T1.softmax |"))

    reproduce = ["reproduce", "--stale", "--profile", "paper", "--results-dir", str(results_dir),
                 "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "no-data")]
    code, out, err = run_cli(reproduce)  # the broken config is picked, and refused in one line
    assert code == 2 and "stale [paper]: f2_logistic" in out and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: ") and "f2_logistic.yaml: field 'nosuch'" in err
    for name in ("f4_sweep", "s8_generalization"):  # nothing can re-run these: said, not a crash
        assert f"warning: {name}.paper.json is stale (its config {name}.yaml is gone" in err

    shutil.copy(REPO / "configs" / "f2_logistic.yaml", configs)  # mended: only the gone ones are left
    code, out, err = run_cli(reproduce)
    assert code == 0 and "stale [paper]: none" in out and "Traceback" not in err, err
    assert err.count("no config is left to re-run it") == 2 and not (tmp_path / "runs").exists()


# --- fuzzing results records -----------------------------------------------------------------------

BASES = ["t1_softmax.paper.json", "s7_rbf.fast.json", "f2_logistic.paper.json", "s5_l1.fast.json",
         "f4_sweep.fast.json", "attacks_mnist.fast.json", "a_rubbish_mnist.fast.json"]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JUNK = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=6),
                              st.floats(allow_nan=True, allow_infinity=True)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=3)),
                    max_leaves=8)
# Values a record should never end the report on: of the wrong type, not finite, huge, nested junk.
ODD_VALUES = st.one_of(
    st.sampled_from([0, -1, 2**63, 10**400, float("nan"), float("inf"), -1e308, 1e308, True, None, "", "99.9",
                     "paper", "mnist", "t1_softmax", "|\n|", "\ud800", [], {}, [1, 2], {"error": "x"}]),
    JUNK,
)


def _paths(tree, prefix=()):
    """Every key path of a nested record (lists' items by index)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


@st.composite
def broken_records(draw) -> tuple[str, bytes]:
    """(file name, content): a committed record with keys deleted or added and values replaced,
    its JSON cut short, random bytes, or arrays nested deeper than a parser recurses."""
    base = draw(st.sampled_from(BASES))
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "truncated", "random", "deep"]))
    text = (REPO / "results" / base).read_text()
    if kind == "truncated":
        return base, text.encode()[:draw(st.integers(0, len(text) - 1))]
    if kind == "random":
        return base, draw(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(
            lambda t: t.encode("utf-8", "surrogatepass"))))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 10_000, 100_000]))
        return base, f'{{"measured": {"[" * depth}{"]" * depth}}}'.encode()
    tree = copy.deepcopy(json.loads(text))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(tree))
        if draw(st.booleans()):  # half the time a field the report reads, not one of hundreds of table cells
            paths = [p for p in paths if len(p) <= 3 and "tables" not in p and "config" not in p] or paths
        *parents, last = draw(st.sampled_from(paths))
        node = tree
        for p in parents:
            node = node[p]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            node[last] = draw(ODD_VALUES)
        elif action == "delete":
            del node[last]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(ODD_VALUES)
    return base, json.dumps(tree).encode()


@FUZZ
@given(case=broken_records())
def test_broken_results_records_are_named_never_a_traceback(tmp_path, configs_read_once, case):
    """A broken record beside an intact one: `report` exits 0 with the report written, the intact
    record's section in it and the broken file either read or named as unreadable (in the report
    and on stderr), or exits 2 with one `error:` line; never a traceback."""
    name, content = case
    folder = tmp_path / "results"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(REPO / "results" / INTACT, folder)
    (folder / name).write_bytes(content)
    count_case("results records: broken records reported")
    code, _, err = run_cli(["report", "--results-dir", str(folder)])
    assert code in (0, 2) and "Traceback" not in err, err[-3000:]
    if code == 2:
        count_case("results records: refused in one line")
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return
    text = (folder / "REPORT.md").read_text()
    assert f"file `results/{INTACT}`" in text
    named = f"warning: unreadable results file {name}: " in err
    assert named == (f"`{name}: " in text), err  # on the terminal exactly when in the report
    assert named != (f"file `results/{name}`" in text)  # read, or named as unreadable: never skipped
    count_case("results records: named unreadable" if named else "results records: still readable, reported")
