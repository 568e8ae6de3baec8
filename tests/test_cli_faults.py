"""Command-line values that were once accepted in silence, or refused only after the expensive
work: each is now one `error:` line, exit 2, before the data or parameters load."""

import pytest
from conftest import REPO

from fgsm_repro import runs
from fgsm_repro.data import preprocess
from tests.helpers import run_cli

T1 = REPO / "configs" / "t1_softmax.yaml"
F2 = REPO / "configs" / "f2_logistic.yaml"
CONV = REPO / "configs" / "t1_convmaxout.yaml"


def _one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, (code, err)
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mnist_data_dir):
    run_dir = tmp_path_factory.mktemp("run") / "t1"
    code, _, err = run_cli(["train", str(T1), "--profile", "ci", "--run-dir", str(run_dir), "-q",
                            "--data-dir", str(mnist_data_dir)])
    assert code == 0, err
    return run_dir


@pytest.mark.mnist
@pytest.mark.parametrize("options, says", [
    (["--param", "steps=true"], "steps"),
    (["--attack", "pgd", "--param", "steps=true"], "whole number"),
    (["--param", "target=99"], "class 99 does not exist"),
    (["--param", "target=10"], "0..9"),
    (["--param", "target=-1"], "target"),
    (["--eps", "nan"], "eps"),
    (["--eps", "-1"], "eps"),
    (["--clip", "1,0"], "clip"),
    (["--clip", "a,b"], "--clip"),
    (["--attack", "nope"], "unknown attack"),
    (["--param", "nope=1"], "unknown key"),
    (["--param", "steps"], "KEY=VALUE"),
    (["--space", "nowhere"], "--space"),
])
def test_attack_options_are_refused_before_the_run_loads(trained_run, monkeypatch, options, says):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the run's data and parameters were loaded before the options were checked")

    monkeypatch.setattr(runs, "load_run", must_not_load)
    line = _one_line_error(*run_cli(["attack", str(trained_run), *options])[::2])
    assert says in line


def _config(tmp_path, text: str, base=T1, name="c.yaml"):
    path = tmp_path / name
    path.write_text(f"inherit: {base}\n{text}")
    return path


@pytest.mark.parametrize("text, says", [
    ("experiment: nope_experiment\n", "unknown experiment 'nope_experiment'"),
    ("data: {classes: null}\n", "data.classes"),  # logistic regression on all 10 classes
    ("attack: {name: fgsm, eps: .25, target: 10}\n", "attack.target"),
    ("profiles: {ci: {train: {epochs: true}}}\n", "epochs"),
    ("seeds: [true]\n", "seeds"),
])
def test_train_refuses_a_config_it_once_accepted(tmp_path, text, says):
    base = F2 if "classes" in text else T1
    line = _one_line_error(*run_cli(["train", str(_config(tmp_path, text, base)), "--profile", "ci",
                                     "--run-dir", str(tmp_path / "run"), "-q"])[::2])
    assert says in line
    assert not (tmp_path / "run").exists()


@pytest.mark.cifar
def test_a_batch_larger_than_the_training_set_is_refused_before_the_preprocessing(tmp_path, monkeypatch,
                                                                                 cifar_data_dir):
    def must_not_preprocess(*args, **kwargs):
        raise AssertionError("the images were preprocessed before the batch size was checked")

    monkeypatch.setattr(preprocess, "apply_numpy", must_not_preprocess)
    config = _config(tmp_path, "profiles: {ci: {data: {train_per_class: 5}}}\n", base=CONV)
    line = _one_line_error(*run_cli(["train", str(config), "--profile", "ci", "--run-dir", str(tmp_path / "run"),
                                     "-q", "--data-dir", str(cifar_data_dir)])[::2])
    assert "batch_size 128 is larger than the training set (50 examples)" in line
