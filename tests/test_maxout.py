"""The maxout recipe's pieces: forward pass, dropout quirk, max-norm, classical momentum,
the adversarial objective, and stage 2."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fgsm_repro.config import TrainConfig
from fgsm_repro.models import MaxoutMLP
from fgsm_repro.objectives import SOFTMAX
from fgsm_repro.optim import classical_momentum, column_norms, decayed_learning_rate, linear_momentum, max_norm
from fgsm_repro.train import make_loss_and_grad, make_optimizer
from tests.helpers import fit_one

TINY = dict(units=3, pieces=2, layers=2, num_classes=4)


def _params(model, d=6, seed=0):
    return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, d)))["params"]


def test_maxout_forward_matches_numpy():
    model = MaxoutMLP(**TINY, weight_init=0.5)
    params = _params(model)
    x = np.random.default_rng(0).random((5, 6), dtype=np.float32)
    h = x
    for layer in ("maxout0", "maxout1"):
        z = h @ np.asarray(params[layer]["kernel"]) + np.asarray(params[layer]["bias"])
        h = z.reshape(5, 3, 2).max(-1)  # unit k = max over pre-activations 2k, 2k+1 (contiguous pieces)
    expected = h @ np.asarray(params["softmax"]["kernel"]) + np.asarray(params["softmax"]["bias"])
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), expected, rtol=1e-5, atol=1e-6)


def test_init_is_uniform_005():
    k = np.asarray(_params(MaxoutMLP(units=240, pieces=5), d=784)["maxout0"]["kernel"])
    assert k.shape == (784, 1200) and np.abs(k).max() <= 0.005 and np.abs(k).max() > 0.0049


def test_dropout_quirk_input_unscaled_hidden_scaled():
    # Identity-like network: 1 layer, 1 piece, so the softmax layer sees the dropped-out hidden units.
    model = MaxoutMLP(units=4, pieces=1, layers=1, num_classes=4, input_keep=0.8, hidden_keep=0.5)
    eye = jnp.eye(4)
    params = {"maxout0": {"kernel": eye, "bias": jnp.zeros(4)}, "softmax": {"kernel": eye, "bias": jnp.zeros(4)}}
    x = jnp.full((2000, 4), 1.0)
    out = np.asarray(model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}))
    # input kept (value 1, unscaled) and hidden kept (scaled x2): 2; otherwise 0.
    assert set(np.unique(out)) <= {0.0, 2.0}
    # .8 (input kept, unscaled) x .5 (hidden kept) x 2 (hidden scale) = .8; scaling the input
    # instead of the hidden units would give 1.0.
    assert out.mean() == pytest.approx(0.8, abs=0.03)
    np.testing.assert_array_equal(np.asarray(model.apply({"params": params}, x)), 1.0)  # no dropout at test time


def test_max_norm_transformation_bounds_every_column():
    rng = np.random.default_rng(0)
    params = {"kernel": jnp.asarray(rng.normal(size=(20, 7)), jnp.float32), "bias": jnp.ones(7)}
    tx = optax.chain(optax.sgd(1.0), max_norm(1.9365))
    state = tx.init(params)
    for _ in range(5):
        grads = {k: jnp.asarray(rng.normal(size=p.shape), jnp.float32) * 3 for k, p in params.items()}
        bias_before = np.asarray(params["bias"])
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        assert float(column_norms(params["kernel"]).max()) <= 1.9365 * (1 + 1e-6)
        assert float(column_norms(params["kernel"]).max()) >= 1.9365 * (1 - 1e-6)  # large steps hit the bound
        np.testing.assert_allclose(params["bias"], bias_before - np.asarray(grads["bias"]), rtol=1e-6)  # plain SGD


# Kernels whose rows split into 16, 4 and 1 blocks in the fused column norm (optim._column_norms_of_sum),
# a conv kernel (norms over all but the last axis) and an odd row count.
@pytest.mark.parametrize("shape", [(784, 12), (1600, 3), (240, 5), (8, 8, 3, 6), (25, 4)])
def test_max_norm_equals_the_column_rescale_in_float64(shape):
    rng = np.random.default_rng(1)
    rows = int(np.prod(shape[:-1]))
    column_scale = np.linspace(0.5, 3.0, shape[-1]) / np.sqrt(rows)  # column norms of p + u from ~.6 to ~3.5
    p = (rng.normal(size=shape) * column_scale).astype(np.float32)
    u = (rng.normal(size=shape) * column_scale * 0.5).astype(np.float32)
    update, _ = max_norm(1.9365).update({"kernel": jnp.asarray(u)}, optax.EmptyState(), {"kernel": jnp.asarray(p)})
    new = p.astype(np.float64) + u
    norms = np.sqrt((new.reshape(-1, shape[-1]) ** 2).sum(0))
    assert (norms > 1.9365).any() and (norms < 1.9365).any()
    expected = new * np.minimum(1.0, 1.9365 / norms)
    np.testing.assert_allclose(np.asarray(p + update["kernel"]), expected, rtol=1e-5, atol=1e-6)


def test_classical_momentum_and_schedules_by_hand():
    lr = decayed_learning_rate(0.1, 1.000004, 1e-6)
    mom = linear_momentum(0.5, 0.7, 250, steps_per_epoch=10)
    assert float(lr(jnp.asarray(1000))) == pytest.approx(0.1 / 1.000004 ** 1000, rel=1e-6)
    assert float(lr(jnp.asarray(125_000))) == pytest.approx(0.1 / 1.000004 ** 125_000, rel=1e-5)
    assert float(decayed_learning_rate(0.1, 2.0, 1e-6)(jnp.asarray(100))) == pytest.approx(1e-6)
    assert float(mom(jnp.asarray(0))) == pytest.approx(0.5)  # epoch 1
    assert float(mom(jnp.asarray(10 * 124))) == pytest.approx(0.5 + 0.2 * 124 / 249, rel=1e-6)  # epoch 125
    assert float(mom(jnp.asarray(10 * 400))) == pytest.approx(0.7)
    tx = classical_momentum(lr, mom)
    p, state, v = {"w": jnp.asarray([1.0, -2.0])}, None, np.zeros(2)
    state = tx.init(p)
    expected = np.asarray([1.0, -2.0])
    for t in range(3):
        g = {"w": jnp.asarray([0.3, 0.1]) * (t + 1)}
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
        v = float(mom(jnp.asarray(t))) * v - float(lr(jnp.asarray(t))) * np.asarray(g["w"])
        expected = expected + v
    np.testing.assert_allclose(np.asarray(p["w"]), expected, rtol=1e-6)


def _adv_cfg(**kw):
    return TrainConfig(epochs=1, batch_size=8, optimizer={"name": "sgd", "learning_rate": 0.1},
                       adversarial={"alpha": 0.5, "eps": 0.25, **kw})


@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_adversarial_objective_is_the_alpha_mix_and_shares_the_clean_backward(keep):
    model = MaxoutMLP(**TINY, weight_init=0.5, input_keep=keep, hidden_keep=keep)
    params = _params(model)
    rng = np.random.default_rng(3)
    x, y = jnp.asarray(rng.random((8, 6)), jnp.float32), jnp.asarray(rng.integers(0, 4, 8))
    key = jax.random.PRNGKey(0)
    loss, grads = make_loss_and_grad(model, SOFTMAX, _adv_cfg())(params, x, y, key)
    clean_key, adv_key, _ = jax.random.split(key, 3)  # the implementation's key convention

    def j(p, x_, k):
        return SOFTMAX.loss(model.apply({"params": p}, x_, train=True, rngs={"dropout": k}), y).mean()

    # Naive two-pass reference: grad_x from one backward, grad_theta of the clean term from
    # another — with the same dropout mask, which the one-pass version must also use for both.
    x_adv = x + 0.25 * jnp.sign(jax.grad(j, argnums=1)(params, x, clean_key))
    expected_loss = 0.5 * j(params, x, clean_key) + 0.5 * j(params, x_adv, adv_key)
    expected_grads = jax.grad(lambda p: 0.5 * j(p, x, clean_key) + 0.5 * j(p, x_adv, adv_key))(params)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("perturbation", ["random_sign", "uniform"])
def test_noise_controls_stay_within_eps(perturbation, monkeypatch):
    model = MaxoutMLP(**TINY, input_keep=1.0, hidden_keep=1.0)
    params = _params(model)
    seen = []
    real_apply = model.apply

    def spy(variables, x, *a, **k):
        seen.append(x)
        return real_apply(variables, x, *a, **k)

    monkeypatch.setattr(model, "apply", spy)
    x = jnp.full((8, 6), 0.5)
    make_loss_and_grad(model, SOFTMAX, _adv_cfg(perturbation=perturbation))(params, x, jnp.zeros(8, jnp.int32),
                                                                             jax.random.PRNGKey(0))
    eta = np.asarray(seen[-1]) - 0.5
    assert np.abs(eta).max() <= 0.25 + 1e-6 and np.abs(eta).max() > 0.1
    if perturbation == "random_sign":
        np.testing.assert_allclose(np.abs(eta), 0.25, rtol=1e-6)


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((300, 6), dtype=np.float32)
    y = (x[:, 0] + x[:, 1] > x[:, 2] + x[:, 3]).astype(np.int32) + 2 * (x[:, 4] > 0.5)
    return x[:200], y[:200], x[200:], y[200:]


def _recipe(**kw):
    base = dict(epochs=6, batch_size=20, checkpoint_every=2, max_col_norm=1.9365, early_stopping_patience=3,
                optimizer=dict(name="classical_momentum", learning_rate=0.1, lr_decay_factor=1.0001, momentum=0.5,
                               final_momentum=0.7, momentum_saturate_epoch=4, min_learning_rate=1e-6),
                adversarial={"alpha": 0.5, "eps": 0.25}, stage2={"max_epochs": 3})
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow  # a subprocess or a long training
@pytest.mark.parametrize("second_stage", ["stage2", "retrain"])
def test_resume_anywhere_gives_identical_parameters(tmp_path, monkeypatch, second_stage):
    import itertools

    import fgsm_repro.train as train_mod

    # Force the run's shape: every epoch of stage 1 is a new best (so the retraining runs 4 epochs),
    # and stage 2 never meets its target (so it runs all 3 of its epochs).
    ever_lower = itertools.count()
    monkeypatch.setattr(train_mod, "_validation_error", lambda *args: 1000.0 - next(ever_lower))
    monkeypatch.setattr(train_mod, "_training_objective", lambda monitor, params, x, y: -1.0 if len(x) == 200 else 1.0)
    extra = {"stage2": {"max_epochs": 3}} if second_stage == "stage2" else {"stage2": None, "retrain_on_all": True}
    cfg = _recipe(epochs=4, checkpoint_every=1, **extra)
    model, data = MaxoutMLP(**TINY), _toy()
    calls = []
    whole = fit_one(model, SOFTMAX, cfg, *data, seed=0, checkpoint_dir=tmp_path / "whole", config_hash="h",
                on_epoch=lambda r, p: calls.append(r))
    n = len(calls)
    assert (whole.stage2_epochs, n) == (3, 7) if second_stage == "stage2" else (whole.retrain_epochs, n) == (4, 8)
    for cut in (2, 5, n - 1):  # mid stage 1; first epoch of the second stage; inside it
        seen = []

        def interrupt(record, params, cut=cut, seen=seen):
            seen.append(record)
            if len(seen) == cut:  # before that epoch's checkpoint
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            fit_one(model, SOFTMAX, cfg, *data, seed=0, checkpoint_dir=tmp_path / f"cut{cut}", config_hash="h",
                on_epoch=interrupt)
        rest = []
        resumed = fit_one(model, SOFTMAX, cfg, *data, seed=0, checkpoint_dir=tmp_path / f"cut{cut}", config_hash="h",
                      on_epoch=lambda r, p, rest=rest: rest.append(r))
        assert len(rest) == n - (cut - 1)  # only the epochs after the last checkpoint were trained again
        for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_early_stopping_on_adversarial_error_picks_the_fgsm_validation_best():
    from fgsm_repro.attacks.fgsm import FGSM
    from fgsm_repro.evaluation import adversarial_examples, predict
    from fgsm_repro.metrics import error_rate

    model = MaxoutMLP(**TINY)
    x, y, xv, yv = _toy()
    curve = []

    def fgsm_val_error(record, params):
        x_adv = adversarial_examples(model, SOFTMAX, params, xv, yv, FGSM(eps=0.25))
        curve.append(error_rate(predict(model, SOFTMAX, params, x_adv)[0], yv))

    cfg = _recipe(stage2=None, epochs=6, early_stopping_patience=None, early_stopping_on="adversarial_error")
    result = fit_one(model, SOFTMAX, cfg.model_copy(update={"early_stopping_patience": 6}), x, y, xv, yv, seed=4,
                 on_epoch=fgsm_val_error)
    assert [r["val_error"] for r in result.history] == curve
    assert result.best_epoch == int(np.argmin(curve)) + 1


def test_optimizer_chain_order():
    cfg = _recipe(weight_decay=2.0)
    tx = make_optimizer(cfg, steps_per_epoch=10)
    params = {"k": jnp.ones((3, 2)) * 5}
    updates, _ = tx.update({"k": jnp.zeros((3, 2))}, tx.init(params), params)
    # weight decay -> classical momentum (v = -lr*wd*p at the first step) -> max-norm, by hand:
    stepped = 5.0 - 0.1 * 2.0 * 5.0
    norm = stepped * np.sqrt(3)
    expected = stepped * min(1.0, 1.9365 / norm)
    np.testing.assert_allclose(np.asarray(params["k"] + updates["k"]), expected, rtol=1e-5)


@pytest.mark.slow  # a subprocess or a long training
def test_retrain_on_all_runs_the_best_epoch_count_on_train_plus_validation():
    model = MaxoutMLP(**TINY)
    x, y, xv, yv = _toy()
    cfg = _recipe(stage2=None, retrain_on_all=True, early_stopping_on="adversarial_error", epochs=5)
    result = fit_one(model, SOFTMAX, cfg, x, y, xv, yv, seed=2)
    assert result.retrain_epochs == result.best_epoch >= 1
    fresh = fit_one(model, SOFTMAX, cfg.model_copy(update={"epochs": result.best_epoch, "early_stopping_patience": None,
                                                      "retrain_on_all": False}),
                np.concatenate([x, xv]), np.concatenate([y, yv]), None, None, seed=2)
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(fresh.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_localization_number_for_fig3():
    from fgsm_repro.experiments.t2_maxout240 import localization

    spread = {"maxout0": {"kernel": np.ones((784, 5))}}
    peaked = np.zeros((784, 5))
    peaked[:10] = 1.0
    assert localization(spread) == pytest.approx(100 * 78 / 784)
    assert localization({"maxout0": {"kernel": peaked}}) == pytest.approx(100.0)


@pytest.mark.slow  # a subprocess or a long training
def test_stage2_objective_is_the_monitored_training_cost_with_dropout():
    from fgsm_repro.train import MONITOR_KEY, make_objective_monitor

    model = MaxoutMLP(**TINY, weight_init=0.5)
    params = _params(model)
    x, y, _, _ = _toy()
    cfg = _recipe(batch_size=50)
    monitor = make_objective_monitor(model, SOFTMAX, cfg)
    keys = jax.random.split(jax.random.PRNGKey(MONITOR_KEY), 4)
    loss_and_grad = make_loss_and_grad(model, SOFTMAX, cfg)
    by_hand = np.mean([float(loss_and_grad(params, x[i * 50:(i + 1) * 50], y[i * 50:(i + 1) * 50], keys[i])[0])
                       for i in range(4)])
    assert float(monitor(params, x, y)) == pytest.approx(by_hand, rel=1e-5)
    assert float(monitor(params, x, y)) == float(monitor(params, x, y))  # repeatable
    no_dropout = float(SOFTMAX.loss(model.apply({"params": params}, x), y).mean())
    assert float(monitor(params, x, y)) != pytest.approx(no_dropout, rel=1e-3)  # dropout masks are in it


def test_linear_decay_per_epoch_and_layer_scales_and_norms():
    """The CIFAR-10 recipe's optimizer pieces: the lr falling linearly per epoch (pylearn2's
    LinearDecayOverEpoch), a learning-rate scale per layer, and max-norms per layer (a conv
    kernel's per filter, over its rows, columns and input channels)."""
    from fgsm_repro.optim import linear_decay, scale_layers

    lr = linear_decay(0.17, 0.01, 500, steps_per_epoch=10)
    np.testing.assert_allclose([float(lr(jnp.asarray(c))) for c in (0, 9, 10, 4990, 4999, 9000)],
                               [0.17, 0.17, 0.17 - 0.17 * 0.99 / 499, 0.0017, 0.0017, 0.0017], rtol=1e-5)
    grads = {"conv0": {"kernel": jnp.ones((2, 2, 1, 3)), "bias": jnp.ones(3)}, "softmax": {"kernel": jnp.ones((3, 2))}}
    scaled, _ = scale_layers({"conv0": 0.05}).update(grads, optax.EmptyState())
    assert scaled["conv0"]["kernel"][0, 0, 0, 0] == np.float32(0.05) == scaled["conv0"]["bias"][0]
    assert scaled["softmax"]["kernel"][0, 0] == 1.0
    params = {"conv0": {"kernel": jnp.zeros((2, 2, 1, 3)), "bias": jnp.zeros(3)},
              "softmax": {"kernel": jnp.zeros((3, 2))}}
    updates = {"conv0": {"kernel": jnp.full((2, 2, 1, 3), 5.0), "bias": jnp.full(3, 5.0)},
               "softmax": {"kernel": jnp.full((3, 2), 5.0)}}
    out, _ = max_norm({"conv0": 0.9}).update(updates, optax.EmptyState(), params)
    np.testing.assert_allclose(column_norms(out["conv0"]["kernel"]), 0.9, rtol=1e-6)  # each filter over 2·2·1 weights
    assert np.array_equal(out["conv0"]["bias"], updates["conv0"]["bias"])  # biases untouched
    assert np.array_equal(out["softmax"]["kernel"], updates["softmax"]["kernel"])  # layers not named: free
    cfg = TrainConfig(epochs=1, optimizer={"name": "classical_momentum", "learning_rate": 0.17,
                                           "linear_decay_to": 0.01, "linear_decay_epochs": 500},
                      lr_scale={"maxout0": 0.05}, max_col_norm={"maxout0": 0.9, "softmax": 1.9365})
    x, y = np.random.default_rng(0).random((20, 6), dtype=np.float32), np.arange(20, dtype=np.int32) % 4
    fit_one(MaxoutMLP(units=3, pieces=2, num_classes=4), SOFTMAX, cfg.model_copy(update={"batch_size": 10}), x, y)
    with pytest.raises(Exception, match="'conv9' is not a layer of MaxoutMLP"):
        fit_one(MaxoutMLP(units=3, pieces=2, num_classes=4), SOFTMAX,
                cfg.model_copy(update={"batch_size": 10, "lr_scale": {"conv9": 0.05}}), x, y)
