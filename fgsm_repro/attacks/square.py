"""Square Attack: a score-based black-box attack by random square updates.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, Algorithm 1 and §3.1 (AutoAttack's fourth attack). Norm:
L∞ (‖x̃ − x‖∞ ≤ ε). It reads only the model's scores — no gradient — so a defence that hides
its gradient does not hide from it.

From vertical stripes of ±ε (one sign per column and channel), each query changes one random
square of side s in each example: the square's pixels move to x ± ε (one random sign per
channel, drawn again until the square changes). The change is kept when it lowers the margin
loss z_y − max_{i≠y} z_i (or when it fools the model). The square covers a share p of the
image, p = `p_init` halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000
queries (the schedule rescaled to `queries`); s = round(√(p·H·W)), at most H − 1. An example
stops changing once it is fooled.

As in the authors' code, each example draws its own square; the reference's draw-again loop is
replaced by taking the first of `SIGN_DRAWS` random sign vectors that changes the square.

Shapes: `x` is a batch of images (N, H, W, C); `y` has one label per example; the result has
the shape and dtype of `x`.

Usage::

    x_adv = square(logits_fn, x, y, eps=0.3, queries=5000, key=jax.random.PRNGKey(0), clip=(0., 1.))

Pure and traceable (a ``lax.while_loop`` over the queries, ending early once every example of
the batch is fooled): composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat, PositiveInt
from fgsm_repro.attacks.common import check_eps, clip_to, keep_stronger, label_logit, other_best, restart_key
from fgsm_repro.errors import ReproError

# (share of the queries, factor of p_init) at each halving of the square's area
SCHEDULE = ((0.001, 2), (0.005, 4), (0.02, 8), (0.05, 16), (0.1, 32), (0.2, 64), (0.4, 128), (0.6, 256), (0.8, 512))
SIGN_DRAWS = 8


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
    """(N,) z_y − max_{i≠y} z_i: negative once the example is misclassified."""
    return label_logit(logits, y) - other_best(logits, y)


def square_share(p_init: float, query, queries: int):
    """The share p of the image a square covers at `query` (0-based) of `queries`: p_init halved
    at the rescaled steps of the authors' 10,000-query schedule."""
    at = query / queries
    factor = 1.0
    for start, f in SCHEDULE:
        factor = jnp.where(at > start, f, factor)
    return p_init / factor


def square(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    queries: int = 5000,
    p_init: float = 0.8,
    key: jax.Array,
    restarts: int = 1,
    clip: tuple[float, float] | None = None,
) -> jax.Array:
    """Square Attack L∞ of `queries` queries per start; with `restarts`, each example keeps a
    start that fooled the model, else the lowest margin."""
    return square_run(logits_fn, x, y, eps, queries=queries, p_init=p_init, key=key, restarts=restarts, clip=clip)[0]


def square_run(logits_fn, x, y, eps, *, queries, p_init, key, restarts=1, clip=None):
    """:func:`square`'s (x̃, fooled (N,) bool, −margin (N,))."""
    check_eps(eps)
    if x.ndim != 4:
        raise ReproError(f"the Square Attack changes squares of images (N, H, W, C); got inputs of shape {x.shape}")
    n, h, w, c = x.shape
    rows = jnp.arange(h)[None, :, None, None]
    cols = jnp.arange(w)[None, None, :, None]

    def ball(v):
        return clip_to(jnp.clip(v, x - eps, x + eps), clip)

    def run(start_key):
        k_init, k_loop = jax.random.split(start_key)
        stripes = jax.random.choice(k_init, jnp.asarray([-1.0, 1.0], x.dtype), (n, 1, w, c))
        best = ball(x + eps * stripes)
        best_margin = margin(logits_fn(best), y)

        def query(i, carry):
            best, best_margin = carry
            k_pos, k_sign = jax.random.split(jax.random.fold_in(k_loop, i))
            share = square_share(p_init, i, queries)
            side = jnp.clip(jnp.round(jnp.sqrt(share * h * w)).astype(jnp.int32), 1, h - 1)
            top = jax.random.randint(k_pos, (n,), 0, h - side)
            left = jax.random.randint(jax.random.fold_in(k_pos, 1), (n,), 0, w - side)
            inside = ((rows >= top[:, None, None, None]) & (rows < (top + side)[:, None, None, None])
                      & (cols >= left[:, None, None, None]) & (cols < (left + side)[:, None, None, None]))
            signs = jax.random.choice(k_sign, jnp.asarray([-1.0, 1.0], x.dtype), (SIGN_DRAWS, n, 1, 1, c))
            candidates = jax.vmap(lambda s: jnp.where(inside, ball(x + eps * s), best))(signs)
            changes = (jnp.abs(candidates - best[None]) > 1e-7).any(axis=(2, 3, 4))  # (draws, N)
            pick = jnp.argmax(changes, axis=0)  # the first draw that changes the square (else the first)
            new = jnp.take_along_axis(candidates, pick[None, :, None, None, None], axis=0)[0]
            new_margin = margin(logits_fn(new), y)
            keep = (best_margin > 0) & ((new_margin < best_margin) | (new_margin <= 0))
            return (jnp.where(keep[:, None, None, None], new, best), jnp.where(keep, new_margin, best_margin))

        def go_on(carry):  # until every example is fooled or the queries are spent
            i, _, best_margin = carry
            return (i < queries) & (best_margin > 0).any()

        _, best, best_margin = jax.lax.while_loop(go_on, lambda c: (c[0] + 1, *query(c[0], c[1:])),
                                                  (0, best, best_margin))
        return best, best_margin <= 0, -best_margin

    kept = run(restart_key(key, 0))
    if restarts > 1:
        kept = jax.lax.fori_loop(1, restarts, lambda r, k: keep_stronger(k, run(restart_key(key, r))), kept)
    x_adv, fooled, loss = kept
    return jax.lax.stop_gradient(x_adv.astype(x.dtype)), fooled, loss


class Square(AttackSpec):
    """The Square Attack (:mod:`fgsm_repro.attacks.square`), L∞ radius `eps`: `queries` random
    square updates of the margin loss from `restarts` starts, the first covering `p_init` of the
    image. Black box: it reads the logits only."""

    name: Literal["square"] = "square"
    eps: NonNegativeFloat
    queries: PositiveInt = 5000
    p_init: float = Field(0.8, gt=0, le=1)
    restarts: PositiveInt = 1

    def perturb(self, victim, x, y, key):
        return square(victim.logits, x, y, self.eps, queries=self.queries, p_init=self.p_init, key=key,
                      restarts=self.restarts, clip=self.clip)
