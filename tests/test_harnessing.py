"""Training on attacks beyond the paper's α-mix: TRADES' objective, Madry et al.'s loss on the
attack's examples only, and the robust monitor that catches catastrophic overfitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.config import TrainConfig
from fgsm_repro.models import build_model
from fgsm_repro.objectives import SOFTMAX
from fgsm_repro.train import kl_divergence, make_loss_and_grad
from tests.helpers import fit_one, toy_task


def _cfg(**kw):
    base = dict(epochs=4, batch_size=50, optimizer={"name": "sgd", "learning_rate": 0.5, "momentum": 0.5},
                checkpoint_every=2)
    return TrainConfig(**{**base, **kw})


def _batch():
    model, objective = build_model("softmax_regression", {"num_classes": 3})
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((16, 6)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 16), jnp.int32)
    params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape),
                          model.init(jax.random.PRNGKey(0), x[:1])["params"])
    return model, objective, params, x, y


def test_kl_divergence_is_zero_on_equal_predictions_and_positive_otherwise():
    z = jnp.asarray([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(np.asarray(kl_divergence(SOFTMAX, z, z)), 0.0, atol=1e-6)
    p, q = jax.nn.softmax(z[0]), jax.nn.softmax(z[1])
    expected = float((p * (jnp.log(p) - jnp.log(q))).sum())
    assert float(kl_divergence(SOFTMAX, z[:1], z[1:])[0]) == pytest.approx(expected, rel=1e-5)


def test_trades_with_beta_zero_is_the_clean_objective_and_its_kl_term_only_adds():
    model, objective, params, x, y = _batch()
    attack = {"name": "pgd", "eps": 0.3, "steps": 3, "step_size": 0.1}
    trades = {"objective": "trades", "attack": attack}
    key = jax.random.PRNGKey(5)
    plain_loss, plain_grads = make_loss_and_grad(model, objective, _cfg())(params, x, y, key)
    zero_loss, zero_grads = make_loss_and_grad(model, objective, _cfg(adversarial={**trades, "beta": 0.0}))(
        params, x, y, key)
    assert float(zero_loss) == pytest.approx(float(plain_loss), rel=1e-6)  # no dropout: the same clean cost
    for a, b in zip(jax.tree.leaves(zero_grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    robust_loss, _ = make_loss_and_grad(model, objective, _cfg(adversarial={**trades, "beta": 6.0}))(
        params, x, y, key)
    assert float(robust_loss) > float(plain_loss)  # KL(p(x) ‖ p(x̃)) > 0 at the attack's x̃


def test_madry_training_is_the_loss_on_the_attacks_examples_alone():
    from fgsm_repro.attacks.base import parse_attack
    from fgsm_repro.train import training_victim

    model, objective, params, x, y = _batch()
    spec = {"name": "pgd", "eps": 0.2, "steps": 3, "step_size": 0.1}
    key = jax.random.PRNGKey(3)
    loss, grads = make_loss_and_grad(model, objective, _cfg(adversarial={"alpha": 0.0, "attack": spec}))(
        params, x, y, key)
    clean_key, adv_key, noise_key = jax.random.split(key, 3)
    x_adv = parse_attack(spec)(training_victim(model, objective, params, clean_key), x, y, noise_key)

    def on_adversarial(p):
        return objective.loss(model.apply({"params": p}, x_adv), y).mean()

    expected_loss, expected_grads = jax.value_and_grad(on_adversarial)(params)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_the_robust_monitor_records_each_epoch_and_a_collapse_keeps_the_epoch_before(monkeypatch):
    import fgsm_repro.train as train

    model, objective = build_model("softmax_regression", {"num_classes": 2})
    data = toy_task()
    monitor = {"attack": {"name": "fgsm", "eps": 0.1}, "examples": 20}
    watched = fit_one(model, objective, _cfg(robust_monitor=monitor), *data, seed=1)
    assert all(0 <= r["robust_error"] <= 100 for r in watched.history) and len(watched.history) == 4

    errors = iter([10.0, 12.0, 50.0, 55.0])  # the third epoch collapses: +38 points
    monkeypatch.setattr(train, "_robust_error", lambda *a, **k: next(errors))
    stopped = fit_one(model, objective, _cfg(robust_monitor={**monitor, "stop_rise": 20.0}), *data, seed=1)
    assert [r.get("collapsed", False) for r in stopped.history] == [False, False, True]
    monkeypatch.undo()
    two = fit_one(model, objective, _cfg(epochs=2), *data, seed=1)
    for a, b in zip(jax.tree.leaves(stopped.params), jax.tree.leaves(two.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the parameters before the collapse


def test_trades_takes_beta_not_alpha():
    with pytest.raises(ValueError, match="beta"):
        _cfg(adversarial={"objective": "trades", "alpha": 0.3, "attack": {"name": "pgd", "eps": 0.3}})


# --------------------------------------------------------------------------------------
# X.robust_eval's pieces
# --------------------------------------------------------------------------------------

def test_at_eps_moves_autoattacks_stages_to_the_new_radius():
    from fgsm_repro.attacks.base import parse_attack
    from fgsm_repro.experiments.x_robust_eval import at_eps

    spec = parse_attack({"name": "autoattack", "eps": 0.3, "clip": [0, 1],
                         "stages": [{"name": "apgd", "steps": 10}, {"name": "square", "queries": 50}]})
    moved = at_eps(spec, 0.1)
    assert moved.eps == 0.1 and [s.eps for s in moved.stages] == [0.1, 0.1]
    assert [s.name for s in moved.stages] == ["apgd", "square"] and moved.stages[0].steps == 10
    assert moved.clip == (0.0, 1.0) and spec.stages[0].eps == 0.3  # the original untouched
    assert at_eps(parse_attack({"name": "pgd", "eps": 0.3, "steps": 40, "step_size": 0.01}), 0.2).step_size == 0.01


def test_training_cost_sums_epochs_and_seconds_of_the_trainings_kept():
    from types import SimpleNamespace

    from fgsm_repro.experiments.x_robust_eval import training_cost

    def trained(history, stage2=0):
        return SimpleNamespace(fit=SimpleNamespace(epochs_run=len([r for r in history if "epoch" in r]),
                                                   stage2_epochs=stage2, retrain_epochs=0, history=history))

    one = trained([{"epoch": 1, "seconds": 2.0}, {"epoch": 2, "seconds": 1.5}, {"stage2_epoch": 1, "seconds": 1.0}],
                  stage2=1)
    together = trained([{"epoch": 1, "seconds": 4.0, "seeds_together": 2}])  # its share of a vmapped epoch
    assert training_cost([one]) == {"epochs": 3, "train_seconds": 4.5}
    assert training_cost([one, together]) == {"epochs": 4, "train_seconds": 6.5}


def test_robust_eval_options_name_only_their_own_attacks():
    from pydantic import ValidationError

    from fgsm_repro.experiments.x_robust_eval import Options

    attacks = {"fgsm": {"name": "fgsm", "eps": 0.3}}
    assert Options(attacks=attacks, attack_examples={"fgsm": 5}).attack_examples == {"fgsm": 5}
    for bad in ({"attack_examples": {"pgd": 5}}, {"attack_examples": {"fgsm": 0}}, {"eps": [0.0, 0.1]}, {"eps": []}):
        with pytest.raises(ValidationError):
            Options(attacks=attacks, **bad)
