"""The models and measures of §7–§9, Fig. 4 and Appendix A on MNIST: the RBF network, independent
outputs, the mean-probability ensemble, rubbish training, agreement and linear pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.config import TrainConfig
from fgsm_repro.linearity import linear_pieces, longest_wrong_run, pieces_per_curve
from fgsm_repro.metrics import agreement
from fgsm_repro.models import MaxoutMLP, MeanProbabilityEnsemble, RBFNetwork, build_model, stack_members
from fgsm_repro.objectives import RBF, SIGMOID, SOFTMAX
from fgsm_repro.train import make_loss_and_grad


def _rbf_params(d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"mean": jnp.asarray(rng.uniform(0, 1, (d, k)), jnp.float32),
            "log_precision": jnp.asarray(rng.normal(-1, 0.5, (d, k)), jnp.float32)}


def test_rbf_forward_matches_numpy():
    params = _rbf_params()
    x = np.random.default_rng(1).uniform(0, 1, (5, 2, 3, 1)).astype(np.float32)
    logits = np.asarray(RBFNetwork(num_classes=3).apply({"params": params}, jnp.asarray(x)))
    flat, mean, beta = x.reshape(5, -1), np.asarray(params["mean"]), np.exp(np.asarray(params["log_precision"]))
    expected = -np.einsum("dk,ndk->nk", beta, (flat[:, :, None] - mean[None]) ** 2)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert (logits <= 0).all()  # log-probabilities of independent outputs


@pytest.mark.parametrize("form", ["tied", "normalised"])
def test_rbf_precision_forms_match_their_definitions(form):
    """Tied: one β for every class; normalised: each class's β rescaled to the same total d·exp(s).
    `rbf_precision` reads the β that the forward pass uses."""
    from fgsm_repro.models import rbf_precision

    model = RBFNetwork(num_classes=3, precision=form)
    x = np.random.default_rng(1).uniform(0, 1, (5, 2, 3, 1)).astype(np.float32)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(-1, 0.5, p.shape), jnp.float32), params)
    beta = np.exp(np.asarray(params["log_precision"], np.float64))
    if form == "tied":
        assert beta.shape == (6, 1)
        beta = np.repeat(beta, 3, axis=1)
    else:
        beta = beta / beta.mean(0) * np.exp(float(params["log_scale"]))
        np.testing.assert_allclose(beta.sum(0), 6 * np.exp(float(params["log_scale"])), rtol=1e-12)
    np.testing.assert_allclose(rbf_precision(model, params), beta, rtol=1e-6)
    flat, mean = x.reshape(5, -1), np.asarray(params["mean"])
    expected = -np.einsum("dk,ndk->nk", beta, (flat[:, :, None] - mean[None]) ** 2)
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, jnp.asarray(x))), expected, rtol=1e-5,
                               atol=1e-6)


def test_rbf_init_puts_every_distance_near_its_scale():
    model = RBFNetwork(mean_init=0.5, precision_init=1.0)
    x = jnp.full((2, 28, 28, 1), 0.5).at[1].set(1.0)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), [[0.0] * 10, [-0.25] * 10], atol=1e-5)


@pytest.mark.parametrize("objective, p_of", [(SIGMOID, lambda z: 1 / (1 + np.exp(-z))), (RBF, np.exp)])
def test_independent_outputs_cost_is_the_sum_of_binary_cross_entropies(objective, p_of):
    z = np.array([[-0.3, -2.0, -0.01], [-1.5, -0.2, -4.0]], np.float32)
    labels = np.array([2, 0])
    p = p_of(z.astype(np.float64))
    onehot = np.eye(3)[labels]
    expected = -(onehot * np.log(p) + (1 - onehot) * np.log(1 - p)).sum(1)
    np.testing.assert_allclose(np.asarray(objective.loss(jnp.asarray(z), jnp.asarray(labels))), expected, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(objective.probabilities(jnp.asarray(z))), p, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(objective.confidence(jnp.asarray(z))), p.max(1), rtol=1e-5)
    assert list(np.asarray(objective.predict(jnp.asarray(z)))) == [2, 1]


def test_registry_pairs_models_with_their_outputs():
    assert build_model("rbf_network", {})[1] is RBF
    model, objective = build_model("maxout_mlp_sigmoid", {"units": 4, "pieces": 2})
    assert isinstance(model, MaxoutMLP) and objective is SIGMOID


def _members(n=3):
    model = MaxoutMLP(units=4, pieces=2, input_keep=1.0, hidden_keep=1.0)
    x = jnp.zeros((1, 2, 3, 1))
    return model, [model.init(jax.random.PRNGKey(i), x)["params"] for i in range(n)]


def test_ensemble_predicts_the_mean_probability_of_its_members():
    model, params = _members()
    x = jax.random.normal(jax.random.PRNGKey(9), (4, 2, 3, 1))
    logits = MeanProbabilityEnsemble(model, 3).apply({"params": stack_members(params)}, x)
    mean = np.mean([np.asarray(jax.nn.softmax(model.apply({"params": p}, x))) for p in params], axis=0)
    np.testing.assert_allclose(np.exp(np.asarray(logits)), mean, rtol=1e-5)


def test_ensemble_attack_gradient_is_that_of_the_mean_probability_cost():
    """∇ₓ of the ensemble's cost, by finite differences of −log mean_m p_m(y | x) in float64."""
    model, params = _members()
    ensemble = MeanProbabilityEnsemble(model, 3)
    stacked = stack_members(params)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (1, 2, 3, 1)), np.float64)
    y = jnp.array([1])

    def ensemble_cost(x):
        return SOFTMAX.loss(ensemble.apply({"params": stacked}, x), y).sum()

    def mean_probability_cost(x):  # the definition, member by member, on the host
        probs = [np.asarray(jax.nn.softmax(model.apply({"params": p}, jnp.asarray(x, jnp.float32))))
                 for p in params]
        return -np.log(np.mean([p[0, 1] for p in probs], dtype=np.float64))

    grad = np.asarray(jax.grad(ensemble_cost)(jnp.asarray(x, jnp.float32)))
    h = 1e-2
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = h
        fd = (mean_probability_cost(x + step) - mean_probability_cost(x - step)) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=2e-2, abs=2e-4)


def test_rubbish_training_adds_gaussian_draws_labelled_no_class(monkeypatch):
    model = MaxoutMLP(units=4, pieces=2, num_classes=3, input_keep=1.0, hidden_keep=1.0)
    x, y = jnp.full((4, 2, 3, 1), 0.5), jnp.array([0, 1, 0, 1])
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    seen = {}
    cfg = TrainConfig(epochs=1, batch_size=4, optimizer={"learning_rate": 0.1}, rubbish={"per_batch": 2, "label": 2})

    def spy(objective_loss):
        def loss(logits, labels):
            seen["labels"] = labels
            return objective_loss(logits, labels)
        return loss

    objective = SOFTMAX._replace(loss=spy(SOFTMAX.loss))
    _, grads = make_loss_and_grad(model, objective, cfg)(params, x, y, jax.random.PRNGKey(1))
    assert list(np.asarray(seen["labels"])) == [0, 1, 0, 1, 2, 2]
    _, plain = make_loss_and_grad(model, SOFTMAX, cfg.model_copy(update={"rubbish": None}))(
        params, x, y, jax.random.PRNGKey(1))
    # A constant batch gives the first layer's kernel gradient equal rows (one per pixel); Gaussian
    # draws reaching the input make them differ, and other keys draw other noise.
    kernel = np.asarray(grads["maxout0"]["kernel"])
    assert np.allclose(np.asarray(plain["maxout0"]["kernel"]), np.asarray(plain["maxout0"]["kernel"])[:1])
    assert not np.allclose(kernel, kernel[:1])
    _, other = make_loss_and_grad(model, SOFTMAX, cfg)(params, x, y, jax.random.PRNGKey(2))
    assert not np.allclose(np.asarray(other["maxout0"]["kernel"]), kernel)


def test_rbf_cost_stays_finite_and_pushes_a_near_certain_wrong_class_down():
    z = jnp.array([[-1e-9, -3.0], [0.0, -3.0], [-1e-3, -3.0]])  # class 0 near certain, the label is 1
    labels = jnp.array([1, 1, 1])
    loss = RBF.loss(z, labels)
    grad = jax.grad(lambda z: RBF.loss(z, labels).sum())(z)
    assert bool(jnp.isfinite(loss).all()) and bool(jnp.isfinite(grad).all())
    assert (np.asarray(grad[:, 0]) > 0).all()  # so lowering z_0 (away from the centre) lowers the cost
    assert float(loss[2]) < float(loss[0]) < float(loss[1])  # continuous, rising toward certainty


def test_agreement_on_a_hand_made_table():
    maxout = np.array([3, 5, 5, 1, 2])
    other = np.array([3, 5, 4, 0, 2])
    wrong = np.array([True, True, True, False, False])
    assert agreement(other, maxout, wrong) == pytest.approx(200 / 3)
    assert agreement(other, maxout, np.zeros(5, bool)) is None


def test_linear_pieces_of_known_curves():
    t = np.linspace(-10, 10, 401)
    three = np.piecewise(t, [t < -2, (t >= -2) & (t < 3), t >= 3], [lambda t: 2 * t + 4, 0.0, lambda t: 3 - t])
    assert linear_pieces(t, three, 1e-6) == 3
    assert linear_pieces(t, 0.5 * t - 1, 1e-9) == 1
    assert linear_pieces(t, np.sin(t), 0.01) > 20  # smooth and curved: many pieces
    curves = np.stack([three, 0.5 * t], axis=1)
    assert list(pieces_per_curve(t, curves, 1e-6)) == [3, 1]


def test_longest_wrong_run_measures_one_wrong_class_at_a_time():
    t = np.arange(8.0)
    assert longest_wrong_run(t, np.array([1, 1, 2, 2, 2, 3, 3, 1]), label=1) == 2.0
    assert longest_wrong_run(t[:2], np.array([1, 1]), label=1) == 0.0
    assert longest_wrong_run(t[:3], np.array([0, 0, 0]), label=1) == 2.0
