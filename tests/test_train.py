"""Training: determinism from the seed, early stopping, and exact resume from checkpoints."""

import jax
import numpy as np
import pytest

from fgsm_repro.config import TrainConfig
from fgsm_repro.models import build_model
from tests.helpers import fit_one, toy_task

_toy = toy_task


def _cfg(**kw):
    base = dict(epochs=6, batch_size=50, optimizer={"name": "sgd", "learning_rate": 0.5, "momentum": 0.5},
                checkpoint_every=2, weight_decay=1e-4)
    return TrainConfig(**{**base, **kw})


def _assert_same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_training_learns_and_the_seed_fixes_the_run():
    model, objective = build_model("softmax_regression", {"num_classes": 2})
    data = _toy()
    a = fit_one(model, objective, _cfg(), *data, seed=3)
    b = fit_one(model, objective, _cfg(), *data, seed=3)
    _assert_same(a.params, b.params)
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    assert a.history[-1]["val_error"] < 25.0


def test_interrupted_run_resumes_to_identical_parameters(tmp_path):
    model, objective = build_model("softmax_regression", {"num_classes": 2})
    data = _toy()
    whole = fit_one(model, objective, _cfg(), *data, seed=1, checkpoint_dir=tmp_path / "whole", config_hash="h")

    def interrupt(record, params):
        if record["epoch"] == 5:  # after the epoch-4 checkpoint, before the epoch-6 one
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_one(model, objective, _cfg(), *data, seed=1, checkpoint_dir=tmp_path / "cut", config_hash="h",
            on_epoch=interrupt)
    trained_epochs = []
    resumed = fit_one(model, objective, _cfg(), *data, seed=1, checkpoint_dir=tmp_path / "cut", config_hash="h",
                  on_epoch=lambda record, params: trained_epochs.append(record["epoch"]))
    assert trained_epochs == [5, 6]  # resumed from the epoch-4 checkpoint, not restarted
    _assert_same(whole.params, resumed.params)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    def without_times(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert without_times(resumed.history) == without_times(whole.history)


def test_numbers_measured_along_training_are_kept_through_a_resume(tmp_path):
    model, objective = build_model("softmax_regression", {"num_classes": 2})
    data = _toy()

    def weight_norm(record, params):  # at odd epochs only, as an experiment's marks would be
        return {"norm": float(np.linalg.norm(np.asarray(params["Dense_0"]["kernel"])))} if record["epoch"] % 2 else {}

    seen = []
    whole = fit_one(model, objective, _cfg(), *data, seed=1, measure=weight_norm,
                    on_epoch=lambda record, params: seen.append("norm" in record))
    assert [r["epoch"] for r in whole.history if "norm" in r] == [1, 3, 5] and seen == [True, False] * 3

    def interrupt(record, params):
        if record["epoch"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_one(model, objective, _cfg(), *data, seed=1, checkpoint_dir=tmp_path, config_hash="h",
                measure=weight_norm, on_epoch=interrupt)
    resumed = fit_one(model, objective, _cfg(), *data, seed=1, checkpoint_dir=tmp_path, config_hash="h",
                      measure=weight_norm)
    assert [r.get("norm") for r in resumed.history] == [r.get("norm") for r in whole.history]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    from fgsm_repro.errors import ReproError

    model, objective = build_model("softmax_regression", {"num_classes": 2})
    fit_one(model, objective, _cfg(epochs=2), *_toy(), seed=0, checkpoint_dir=tmp_path, config_hash="one")
    with pytest.raises(ReproError, match="another training config"):
        fit_one(model, objective, _cfg(epochs=2), *_toy(), seed=0, checkpoint_dir=tmp_path, config_hash="two")


def test_early_stopping_keeps_the_best_validation_parameters():
    model, objective = build_model("softmax_regression", {"num_classes": 2})
    from fgsm_repro.evaluation import predict
    from fgsm_repro.metrics import error_rate

    x, y, x_val, y_val = _toy()
    result = fit_one(model, objective, _cfg(epochs=200, early_stopping_patience=3), x, y, x_val, y_val, seed=0)
    best = min(r["val_error"] for r in result.history)
    assert result.epochs_run < 200 and result.epochs_run == result.best_epoch + 3  # stopped by patience
    assert result.best_val_error == best == result.history[result.best_epoch - 1]["val_error"]
    assert error_rate(predict(model, objective, result.params, x_val)[0], y_val) == best  # the best params
    assert result.history[-1]["val_error"] >= best


def test_without_validation_the_last_parameters_are_kept_and_checkpointed(tmp_path):
    model, objective = build_model("softmax_regression", {"num_classes": 2})
    x, y, _, _ = _toy()
    result = fit_one(model, objective, _cfg(epochs=3), x, y, None, None, seed=0, checkpoint_dir=tmp_path,
                     config_hash="h")
    again = fit_one(model, objective, _cfg(epochs=3), x, y, None, None, seed=0)
    _assert_same(result.params, again.params)
    assert result.best_epoch == 3 and result.best_val_error is None


def test_a_checkpoint_of_another_train_state_layout_is_a_one_line_error(tmp_path):
    """A checkpoint whose optimizer state has another structure (the code changed, not the config)
    is refused in one line, not restored into the wrong places or raised as a traceback."""
    from fgsm_repro.errors import ReproError

    model, objective = build_model("softmax_regression", {"num_classes": 2})
    fit_one(model, objective, _cfg(epochs=1), *_toy(), seed=0, checkpoint_dir=tmp_path, config_hash="h")
    with_momentum = _cfg(epochs=2).model_copy(update={"optimizer": _cfg().optimizer.model_copy(
        update={"name": "adam"})})
    with pytest.raises(ReproError, match="cannot restore") as err:
        fit_one(model, objective, with_momentum, *_toy(), seed=0, checkpoint_dir=tmp_path, config_hash="h")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("perturbation", ["fgsm", "random_sign", "uniform"])
def test_the_papers_adversarial_objective_is_unchanged_by_attacks_driving_training(perturbation):
    """The short form (§6's FGSM mix, the noise controls) and the same attack named in full give,
    bit for bit, the objective written out as the paper states it: α·J(x) + (1−α)·J(x + η), η from
    the clean term's own ∇ₓ (FGSM) or the step's noise key, each term with its own dropout masks."""
    import jax.numpy as jnp

    from fgsm_repro.train import make_loss_and_grad

    model, objective = build_model("maxout_mlp", {"units": 16, "pieces": 2, "input_keep": 0.8, "hidden_keep": 0.5})
    x = jnp.asarray(np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32))
    y = jnp.arange(20, dtype=jnp.int32) % 10
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    key, alpha, eps = jax.random.PRNGKey(5), 0.5, 0.25

    def cost(p, inputs, k):
        return objective.loss(model.apply({"params": p}, inputs, train=True, rngs={"dropout": k}), y).mean()

    def paper(p):  # the objective as written before any attack could drive training
        clean_key, adv_key, noise_key = jax.random.split(key, 3)
        clean, (clean_grads, x_grad) = jax.value_and_grad(cost, argnums=(0, 1))(p, x, clean_key)
        eta = {"fgsm": lambda: eps * jnp.sign(x_grad),
               "random_sign": lambda: eps * jax.random.rademacher(noise_key, x.shape, x.dtype),
               "uniform": lambda: jax.random.uniform(noise_key, x.shape, x.dtype, -eps, eps)}[perturbation]()
        adv, adv_grads = jax.value_and_grad(cost)(p, jax.lax.stop_gradient(x + eta), adv_key)
        return alpha * clean + (1 - alpha) * adv, jax.tree.map(lambda c, a: alpha * c + (1 - alpha) * a,
                                                                 clean_grads, adv_grads)

    attack = {"fgsm": "fgsm", "random_sign": "random_sign", "uniform": "uniform_noise"}[perturbation]
    short = _cfg(adversarial={"alpha": alpha, "eps": eps, "perturbation": perturbation})
    full = _cfg(adversarial={"alpha": alpha, "attack": {"name": attack, "eps": eps}})
    expected = jax.jit(paper)(params)
    for cfg in (short, full):
        _assert_same(jax.jit(make_loss_and_grad(model, objective, cfg))(params, x, y, key), expected)
