"""FAB-T: the box-constrained L∞ and L2 projections onto a hyperplane against a bisection, the
minimal L∞ and L2 perturbations of a linear model, and the budget."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fgsm_repro.attacks.base import parse_attack
from fgsm_repro.attacks.common import Victim
from fgsm_repro.attacks.fab import fab_t, fab_t_run, project_l2, project_linf
from tests.helpers import count_case


def _least_tau(w, c, room_pos, room_neg):
    """Bisection on τ: the smallest max-step whose moves (each coordinate toward the plane, at most
    its room) reach the plane; inf where none does."""
    gain = np.where(-np.sign(c) * np.sign(w) > 0, room_pos, room_neg)
    reach = lambda t: np.sum(np.abs(w) * np.minimum(t, gain))  # noqa: E731
    if reach(np.inf) < abs(c):
        return np.inf
    lo, hi = 0.0, float(gain.max())
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reach(mid) < abs(c) else (lo, mid)
    return hi


def _projected(project, seed, dims, scale):
    """A random point of [0, 1]^dims, a plane wᵀδ + c = 0 (some weights 0), and `project`'s step
    onto it in the unit box, checked to stay in the box."""
    rng = np.random.default_rng(seed)
    point = rng.random((1, dims)).astype(np.float32)
    w = (rng.normal(size=(1, dims)) * (rng.random((1, dims)) > 0.2)).astype(np.float32)
    c = np.asarray([rng.normal() * scale], np.float32)
    delta = np.asarray(project(jnp.asarray(point), jnp.asarray(w), jnp.asarray(c), jnp.zeros((1, dims)),
                               jnp.ones((1, dims))))
    assert ((point + delta) >= -1e-6).all() and ((point + delta) <= 1 + 1e-6).all()
    return point, w, c, delta


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), dims=st.integers(1, 12), scale=st.floats(0.01, 10.0))
def test_the_linf_projection_is_the_least_step_that_reaches_the_plane_in_the_box(seed, dims, scale):
    count_case("FAB: L-inf projection onto a hyperplane in a box")
    point, w, c, delta = _projected(project_linf, seed, dims, scale)
    tau = _least_tau(w[0].astype(np.float64), float(c[0]), 1 - point[0].astype(np.float64), point[0].astype(np.float64))
    if np.isfinite(tau):
        assert abs(float(w[0] @ delta[0]) + c[0]) <= 1e-4 * max(1.0, abs(c[0]))
        assert np.abs(delta).max() <= tau * (1 + 1e-4) + 1e-6
    else:  # unreachable: every coordinate goes as far as its room toward the plane
        toward = -np.sign(c[0]) * np.sign(w[0])
        np.testing.assert_allclose(delta[0], toward * np.where(toward > 0, 1 - point[0], point[0]), atol=1e-6)


def test_on_a_linear_model_fab_finds_the_least_linf_distance_to_the_boundary():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(10, 2)), jnp.float32)
    x = jnp.asarray(0.45 + 0.1 * rng.random((16, 10)), jnp.float32)  # mid-box: the box stays slack

    def logits(v):
        return v @ w

    y = jnp.argmax(logits(x), -1)
    margin = np.abs(np.asarray(logits(x)[:, 0] - logits(x)[:, 1]))
    least = margin / np.abs(np.asarray(w[:, 0] - w[:, 1])).sum()  # |f| / ‖∇f‖₁
    _, _, norm = fab_t_run(logits, x, y, None, steps=20, target_classes=1, clip=(0.0, 1.0))
    reachable = least < 0.45
    np.testing.assert_allclose(np.asarray(norm)[reachable], least[reachable], rtol=0.02)
    budget = float(np.median(least[reachable]))
    x_adv, within, _ = fab_t_run(logits, x, y, budget, steps=20, target_classes=1, clip=(0.0, 1.0))
    fooled = np.asarray(jnp.argmax(logits(x_adv), -1) != y)
    np.testing.assert_array_equal(fooled, np.asarray(within))
    np.testing.assert_array_equal(np.asarray(x_adv)[~fooled], np.asarray(x)[~fooled])  # beyond ε: x itself
    assert np.abs(np.asarray(x_adv - x)).max() <= budget * 1.0001
    unclipped = fab_t(logits, x, y, budget, steps=20, target_classes=1, clip=None)
    assert np.abs(np.asarray(unclipped - x)).max() <= budget * 1.0001
    jitted = jax.jit(lambda v: fab_t(logits, v, y, budget, steps=20, target_classes=1))(x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(x_adv), atol=1e-6)


def _least_l2_step(w, c, room_pos, room_neg):
    """Bisection on λ: the KKT point of min ‖δ‖₂ on the plane in the box, each coordinate moving
    min(λ|wᵢ|, roomᵢ) toward the plane, at the least λ that reaches it; the whole room where none does."""
    toward = -np.sign(c) * np.sign(w)
    gain = np.where(toward > 0, room_pos, room_neg)
    reach = lambda lam: np.sum(np.abs(w) * np.minimum(lam * np.abs(w), gain))  # noqa: E731
    if np.sum(np.abs(w) * gain) < abs(c):  # all the room falls short
        return toward * gain
    lo, hi = 0.0, 1.0
    while reach(hi) < abs(c):
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reach(mid) < abs(c) else (lo, mid)
    return toward * np.minimum(hi * np.abs(w), gain)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), dims=st.integers(1, 12), scale=st.floats(0.01, 10.0))
def test_the_l2_projection_is_the_least_step_that_reaches_the_plane_in_the_box(seed, dims, scale):
    count_case("FAB: L2 projection onto a hyperplane in a box")
    point, w, c, delta = _projected(project_l2, seed, dims, scale)
    expected = _least_l2_step(w[0].astype(np.float64), float(c[0]), 1 - point[0].astype(np.float64),
                              point[0].astype(np.float64))
    np.testing.assert_allclose(delta[0], expected, atol=1e-5)


def test_without_a_box_the_l2_projection_is_the_normal_step():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 7)).astype(np.float32)
    w[3] = 0.0  # no gradient: nothing moves
    c = np.asarray([0.3, -1.2, 0.0, 0.5], np.float32)
    point = rng.random((4, 7)).astype(np.float32)
    delta = np.asarray(project_l2(jnp.asarray(point), jnp.asarray(w), jnp.asarray(c), jnp.asarray(point - 1e3),
                                  jnp.asarray(point + 1e3)))
    normal = -c[:, None] * w / np.maximum((w ** 2).sum(1, keepdims=True), 1e-30)  # −c w / ‖w‖₂²
    np.testing.assert_allclose(delta, normal, atol=1e-6)
    assert np.all(np.isfinite(delta)) and not delta[2:].any()


def test_on_a_linear_model_fab_l2_finds_the_least_l2_distance_to_the_boundary():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(10, 2)), jnp.float32)
    x = jnp.asarray(0.45 + 0.1 * rng.random((16, 10)), jnp.float32)

    def logits(v):
        return v @ w

    y = jnp.argmax(logits(x), -1)
    f = np.asarray(logits(x)[:, 0] - logits(x)[:, 1])
    g = np.asarray(w[:, 0] - w[:, 1])
    least = np.abs(f) / np.linalg.norm(g)  # |f| / ‖∇f‖₂
    foot = np.asarray(x) - f[:, None] * g / (g @ g)  # the closest point of the boundary
    slack = ((foot > 0.01) & (foot < 0.99)).all(1)  # the box does not bind
    assert slack.sum() >= 8
    _, _, norm = fab_t_run(logits, x, y, None, steps=20, target_classes=1, clip=(0.0, 1.0), norm=2)
    np.testing.assert_allclose(np.asarray(norm)[slack], least[slack], rtol=0.02)
    assert (np.asarray(norm) >= least * (1 - 1e-5)).all()  # no point of the other class is closer
    budget = float(np.median(least[slack]))
    x_adv, within, _ = fab_t_run(logits, x, y, budget, steps=20, target_classes=1, clip=(0.0, 1.0), norm=2)
    fooled = np.asarray(jnp.argmax(logits(x_adv), -1) != y)
    np.testing.assert_array_equal(fooled, np.asarray(within))
    np.testing.assert_array_equal(np.asarray(x_adv)[~fooled], np.asarray(x)[~fooled])  # beyond ε: x itself
    assert 0 < fooled.sum() < 16
    assert np.linalg.norm(np.asarray(x_adv - x), axis=1).max() <= budget * 1.0001
    spec = parse_attack({"name": "fab", "eps": budget, "norm": 2, "steps": 20, "target_classes": 1, "clip": [0, 1]})
    victim = Victim(logits=logits, loss=None, predict=lambda v: jnp.argmax(logits(v), -1))
    jitted = jax.jit(lambda v: spec(victim, v, y, jax.random.PRNGKey(0)))(x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(x_adv), atol=1e-6)
    assert "norm=2" in spec.describe()
