"""The MP-DBM of §9 (fgsm_repro.mpdbm): mean field against a NumPy reference and its fixed point,
the multi-prediction cost by hand, gradients through inference against finite differences, the
initialisation, and its training through the common loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.config import TrainConfig
from fgsm_repro.models import build_model
from fgsm_repro.mpdbm import (
    LAYERS,
    MPDBM,
    Targets,
    classify,
    mean_field,
    multi_prediction_cost,
    random_targets,
    sampled_cost,
    sparse_normal,
    visible_bias_from,
)
from fgsm_repro.train import init_state, make_loss_and_grad, make_optimizer
from tests.helpers import fit_one


def _params(sizes=(6, 5, 4, 3), scale=0.8, seed=0, dtype=np.float32):
    """Random parameters of an MP-DBM with `sizes` = (pixels, hidden0, hidden1, classes)."""
    rng = np.random.default_rng(seed)
    params = {"visible": {"bias": rng.normal(0, 1, sizes[0]).astype(dtype)}}
    for i, name in enumerate(LAYERS):
        params[name] = {"kernel": rng.normal(0, scale, sizes[i:i + 2]).astype(dtype),
                        "bias": rng.normal(0, 1, sizes[i + 1]).astype(dtype)}
    return jax.tree.map(jnp.asarray, params)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference(params, v, v_free, y, y_free, steps, label_first):
    """pylearn2's schedule, written out one example at a time in float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    w0, b0 = p["hidden0"]["kernel"], p["hidden0"]["bias"]
    w1, b1 = p["hidden1"]["kernel"], p["hidden1"]["bias"]
    w2, b2 = p["label"]["kernel"], p["label"]["bias"]
    bv = p["visible"]["bias"]
    out_v, out_c, states = [], [], []
    for n in range(len(v)):
        mv = np.broadcast_to(v_free, v.shape)[n]
        my = float(np.broadcast_to(np.asarray(y_free).reshape(-1, 1), (len(v), 1))[n, 0])
        state = mv * _sigmoid(bv) + (1 - mv) * v[n]
        h0 = _sigmoid(2 * state @ w0 + b0)
        h1 = _sigmoid(2 * h0 @ w1 + b1)
        if label_first:
            c = my * _softmax(b2) + (1 - my) * y[n]
            h1 = _sigmoid(h0 @ w1 + c @ w2.T + b1)
        for _ in range(steps - 1):
            h0 = _sigmoid(state @ w0 + w1 @ h1 + b0)
            z_c = h1 @ w2 + b2
            c = my * _softmax(z_c) + (1 - my) * y[n]
            z_v = w0 @ h0 + bv
            state = mv * _sigmoid(z_v) + (1 - mv) * v[n]
            h1 = _sigmoid(h0 @ w1 + w2 @ c + b1)
        out_v.append(z_v)
        out_c.append(z_c)
        states.append((state, h0, h1, c))
    return np.array(out_v), np.array(out_c), states


@pytest.mark.parametrize("label_first", [False, True])
def test_mean_field_matches_a_numpy_reference(label_first):
    params = _params()
    rng = np.random.default_rng(1)
    v = rng.integers(0, 2, (4, 6)).astype(np.float32)
    v_free = rng.integers(0, 2, (4, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 4)]
    y_free = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)
    z_v, z_c = mean_field(params, jnp.asarray(v), jnp.asarray(v_free), jnp.asarray(y), jnp.asarray(y_free), 5,
                          label_first=label_first)
    ref_v, ref_c, _ = _reference(params, v, v_free, y, y_free, 5, label_first)
    np.testing.assert_allclose(z_v, ref_v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_c, ref_c, rtol=1e-5, atol=1e-5)


def test_clamped_pixels_skip_their_update_and_change_nothing():
    params = _params()
    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.uniform(0, 1, (4, 6)), jnp.float32)
    y, y_free = jnp.zeros((4, 3)), 1.0

    def run(v_free):
        return mean_field(params, v, v_free, y, y_free, 5)

    for skipped, full in zip(run(0.0), run(jnp.zeros_like(v)), strict=True):  # the same logits
        np.testing.assert_allclose(skipped, full, rtol=1e-6, atol=1e-6)

    def products_per_sweep(v_free):
        jaxpr = jax.make_jaxpr(lambda x: run(v_free))(v)
        scan = next(eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan")
        return str(scan.params["jaxpr"]).count("dot_general")

    assert products_per_sweep(0.0) == products_per_sweep(jnp.zeros_like(v)) - 1


def test_mean_field_reaches_a_fixed_point_of_the_mean_field_equations():
    params = _params(scale=0.3)  # small weights: the updates contract
    x = np.random.default_rng(2).uniform(0, 1, (3, 6)).astype(np.float32)
    _, _, states = _reference(params, x, 0.5, np.zeros((3, 3)), 1.0, 200, False)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for n, (state, h0, h1, c) in enumerate(states):  # every equation holds at convergence
        np.testing.assert_allclose(h0, _sigmoid(state @ p["hidden0"]["kernel"] + p["hidden1"]["kernel"] @ h1
                                                + p["hidden0"]["bias"]), atol=1e-9)
        np.testing.assert_allclose(h1, _sigmoid(h0 @ p["hidden1"]["kernel"] + p["label"]["kernel"] @ c
                                                + p["hidden1"]["bias"]), atol=1e-9)
        np.testing.assert_allclose(c, _softmax(h1 @ p["label"]["kernel"] + p["label"]["bias"]), atol=1e-9)
        v_hat = _sigmoid(p["hidden0"]["kernel"] @ h0 + p["visible"]["bias"])
        np.testing.assert_allclose(state, 0.5 * v_hat + 0.5 * x[n], atol=1e-9)
        # The compiled inference lands on the same label probabilities.
        np.testing.assert_allclose(jax.nn.softmax(classify(params, jnp.asarray(x), 200))[n], c, atol=1e-5)
    assert not np.allclose(np.asarray(classify(params, jnp.asarray(x), 2)), np.asarray(classify(params, x, 200)))


def test_multi_prediction_cost_of_a_two_pixel_model_by_hand():
    # 2 pixels, one unit per hidden layer, 2 classes; 2 sweeps (the doubled pass and one more).
    a, b, c, bv1, bv2, b0, b1 = 0.7, -0.4, 1.1, 0.2, -0.3, 0.1, -0.2
    w2, b2 = (0.5, -0.8), (0.3, -0.1)
    params = jax.tree.map(jnp.asarray, {
        "visible": {"bias": np.array([bv1, bv2], np.float32)},
        "hidden0": {"kernel": np.array([[a], [b]], np.float32), "bias": np.array([b0], np.float32)},
        "hidden1": {"kernel": np.array([[c]], np.float32), "bias": np.array([b1], np.float32)},
        "label": {"kernel": np.array([w2], np.float32), "bias": np.array(b2, np.float32)}})
    # Example: v = (1, 0), label 1; pixel 1 is a target, pixel 0 observed, the label a target.
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    fill = s(bv2)  # the target pixel starts at sigma(b_v)
    h0 = s(2 * (1 * a + fill * b) + b0)
    h1 = s(2 * h0 * c + b1)
    prior = [math.exp(b2[0]), math.exp(b2[1])]
    prior = [p / sum(prior) for p in prior]  # the label starts at softmax(b2)
    h1 = s(h0 * c + prior[0] * w2[0] + prior[1] * w2[1] + b1)
    h0 = s(1 * a + fill * b + h1 * c + b0)  # the sweep: h0, label, pixels
    z_c = [h1 * w2[0] + b2[0], h1 * w2[1] + b2[1]]
    z_v2 = h0 * b + bv2
    pixel_ce = math.log(1 + math.exp(z_v2))  # the target pixel is 0: -log(1 - sigma(z))
    label_nll = -z_c[1] + math.log(math.exp(z_c[0]) + math.exp(z_c[1]))
    expected = (pixel_ce + label_nll) / 2
    cost = multi_prediction_cost(params, jnp.array([[1.0, 0.0]]), jnp.array([1]),
                                 Targets(jnp.array([[0.0, 1.0]]), jnp.array([1.0])), 2)
    np.testing.assert_allclose(cost, [expected], rtol=1e-5)
    observed = multi_prediction_cost(params, jnp.array([[1.0, 0.0]]), jnp.array([1]),
                                     Targets(jnp.zeros((1, 2)), jnp.zeros(1)), 2)
    np.testing.assert_allclose(observed, [0.0])  # nothing to predict costs nothing


def _finite_difference(f, x, direction, h=1e-5):
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


def test_gradients_through_inference_match_finite_differences():
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _params(dtype=np.float64))
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.uniform(0, 1, (2, 6)))
        y = jnp.array([0, 2])

        def attack_cost(pixels):  # FGSM's: -log c_y of multi-inference
            return -jax.nn.log_softmax(classify(params, pixels, 6))[jnp.arange(2), y].sum()

        direction = jnp.asarray(rng.normal(0, 1, x.shape))
        np.testing.assert_allclose(jnp.vdot(jax.grad(attack_cost)(x), direction),
                                   _finite_difference(attack_cost, x, direction), rtol=1e-6)

        targets = Targets(jnp.asarray(rng.integers(0, 2, (2, 6)), jnp.float64), jnp.array([1.0, 0.0]))
        v = jnp.asarray(rng.integers(0, 2, (2, 6)), jnp.float64)

        def training_cost(p):
            return multi_prediction_cost(p, v, y, targets, 6).sum()

        grads = jax.grad(training_cost)(params)
        # Not the visible bias: by design (pylearn2's) no gradient flows through the inferred
        # pixels' starting state sigma(b_v), so its gradient is not the cost's total derivative.
        for name in LAYERS:
            for leaf in params[name]:
                d = jnp.asarray(rng.normal(0, 1, params[name][leaf].shape))

                def along(t, name=name, leaf=leaf, d=d):
                    return training_cost({**params, name: {**params[name], leaf: params[name][leaf] + t * d}})

                np.testing.assert_allclose(jnp.vdot(grads[name][leaf], d), _finite_difference(along, 0.0, 1.0),
                                           rtol=1e-6, atol=1e-10, err_msg=f"{name}.{leaf}")


def test_initialisation_follows_the_recipe():
    w = np.asarray(sparse_normal(15)(jax.random.PRNGKey(0), (784, 40)))
    assert ((w != 0).sum(0) == 15).all()  # exactly 15 incoming weights per unit
    model = MPDBM(units=(40, 30), sparse_init=(15, None, 7), weight_init=0.01, hidden_bias_init=(-0.7, -0.4))
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 28, 28, 1)))["params"]
    assert ((np.asarray(params["label"]["kernel"]) != 0).sum(0) == 7).all()
    assert np.abs(np.asarray(params["hidden1"]["kernel"])).max() <= 0.01
    np.testing.assert_allclose(params["hidden0"]["bias"], -0.7)
    np.testing.assert_allclose(params["hidden1"]["bias"], -0.4)
    np.testing.assert_allclose(params["label"]["bias"], 0.0)
    x = np.random.default_rng(0).uniform(0, 1, (50, 28, 28, 1)).astype(np.float32)
    x[:, 0] = 0.0  # a pixel that is always black: its logit is clipped, not -inf
    bias = visible_bias_from(x)
    np.testing.assert_allclose(1 / (1 + np.exp(-bias[28:])), x.reshape(50, -1)[:, 28:].mean(0), rtol=1e-5)
    assert np.isfinite(bias).all() and bias[0] < -15
    tx = make_optimizer(TrainConfig(epochs=1, optimizer={"name": "sgd", "learning_rate": 0.1}))
    state = init_state(model, tx, x, seed=0)  # the training loop sets the visible bias from the data
    np.testing.assert_allclose(state.params["visible"]["bias"], bias)


def test_training_cost_samples_binary_pixels_and_targets_from_the_key():
    model, objective = build_model("mpdbm", {"units": [8, 6], "visible": 6, "steps": 3, "sparse_init": [3, None, 2]})
    x = jnp.asarray(np.random.default_rng(4).uniform(0, 1, (64, 6)), jnp.float32)
    y = jnp.arange(64) % 10
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    cfg = TrainConfig(epochs=1, optimizer={"name": "sgd", "learning_rate": 0.1})
    loss_and_grad = make_loss_and_grad(model, objective, cfg)
    one, _ = loss_and_grad(params, x, y, jax.random.PRNGKey(1))
    again, _ = loss_and_grad(params, x, y, jax.random.PRNGKey(1))
    other, _ = loss_and_grad(params, x, y, jax.random.PRNGKey(2))
    assert one == again and one != other
    # The sampled cost is the multi-prediction cost of that key's binary sample and targets.
    sample_key, targets_key = jax.random.split(jax.random.PRNGKey(5))
    v = jax.random.bernoulli(sample_key, x).astype(x.dtype)
    targets = random_targets(targets_key, v.shape)
    assert set(np.unique(np.asarray(v))) == {0.0, 1.0} and 0.35 < float(targets.pixels.mean()) < 0.65
    np.testing.assert_allclose(sampled_cost(params, x, y, jax.random.PRNGKey(5), 3),
                               multi_prediction_cost(params, v, y, targets, 3), rtol=1e-6)


def test_multi_prediction_training_learns_a_toy_task():
    rng = np.random.default_rng(0)
    prototypes = rng.uniform(0, 1, (2, 16)) > 0.5
    y = rng.integers(0, 2, 400)
    x = np.clip(prototypes[y] * 0.9 + rng.uniform(0, 0.1, (400, 16)), 0, 1).astype(np.float32)
    model, objective = build_model("mpdbm", {"units": [12, 8], "num_classes": 2, "visible": 16, "steps": 5,
                                             "sparse_init": [None, None, None], "weight_init": 0.1})
    cfg = TrainConfig(epochs=15, batch_size=20,
                      optimizer={"name": "classical_momentum", "learning_rate": 5.0, "momentum": 0.5})
    result = fit_one(model, objective, cfg, x[:300], y[:300], x[300:], y[300:])
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    logits = model.apply({"params": result.params}, jnp.asarray(x[300:]))
    assert (np.argmax(np.asarray(logits), -1) == y[300:]).mean() > 0.9


def test_an_interrupted_mpdbm_training_resumes_to_identical_parameters(tmp_path):
    model, objective = build_model("mpdbm", {"units": [6, 5], "visible": 8, "steps": 3, "sparse_init": [2, None, 2]})
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (60, 8)).astype(np.float32), rng.integers(0, 10, 60)
    cfg = TrainConfig(epochs=4, batch_size=20, checkpoint_every=1,
                      optimizer={"name": "classical_momentum", "learning_rate": 15.0, "momentum": 0.5,
                                 "final_momentum": 0.73, "momentum_saturate_epoch": 2,
                                 "linear_decay_to": 0.02, "linear_decay_epochs": 3},
                      max_col_norm={"hidden0": 1.8, "hidden1": 2.7, "label": 5.2})
    whole = fit_one(model, objective, cfg, x, y, seed=2, checkpoint_dir=tmp_path / "whole", config_hash="h")

    def interrupt(record, params):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_one(model, objective, cfg, x, y, seed=2, checkpoint_dir=tmp_path / "cut", config_hash="h",
                on_epoch=interrupt)
    resumed = fit_one(model, objective, cfg, x, y, seed=2, checkpoint_dir=tmp_path / "cut", config_hash="h")
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for name, limit in cfg.max_col_norm.items():  # the max-norms hold after every update
        assert float(jnp.linalg.norm(whole.params[name]["kernel"], axis=0).max()) <= limit * (1 + 1e-5)
