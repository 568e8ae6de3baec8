"""A diverging training (NaN/Inf loss or parameters) stops with a one-line error naming the epoch,
and its checkpoints keep the last good epoch, to resume from."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fgsm_repro.config import TrainConfig
from fgsm_repro.errors import ReproError
from fgsm_repro.models import build_model
from fgsm_repro.train import Checkpoints, Data, Trainer, fit, make_optimizer
from tests.helpers import fit_many, fit_one, toy_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10  # per epoch: 500 training examples in batches of 50


_toy = toy_task


def _cfg(**kw):
    base = dict(epochs=6, batch_size=50, optimizer={"name": "sgd", "learning_rate": 0.5, "momentum": 0.5},
                checkpoint_every=1)
    return TrainConfig(**{**base, **kw})


def _model():
    return build_model("softmax_regression", {"num_classes": 2})


def _poisoned(from_step: int | None, steps_per_epoch: int | None = None):
    """The usual optimizer, whose updates turn NaN from update `from_step` on (0-based; None: never)
    when built for `steps_per_epoch` steps an epoch (None: always). The healthy version has the
    same optimizer-state layout, so it resumes from the poisoned one's checkpoints."""
    def optimizer(cfg, steps):
        poison = from_step is not None and steps_per_epoch in (None, steps)
        factor = (lambda count: jnp.where(count >= from_step, jnp.nan, 1.0)) if poison else (lambda count: 1.0)
        return optax.chain(make_optimizer(cfg, steps), optax.scale_by_schedule(factor))
    return optimizer


def _fit(cfg, optimizer, data, seeds=(0,), directory=None, key="k", on_epoch=None):
    model, objective = _model()
    checkpoints = Checkpoints(lambda seed: directory / f"seed{seed}", key) if directory else None
    return fit(Trainer(model, objective, cfg, optimizer), Data(*data), list(seeds), checkpoints=checkpoints,
               on_epoch=on_epoch)


def _steps(directory):
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _assert_same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_a_nan_loss_stops_training_with_one_line_naming_the_epoch():
    seen = []
    with pytest.raises(ReproError) as err:
        _fit(_cfg(), _poisoned(3 * STEPS), _toy(), on_epoch=lambda record, params: seen.append(record["epoch"]))
    message = str(err.value)
    assert message == ("training diverged: the training loss is nan at epoch 4 (seed 0); no checkpoints are written "
                       "(none to resume from); check the data, or lower the learning rate (a new training)")
    assert seen == [1, 2, 3]  # the diverged epoch is not recorded


def test_parameters_turning_non_finite_with_a_finite_loss_stop_it_too(tmp_path):
    """The last update of epoch 3 poisons the parameters; the epoch's losses were all computed before it."""
    with pytest.raises(ReproError, match=r"the parameters became non-finite at epoch 3 \(seed 0\); the last good "
                                         r"checkpoint \(epoch 2\) is kept in ") as err:
        _fit(_cfg(), _poisoned(3 * STEPS - 1), _toy(), directory=tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path / "seed0") in str(err.value)
    assert _steps(tmp_path / "seed0") == [1, 2]


def test_a_huge_learning_rate_diverges_at_the_first_epoch():
    model, objective = _model()
    cfg = _cfg(optimizer={"name": "sgd", "learning_rate": 1e38, "momentum": 0.5})
    with pytest.raises(ReproError, match=r"^training diverged: the training loss is (nan|inf) at epoch 1 \(seed 0\)"):
        fit_one(model, objective, cfg, *_toy()[:2])


@pytest.mark.parametrize("every, kept", [(1, [2, 3]), (2, [2])])
def test_checkpoints_keep_the_last_good_epoch_and_a_fixed_run_resumes_from_it(tmp_path, every, kept):
    cfg, data = _cfg(checkpoint_every=every), _toy()
    with pytest.raises(ReproError, match=rf"at epoch 4 \(seed 0\); the last good checkpoint \(epoch {kept[-1]}\)"):
        _fit(cfg, _poisoned(3 * STEPS), data, directory=tmp_path / "cut")  # epoch 4 would be saved: it is not
    assert _steps(tmp_path / "cut" / "seed0") == kept

    trained = []
    resumed = _fit(cfg, _poisoned(None), data, directory=tmp_path / "cut",
                   on_epoch=lambda record, params: trained.append(record["epoch"]))[0]
    assert trained == list(range(kept[-1] + 1, 7))  # from the last good checkpoint, not from scratch
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in resumed.history)
    whole = _fit(cfg, _poisoned(None), data, directory=tmp_path / "whole")[0]
    _assert_same(whole.params, resumed.params)  # the good epochs were saved exactly


def test_seeds_trained_together_stop_and_keep_their_last_good_checkpoints(tmp_path):
    model, objective = _model()
    data = _toy()
    with pytest.raises(ReproError, match=r"the training loss is nan at epoch 4 \(seed 0\); the last good checkpoint "
                                         r"\(epoch 3\)"):
        fit(Trainer(model, objective, _cfg(), _poisoned(3 * STEPS)), Data(*data), [0, 1],
            checkpoints=Checkpoints(lambda seed: tmp_path / f"seed{seed}", "k"))
    assert _steps(tmp_path / "seed0") == _steps(tmp_path / "seed1") == [2, 3]
    resumed = fit(Trainer(model, objective, _cfg(), _poisoned(None)), Data(*data), [0, 1],
                  checkpoints=Checkpoints(lambda seed: tmp_path / f"seed{seed}", "k"))
    clean = fit_many(model, objective, _cfg(), *data, [0, 1])
    assert [r.epochs_run for r in resumed] == [6, 6]
    for a, b in zip(resumed, clean, strict=True):
        for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


def test_stage2_divergence_names_the_stage2_epoch(tmp_path):
    """Stage 1 trains one epoch (steps 0..9); stage 2 continues from it, its first update poisoned."""
    cfg = _cfg(epochs=1, stage2={"max_epochs": 5})
    with pytest.raises(ReproError, match=r"the training loss is nan at stage-2 epoch 1 \(seed 0\); no checkpoint "
                                         r"written yet in .*seed0-stage2;"):
        _fit(cfg, _poisoned(STEPS), _toy(), directory=tmp_path)
    assert _steps(tmp_path / "seed0") == [1]  # stage 1 is complete, and kept
    assert not (tmp_path / "seed0-stage2").exists() or _steps(tmp_path / "seed0-stage2") == []


def test_retraining_divergence_names_the_retraining_epoch(tmp_path):
    """Only the retraining on train + validation (12 steps an epoch) is poisoned, from its epoch 2."""
    cfg = _cfg(epochs=3, retrain_on_all=True)
    with pytest.raises(ReproError, match=r"the training loss is nan at retraining epoch 2 \(seed 0\); the last good "
                                         r"checkpoint \(retraining epoch 1\) is kept in .*seed0-retrain;"):
        _fit(cfg, _poisoned(12, steps_per_epoch=12), _toy(), directory=tmp_path)
    assert _steps(tmp_path / "seed0") == [2, 3] and _steps(tmp_path / "seed0-retrain") == [1]


@pytest.mark.slow  # a subprocess on MNIST
@pytest.mark.mnist
def test_the_cli_prints_one_error_line_and_exits_2(tmp_path, mnist_data_dir):
    config = tmp_path / "diverges.yaml"
    config.write_text(f"inherit: {os.path.join(REPO, 'configs', 't1_softmax.yaml')}\n"
                      "train: {optimizer: {name: sgd, learning_rate: 1.0e+38, momentum: 0.5}}\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TFDS_DATA_DIR": str(mnist_data_dir)}
    res = subprocess.run([sys.executable, "-m", "fgsm_repro.cli", "train", str(config), "--profile", "ci",
                          "--run-dir", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert lines[0].startswith("error: training diverged: the training loss is ")
    assert "at epoch 1 (seed 0); no checkpoint written yet in " in lines[0]
    assert lines[0].endswith("; check the data, or lower the learning rate (a new training)")
    assert not (tmp_path / "run" / "run.json").exists()
