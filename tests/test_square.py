"""The Square Attack: its schedule, L2's blocks and windows, and what each query may change (the
bookkeeping of the margin, the L∞ or L2 ball, the clip range, fooled examples left alone)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgsm_repro.attacks.base import parse_attack
from fgsm_repro.attacks.common import Victim
from fgsm_repro.attacks.square import l2_side, margin, pseudo_gaussian, square, square_run, square_share
from fgsm_repro.errors import ReproError
from tests.helpers import count_case


def test_the_square_shrinks_on_the_authors_schedule_rescaled_to_the_queries():
    # the authors' thresholds of 10,000 queries: 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    at = [0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2000, 2001, 4000, 4001, 6000, 6001, 8000, 8001, 9999]
    expected = [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    np.testing.assert_allclose([float(square_share(0.8, q, 10_000)) for q in at], [0.8 / f for f in expected])
    assert float(square_share(0.8, 5, 500)) == pytest.approx(0.8 / 4)  # 5 of 500 = 100 of 10,000


def _image_model(seed=0, n=16, classes=4):
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(6 * 6 * 2, classes)), jnp.float32)
    x = jnp.asarray(rng.random((n, 6, 6, 2)), jnp.float32)

    def logits(v):
        return jnp.tanh(v.reshape(v.shape[0], -1) @ w) * 2

    return logits, x, jnp.argmax(logits(x), -1)


@settings(max_examples=8, deadline=None)
@given(eps=st.floats(0.0, 0.5), clip=st.sampled_from([None, (0.0, 1.0)]), seed=st.integers(0, 5),
       queries=st.sampled_from([2, 25]))
def test_each_query_keeps_the_ball_the_clip_range_and_never_raises_the_margin(eps, clip, seed, queries):
    count_case("attack property: Square within eps, margin never raised")
    logits, x, y = _image_model(seed)
    key = jax.random.PRNGKey(seed)
    x_adv, fooled, loss = square_run(logits, x, y, eps, queries=queries, p_init=0.8, key=key, clip=clip)
    assert np.abs(np.asarray(x_adv - x)).max() <= eps + 1e-6
    if clip:
        assert np.asarray(x_adv).min() >= clip[0] and np.asarray(x_adv).max() <= clip[1]
    final = np.asarray(margin(logits(x_adv), y))
    np.testing.assert_allclose(-np.asarray(loss), final, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(fooled), final <= 0)
    _, _, first = square_run(logits, x, y, eps, queries=1, p_init=0.8, key=key, clip=clip)
    assert (np.asarray(loss) >= np.asarray(first) - 1e-6).all()  # more queries: the margin only falls


def test_an_example_fooled_by_its_start_is_left_alone_and_squares_need_images():
    logits, x, y = _image_model()
    wrong = (y + 1) % 4  # every example starts misclassified under these labels
    x_adv = square(logits, x, wrong, 0.1, queries=20, key=jax.random.PRNGKey(0))
    start = square(logits, x, wrong, 0.1, queries=1, key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(x_adv), np.asarray(start))
    with pytest.raises(ReproError, match="images"):
        square(logits, x.reshape(16, -1), y, 0.1, queries=2, key=jax.random.PRNGKey(0))


def _authors_block(side):
    """The authors' ``eta(side)`` (autoattack/square.py), their loops in numpy: concentric rings
    1/(k + 1)² in each half, each half normalised, the lower one negated, the whole normalised."""
    def rings(rows, cols):
        block = np.zeros((rows, cols))
        r, c = rows // 2, cols // 2
        for k in range(max(rows // 2 + 1, cols // 2 + 1)):
            block[max(r, 0):min(r + 2 * k + 1, rows), max(c, 0):min(c + 2 * k + 1, cols)] += 1 / (k + 1) ** 2
            r, c = r - 1, c - 1
        return block / np.sqrt((block ** 2).sum()) if block.size else block

    block = np.concatenate([rings(side // 2, side), -rings(side - side // 2, side)])
    return block / np.sqrt((block ** 2).sum())


def test_the_l2_block_is_the_authors_pseudo_gaussian_and_windows_follow_their_rule():
    grid = np.arange(-2, 20)
    block = jax.jit(lambda side, flip: pseudo_gaussian(grid[:, None], grid[None, :], side, flip, 20))
    for side in range(1, 18):
        expected = np.zeros((22, 22))
        expected[2:side + 2, 2:side + 2] = _authors_block(side)
        np.testing.assert_allclose(np.asarray(block(side, False)), expected, atol=1e-6)
        np.testing.assert_allclose(np.asarray(block(side, True)), expected.T, atol=1e-6)  # the halves side by side
    # round(√(p·H·W)), odd, at least 3, at most the image: MNIST at p = .8, .1, .0125, .0016; 6 × 6 at .8
    assert [int(l2_side(p, 28, 28)) for p in (0.8, 0.1, 0.8 / 64, 0.8 / 512)] == [25, 9, 3, 3]
    assert int(l2_side(0.8 / 4, 28, 28)) == 13 and int(l2_side(0.8, 6, 6)) == 5 and int(l2_side(1.0, 6, 5)) == 5


def _tanh_logits(w):
    return lambda v: jnp.tanh(v.reshape(v.shape[0], -1) @ w) * 2


@functools.partial(jax.jit, static_argnames=("clip",))
def _l2_runs(w, x, eps, key, clip):
    """Square L2 on the tanh model of `w`, its own labels: after 1 and after 12 queries (one
    compilation per clip range for every example hypothesis draws)."""
    logits = _tanh_logits(w)
    y = jnp.argmax(logits(x), -1)
    return [square_run(logits, x, y, eps, queries=q, p_init=0.8, key=key, clip=clip, norm=2) for q in (1, 12)]


@settings(max_examples=6, deadline=None)
@given(eps=st.floats(0.0, 3.0), clip=st.sampled_from([None, (0.0, 1.0)]), seed=st.integers(0, 5))
def test_each_l2_query_keeps_the_l2_ball_the_clip_range_and_never_raises_the_margin(eps, clip, seed):
    count_case("attack property: Square L2 within eps, margin never raised")
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(6 * 6 * 2, 4)), jnp.float32)
    x = jnp.asarray(rng.random((16, 6, 6, 2)), jnp.float32)
    (_, _, first), (x_adv, fooled, loss) = _l2_runs(w, x, eps, jax.random.PRNGKey(seed), clip)
    assert np.linalg.norm(np.asarray(x_adv - x).reshape(len(x), -1), axis=1).max() <= eps * (1 + 1e-5) + 1e-6
    if clip:
        assert np.asarray(x_adv).min() >= clip[0] and np.asarray(x_adv).max() <= clip[1]
    logits = _tanh_logits(w)
    final = np.asarray(margin(logits(x_adv), jnp.argmax(logits(x), -1)))
    np.testing.assert_allclose(-np.asarray(loss), final, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(fooled), final <= 0)
    assert (np.asarray(loss) >= np.asarray(first) - 1e-6).all()  # more queries: the margin only falls


def test_square_l2_starts_on_the_sphere_spends_its_budget_and_is_a_spec():
    logits, x, y = _image_model(n=8)
    spec = parse_attack({"name": "square", "eps": 1.0, "norm": 2, "queries": 40})
    victim = Victim(logits=logits, loss=None, predict=lambda v: jnp.argmax(logits(v), -1))
    start, x_adv = jax.jit(lambda v: (spec.model_copy(update={"queries": 1})(victim, v, y, jax.random.PRNGKey(0)),
                                      spec(victim, v, y, jax.random.PRNGKey(0))))(x)
    for v in (start, x_adv):  # no clip range: ‖x̃ − x‖₂ = ε, the budget all spent
        np.testing.assert_allclose(np.linalg.norm(np.asarray(v - x).reshape(8, -1), axis=1), 1.0, rtol=1e-5)
    assert np.asarray(margin(logits(x_adv), y)).mean() < np.asarray(margin(logits(start), y)).mean()
    assert spec.describe() == "square eps=1 norm=2 queries=40"
    with pytest.raises(ReproError, match="L2"):
        square(logits, x, y, 1.0, queries=2, norm=1, key=jax.random.PRNGKey(0))
