"""How piecewise linear a model's logits are along a line through input space (Fig. 4, F4.sweep).

The paper's Fig. 4 plots a maxout network's logits along x + ε·sign(∇ₓJ) for ε from −10 to 10 and
observes that they are piecewise linear, with few pieces, and that the wrong classes a large step
reaches stay the prediction over wide ranges of ε. These functions turn that picture into numbers:
how many straight segments follow a sampled curve to within a tolerance (the
Ramer–Douglas–Peucker simplification, whose segments join points of the curve: greedy, so an upper
bound on the fewest that would do — a conservative count for a "few pieces" test), and the longest
run of ε over which one wrong class is predicted.
"""

from __future__ import annotations

import numpy as np


def linear_pieces(t: np.ndarray, z: np.ndarray, tolerance: float) -> int:
    """The number of straight segments, joined at sampled points, that the Ramer–Douglas–Peucker
    simplification of the curve (t, z) keeps so that no sample lies more than `tolerance` from it."""
    t, z = np.asarray(t, np.float64), np.asarray(z, np.float64)
    pieces, stack = 0, [(0, len(t) - 1)]
    while stack:
        lo, hi = stack.pop()
        inner = slice(lo + 1, hi)
        line = z[lo] + (z[hi] - z[lo]) * (t[inner] - t[lo]) / (t[hi] - t[lo])
        gap = np.abs(z[inner] - line)
        if gap.size and gap.max() > tolerance:
            split = lo + 1 + int(gap.argmax())
            stack += [(lo, split), (split, hi)]
        else:
            pieces += 1
    return pieces


def pieces_per_curve(t: np.ndarray, logits: np.ndarray, relative_tolerance: float) -> np.ndarray:
    """For logits (steps, classes) along `t`: per class, :func:`linear_pieces` with the tolerance
    `relative_tolerance` × the range of that class's curve."""
    span = logits.max(0) - logits.min(0)
    return np.array([linear_pieces(t, logits[:, k], relative_tolerance * max(span[k], 1e-12))
                     for k in range(logits.shape[1])])


def longest_wrong_run(t: np.ndarray, predicted: np.ndarray, label: int) -> float:
    """The longest interval of `t` (in its units) over which the prediction stays one wrong class."""
    best, start = 0.0, None
    for i in range(len(t) + 1):
        if i < len(t) and predicted[i] != label and start is not None and predicted[i] == predicted[start]:
            continue
        if start is not None:
            best = max(best, t[i - 1] - t[start])
        start = i if i < len(t) and predicted[i] != label else None
    return float(best)
