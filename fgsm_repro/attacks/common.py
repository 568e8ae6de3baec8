"""Checks shared by the attacks."""

from __future__ import annotations

import math

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
