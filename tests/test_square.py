"""The Square Attack: its schedule, and what each query may change (the bookkeeping of the margin,
the ball, the clip range, fooled examples left alone)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgsm_repro.attacks.square import margin, square, square_run, square_share
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
