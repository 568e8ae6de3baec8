"""Rubbish-class counting, fooling success and the targeted gradient-sign step (Appendix A)."""

import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.attacks.base import parse_attack
from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.errors import NestedFieldError
from fgsm_repro.evaluation import adversarial_examples
from fgsm_repro.models import SoftmaxRegression
from fgsm_repro.objectives import LOGISTIC, SOFTMAX
from fgsm_repro.rubbish import fooling_success, gaussian_inputs, rubbish_summary


def test_rubbish_summary_counts_false_positives_their_confidence_and_classes():
    probs = np.array([[0.9, 0.05, 0.05],   # class 0, confident
                      [0.2, 0.7, 0.1],     # class 1
                      [0.5, 0.3, 0.2],     # exactly .5: not above the threshold
                      [0.4, 0.3, 0.3]])    # no class above .5
    summary = rubbish_summary(probs, ["a", "b", "c"])
    assert summary["rate"] == pytest.approx(50.0)
    assert summary["confidence"] == pytest.approx(80.0)
    assert summary["shares"] == pytest.approx({"a": 50.0, "b": 50.0, "c": 0.0})
    assert summary["never"] == ["c"]


def test_rubbish_summary_without_false_positives_has_no_confidence():
    summary = rubbish_summary(np.full((3, 4), 0.25), list("wxyz"))
    assert summary["rate"] == 0.0 and summary["confidence"] is None and summary["never"] == list("wxyz")


def test_fooling_success_counts_the_target_at_or_above_one_half():
    probs = np.array([[0.5, 0.5], [0.49, 0.51], [0.9, 0.1]])
    assert fooling_success(probs, 0) == pytest.approx(200 / 3)
    assert fooling_success(probs, 1) == pytest.approx(200 / 3)


def test_gaussian_inputs_are_standard_normal_and_fixed_by_the_seed():
    x = gaussian_inputs(2000, (4, 4, 3), [0, 1])
    assert x.shape == (2000, 4, 4, 3) and x.dtype == np.float32
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    np.testing.assert_array_equal(x, gaussian_inputs(2000, (4, 4, 3), [0, 1]))
    assert not np.array_equal(x, gaussian_inputs(2000, (4, 4, 3), [0, 2]))


def test_softmax_and_logistic_probabilities_are_distributions():
    logits = jnp.asarray([[2.0, -1.0, 0.5]])
    np.testing.assert_allclose(np.asarray(SOFTMAX.probabilities(logits)).sum(-1), 1.0, rtol=1e-6)
    p = np.asarray(LOGISTIC.probabilities(jnp.asarray([0.0, 3.0])))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    assert p[1, 1] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_targeted_fgsm_on_softmax_regression_is_the_closed_form():
    # J(x, c) = −log softmax(Wᵀx + b)_c, so −∇ₓJ = W_c − Σ_k p_k W_k: the step raises class c.
    rng = np.random.default_rng(0)
    model = SoftmaxRegression(num_classes=3)
    x = rng.normal(size=(8, 2, 2, 1)).astype(np.float32)
    params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                          "bias": jnp.zeros(3, jnp.float32)}}
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
    x_adv = adversarial_examples(model, SOFTMAX, params, x, targets, FGSM(eps=0.1, targeted=True))
    w = np.asarray(params["Dense_0"]["kernel"])
    flat = x.reshape(len(x), -1)
    p = np.exp(flat @ w) / np.exp(flat @ w).sum(1, keepdims=True)
    closed_form = flat + 0.1 * np.sign(w[:, targets].T - p @ w.T)
    np.testing.assert_allclose(x_adv.reshape(len(x), -1), closed_form, atol=1e-6)
    probs_before = p[np.arange(len(x)), targets]
    logits_after = x_adv.reshape(len(x), -1) @ w
    p_after = np.exp(logits_after) / np.exp(logits_after).sum(1, keepdims=True)
    assert np.all(p_after[np.arange(len(x)), targets] > probs_before)


def test_a_targeted_attack_needs_the_labels_it_is_given():
    assert parse_attack({"eps": 0.1, "targeted": True}).describe() == "fgsm eps=0.1 targeted=True"
    assert parse_attack({"eps": 0.1}).describe() == "fgsm eps=0.1"
    with pytest.raises(NestedFieldError, match="targeted"):
        parse_attack({"eps": 0.1, "targeted": True, "labels": "predicted"})
