"""APGD and APGD-T (AutoAttack's first two attacks) against closed forms: the checkpoint schedule
of the reference, DLR values by hand, the L∞ corner of a linear model, and the properties every
attack keeps; restarts that keep any adversarial start and keys that do not collide."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgsm_repro.attacks import fgsm
from fgsm_repro.attacks.apgd import apgd, apgd_run, checkpoints, dlr_loss, targeted_dlr_loss
from fgsm_repro.attacks.apgdt import apgd_t
from fgsm_repro.attacks.base import TARGET_STREAM, parse_attack
from fgsm_repro.attacks.common import keep_stronger, restart_key
from fgsm_repro.errors import NestedFieldError, ReproError
from fgsm_repro.objectives import SOFTMAX
from tests.helpers import count_case
from tests.test_attacks import _linear


def _reference_schedule(n_iter):
    """The reference implementation's checkpoint loop (autoattack's APGD), step by step."""
    k, size_decr, n_iter_min = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    counter3, out = 0, []
    for i in range(n_iter):
        counter3 += 1
        if counter3 == k:
            out.append((i, k))
            k = max(k - size_decr, n_iter_min)
            counter3 = 0
    return out


@pytest.mark.parametrize("steps", [1, 5, 10, 40, 100, 1000])
def test_checkpoints_follow_the_reference_schedule(steps):
    assert checkpoints(steps) == _reference_schedule(steps)
    if steps == 100:  # the paper's w_j = ⌈p_j N⌉ for p = 0, .22, .41, .57, .70, .80, .87, .93, .99
        assert [at + 1 for at, _ in checkpoints(100)] == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_losses_by_hand_and_their_invariance_to_shifting_and_scaling_the_logits():
    z = jnp.asarray([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0]])
    y = jnp.asarray([0, 2])
    np.testing.assert_allclose(np.asarray(dlr_loss(z, y)), [-(3 - 1) / 3, -(0 - 3) / 3], rtol=1e-6)
    t = jnp.asarray([1, 3])
    np.testing.assert_allclose(np.asarray(targeted_dlr_loss(z, y, t)), [-(3 - 1) / 3.5, -(0 + 1) / 3.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dlr_loss(7 * z + 5, y)), np.asarray(dlr_loss(z, y)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(targeted_dlr_loss(7 * z - 2, y, t)),
                               np.asarray(targeted_dlr_loss(z, y, t)), rtol=1e-5)


def test_on_a_linear_two_class_model_apgd_reaches_the_fgsm_corner():
    # The cost is monotone in the margin, linear in x: the ball's maximizer is FGSM's point, which
    # APGD's first step of 2ε reaches from any start in the ball and never leaves.
    logits, loss, x, y, w = _linear(classes=2, n=32)
    corner = np.asarray(fgsm(loss, x, y, 0.1))
    for key in (None, jax.random.PRNGKey(1)):
        x_adv = np.asarray(apgd(logits, x, y, 0.1, steps=10, key=key))
        np.testing.assert_allclose(x_adv, corner, atol=1e-6)


def _tanh_model(seed=0, n=32, classes=5):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(8, classes)), jnp.float32)
    x = jnp.asarray(rng.random((n, 8)), jnp.float32)

    def logits(v):
        return jnp.tanh(v @ w) * 3

    return logits, x, jnp.argmax(logits(x), -1)


def test_apgd_raises_the_cost_beyond_fgsm_and_fools_at_least_as_often_as_its_first_start():
    logits, x, y = _tanh_model()
    cost = SOFTMAX.loss
    x_adv, fooled, best = apgd_run(logits, x, y, 0.3, steps=50, norm=math.inf, loss_fn=cost,
                                   predict_fn=lambda z: jnp.argmax(z, -1), key=jax.random.PRNGKey(0), restarts=1,
                                   clip=(0.0, 1.0))
    one_step = fgsm(lambda v, labels: cost(logits(v), labels).sum(), x, y, 0.3, clip=(0.0, 1.0))
    assert float(cost(logits(x_adv), y).sum()) >= float(cost(logits(one_step), y).sum())
    np.testing.assert_array_equal(np.asarray(fooled), np.asarray(jnp.argmax(logits(x_adv), -1) != y))
    _, fooled_more, _ = apgd_run(logits, x, y, 0.3, steps=50, norm=math.inf, loss_fn=cost,
                                 predict_fn=lambda z: jnp.argmax(z, -1), key=jax.random.PRNGKey(0), restarts=3,
                                 clip=(0.0, 1.0))
    assert (np.asarray(fooled_more) >= np.asarray(fooled)).all()


def test_apgd_t_fools_where_its_targets_lead_and_needs_four_classes():
    logits, x, y = _tanh_model(classes=5)
    x_adv = apgd_t(logits, x, y, 0.3, steps=30, target_classes=3, key=jax.random.PRNGKey(0), clip=(0.0, 1.0))
    assert float(jnp.abs(x_adv - x).max()) <= 0.3 + 1e-6
    assert float(jnp.mean(jnp.argmax(logits(x_adv), -1) != y)) > 0
    three, x3, y3 = _tanh_model(classes=3)
    with pytest.raises(ReproError, match="4 classes"):
        apgd_t(three, x3, y3, 0.3, steps=3)
    with pytest.raises(NestedFieldError, match="target_classes"):
        parse_attack({"name": "apgdt", "eps": 0.3, "target_classes": 9}).check_classes(5)


def test_restarts_keep_any_adversarial_start_before_a_higher_cost():
    x = jnp.zeros((3, 2))
    first = (x + 1, jnp.asarray([True, False, False]), jnp.asarray([0.5, 2.0, 1.0]))
    other = (x + 2, jnp.asarray([False, True, False]), jnp.asarray([9.0, 0.1, 3.0]))
    x_kept, fooled, cost = keep_stronger(first, other)
    np.testing.assert_array_equal(np.asarray(x_kept[:, 0]), [1, 2, 2])  # fooled stays; fooling wins; higher cost
    np.testing.assert_array_equal(np.asarray(fooled), [True, True, False])
    np.testing.assert_allclose(np.asarray(cost), [0.5, 0.1, 3.0])


def test_restart_keys_start_from_the_key_and_never_meet_the_targets_key():
    key = jax.random.PRNGKey(7)
    assert (np.asarray(restart_key(key, 0)) == np.asarray(key)).all()
    drawn = {tuple(np.asarray(restart_key(key, r)).ravel()) for r in range(1, 20)}
    targets = tuple(np.asarray(jax.random.fold_in(key, TARGET_STREAM)).ravel())
    assert targets not in drawn and len(drawn) == 19
    traced = jax.jit(restart_key)(key, jnp.asarray(3))
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(restart_key(key, 3)))


@settings(max_examples=8, deadline=None)
@given(eps=st.floats(0.0, 0.6), clip=st.sampled_from([None, (0.0, 1.0)]), seed=st.integers(0, 5),
       norm=st.sampled_from([math.inf, 2.0]), targeted=st.booleans())
def test_apgd_stays_within_eps_and_the_clip_range(eps, clip, seed, norm, targeted):
    count_case("attack property: APGD within eps and the clip range")
    logits, x, y = _tanh_model(seed=seed, n=8)
    key = jax.random.PRNGKey(seed)
    x_adv = (apgd_t(logits, x, y, eps, steps=6, norm=norm, target_classes=2, key=key, clip=clip) if targeted
             else apgd(logits, x, y, eps, steps=6, norm=norm, key=key, restarts=2, clip=clip))
    dist = np.abs(np.asarray(x_adv - x)).max(1) if norm == math.inf else np.linalg.norm(np.asarray(x_adv - x), axis=1)
    assert (dist <= eps * (1 + 1e-5) + 1e-6).all()
    if clip:
        assert np.asarray(x_adv).min() >= clip[0] and np.asarray(x_adv).max() <= clip[1]


def test_apgd_composes_with_jit_and_vmap():
    logits, x, y = _tanh_model(n=8)
    key = jax.random.PRNGKey(0)
    run = jax.jit(lambda e: apgd(logits, x, y, e, steps=5, key=key))
    swept = jax.vmap(run)(jnp.asarray([0.0, 0.2]))
    np.testing.assert_allclose(np.asarray(swept[0]), np.asarray(x), atol=1e-7)
    np.testing.assert_allclose(np.asarray(swept[1]), np.asarray(apgd(logits, x, y, 0.2, steps=5, key=key)), atol=1e-6)
