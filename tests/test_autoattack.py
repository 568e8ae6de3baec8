"""AutoAttack's sequence: each stage on the examples still robust, robust accuracy that never
rises from stage to stage, and the stages as specs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.attacks.autoattack import on_robust
from fgsm_repro.attacks.base import parse_attack
from fgsm_repro.attacks.common import Victim
from fgsm_repro.errors import NestedFieldError
from fgsm_repro.objectives import SOFTMAX


def test_a_stage_runs_on_the_robust_examples_and_skips_chunks_without_one():
    x = jnp.arange(10, dtype=jnp.float32)[:, None]
    robust = jnp.asarray([False, True, False, False, True, False, False, False, False, False])
    calls = []

    def stage(xc, yc, kc):
        jax.debug.callback(lambda: calls.append(1))
        return xc + 100

    out = np.asarray(on_robust(stage, x, jnp.zeros(10, jnp.int32), robust, jax.random.PRNGKey(0), chunk=3))
    assert len(calls) == 1  # the robust pair is ordered first: one chunk of 3 runs, three are skipped
    assert out[1, 0] == 101 and out[4, 0] == 104
    assert (out[~np.asarray(robust)] < 100).sum() == 7  # one other example shared the chunk; the rest untouched


def _victim(seed=0, classes=5):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(4 * 4 * 1, classes)), jnp.float32)

    def logits(v):
        return jnp.tanh(v.reshape(v.shape[0], -1) @ w) * 3

    x = jnp.asarray(rng.random((24, 4, 4, 1)), jnp.float32)
    victim = Victim(logits=logits, loss=lambda v, y: SOFTMAX.loss(logits(v), y).sum(),
                    predict=lambda v: jnp.argmax(logits(v), -1), objective=SOFTMAX)
    return victim, x, jnp.argmax(logits(x), -1)


def test_in_l2_robust_accuracy_never_rises_across_the_four_stages_and_stays_in_the_l2_ball():
    victim, x, y = _victim()
    eps = 0.5
    spec = parse_attack({"name": "autoattack", "eps": eps, "norm": 2, "clip": [0, 1], "chunk": 8,
                         "stages": [{"name": "apgd", "steps": 10}, {"name": "apgdt", "steps": 10, "target_classes": 3},
                                    {"name": "fab", "steps": 10, "target_classes": 3},
                                    {"name": "square", "queries": 30}]})
    assert all(s.norm == 2 for s in spec.stages)
    x_adv, robust = jax.jit(lambda a, b: spec.stages_run(victim, a, b, jax.random.PRNGKey(1)))(x, y)
    robust = np.asarray(robust)
    assert robust.shape == (5, 24) and robust[0].all() and not robust[-1].all()
    assert (robust[1:] <= robust[:-1]).all()
    np.testing.assert_array_equal(robust[-1], np.asarray(victim.predict(x_adv) == y))
    assert np.linalg.norm(np.asarray(x_adv - x).reshape(24, -1), axis=1).max() <= eps * (1 + 1e-5)
    assert np.asarray(x_adv).min() >= 0 and np.asarray(x_adv).max() <= 1


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_robust_accuracy_never_rises_across_stages_and_the_examples_say_the_last(eps):
    victim, x, y = _victim()
    spec = parse_attack({"name": "autoattack", "eps": eps, "clip": [0, 1], "chunk": 8,
                         "stages": [{"name": "apgd", "steps": 10}, {"name": "apgdt", "steps": 10, "target_classes": 3},
                                    {"name": "fab", "steps": 10, "target_classes": 3},
                                    {"name": "square", "queries": 30}]})
    x_adv, robust = jax.jit(lambda a, b: spec.stages_run(victim, a, b, jax.random.PRNGKey(1)))(x, y)
    robust = np.asarray(robust)
    assert robust.shape == (5, 24) and robust[0].all()  # clean: the model's own labels
    assert (robust[1:] <= robust[:-1]).all()
    np.testing.assert_array_equal(robust[-1], np.asarray(victim.predict(x_adv) == y))
    assert np.abs(np.asarray(x_adv - x)).max() <= eps + 1e-6
    np.testing.assert_array_equal(np.asarray(spec(victim, x, y, jax.random.PRNGKey(1))), np.asarray(x_adv))


def test_the_standard_sequences_are_the_references_and_stages_are_checked():
    spec = parse_attack({"name": "autoattack", "eps": 0.3})
    assert [s.name for s in spec.stages] == ["apgd", "apgdt", "fab", "square"]
    assert all(s.eps == 0.3 and s.norm == "inf" for s in spec.stages) and spec.standard()
    assert spec.describe() == "autoattack eps=0.3 norm=inf apgd+apgdt+fab+square"
    l2 = parse_attack({"name": "autoattack", "eps": 2.0, "norm": 2, "clip": [0, 1]})
    assert [s.name for s in l2.stages] == ["apgd", "apgdt", "fab", "square"] and l2.standard()
    assert all(s.eps == 2.0 and s.norm == 2 and s.clip == (0, 1) for s in l2.stages)
    apgd, apgdt, fab, square = l2.stages  # the reference's version="standard" in L2
    assert apgd.steps == 100 and apgd.restarts == 1 and apgd.loss == "ce"
    assert apgdt.steps == 100 and apgdt.target_classes == 9
    assert fab.steps == 100 and fab.target_classes == 9
    assert square.queries == 5000 and square.p_init == 0.8 and square.restarts == 1
    assert l2.describe() == "autoattack eps=2 norm=2 apgd+apgdt+fab+square"
    assert parse_attack(l2.model_dump()) == l2
    assert parse_attack(spec.model_dump()) == spec
    with pytest.raises(NestedFieldError, match="stages.*lossy"):
        parse_attack({"name": "autoattack", "eps": 0.3, "stages": [{"name": "apgd", "lossy": "dlr"}]})
    with pytest.raises(NestedFieldError, match="itself"):
        parse_attack({"name": "autoattack", "eps": 0.3, "stages": [{"name": "autoattack"}]})


def test_evaluation_reports_the_robust_accuracy_after_each_stage():
    from fgsm_repro.evaluation import attack_metrics
    from tests.helpers import random_softmax_regression

    model, objective, params, x, y = random_softmax_regression(12, scale=0.2)
    y[:8] = np.asarray(jnp.argmax(model.apply({"params": params}, x[:8]), -1))  # 8 start right
    spec = parse_attack({"name": "autoattack", "eps": 0.02, "clip": [0, 1], "chunk": 4,
                         "stages": [{"name": "apgd", "steps": 5}, {"name": "square", "queries": 10}]})
    metrics, _ = attack_metrics(model, objective, params, x, y, spec)
    after = metrics["robust_after"]
    assert list(after) == ["clean", "apgd", "square"]
    assert after["clean"] >= 8 / 12 * 100 - 1e-9 and after["clean"] >= after["apgd"] >= after["square"]
    assert after["square"] == pytest.approx(100 - metrics["error"]) and after["square"].n == 12
