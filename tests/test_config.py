"""Configs: every shipped file loads in every profile; bad input is a one-line error."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.attacks.pgd import PGD
from fgsm_repro.config import PROFILES, experiment_configs, load_config
from fgsm_repro.errors import ReproError

GOOD = """\
experiment: t1_softmax
claims: [T1.softmax]
model: {name: softmax_regression}
train:
  epochs: 3
  optimizer: {name: sgd, learning_rate: 0.1}
attack: {eps: 0.25}
profiles:
  ci: {train: {epochs: 1}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(experiment_configs()))
@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_configs_load(name, profile):
    cfg = load_config(experiment_configs()[name], profile)
    assert cfg.profile == profile and cfg.claims


def test_profiles_override_and_change_the_hash(tmp_path):
    path = _write(tmp_path, GOOD)
    paper, ci = load_config(path, "paper"), load_config(path, "ci")
    assert (paper.train.epochs, ci.train.epochs) == (3, 1)
    assert paper.train.optimizer == ci.train.optimizer
    assert paper.hash() != ci.hash() and paper.hash() == load_config(path, "paper").hash()
    assert paper.attack.clip is None and paper.attack.labels == "true"  # the paper-table defaults


@pytest.mark.parametrize("text, message", [
    (GOOD + "extra_key: 1\n", "field 'extra_key': unknown key"),
    (GOOD.replace("epochs: 3", "epochs: three"), "field 'train.epochs'"),
    (GOOD.replace("eps: 0.25", "eps: -0.25"), "field 'attack.eps'"),
    (GOOD.replace("eps: 0.25", "eps: .nan"), "field 'attack.eps'"),
    (GOOD.replace("learning_rate: 0.1", "learning_rat: 0.1"), "unknown key"),
    (GOOD.replace("[T1.softmax]", "[T9.nothing]"), "unknown claim ID"),
    (GOOD.replace("eps: 0.25", "name: pgd, eps: 0.25, steps: 0"), "field 'attack.steps'"),
    (GOOD.replace("eps: 0.25", "name: pgd, eps: 0.25, stepz: 3"), "field 'attack.stepz': unknown key"),
    (GOOD.replace("eps: 0.25", "name: deepfoo, eps: 0.25"), "field 'attack.name': unknown attack 'deepfoo'"),
    (GOOD.replace("train:\n", "train: [\n"), "invalid YAML at line"),
    ("- just\n- a list\n", "expected a mapping"),
    (GOOD + "  paperish: {}\n", "unknown profile"),
    (GOOD + "trainings: {m: {grid: {weight_decay: [0, 0.1]}}}\ndata: {validation_size: 0}\n",
     "field 'trainings.m.grid': choosing on validation needs a validation set"),
])
def test_bad_config_is_a_one_line_error_naming_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ReproError) as err:
        load_config(path, "paper")
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("softmax_regression", "resnet"), "field 'model.name': unknown model 'resnet'"),
    (GOOD.replace("experiment: t1_softmax", "experiment: t7_nothing"), "field 'experiment': unknown experiment"),
    (GOOD + "data: {classes: [3, 7]}\n", "needs all classes"),
    (GOOD.replace("softmax_regression", "logistic_regression"), "needs a binary task"),
])
def test_names_are_resolved_by_the_runner(tmp_path, text, message):
    """Loading a config checks its shape; the runner, which knows the registries, checks its names."""
    from fgsm_repro.experiments.runner import experiment_module

    path = _write(tmp_path, text)
    cfg = load_config(path, "paper")
    with pytest.raises(ReproError) as err:
        experiment_module(cfg, path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow  # a subprocess or a long training
def test_loading_a_config_imports_no_data_or_checkpoint_library():
    # An attack's or a model's module is its function and its spec (JAX, Flax), but nothing loads data or runs.
    code = ("import sys; from fgsm_repro.config import experiment_configs, load_config; "
            "[load_config(p, 'ci') for p in experiment_configs().values()]; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'orbax', 'tensorflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_attacks_are_chosen_by_name(tmp_path):
    pgd = load_config(_write(tmp_path, GOOD.replace("eps: 0.25", "name: pgd, eps: 0.3, steps: 40")))
    assert isinstance(pgd.attack, PGD)
    assert (pgd.attack.eps, pgd.attack.steps, pgd.attack.random_start) == (0.3, 40, True)
    fgsm = load_config(_write(tmp_path, GOOD))
    assert isinstance(fgsm.attack, FGSM) and fgsm.attack.describe() == "fgsm eps=0.25"
    assert pgd.hash() != fgsm.hash()
    same_eps = load_config(_write(tmp_path, GOOD.replace("eps: 0.25", "name: pgd, eps: 0.25")))
    assert same_eps.hash() != fgsm.hash()  # the attack's name counts, though it is each attack's default
    assert fgsm.model_dump()["attack"] == {"name": "fgsm", "eps": 0.25, "clip": None, "labels": "true",
                                               "targeted": False, "target": None}


def test_missing_file_and_unknown_profile(tmp_path):
    with pytest.raises(ReproError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ReproError, match="unknown profile"):
        load_config(_write(tmp_path, GOOD), "huge")
    with pytest.raises(ReproError, match="not defined"):
        load_config(_write(tmp_path, GOOD), "fast")


def test_inherit_merges_over_the_parent_and_trainings_are_validated(tmp_path):
    (tmp_path / "base.yaml").write_text(GOOD + "trainings: {parent_only: {}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("inherit: base.yaml\ntrain: {epochs: 7}\ntrainings:\n  big: {train: {batch_size: 50}}\n"
                     "  same: {}\n")
    cfg = load_config(child, "paper")
    assert cfg.train.epochs == 7 and cfg.train.optimizer.learning_rate == 0.1  # merged, not replaced
    assert list(cfg.training_specs()) == ["big", "same"]  # trainings belong to the file that declares them
    assert cfg.train_of("big").batch_size == 50 and cfg.train_of("same") == cfg.train
    assert cfg.training_hash("big") != cfg.training_hash("same")
    assert load_config(child, "ci").train.epochs == 1  # the parent's profiles apply to the child
    child.write_text("inherit: base.yaml\ntrainings:\n  bad: {train: {batch_size: -1}}\n")
    with pytest.raises(ReproError, match="field 'trainings.bad.train.batch_size'"):
        load_config(child)
    (tmp_path / "base.yaml").write_text("inherit: child.yaml\n" + GOOD)
    child.write_text("inherit: base.yaml\n")
    with pytest.raises(ReproError, match="circular"):
        load_config(child)


def test_several_models_and_trainings(tmp_path):
    two = GOOD.replace("model: {name: softmax_regression}\n", "models:\n  a: {name: softmax_regression}\n"
                       "  b: {name: maxout_mlp, options: {units: 8}}\n")
    path = _write(tmp_path, two + "trainings:\n  first: {model: a}\n  second: {model: b, train: {epochs: 2}}\n"
                  "  wd: {model: a, grid: {weight_decay: [0.0, 0.001]}}\n"
                  "  sweep: {model: a, grid: {weight_decay: [0.0]}, choose: all, measure_epochs: [1, 4]}\n"
                  "  borrowed: {reuse: {config: t1_softmax, training: model}}\n")
    cfg = load_config(path)
    assert cfg.model_of("second").name == "maxout_mlp" and cfg.train_of("second").epochs == 2
    assert cfg.training_specs()["wd"].points() == [{"weight_decay": 0.0}, {"weight_decay": 0.001}]
    assert cfg.train_of("wd", {"weight_decay": 0.001}).weight_decay == 0.001
    sweep = cfg.train_of("sweep", {"weight_decay": 0.0})
    assert (sweep.epochs, sweep.early_stopping_patience) == (4, None)  # the last epoch measured, no early stop
    assert cfg.training_hash("first") != cfg.training_hash("second")
    for text, message in [
        (two + "trainings: {x: {model: c}}\n", "field 'trainings.x.model': 'c' is not one of the models (a, b)"),
        (GOOD + "models: {a: {name: softmax_regression}}\n", "either model (one model) or models"),
        (two + "trainings: {x: {reuse: {config: t1_softmax}, grid: {weight_decay: [0]}}}\n", "reuse takes"),
        (GOOD.replace("train:\n", "data: {validation_size: 0}\ntrain:\n")
         + "trainings: {x: {grid: {weight_decay: [0, 1]}}}\n", "needs a validation set"),
    ]:
        with pytest.raises(ReproError, match=re.escape(message)):
            load_config(_write(tmp_path, text))


def test_records_of_the_earlier_config_format_are_compared_through_the_migration():
    """The results files recorded before `trainings` replaced select / sensitivity /
    adversarial_training / variants ran what today's configs run (same hash once migrated)."""
    from fgsm_repro.results import config_changed, read_results

    records = read_results(REPO / "results")
    assert len(records) >= 10
    for record in records:
        assert config_changed(record) is False, record["_file"]
    legacy = dict(records[0]["provenance"]["config"], seeds=[0, 1, 2])
    changed = {**records[0], "provenance": {**records[0]["provenance"], "config_hash": "0", "config": legacy}}
    assert config_changed(changed) is True


def test_the_report_marks_a_result_whose_config_changed_as_stale(tmp_path):
    import json

    from fgsm_repro.report import build_report

    record = json.loads((REPO / "tests" / "baselines" / "t1_softmax.ci.json").read_text())
    (tmp_path / "t1_softmax.ci.json").write_text(json.dumps(record))
    assert "Stale" not in build_report(tmp_path) and "earlier form" not in build_report(tmp_path)
    record["provenance"]["config_hash"] = "oldformula"  # the same config, hashed another way
    (tmp_path / "t1_softmax.ci.json").write_text(json.dumps(record))
    assert "Stale" not in build_report(tmp_path) and "recorded with an earlier form" in build_report(tmp_path)
    record["provenance"]["config"]["seeds"] = [5]
    record["provenance"]["config_hash"] = "changed"
    (tmp_path / "t1_softmax.ci.json").write_text(json.dumps(record))
    assert "**Stale**: `configs/t1_softmax.yaml` (ci profile) has changed" in build_report(tmp_path)


@pytest.mark.parametrize("options, message", [
    ({"members": 1}, "field 'options.members': Input should be greater than or equal to 2"),
    ({"members": "many"}, "field 'options.members': Input should be a valid integer"),
    ({"memberz": 12}, "field 'options.memberz': unknown key"),
])
def test_experiment_options_are_checked_by_the_experiment(options, message):
    from fgsm_repro.experiments.runner import experiment_module

    path = experiment_configs()["s9_ensemble"]
    cfg = load_config(path, "ci").model_copy(update={"options": options})
    with pytest.raises(ReproError) as err:
        experiment_module(cfg, path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_experiment_without_options_takes_none(tmp_path):
    from fgsm_repro.experiments.runner import experiment_module

    path = _write(tmp_path, GOOD + "options: {members: 3}\n")
    with pytest.raises(ReproError, match="field 'options': experiment t1_softmax takes no options"):
        experiment_module(load_config(path), path)


def test_a_grid_may_name_a_nested_setting(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD + "trainings:\n  model: {grid: {optimizer.learning_rate: [0.01, 0.03]}}\n"))
    spec = cfg.training_specs()["model"]
    assert [cfg.train_of("model", p).optimizer.learning_rate for p in spec.points()] == [0.01, 0.03]
    assert cfg.train_of("model", spec.points()[0]).optimizer.name == "sgd"  # the rest of optimizer kept
    assert len({cfg.training_hash("model", p) for p in spec.points()}) == 2
    bad = _write(tmp_path, GOOD + "trainings:\n  model: {grid: {optimizer.learning_rat: [0.01]}}\n")
    with pytest.raises(ReproError, match="trainings.model.train.optimizer.learning_rat"):
        load_config(bad)


def test_a_rubbish_class_must_be_the_models_extra_class():
    from fgsm_repro.config import TrainingConfig
    from fgsm_repro.experiments.runner import experiment_module

    path = experiment_configs()["a_rubbish_mnist"]
    cfg = load_config(path, "ci")
    experiment_module(cfg, path)  # as shipped: an 11-class maxout, label 10
    wrong = dict(cfg.trainings, rubbish_trained=TrainingConfig(model="maxout", train={"rubbish": {"label": 10}}))
    with pytest.raises(ReproError, match="trainings.rubbish_trained.train.rubbish.label': the rubbish class must be"):
        experiment_module(cfg.model_copy(update={"trainings": wrong}), path)


def test_a_result_is_stale_when_a_training_it_reuses_changes(tmp_path):
    """Configs like s8_generalization take their models from other configs: a change of such a
    recipe marks the result stale though the config itself is unchanged."""
    from fgsm_repro.results import config_changed
    from fgsm_repro.trainings import reused_training_hashes

    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "user.yaml").write_text(GOOD + "trainings:\n  model: {reuse: {config: base}}\n")
    cfg = load_config(tmp_path / "user.yaml", "paper")
    record = {"name": "user", "provenance": {"profile": "paper", "config_hash": cfg.hash(), "config": {},
                                             "reused_training_hashes": reused_training_hashes(cfg)}}
    assert config_changed(record, tmp_path) is False
    (tmp_path / "base.yaml").write_text(GOOD.replace("epochs: 3", "epochs: 4"))
    assert config_changed(record, tmp_path) is True
    del record["provenance"]["reused_training_hashes"]  # a record from before the field: not judged
    assert config_changed(record, tmp_path) is False
