"""PGD: projected gradient descent on the cost, in an L∞ or L2 ball, with random restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. Norm: L∞ (‖x̃ − x‖∞ ≤ ε) or L2 (‖x̃ − x‖₂ ≤ ε).

    x⁰ = x + a random start in the ball (with a `key`; without one, x: the basic iterative
    method, :mod:`fgsm_repro.attacks.bim`),
    xᵗ⁺¹ = clip(Π_{B(x, ε)}(xᵗ + α · d(∇ₓ J(θ, xᵗ, y)))),

with d = sign (L∞) or g / ‖g‖₂ (L2), Π the projection on the ball, then the clip range (the
order every peer library uses). The L2 start is a uniformly random direction scaled by
U(0, 1) · ε, as torchattacks does. With `restarts` > 1 the attack runs from that many random
starts and keeps, per example, an adversarial one if any start is (given `success`, as the spec
gives it), else the one with the highest cost (the lowest when targeted).

Shapes: `x` is a batch (N, …); `y` has one label per example; the result has the shape and dtype
of `x`.

Usage::

    x_adv = pgd(loss_fn, x, y, eps=0.25, step_size=0.0625, steps=10,
                key=jax.random.PRNGKey(0), clip=(0.0, 1.0))          # PGD-10, L∞
    x_adv = pgd(loss_fn, x, y, eps=2.0, step_size=0.25, steps=40, norm=2,
                key=jax.random.PRNGKey(0), restarts=5)               # PGD-40 L2, best of 5
    x_adv = pgd(loss_fn, x, target, eps=0.25, step_size=0.01, steps=40, targeted=True)

Pure and traceable (``lax.fori_loop`` over steps and restarts): composes with ``jax.jit``,
``jax.vmap`` and ``jax.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import field_validator

from fgsm_repro.attacks.base import INF, AttackSpec, NonNegativeFloat, PositiveFloat, PositiveInt, Target, norm_value
from fgsm_repro.attacks.common import (
    batch_norm,
    check_eps,
    clip_to,
    keep_stronger,
    normalized,
    per_example_loss,
    project,
    restart_key,
)
from fgsm_repro.errors import ReproError


def random_start(key: jax.Array, x: jax.Array, eps, norm) -> jax.Array:
    """A random point of the Lₚ ball of radius `eps` around each example (L∞: uniform)."""
    if norm == math.inf:
        return jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    k_dir, k_radius = jax.random.split(key)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    radius = jax.random.uniform(k_radius, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
    return direction / jnp.maximum(batch_norm(direction, 2), 1e-12) * radius * eps


def pgd(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    step_size: float | jax.Array,
    steps: int,
    norm: float = math.inf,
    key: jax.Array | None = None,
    restarts: int = 1,
    targeted: bool = False,
    clip: tuple[float, float] | None = None,
    success: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """`steps` steps of size `step_size` along the normalised gradient, each projected back into
    the Lₚ ball of radius `eps` around `x` (and into `clip`). A `key` adds the random start;
    `restarts` > 1 (which needs a `key`) keeps each example's strongest of several starts:
    adversarial by ``success(x_adv) -> (N,) bool`` before the highest cost."""
    check_eps(eps)
    check_eps(step_size)
    if restarts > 1 and key is None:
        raise ReproError("restarts need random starts: pass a key")
    direction = -1.0 if targeted else 1.0

    def into_ball(x_adv):
        if norm == math.inf:  # clipping to [x − ε, x + ε] directly keeps the bounds exact
            return jnp.clip(x_adv, x - eps, x + eps)
        return x + project(x_adv - x, eps, norm)

    def run(start):
        def step(_, x_adv):
            moved = x_adv + direction * step_size * normalized(jax.grad(loss_fn)(x_adv, y), norm)
            return clip_to(into_ball(moved), clip)

        return jax.lax.fori_loop(0, steps, step, start)

    def attempt(r):
        if key is None:
            return run(x)
        return run(clip_to(into_ball(x + random_start(restart_key(key, r), x, eps, norm)), clip))

    best = attempt(0)
    if restarts > 1:
        def scored(x_adv):
            fooled = success(x_adv) if success else jnp.zeros(x.shape[0], bool)
            return x_adv, fooled, direction * per_example_loss(loss_fn, x_adv, y)

        best, _, _ = jax.lax.fori_loop(1, restarts, lambda r, kept: keep_stronger(kept, scored(attempt(r))),
                                       scored(best))
    return jax.lax.stop_gradient(best.astype(x.dtype))


class PGD(AttackSpec):
    """PGD (:mod:`fgsm_repro.attacks.pgd`): `steps` normalised-gradient steps of `step_size`
    (default 2.5·eps/steps, Madry et al.'s rule) projected on the L∞ or L2 (`norm`) ball of radius
    `eps`, from a random start in the ball (`random_start`; without it and in L∞, the basic
    iterative method with a free step size); `restarts` keeps each example's strongest start."""

    name: Literal["pgd"] = "pgd"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    steps: PositiveInt = 10
    step_size: PositiveFloat | None = None
    random_start: bool = True
    restarts: PositiveInt = 1
    target: Target | None = None

    @field_validator("restarts")
    @classmethod
    def _restarts_need_starts(cls, v, info):
        if v > 1 and not info.data.get("random_start", True):
            raise ValueError("restarts need random_start: true")
        return v

    def perturb(self, victim, x, y, key):
        targets = self.targets(victim, x, y, key)
        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        if targets is None:
            def success(x_adv):
                return victim.predict(x_adv) != y
        else:
            def success(x_adv):
                return victim.predict(x_adv) == targets
        return pgd(victim.loss, x, y if targets is None else targets, self.eps, step_size=step_size,
                   steps=self.steps, norm=norm_value(self.norm), key=key if self.random_start else None,
                   restarts=self.restarts, targeted=targets is not None, clip=self.clip, success=success)
