"""PGD / I-FGSM against closed forms: on a linear model the best point of the L∞ ball is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.attacks import fgsm, pgd
from fgsm_repro.errors import ReproError
from tests.test_fgsm import _logistic_setup


def test_on_logistic_regression_pgd_reaches_the_fgsm_corner():
    # J is monotone in wᵀx, so the ball's maximizer is x − ε·y·sign(w): FGSM's point. Enough
    # steps of any size reach it from anywhere in the ball (ties at w = 0 stay put).
    x, y, w, loss_fn = _logistic_setup()
    x, y = jnp.asarray(x), jnp.asarray(y)
    corner = np.asarray(fgsm(loss_fn, x, y, 0.1))
    for key in (None, jax.random.PRNGKey(3)):
        x_adv = np.asarray(pgd(loss_fn, x, y, 0.1, step_size=0.03, steps=8, key=key))
        moved = np.sign(w)[None] != 0
        np.testing.assert_allclose(x_adv[np.broadcast_to(moved, x_adv.shape)],
                                   corner[np.broadcast_to(moved, corner.shape)], atol=1e-6)


def test_pgd_stays_in_the_ball_and_the_clip_range_and_increases_the_loss():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)

    def loss_fn(x_, y_):
        logits = jnp.tanh(x_ @ w) * 3
        return -(jax.nn.log_softmax(logits) * jax.nn.one_hot(y_, 4)).sum()

    x = jnp.asarray(rng.random((32, 8)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, 32))
    x_adv = pgd(loss_fn, x, y, 0.2, step_size=0.05, steps=10, key=jax.random.PRNGKey(0), clip=(0.0, 1.0))
    assert float(jnp.abs(x_adv - x).max()) <= 0.2 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(loss_fn(x_adv, y)) > float(loss_fn(fgsm(loss_fn, x, y, 0.05), y)) > float(loss_fn(x, y))
    toward = pgd(loss_fn, x, y, 0.2, step_size=0.05, steps=10, targeted=True)
    assert float(loss_fn(toward, y)) < float(loss_fn(x, y))


def test_pgd_composes_with_jit_and_vmap_and_rejects_negative_eps():
    x, y, _, loss_fn = _logistic_setup(n=4)
    x, y = jnp.asarray(x), jnp.asarray(y)
    run = jax.jit(lambda e: pgd(loss_fn, x, y, e, step_size=0.01, steps=3))
    swept = jax.vmap(run)(jnp.asarray([0.0, 0.05]))
    np.testing.assert_array_equal(np.asarray(swept[0]), np.asarray(x))
    np.testing.assert_allclose(np.asarray(swept[1]), np.asarray(run(0.05)), atol=1e-7)
    with pytest.raises(ReproError, match="eps"):
        pgd(loss_fn, x, y, -0.1, step_size=0.01, steps=3)


def test_the_pgd_config_runs_through_evaluation_like_the_function():
    """`attack: {name: pgd, ...}` in a config is the pgd function on the model's summed loss, with
    the random start keyed per batch by its first example's index."""
    from fgsm_repro.attacks.pgd import PGD
    from fgsm_repro.evaluation import ATTACK_KEY, adversarial_examples
    from fgsm_repro.models import build_model

    model, objective = build_model("softmax_regression", {})
    rng = np.random.default_rng(1)
    x, y = rng.random((6, 28, 28, 1), dtype=np.float32), np.arange(6, dtype=np.int32)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
    params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    spec = PGD(eps=0.1, steps=4, clip=(0.0, 1.0))
    x_adv = adversarial_examples(model, objective, params, x, y, spec, batch_size=4)

    def loss_fn(x_, y_):
        return objective.loss(model.apply({"params": params}, x_), y_).sum()

    key = jax.random.PRNGKey(ATTACK_KEY)
    expected = np.concatenate([
        np.asarray(pgd(loss_fn, jnp.asarray(x[s]), jnp.asarray(y[s]), 0.1, step_size=2.5 * 0.1 / 4, steps=4,
                       key=jax.random.fold_in(key, s.start), clip=(0.0, 1.0)))
        for s in (slice(0, 4), slice(4, 6))])
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    no_start = adversarial_examples(model, objective, params, x, y, spec.model_copy(update={"random_start": False}))
    assert not np.allclose(no_start, x_adv)  # the basic iterative method starts at x
