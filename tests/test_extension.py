"""The extension points, used as a user would: an attack with a parameter of its own, and an
experiment that attacks one model and evaluates another, each one module and one YAML
(tests/toys/), without a change to the package."""

import contextlib
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from typer.testing import CliRunner

from fgsm_repro.cli import app
from fgsm_repro.config import load_config
from fgsm_repro.evaluation import adversarial_examples
from fgsm_repro.experiments import EXPERIMENTS
from fgsm_repro.experiments.common import Context
from fgsm_repro.experiments.runner import run_config
from fgsm_repro.models import build_model
from tests.toys import top_k_flip, transfer

TOYS = REPO / "tests" / "toys"


@dataclasses.dataclass
class CountingContext(Context):
    """A run context that counts the epochs trained under each progress label."""

    epochs: dict = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def progress(self, description, total):
        with super().progress(description, total) as advance:
            def counted(record=None):
                self.epochs[description] = self.epochs.get(description, 0) + 1
                advance(record)

            yield counted


def test_an_attack_with_its_own_parameter_is_one_module_and_one_yaml():
    cfg = load_config(TOYS / "top_k_flip.yaml")
    assert isinstance(cfg.attack, top_k_flip.TopKFlip) and cfg.attack.pixels == 30
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
def test_the_new_attack_runs_in_experiments_and_on_the_command_line(tmp_path, mnist_data_dir):
    ctx = Context(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                  show_progress=False)
    record = json.loads(run_config(TOYS / "top_k_flip.yaml", "paper", ctx).read_text())
    assert record["provenance"]["config"]["attack"] == {"name": "top_k_flip", "clip": None, "labels": "true",
                                                        "pixels": 30}
    measured = record["measured"]["T1.softmax"]
    assert measured["error"] > measured["clean_error"] + 5

    runner, run_dir = CliRunner(), tmp_path / "run"
    res = runner.invoke(app, ["train", str(TOYS / "top_k_flip.yaml"), "--run-dir", str(run_dir), "--data-dir",
                              str(mnist_data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "attack.json"
    res = runner.invoke(app, ["attack", str(run_dir), "--param", "pixels=5", "--out", str(out), "--data-dir",
                              str(mnist_data_dir)])
    assert res.exit_code == 0, res.output
    assert "top_k_flip pixels=5" in res.output and json.loads(out.read_text())["attack"]["pixels"] == 5
    res = runner.invoke(app, ["attack", str(run_dir), "--attack", "pgd", "--param", "steps=3", "--data-dir",
                              str(mnist_data_dir)])
    assert "attack option eps: Field required" in str(res.exception)  # the config's attack has no eps
    res = runner.invoke(app, ["attack", str(run_dir), "--attack", "pgd", "--eps", "0.25", "--param", "steps=3",
                              "--out", str(out), "--data-dir", str(mnist_data_dir)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["attack"] == {"name": "pgd", "clip": None, "labels": "true", "eps": 0.25,
                                                     "steps": 3, "step_size": None, "random_start": True,
                                                     "norm": "inf", "restarts": 1, "target": None}
    res = runner.invoke(app, ["attack", str(run_dir), "--param", "pixels=0", "--data-dir", str(mnist_data_dir)])
    assert "attack option pixels: Input should be greater than 0" in str(res.exception)


@pytest.mark.mnist
def test_an_experiment_attacks_one_model_and_evaluates_another(tmp_path, mnist_data_dir, monkeypatch):
    monkeypatch.setitem(EXPERIMENTS, "toy_transfer", transfer)
    ctx = CountingContext(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                          show_progress=False)
    run_config(TOYS / "top_k_flip.yaml", "paper", ctx)  # trains the model that transfer.yaml reuses
    assert sum(ctx.epochs.values()) == 1
    ctx.epochs.clear()
    record = json.loads(run_config(TOYS / "transfer.yaml", "paper", ctx).read_text())
    # The reused model is restored from the other config's run, not trained again; the target is trained.
    assert ctx.epochs == {"transfer [paper] seed 0 target": 1}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["top_k_flip.paper", "transfer.paper"]
    measured = record["measured"]["T2.transfer_a"]
    assert measured["error_on_source"] > 80 and 0 < measured["error"] < 100 and measured["clean_error"] < 20
