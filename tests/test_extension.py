"""The extension points, used as a user would, without a change to the package: an attack is one
module, an experiment is one module + one YAML, anywhere (tests/toys/, copied outside the project);
any attack drives adversarial training."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from fgsm_repro.config import load_config
from fgsm_repro.evaluation import adversarial_examples
from fgsm_repro.experiments.common import Context
from fgsm_repro.experiments.runner import run_config
from fgsm_repro.models import build_model

TOYS = REPO / "tests" / "toys"
EXE = str(Path(sys.executable).with_name("fgsm-repro"))


def _outside(tmp_path, *names: str):
    """The toy files `names` copied to a folder outside the project, and a project folder (the
    current folder of the commands) beside it."""
    elsewhere, project = tmp_path / "elsewhere", tmp_path / "project"
    elsewhere.mkdir()
    (project / "configs").mkdir(parents=True)
    for name in names:
        shutil.copy(TOYS / name, elsewhere / name)
    return elsewhere, project


def _cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    """`fgsm-repro ARGS` in a fresh process, in `cwd`."""
    res = subprocess.run([EXE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_an_attack_with_its_own_parameter_is_one_module():
    cfg = load_config(TOYS / "top_k_flip.yaml")
    assert type(cfg.attack).__name__ == "TopKFlip" and cfg.attack.pixels == 30
    assert cfg.attack.name == "top_k_flip:TopKFlip" and cfg.attack.describe() == "top_k_flip:TopKFlip pixels=30"
    model, objective = build_model("softmax_regression", {})
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    y = np.arange(64, dtype=np.int32) % 10
    params = model.init(jax.random.PRNGKey(1), jnp.asarray(x[:1]))["params"]
    params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    x_adv = adversarial_examples(model, objective, params, x, y, cfg.attack, batch_size=32)
    changed = (x_adv != x).reshape(len(x), -1)
    assert changed.sum(1).max() <= 30 and changed.sum() > 0
    assert set(np.unique(x_adv[x_adv != x])) <= {0.0, 1.0}

    def loss(inputs):
        return np.asarray(objective.loss(model.apply({"params": params}, inputs), y))

    assert (loss(x_adv) >= loss(x) - 1e-5).all() and loss(x_adv).mean() > loss(x).mean()


@pytest.mark.mnist
@pytest.mark.slow  # fresh processes
def test_a_users_attack_runs_from_a_yaml_and_the_command_line_in_a_fresh_process(tmp_path, mnist_data_dir):
    elsewhere, project = _outside(tmp_path, "top_k_flip.py", "top_k_flip.yaml")
    shutil.copy(TOYS / "top_k_flip.py", project / "my_flip.py")  # a module in the current folder
    data, run_dir, out = ["--data-dir", mnist_data_dir], tmp_path / "run", tmp_path / "attack.json"
    _cli(["train", elsewhere / "top_k_flip.yaml", "--profile", "ci", "--run-dir", run_dir, "--quiet", *data], project)
    # the config's own attack, found beside the config
    res = _cli(["attack", run_dir, "--param", "pixels=5", "--out", out, *data], project)
    assert "top_k_flip:TopKFlip pixels=5" in res.stdout
    assert json.loads(out.read_text())["attack"] == {"name": "top_k_flip:TopKFlip", "clip": None, "labels": "true",
                                                     "pixels": 5}
    # another one, named on the command line, found in the current folder
    res = _cli(["attack", run_dir, "--attack", "my_flip:TopKFlip", "--param", "pixels=7", "--out", out, *data],
               project)
    assert json.loads(out.read_text())["attack"]["name"] == "my_flip:TopKFlip"
    assert json.loads(out.read_text())["adversarial"]["error"] > json.loads(out.read_text())["clean"]["error"]
    bad = subprocess.run([EXE, "attack", run_dir, "--attack", "no_such_module:Attack", *data], cwd=project,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown attack 'no_such_module:Attack'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.mnist
@pytest.mark.slow  # fresh processes
def test_a_users_experiment_is_one_module_and_one_yaml_outside_configs(tmp_path, mnist_data_dir):
    elsewhere, project = _outside(tmp_path, "top_k_flip.py", "top_k_flip.yaml", "transfer.py", "transfer.yaml")
    results, runs = tmp_path / "results", tmp_path / "runs"
    _cli(["reproduce", elsewhere / "transfer.yaml", "--profile", "ci", "--results-dir", results, "--runs-dir", runs,
          "--data-dir", mnist_data_dir, "--quiet"], project)
    record = json.loads((results / "transfer.ci.json").read_text())
    # The reused model was trained by its own config (its runs folder), the target here.
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["top_k_flip.ci", "transfer.ci"]
    measured = record["measured"]["X.toy_transfer"]
    assert record["claims"] == ["X.toy_transfer"]
    assert measured["error_on_source"] > 50 and 0 <= measured["error"] <= 100 and measured["clean_error"] < 90
    assert "X.toy_transfer" in (results / "REPORT.md").read_text()


@pytest.mark.mnist
def test_pgd_adversarial_training_is_a_yaml_and_its_epoch_one_compiled_program(tmp_path, mnist_data_dir):
    lowered = []

    def listener(event, _, **kw):
        if event.endswith("jaxpr_to_mlir_module_duration"):
            lowered.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        ctx = Context(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                      show_progress=False)
        record = json.loads(run_config(TOYS / "pgd_training.yaml", "ci", ctx).read_text())
    finally:
        jax.monitoring.clear_event_listeners()
    cfg = load_config(TOYS / "pgd_training.yaml", "ci")
    assert cfg.train.epochs == 3 and type(cfg.train.adversarial.training_attack()).__name__ == "PGD"
    assert cfg.model.name == "tiny_net:TinyNet"  # a model of the user's own, beside the config
    assert lowered.count("jit(train_epoch)") == 1  # three epochs, PGD's steps inside: one program
    measured = record["measured"]["X.pgd_robustness"]
    assert 0 <= measured["clean_error"] < 90 and measured["error"] >= measured["clean_error"]


def test_the_training_attack_runs_inside_the_compiled_step():
    """PGD's steps are a loop inside the training step (one more while loop than FGSM's mix), not
    Python-level steps around it."""
    from fgsm_repro.config import TrainConfig
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.train import init_state, make_optimizer, make_train_epoch

    model, _ = build_model("softmax_regression", {})
    x = jnp.asarray(np.random.default_rng(0).random((40, 28, 28, 1), dtype=np.float32))
    y = jnp.arange(40, dtype=jnp.int32) % 10
    loops = {}
    for name, attack in (("fgsm", {"name": "fgsm", "eps": 0.1}), ("pgd", {"name": "pgd", "eps": 0.1, "steps": 4})):
        cfg = TrainConfig.model_validate({"epochs": 1, "batch_size": 20, "optimizer": {"learning_rate": 0.1},
                                          "adversarial": {"attack": attack}})
        tx = make_optimizer(cfg)
        text = make_train_epoch(model, SOFTMAX, tx, cfg).lower(init_state(model, tx, x, 0), x, y).as_text()
        loops[name] = text.count("stablehlo.while")
    assert loops["pgd"] > loops["fgsm"] >= 1


@pytest.mark.parametrize("field, value, message", [
    ("attack", '{name: "no_such_module:Attack"}', "unknown attack 'no_such_module:Attack' (no module"),
    ("attack", '{name: "tiny_net:TinyNet"}', "tiny_net has no AttackSpec subclass TinyNet"),
    ("attack", '{name: "robustness"}', "module robustness must define one AttackSpec; it defines none"),
    ("attack", '{name: "top_k_flip:TopKFlip", pixels: 0}', "field 'attack.pixels': Input should be greater than 0"),
    ("experiment", "no_such_experiment", "unknown experiment 'no_such_experiment'"),
    ("experiment", "tiny_net", "module tiny_net is not an experiment: it lacks CLAIMS, TRAININGS, run"),
    ("model", '{name: "tiny_net:Nothing"}', "unknown model 'tiny_net:Nothing'"),
    ("model", '{name: "robustness:run"}', "is neither"),
])
def test_a_users_module_that_is_missing_or_wrong_is_one_line(tmp_path, field, value, message):
    """Names of the user's own modules fail in one line naming the config's field: before any data loads."""
    from fgsm_repro.errors import ReproError
    from fgsm_repro.experiments.runner import experiment_module

    for name in ("top_k_flip.py", "tiny_net.py", "robustness.py", "pgd_training.yaml"):
        shutil.copy(TOYS / name, tmp_path / name)
    text = (tmp_path / "pgd_training.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(f"{field}:")]
    path = tmp_path / "bad.yaml"
    path.write_text("\n".join([*lines, f"{field}: {value}"]) + "\n")
    with pytest.raises(ReproError) as e:
        experiment_module(load_config(path, "ci"), path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_configs_own_claim_id_chooses_it_like_a_papers(tmp_path):
    """`fgsm-repro reproduce X.toy_transfer` runs the configs that declare that X. claim."""
    from fgsm_repro.errors import ReproError
    from fgsm_repro.experiments.runner import configs_for

    shutil.copy(TOYS / "transfer.yaml", tmp_path / "transfer.yaml")
    shutil.copy(TOYS / "top_k_flip.yaml", tmp_path / "top_k_flip.yaml")
    assert configs_for(["X.toy_transfer"], tmp_path) == [tmp_path / "transfer.yaml"]
    with pytest.raises(ReproError, match="claim X.nothing has no experiment yet"):
        configs_for(["X.nothing"], tmp_path)
