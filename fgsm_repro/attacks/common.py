"""What the attacks share: the model under attack as a :class:`Victim`, the check of ε, per-example
norms and projections, and the target classes of targeted attacks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fgsm_repro.errors import ReproError


def check_eps(eps) -> None:
    """Reject a negative or non-finite ε when it is a concrete number (traced values pass)."""
    try:
        value = float(eps)
    except jax.errors.ConcretizationTypeError:
        return  # ε is traced (e.g. vmapped over a sweep): nothing to check at trace time
    except (TypeError, ValueError):
        raise ReproError(f"eps must be a number, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ReproError(f"eps must be a finite number >= 0, got {value}")


class Victim(NamedTuple):
    """The model under attack, as functions of a batch of inputs (its parameters closed over).

    logits: ``x -> logits``; loss: ``(x, y) -> scalar``, the summed cost J that an attack
    increases (summed, so that each example's gradient does not depend on the batch size);
    predict: ``x -> labels``.
    """

    logits: Callable[[jax.Array], jax.Array]
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    predict: Callable[[jax.Array], jax.Array]


def batch_norm(v: jax.Array, ord) -> jax.Array:
    """The L`ord` norm of each example of a batch (axis 0), shaped (N, 1, …, 1) to broadcast
    against `v`. `ord` is 1, 2 or ``inf``."""
    flat = v.reshape(v.shape[0], -1)
    if ord == 1:
        n = jnp.abs(flat).sum(-1)
    elif ord == 2:
        n = jnp.sqrt(jnp.square(flat).sum(-1))
    elif ord == math.inf:
        n = jnp.abs(flat).max(-1)
    else:
        raise ReproError(f"norm must be 1, 2 or inf, got {ord!r}")
    return n.reshape((-1,) + (1,) * (v.ndim - 1))


def normalized(g: jax.Array, ord) -> jax.Array:
    """`g` scaled per example to unit L`ord` norm (L∞: its sign, the steepest-ascent direction of
    the L∞ ball). A zero gradient stays zero."""
    if ord == math.inf:
        return jnp.sign(g)
    n = batch_norm(g, ord)
    return g / jnp.where(n > 0, n, 1.0)


def project(delta: jax.Array, eps, ord) -> jax.Array:
    """`delta` projected per example onto the L`ord` ball of radius `eps` (L∞ or L2)."""
    if ord == math.inf:
        return jnp.clip(delta, -eps, eps)
    if ord != 2:
        raise ReproError(f"projection is for the L2 and L-inf balls, got norm {ord!r}")
    n = batch_norm(delta, 2)
    return delta * jnp.minimum(1.0, eps / jnp.where(n > 0, n, 1.0))


def per_example_loss(loss_fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    """The (N,) costs of each example, from a summed ``loss_fn`` (one example at a time, vmapped)."""
    return jax.vmap(lambda xi, yi: loss_fn(xi[None], yi[None]))(x, y)


def least_likely(logits: jax.Array) -> jax.Array:
    """Each example's least likely class: Kurakin et al.'s "iterative least-likely class" target."""
    return jnp.argmin(logits, axis=-1).astype(jnp.int32)


def random_other(key: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
    """A class drawn uniformly among the `num_classes` − 1 that are not `y`, per example."""
    shift = jax.random.randint(key, y.shape, 1, num_classes)
    return ((y + shift) % num_classes).astype(jnp.int32)


def other_best(logits: jax.Array, y: jax.Array) -> jax.Array:
    """The largest logit among the classes other than `y`, per example."""
    return jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits).max(-1)


def label_logit(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def clip_to(x: jax.Array, clip: tuple[float, float] | None) -> jax.Array:
    return x if clip is None else jnp.clip(x, clip[0], clip[1])
