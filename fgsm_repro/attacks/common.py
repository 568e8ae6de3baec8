"""What the attacks share: the model under attack as a :class:`Victim`, and the check of ε."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax

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
