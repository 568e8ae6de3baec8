"""Configs: every shipped file loads in every profile; bad input is a one-line error."""

from pathlib import Path

import pytest

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
    (GOOD.replace("softmax_regression", "resnet"), "unknown model"),
    (GOOD.replace("train:\n", "train: [\n"), "invalid YAML at line"),
    ("- just\n- a list\n", "expected a mapping"),
    (GOOD + "  paperish: {}\n", "unknown profile"),
    (GOOD + "data: {classes: [3, 7]}\n", "needs all classes"),
    (GOOD.replace("softmax_regression", "logistic_regression"), "needs a binary task"),
    (GOOD + "select: {weight_decay: [0, 0.1]}\ndata: {validation_size: 0}\n", "select needs a validation set"),
])
def test_bad_config_is_a_one_line_error_naming_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ReproError) as err:
        load_config(path, "paper")
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_file_and_unknown_profile(tmp_path):
    with pytest.raises(ReproError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ReproError, match="unknown profile"):
        load_config(_write(tmp_path, GOOD), "huge")
    with pytest.raises(ReproError, match="not defined"):
        load_config(_write(tmp_path, GOOD), "fast")


def test_inherit_merges_over_the_parent_and_variants_are_validated(tmp_path):
    (tmp_path / "base.yaml").write_text(GOOD)
    child = tmp_path / "child.yaml"
    child.write_text("inherit: base.yaml\ntrain: {epochs: 7}\nvariants:\n  big: {batch_size: 50}\n  same: {}\n")
    cfg = load_config(child, "paper")
    assert cfg.train.epochs == 7 and cfg.train.optimizer.learning_rate == 0.1  # merged, not replaced
    assert cfg.variant("big").batch_size == 50 and cfg.variant("same") == cfg.train
    assert load_config(child, "ci").train.epochs == 1  # the parent's profiles apply to the child
    child.write_text("inherit: base.yaml\nvariants:\n  bad: {batch_size: -1}\n")
    with pytest.raises(ReproError, match="variant 'bad': batch_size"):
        load_config(child)
    (tmp_path / "base.yaml").write_text("inherit: child.yaml\n" + GOOD)
    child.write_text("inherit: base.yaml\n")
    with pytest.raises(ReproError, match="circular"):
        load_config(child)
