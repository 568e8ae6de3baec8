"""The attacks after FGSM — FGM, BIM, PGD-L2, targets, DeepFool, JSMA, C&W — against closed forms
on linear models, and the properties every attack must keep (hypothesis)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgsm_repro.attacks import bim, cw_l2, deepfool, fgm, fgsm, jsma, least_likely, pgd, random_other
from fgsm_repro.attacks.base import built_in_attacks, parse_attack
from fgsm_repro.attacks.bim import kurakin_steps
from fgsm_repro.errors import NestedFieldError, ReproError
from fgsm_repro.objectives import SOFTMAX
from tests.helpers import count_case

FEATURES = 12


def _linear(classes=2, seed=0, n=16):
    """A linear softmax model on FEATURES inputs in [0, 1], as logits and summed-loss functions."""
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(FEATURES, classes)), jnp.float32)
    b = jnp.asarray(rng.normal(size=classes) * 0.1, jnp.float32)
    x = jnp.asarray(rng.random((n, FEATURES)), jnp.float32)
    y = jnp.asarray(rng.integers(0, classes, n), jnp.int32)

    def logits(v):
        return v @ w + b

    def loss(v, labels):
        return SOFTMAX.loss(logits(v), labels).sum()

    return logits, loss, x, y, np.asarray(w)


def _margin(logits, x, t):
    z = np.asarray(logits(x))
    return z[np.arange(len(t)), t] - np.max(np.where(np.eye(z.shape[1], dtype=bool)[t], -np.inf, z), axis=1)


# --- closed forms ---------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", [1, 2])
def test_fgm_on_a_linear_model_is_the_normalised_closed_form(norm):
    logits, loss, x, y, w = _linear(classes=3)
    p = np.asarray(jax.nn.softmax(logits(x)))
    grad = (p - np.eye(3)[np.asarray(y)]) @ w.T  # ∂(cross-entropy)/∂x of a linear softmax model
    expected = np.asarray(x) + 0.5 * grad / np.linalg.norm(grad, ord=norm, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(fgm(loss, x, y, 0.5, norm=norm)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fgm(loss, x, y, 0.5, norm=math.inf)), np.asarray(fgsm(loss, x, y, 0.5)))


def test_deepfool_lands_on_a_linear_binary_boundary_in_one_step():
    logits, _, x, _, w = _linear(classes=2)
    y = jnp.argmax(logits(x), -1)
    w_diff = w[:, 1] - w[:, 0]
    for overshoot in (0.0, 0.02):
        x_adv = np.asarray(deepfool(logits, x, y, overshoot=overshoot, max_iter=1))
        f = np.asarray(logits(x))
        margin = f[:, 1] - f[:, 0]  # the other class's logit minus the original's, up to its sign
        toward = np.where(np.asarray(y) == 0, 1.0, -1.0)[:, None] * w_diff  # w'ₗ
        size = (np.abs(margin) / np.linalg.norm(w_diff) + 1e-4) / np.linalg.norm(w_diff)
        expected = np.asarray(x) + (1 + overshoot) * size[:, None] * toward
        np.testing.assert_allclose(x_adv, expected, rtol=1e-5, atol=1e-6)
        new = np.asarray(logits(x_adv))
        assert (np.argmax(new, -1) != np.asarray(y)).all()  # one step crosses the boundary
        if overshoot == 0:  # … and lands on it (1e-4 past it, in distance)
            np.testing.assert_allclose((new[:, 1] - new[:, 0]) / np.linalg.norm(w_diff), 0, atol=2e-4)


def test_deepfool_linf_steps_along_the_sign_and_the_batch_stops_per_example():
    logits, _, x, _, w = _linear(classes=4, n=32)
    y = jnp.argmax(logits(x), -1)
    x_adv = deepfool(logits, x, y, norm=math.inf, max_iter=50)
    assert (np.argmax(np.asarray(logits(x_adv)), -1) != np.asarray(y)).all()
    one = np.asarray(deepfool(logits, x[:1], y[:1], norm=math.inf))  # alone or in a batch: the same
    np.testing.assert_allclose(np.asarray(x_adv)[:1], one, atol=1e-6)


def test_deepfool_leaves_already_misclassified_examples_alone():
    logits, _, x, _, _ = _linear(classes=3)
    wrong = (jnp.argmax(logits(x), -1) + 1) % 3
    np.testing.assert_array_equal(np.asarray(deepfool(logits, x, wrong)), np.asarray(x))


def test_bim_uses_kurakins_step_count_and_pixel_range():
    assert kurakin_steps(1 / 255) == 1 and kurakin_steps(16 / 255) == 20 and kurakin_steps(0.25) == 67
    _, loss, x, y, _ = _linear(classes=3)
    x_adv = np.asarray(bim(loss, x, y, 8 / 255))
    np.testing.assert_allclose(x_adv, np.asarray(pgd(loss, x, y, 8 / 255, step_size=1 / 255, steps=10,
                                                     clip=(0.0, 1.0))))
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_jsma_reaches_its_target_changing_pairs_of_pixels_to_the_top_of_the_range():
    logits, _, x, y, _ = _linear(classes=3, n=32)
    target = (y + 1) % 3
    x_adv = np.asarray(jsma(logits, x * 0.5, target, gamma=1.0))
    changed = x_adv != np.asarray(x * 0.5)
    assert (x_adv[changed] == 1.0).all()  # θ = 1: chosen pixels go to the top
    reached = np.argmax(np.asarray(logits(x_adv)), -1) == np.asarray(target)
    assert reached.mean() > 0.9
    assert (changed.sum(1) % 2 == 0).all() and changed.sum(1).max() <= FEATURES


@pytest.mark.parametrize("increase", [True, False])
def test_jsmas_pair_search_is_the_argmax_of_the_masked_pair_scores(increase):
    """best_pairs' ReLU form and two-stage max against the saliency map written out: masks on the
    (n, n) pair sums and one argmax in row-major order."""
    from fgsm_repro.attacks.jsma import best_pairs

    rng = np.random.default_rng(3)
    n, m = 8, 40
    alpha, beta = rng.normal(size=(n, m)).astype(np.float32), rng.normal(size=(n, m)).astype(np.float32)
    domain = rng.random((n, m)) < 0.7
    domain[0] = False  # no pair qualifies
    domain[1] = np.arange(m) < 1  # one feature: no pair
    p, q, found = map(np.asarray, best_pairs(jnp.asarray(alpha), jnp.asarray(beta), jnp.asarray(domain), increase))
    a, b = alpha[:, :, None] + alpha[:, None, :], beta[:, :, None] + beta[:, None, :]
    right = (a > 0) & (b < 0) if increase else (a < 0) & (b > 0)
    valid = right & ~np.eye(m, dtype=bool) & domain[:, :, None] & domain[:, None, :]
    scores = np.where(valid, np.abs(a) * np.abs(b), -1.0).reshape(n, -1)
    best = scores.argmax(1)
    expect_found = scores.max(1) >= 0
    np.testing.assert_array_equal(found, expect_found)
    assert not found[:2].any()
    np.testing.assert_array_equal(p[found], (best // m)[found])
    np.testing.assert_array_equal(q[found], (best % m)[found])


@pytest.mark.parametrize("theta", [1.0, -1.0])
def test_jsma_gives_every_example_the_same_result_whatever_its_slots(theta):
    """An example's steps do not depend on the others: attacked 3 at a time, each stopped example
    handing its slot on, the batch is what it is attacked all at once (and one by one)."""
    logits, _, x, y, _ = _linear(classes=3, n=13)
    x = x * 0.5 + 0.25
    target = (y + 1) % 3
    together = np.asarray(jsma(logits, x, target, theta=theta, gamma=0.5))
    for slots in (3, 1):
        np.testing.assert_array_equal(np.asarray(jsma(logits, x, target, theta=theta, gamma=0.5, slots=slots)),
                                      together)
    assert (together != np.asarray(x)).any()


def test_cw_finds_smaller_perturbations_than_fgm_needs_and_returns_x_when_it_fails():
    logits, loss, x, y, _ = _linear(classes=3, n=32)
    y = jnp.argmax(logits(x * 0.5 + 0.25), -1)
    x = x * 0.5 + 0.25
    x_adv = np.asarray(cw_l2(logits, x, y, steps=200, binary_search_steps=6, learning_rate=0.05))
    fooled = np.argmax(np.asarray(logits(x_adv)), -1) != np.asarray(y)
    assert fooled.mean() > 0.9 and x_adv.min() >= 0 and x_adv.max() <= 1
    np.testing.assert_array_equal(x_adv[~fooled], np.asarray(x)[~fooled])
    # the minimal L2 distance to a linear boundary is |margin| / ‖w_diff‖: C&W finds about it
    cw_norm = np.linalg.norm(x_adv - np.asarray(x), axis=1)[fooled]
    deepfool_norm = np.linalg.norm(np.asarray(deepfool(logits, x, y, overshoot=0.0)) - np.asarray(x), axis=1)[fooled]
    assert np.median(cw_norm / deepfool_norm) < 1.1
    nothing = cw_l2(logits, x, y, steps=1, binary_search_steps=1, initial_const=1e-9)
    np.testing.assert_array_equal(np.asarray(nothing), np.asarray(x))


def test_targets_least_likely_and_random_other():
    z = jnp.asarray([[3.0, -1.0, 0.0], [0.0, 1.0, -5.0]])
    np.testing.assert_array_equal(np.asarray(least_likely(z)), [1, 2])
    y = jnp.asarray(np.arange(300) % 10, jnp.int32)
    t = np.asarray(random_other(jax.random.PRNGKey(0), y, 10))
    assert (t != np.asarray(y)).all() and set(t) == set(range(10))


def test_pgd_restarts_keep_each_examples_strongest_start():
    _, loss, x, y, _ = _linear(classes=3)
    key = jax.random.PRNGKey(3)
    one = pgd(loss, x, y, 0.3, step_size=0.01, steps=2, key=key, norm=2)
    best = pgd(loss, x, y, 0.3, step_size=0.01, steps=2, key=key, norm=2, restarts=4)
    per = jax.vmap(lambda a, b: loss(a[None], b[None]))
    assert (np.asarray(per(best, y)) >= np.asarray(per(one, y)) - 1e-6).all()
    assert np.asarray(per(best, y)).sum() > np.asarray(per(one, y)).sum()
    with pytest.raises(ReproError, match="key"):
        pgd(loss, x, y, 0.3, step_size=0.01, steps=2, restarts=2)


# --- properties -------------------------------------------------------------------------------------

CLIPS = st.sampled_from([None, (0.0, 1.0), (0.2, 0.8)])


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.0, 0.5), clip=CLIPS, seed=st.integers(0, 5),
       attack=st.sampled_from(["fgsm", "bim", "pgd"]))
def test_every_linf_attack_stays_within_eps_and_the_clip_range(eps, clip, seed, attack):
    count_case("attack property: L-inf attacks within eps and the clip range")
    _, loss, x, y, _ = _linear(classes=3, seed=seed)
    x = jnp.clip(x, *clip) if clip else x
    x_adv = {"fgsm": lambda: fgsm(loss, x, y, eps, clip=clip),
             "bim": lambda: bim(loss, x, y, eps, steps=5, step_size=eps / 3, clip=clip),
             "pgd": lambda: pgd(loss, x, y, eps, step_size=eps / 3, steps=5, key=jax.random.PRNGKey(seed),
                                clip=clip)}[attack]()
    assert np.abs(np.asarray(x_adv - x)).max() <= eps + 1e-6
    if clip:
        assert np.asarray(x_adv).min() >= clip[0] and np.asarray(x_adv).max() <= clip[1]


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.0, 3.0), clip=CLIPS, seed=st.integers(0, 5), restarts=st.integers(1, 3))
def test_every_l2_attack_stays_within_eps_and_the_clip_range(eps, clip, seed, restarts):
    count_case("attack property: L2 attacks within eps and the clip range")
    _, loss, x, y, _ = _linear(classes=3, seed=seed)
    x = jnp.clip(x, *clip) if clip else x
    for x_adv in (fgm(loss, x, y, eps, clip=clip),
                  pgd(loss, x, y, eps, step_size=eps / 2, steps=4, norm=2, key=jax.random.PRNGKey(seed),
                      restarts=restarts, clip=clip)):
        assert (np.linalg.norm(np.asarray(x_adv - x), axis=1) <= eps * (1 + 1e-5) + 1e-6).all()
        if clip:
            assert np.asarray(x_adv).min() >= clip[0] and np.asarray(x_adv).max() <= clip[1]


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.01, 1.0), clip=CLIPS, seed=st.integers(0, 5),
       attack=st.sampled_from(["fgsm", "fgm2", "fgm1", "bim", "pgd", "pgd2"]))
def test_targeted_attacks_never_move_away_from_their_target_on_a_linear_model(eps, clip, seed, attack):
    """Two classes: the target's margin is linear in x and every step moves each pixel with it."""
    count_case("attack property: targeted attacks approach their target")
    logits, loss, x, y, _ = _linear(classes=2, seed=seed)
    x = jnp.clip(x, *clip) if clip else x
    t = 1 - y
    x_adv = {"fgsm": lambda: fgsm(loss, x, t, eps, targeted=True, clip=clip),
             "fgm2": lambda: fgm(loss, x, t, eps, targeted=True, clip=clip),
             "fgm1": lambda: fgm(loss, x, t, eps, norm=1, targeted=True, clip=clip),
             "bim": lambda: bim(loss, x, t, eps, steps=4, step_size=eps / 2, targeted=True, clip=clip),
             "pgd": lambda: pgd(loss, x, t, eps, step_size=eps / 2, steps=4, targeted=True, clip=clip),
             "pgd2": lambda: pgd(loss, x, t, eps, step_size=eps / 2, steps=4, norm=2, targeted=True,
                                 clip=clip)}[attack]()
    assert (_margin(logits, x_adv, np.asarray(t)) >= _margin(logits, x, np.asarray(t)) - 1e-5).all()


# --- composition and configs ----------------------------------------------------------------------

NOISE_CONTROLS = {"random_sign", "uniform_noise"}  # built in for adversarial training; they ignore the model


def _built_in(spec_type=None) -> set[str]:
    """The project's attacks on a model (users add more in their own modules, e.g. tests/toys/top_k_flip.py)."""
    return set(built_in_attacks()) - NOISE_CONTROLS


def test_every_built_in_attack_is_one_module_named_as_its_spec():
    import importlib

    attacks = built_in_attacks()
    assert set(attacks) >= {"fgsm", "fgm", "bim", "pgd", "deepfool", "jsma", "cw", *NOISE_CONTROLS}
    for name, spec in attacks.items():
        module = importlib.import_module(f"fgsm_repro.attacks.{name}")
        assert spec.__module__ == module.__name__ and spec.model_fields["name"].default == name
        assert module.__doc__ and "Usage" in module.__doc__, name  # the paper, the norm, shapes, an example
        assert parse_attack({"name": name, **({"eps": 0.1} if "eps" in spec.model_fields else {})}).name == name


def test_the_iterative_attacks_compose_with_jit_and_vmap():
    logits, loss, x, y, _ = _linear(classes=3)
    jitted = jax.jit(lambda v: deepfool(logits, v, y))
    np.testing.assert_allclose(np.asarray(jitted(x)), np.asarray(deepfool(logits, x, y)), atol=1e-6)
    swept = jax.vmap(lambda e: fgm(loss, x, y, e))(jnp.asarray([0.1, 0.2]))
    np.testing.assert_allclose(np.asarray(swept[1]), np.asarray(fgm(loss, x, y, 0.2)), atol=1e-6)
    batched = jax.vmap(lambda xb, yb: cw_l2(logits, xb, yb, steps=5, binary_search_steps=2))(x.reshape(2, 8, -1),
                                                                                          y.reshape(2, 8))
    np.testing.assert_allclose(np.asarray(batched).reshape(x.shape),
                               np.asarray(cw_l2(logits, x, y, steps=5, binary_search_steps=2)), atol=1e-5)


@pytest.mark.parametrize("settings_, message", [
    ({"name": "deepfool", "eps": 0.1}, "eps: unknown key"),
    ({"name": "deepfool", "norm": 1}, "norm"),
    ({"name": "jsma", "theta": 0}, "theta"),
    ({"name": "jsma", "clip": None}, "clip"),
    ({"name": "jsma", "gamma": 1.5}, "gamma"),
    ({"name": "cw", "steps": 0}, "steps"),
    ({"name": "pgd", "eps": 0.1, "restarts": 3, "random_start": False}, "restarts"),
    ({"name": "fgsm", "eps": 0.1, "targeted": True, "target": 3}, "target"),
    ({"name": "fgm", "eps": -1}, "eps"),
    ({"name": "bim", "eps": 0.1, "target": "likeliest"}, "target"),
])
def test_attack_settings_are_validated_with_the_field_named(settings_, message):
    with pytest.raises(NestedFieldError, match=message):
        parse_attack(settings_)


def test_every_attack_runs_through_evaluation_with_predicted_labels_and_refuses_nan():
    from fgsm_repro.attacks.base import AttackSpec
    from fgsm_repro.evaluation import adversarial_examples
    from fgsm_repro.models import build_model

    model, objective = build_model("softmax_regression", {})
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 28, 28, 1), dtype=np.float32), np.arange(6, dtype=np.int32)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
    params = jax.tree.map(lambda p: 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    small = {"fgsm": {"eps": 0.1}, "fgm": {"eps": 1.0}, "bim": {"eps": 0.05}, "pgd": {"eps": 0.1, "steps": 2},
             "deepfool": {}, "jsma": {"gamma": 0.02}, "cw": {"steps": 5, "binary_search_steps": 2},
             "apgd": {"eps": 0.1, "steps": 3}, "apgdt": {"eps": 0.1, "steps": 3, "target_classes": 2},
             "square": {"eps": 0.1, "queries": 3}, "fab": {"eps": 0.1, "steps": 2, "target_classes": 2},
             "autoattack": {"eps": 0.1, "chunk": 4,
                            "stages": [{"name": "apgd", "steps": 2}, {"name": "square", "queries": 2}]}}
    assert set(small) == _built_in(AttackSpec)
    for name, extra in small.items():
        spec = parse_attack({"name": name, "labels": "predicted", **extra})
        x_adv = adversarial_examples(model, objective, params, x, y, spec, batch_size=4)
        assert x_adv.shape == x.shape and np.isfinite(x_adv).all(), name
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ReproError, match="NaN"):
        adversarial_examples(model, objective, params, x, y, parse_attack({"name": "deepfool"}))


def test_target_hit_counts_the_examples_classified_as_the_targets_the_attack_drew():
    from fgsm_repro.attacks.base import TARGET_STREAM
    from fgsm_repro.attacks.common import random_other
    from fgsm_repro.evaluation import ATTACK_KEY, attack_metrics, predict
    from fgsm_repro.models import build_model

    model, objective = build_model("softmax_regression", {})
    rng = np.random.default_rng(1)
    x, y = rng.random((10, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 10).astype(np.int32)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
    params = jax.tree.map(lambda p: 0.5 * jax.random.normal(jax.random.PRNGKey(3), p.shape), params)
    untargeted, _ = attack_metrics(model, objective, params, x, y, parse_attack({"name": "fgsm", "eps": 0.1}))
    assert "target_hit" not in untargeted
    # Random targets, drawn per batch as the attack draws them: the rate is against those very targets.
    spec = parse_attack({"name": "bim", "eps": 1.0, "target": "random", "clip": [0, 1]})
    metrics, x_adv = attack_metrics(model, objective, params, x, y, spec)
    key = jax.random.fold_in(jax.random.PRNGKey(ATTACK_KEY), 0)
    targets = np.asarray(random_other(jax.random.fold_in(key, TARGET_STREAM), jnp.asarray(y), 10))
    pred = predict(model, objective, params, x_adv)[0]
    assert metrics["target_hit"] == pytest.approx(100 * np.mean(pred == targets))
    assert metrics["target_hit"] >= 80  # eps = 1 reaches almost any class of a linear model
    # targeted: the labels given are the targets.
    metrics, x_adv = attack_metrics(model, objective, params, x, (y + 1) % 10,
                                    parse_attack({"name": "fgsm", "eps": 0.3, "targeted": True}))
    pred = predict(model, objective, params, x_adv)[0]
    assert metrics["target_hit"] == pytest.approx(100 * np.mean(pred == (y + 1) % 10))


def test_the_attack_benchmark_runs_every_attack_and_refuses_a_bad_one_in_one_line():
    from fgsm_repro.attacks.base import AttackSpec
    from fgsm_repro.config import experiment_configs, load_config
    from fgsm_repro.experiments.attacks_mnist import Options
    from fgsm_repro.experiments.common import experiment_options

    for profile in ("paper", "fast", "ci"):
        cfg = load_config(experiment_configs()["attacks_mnist"], profile)
        options = experiment_options(cfg, Options)
        assert {spec.name for spec in options.attacks.values()} == _built_in(AttackSpec)
    bad = cfg.model_copy(update={"options": {"attacks": {"df": {"name": "deepfool", "eps": 1}}}})
    with pytest.raises(ReproError, match="options.attacks.eps': unknown key for deepfool") as e:
        experiment_options(bad, Options)
    assert "\n" not in str(e.value)


def test_the_attack_table_of_the_docs_names_every_built_in_attack_and_its_settings():
    """docs/attacks.md's table is prose, checked against the registry: every built-in attack has a
    row, and the row names each of its own settings."""
    from conftest import REPO

    rows = {line.split("|")[1].strip().strip("`"): line for line in (REPO / "docs" / "attacks.md").read_text()
            .splitlines()[:40] if line.startswith("| `")}
    assert set(rows) == set(built_in_attacks())
    for name, spec in built_in_attacks().items():
        own = set(spec.model_fields) - {"name", "clip", "labels"}
        assert all(f"`{field}`" in rows[name] for field in own), name
