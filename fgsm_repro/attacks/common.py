"""What the attacks share: the model under attack as a :class:`Victim`, the check of ε, per-example
norms and projections, and the target classes of targeted attacks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fgsm_repro.attacks.base import RESTART_STREAM
from fgsm_repro.errors import ReproError
from fgsm_repro.objectives import Objective


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
    predict: ``x -> labels``; objective: how the logits are read — each example's cost
    (``objective.loss(logits, y) -> (N,)``) and label (``objective.predict(logits)``) — for the
    attacks that need both from one forward pass (None: softmax outputs).
    """

    logits: Callable[[jax.Array], jax.Array]
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    predict: Callable[[jax.Array], jax.Array]
    objective: Objective | None = None

    def read(self) -> tuple[Callable, Callable]:
        """(cost, label): ``(logits, y) -> (N,)`` costs and ``logits -> labels``, the objective's
        (softmax cross-entropy and argmax without one)."""
        if self.objective is not None:
            return self.objective.loss, self.objective.predict
        return optax.softmax_cross_entropy_with_integer_labels, lambda logits: jnp.argmax(logits, axis=-1)


def restart_key(key: jax.Array, restart) -> jax.Array:
    """The random key of start `restart` of an attack with restarts: the first is `key` itself (so
    one start is the attack without restarts); the others come from a stream of their own, apart
    from the targets' (:mod:`fgsm_repro.attacks.base`'s streams)."""
    others = jax.random.fold_in(jax.random.fold_in(key, RESTART_STREAM), restart)
    if isinstance(restart, int):
        return key if restart == 0 else others
    return jax.lax.cond(restart == 0, lambda: key, lambda: others)


def keep_stronger(best: tuple, new: tuple) -> tuple:
    """Per example, the stronger of two attack results ``(x_adv, fooled, loss)``: an adversarial
    one before one that is not, else the higher loss; `fooled` of the kept one."""
    x_best, fooled_best, loss_best = best
    x_new, fooled_new, loss_new = new
    take = (fooled_new & ~fooled_best) | ((fooled_new == fooled_best) & (loss_new > loss_best))
    shaped = take.reshape((-1,) + (1,) * (x_best.ndim - 1))
    return (jnp.where(shaped, x_new, x_best), jnp.where(take, fooled_new, fooled_best),
            jnp.where(take, loss_new, loss_best))


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
