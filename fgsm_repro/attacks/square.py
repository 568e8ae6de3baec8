"""Square Attack: a score-based black-box attack by random square updates.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, Algorithm 1 with §3.1 (L∞) and §3.2, Algorithm 3 (L2)
(AutoAttack's fourth attack). Norm: L∞ (‖x̃ − x‖∞ ≤ ε) or L2 (‖x̃ − x‖₂ ≤ ε), `norm`. It reads
only the model's scores — no gradient — so a defence that hides its gradient does not hide from it.

Each query changes the perturbation δ = x̃ − x of each example where a random square falls; the
change is kept when it lowers the margin loss z_y − max_{i≠y} z_i (or when it fools the model),
and an example stops changing once it is fooled. The square covers a share p of the image,
p = `p_init` halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries (the
schedule rescaled to `queries`).

L∞: from vertical stripes of ±ε (one sign per column and channel), each query moves one square
of side s = round(√(p·H·W)), at most H − 1, to x ± ε (one random sign per channel, drawn again
until the square changes).

L2: δ starts as a grid of 5 × 5 blocks of side ⌊H/5⌋ scaled to ‖δ‖₂ = ε, each block a
"pseudo-Gaussian" pattern with a random sign per channel: in one half of the block concentric
square rings around its centre, ring k adding 1/(k + 1)² inside it, in the other half the same
negated (the halves one above the other or side by side at random). Each query takes two windows
of side s = round(√(p·H·W)), made odd, at least 3, at most min(H, W). Per channel, the first gets
a fresh block (random sign and orientation) plus its old content at unit norm, rescaled to
carry the norm of both windows and the budget left, ((ε² − ‖δ‖₂²)⁺ / C + ‖δ_both‖₂²)^½; the
second is set to 0 (the first wins where they overlap). So the perturbation's norm moves from
one window to the other. Then ‖δ‖₂ is set to ε and x + δ clipped to the clip range.

As in the authors' code, each example draws its own squares (in L2 its blocks' orientations too,
which the authors draw once for the batch); in L∞ the reference's draw-again loop is replaced by
taking the first of `SIGN_DRAWS` random sign vectors that changes the square; in L2 the first
blocks' side is at least 1 pixel (the authors' code needs H ≥ 5).

Shapes: `x` is a batch of images (N, H, W, C); `y` has one label per example; the result has
the shape and dtype of `x`.

Usage::

    x_adv = square(logits_fn, x, y, eps=0.3, queries=5000, key=jax.random.PRNGKey(0), clip=(0., 1.))
    x_adv = square(logits_fn, x, y, eps=1.5, norm=2, queries=5000, key=key, clip=(0., 1.))   # L2

Pure and traceable (a ``lax.while_loop`` over the queries, ending early once every example of
the batch is fooled): composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from fgsm_repro.attacks.base import INF, AttackSpec, NonNegativeFloat, PositiveInt, norm_value
from fgsm_repro.attacks.common import (
    batch_norm,
    check_eps,
    clip_to,
    keep_stronger,
    label_logit,
    other_best,
    restart_key,
)
from fgsm_repro.errors import ReproError

# (share of the queries, factor of p_init) at each halving of the square's area
SCHEDULE = ((0.001, 2), (0.005, 4), (0.02, 8), (0.05, 16), (0.1, 32), (0.2, 64), (0.4, 128), (0.6, 256), (0.8, 512))
SIGN_DRAWS = 8
GRID = 5  # L2's start: GRID × GRID blocks
SMALLEST_L2_SIDE = 3
TINY = 1e-12  # keeps the authors' normalisations of an all-zero window finite


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


def _ring_block(i, j, side, ring_sums):
    """The unnormalised L2 block of side `side` at relative coordinates (i, j) (0 outside
    [0, side)²) and whether each cell lies in its upper half."""
    upper = side // 2
    top = i < upper
    rows = jnp.where(top, upper, side - upper)  # the height of the cell's half
    ring = jnp.maximum(jnp.abs(jnp.where(top, i, i - upper) - rows // 2), jnp.abs(j - side // 2))
    # rings 0 … side // 2 in both halves: Σ_{k=ring}^{side//2} 1/(k + 1)² = H(side//2 + 1) − H(ring)
    value = jnp.take(ring_sums, side // 2 + 1, mode="clip") - jnp.take(ring_sums, ring, mode="clip")
    inside = (i >= 0) & (i < side) & (j >= 0) & (j < side)
    return jnp.where(inside, value, 0.0), top


def pseudo_gaussian(i, j, side, flip, size: int) -> jax.Array:
    """The authors' L2 block (their ``eta``) of side `side` ≤ `size` at the relative coordinates
    (i, j) (integer arrays broadcast together; 0 outside [0, side)²), of unit L2 norm: its upper
    ⌊side/2⌋ rows are concentric square rings around their centre, ring k adding 1/(k + 1)² inside
    it, the rows below the same around theirs, negated; each half has the same norm. `flip`
    (bool, broadcast): transposed, the halves side by side. `side` and `flip` may be traced."""
    ring_sums = jnp.asarray(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 2) ** 2)]), jnp.float32)
    value, top = _ring_block(jnp.where(flip, j, i), jnp.where(flip, i, j), side, ring_sums)
    grid = np.arange(size)  # each half's norm, worked on a block-sized grid (side is traced)
    whole, upper = _ring_block(grid[:, None], grid[None, :], side, ring_sums)
    upper_norm = jnp.sqrt(jnp.sum(jnp.where(upper, whole ** 2, 0.0)))
    lower_norm = jnp.sqrt(jnp.sum(jnp.where(upper, 0.0, whole ** 2)))
    halves = (upper_norm > 0).astype(jnp.float32) + (lower_norm > 0)  # side 1: no upper half
    norm = jnp.where(top, upper_norm, lower_norm)
    return jnp.where(top, 1.0, -1.0) * value / jnp.where(norm > 0, norm, 1.0) / jnp.sqrt(halves)


def l2_side(share, h: int, w: int):
    """The side of L2's windows at a `share` p of the image: round(√(p·H·W)), made odd, at least
    3, at most min(H, W) (the authors' rule)."""
    side = jnp.maximum(jnp.round(jnp.sqrt(share * h * w)).astype(jnp.int32), SMALLEST_L2_SIDE)
    return jnp.minimum(side + (side % 2 == 0), min(h, w))


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
    norm: float = math.inf,
) -> jax.Array:
    """Square Attack L∞ or L2 (`norm`) of `queries` queries per start; with `restarts`, each
    example keeps a start that fooled the model, else the lowest margin."""
    return square_run(logits_fn, x, y, eps, queries=queries, p_init=p_init, key=key, restarts=restarts, clip=clip,
                      norm=norm)[0]


def square_run(logits_fn, x, y, eps, *, queries, p_init, key, restarts=1, clip=None, norm=math.inf):
    """:func:`square`'s (x̃, fooled (N,) bool, −margin (N,))."""
    check_eps(eps)
    if norm not in (math.inf, 2):
        raise ReproError(f"the Square Attack is for the L-inf and L2 balls, got norm {norm!r}")
    if x.ndim != 4:
        raise ReproError(f"the Square Attack changes squares of images (N, H, W, C); got inputs of shape {x.shape}")
    n, h, w, c = x.shape
    rows = jnp.arange(h)[None, :, None, None]
    cols = jnp.arange(w)[None, None, :, None]

    def ball(v):
        return clip_to(jnp.clip(v, x - eps, x + eps), clip)

    def linf_start(k_init):
        stripes = jax.random.choice(k_init, jnp.asarray([-1.0, 1.0], x.dtype), (n, 1, w, c))
        return ball(x + eps * stripes)

    def linf_query(i, k_pos, k_sign, best):
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
        return jnp.take_along_axis(candidates, pick[None, :, None, None, None], axis=0)[0]

    size = max(h, w)  # the largest block

    def on_l2_sphere(delta):  # x + ε δ / ‖δ‖₂, in the clip range
        return clip_to(x + eps * delta / (batch_norm(delta, 2) + TINY), clip)

    def l2_start(k_init):
        side = max(h // GRID, 1)
        first = max((h - GRID * side) // 2, 0)  # the grid centred, on both axes by the height (the authors')
        blocks = (h // side, w // side)

        def tiling(length, count):  # each pixel's block index along an axis, its place in it, and whether covered
            at = np.arange(length) - first
            index = at // side
            return np.clip(index, 0, count - 1), at - index * side, (at >= 0) & (index < count)

        bi, ri, ci = tiling(h, blocks[0])
        bj, rj, cj = tiling(w, blocks[1])
        k_sign, k_flip = jax.random.split(k_init)
        signs = jax.random.choice(k_sign, jnp.asarray([-1.0, 1.0], x.dtype), (n, *blocks, c))
        flips = jax.random.bernoulli(k_flip, 0.5, (n, *blocks))
        pattern = pseudo_gaussian(ri[:, None], rj[None, :], side, flips[:, bi[:, None], bj[None, :]], size)
        covered = jnp.asarray(ci[:, None] & cj[None, :])
        delta = jnp.where(covered[None, :, :, None], pattern[..., None] * signs[:, bi[:, None], bj[None, :]], 0.0)
        return on_l2_sphere(delta.astype(x.dtype))

    def l2_query(i, k_pos, k_sign, best):
        side = l2_side(square_share(p_init, i, queries), h, w)

        def window(k):  # relative coordinates of a random window of the side in each example, and its mask
            top = jax.random.randint(k, (n,), 0, jnp.maximum(h - side, 1))[:, None, None, None]
            left = jax.random.randint(jax.random.fold_in(k, 1), (n,), 0, jnp.maximum(w - side, 1))[:, None, None, None]
            i, j = rows - top, cols - left
            return i, j, (i >= 0) & (i < side) & (j >= 0) & (j < side)

        i1, j1, first = window(k_pos)
        _, _, second = window(jax.random.fold_in(k_pos, 2))

        def channel_norm(v):  # (N, 1, 1, C)
            return jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))

        delta = best - x
        signs = jax.random.choice(k_sign, jnp.asarray([-1.0, 1.0], x.dtype), (n, 1, 1, c))
        flip = jax.random.bernoulli(jax.random.fold_in(k_sign, 1), 0.5, (n, 1, 1, 1))
        block = pseudo_gaussian(i1, j1, side, flip, size).astype(x.dtype) * signs
        old = jnp.where(first, delta, 0.0)
        new = block + old / (TINY + channel_norm(old))
        left_over = jnp.maximum(eps ** 2 - batch_norm(delta, 2) ** 2, 0.0) / c  # the budget not yet spent
        carried = channel_norm(jnp.where(first | second, delta, 0.0))
        new = new / (TINY + channel_norm(new)) * jnp.sqrt(left_over + carried ** 2)
        return on_l2_sphere(jnp.where(first, new, jnp.where(second, 0.0, delta)))

    start, candidate = (linf_start, linf_query) if norm == math.inf else (l2_start, l2_query)

    def run(start_key):
        k_init, k_loop = jax.random.split(start_key)
        best = start(k_init)
        best_margin = margin(logits_fn(best), y)

        def query(i, carry):
            best, best_margin = carry
            k_pos, k_sign = jax.random.split(jax.random.fold_in(k_loop, i))
            new = candidate(i, k_pos, k_sign, best)
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
    """The Square Attack (:mod:`fgsm_repro.attacks.square`) in the L∞ or L2 (`norm`) ball of radius
    `eps`: `queries` random square updates of the margin loss from `restarts` starts, the first
    covering `p_init` of the image. Black box: it reads the logits only."""

    name: Literal["square"] = "square"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    queries: PositiveInt = 5000
    p_init: float = Field(0.8, gt=0, le=1)
    restarts: PositiveInt = 1

    def perturb(self, victim, x, y, key):
        return square(victim.logits, x, y, self.eps, queries=self.queries, p_init=self.p_init, key=key,
                      restarts=self.restarts, clip=self.clip, norm=norm_value(self.norm))
