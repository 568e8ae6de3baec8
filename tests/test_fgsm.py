"""FGSM against closed forms and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.attacks import fgsm
from fgsm_repro.errors import ReproError
from fgsm_repro.models import LogisticRegression
from fgsm_repro.objectives import LOGISTIC, SOFTMAX


def _logistic_setup(seed=0, n=64, shape=(28, 28, 1)):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.choice([-1, 1], size=n).astype(np.int32)
    w = rng.normal(size=(int(np.prod(shape)), 1)).astype(np.float32)
    w[::7] = 0.0  # zero weights: the closed form leaves those pixels alone (sign 0)
    params = {"Dense_0": {"kernel": jnp.asarray(w), "bias": jnp.asarray([0.3], jnp.float32)}}
    model = LogisticRegression()

    def loss_fn(x_, y_):
        return LOGISTIC.loss(model.apply({"params": params}, x_), y_).sum()

    return x, y, w[:, 0].reshape(shape), loss_fn


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25])
def test_fgsm_on_logistic_regression_is_the_closed_form_exactly(eps):
    x, y, w, loss_fn = _logistic_setup()
    x_adv = np.asarray(fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), eps))
    closed_form = x + (-eps * y[:, None, None, None] * np.sign(w)[None]).astype(np.float32)
    np.testing.assert_array_equal(x_adv, closed_form)


def test_fgsm_steps_along_the_sign_of_finite_difference_gradients():
    rng = np.random.default_rng(1)
    w1 = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    x = jnp.asarray(rng.random((4, 6)), jnp.float32)
    y = jnp.asarray([0, 2, 1, 0])

    def loss_fn(x_, y_):
        return SOFTMAX.loss(jnp.tanh(x_ @ w1) @ w2, y_).sum()

    grad = np.asarray(jax.grad(loss_fn)(x, y))
    h = 1e-3
    fd = np.zeros_like(grad)
    for idx in np.ndindex(*x.shape):
        e = np.zeros(x.shape, np.float32)
        e[idx] = h
        fd[idx] = (loss_fn(x + e, y) - loss_fn(x - e, y)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-3)
    x_adv = np.asarray(fgsm(loss_fn, x, y, 0.1))
    clear = np.abs(fd) > 1e-2  # where the finite-difference sign is unambiguous
    np.testing.assert_array_equal(np.sign(x_adv - np.asarray(x))[clear], np.sign(fd)[clear])


def test_linf_bound_clip_and_loss_increase():
    x, y, _, loss_fn = _logistic_setup(seed=2)
    x_adv = fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), 0.25)
    assert float(jnp.abs(x_adv - x).max()) <= 0.25 + 1e-6
    assert float(loss_fn(x_adv, y)) > float(loss_fn(x, y))
    clipped = fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), 0.25, clip=(0.0, 1.0))
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0


def test_targeted_mode_lowers_the_loss_of_the_target():
    x, y, _, loss_fn = _logistic_setup(seed=3)
    target = -y
    x_adv = fgsm(loss_fn, jnp.asarray(x), jnp.asarray(target), 0.1, targeted=True)
    assert float(loss_fn(x_adv, target)) < float(loss_fn(x, target))


def test_composes_with_jit_and_vmap():
    x, y, _, loss_fn = _logistic_setup(seed=4, n=8)
    eager = fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), 0.2)
    jitted = jax.jit(lambda a, b: fgsm(loss_fn, a, b, 0.2))(x, y)
    np.testing.assert_array_equal(eager, jitted)
    eps = jnp.asarray([0.0, 0.1, 0.2])
    swept = jax.vmap(lambda e: fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), e))(eps)
    np.testing.assert_array_equal(swept[2], eager)
    np.testing.assert_array_equal(swept[0], x)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf"), "big"])
def test_bad_eps_is_rejected(eps):
    x, y, _, loss_fn = _logistic_setup(n=2)
    with pytest.raises(ReproError, match="eps"):
        fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), eps)


def test_nan_inputs_are_rejected_by_the_evaluator():
    from fgsm_repro.attacks.fgsm import FGSM
    from fgsm_repro.evaluation import adversarial_examples
    from fgsm_repro.models import build_model

    model, objective = build_model("softmax_regression", {})
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    x = np.zeros((4, 28, 28, 1), np.float32)
    x[1, 3, 3, 0] = np.nan
    with pytest.raises(ReproError, match="NaN"):
        adversarial_examples(model, objective, params, x, np.zeros(4, np.int32), FGSM(eps=0.25))
