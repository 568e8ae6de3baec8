"""Rubbish-class inputs and fooling images (the paper's Appendix A).

Rubbish-class examples are "degenerate inputs that a human would classify as not belonging to any
of the categories in the training set": the paper draws them from an isotropic Gaussian in the
model's input space, counts one as a false positive when the model gives some class a probability
above .5, and reports that rate, the mean confidence of those false positives and which classes
they go to. Fooling images start from the same Gaussian draws and take one gradient-sign step that
raises the probability of a chosen class (a targeted FGSM step, :mod:`fgsm_repro.attacks.fgsm`); a
start succeeds when that class then gets a probability of at least .5.

These functions hold the counting; the experiments (``a_rubbish_*``) hold the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.evaluation import adversarial_examples
from fgsm_repro.sampling import Mean, Rate

THRESHOLD = 0.5  # a rubbish input is "classified" when some class gets more than this


def gaussian_inputs(n: int, shape: Sequence[int], seed: int) -> np.ndarray:
    """`n` draws of N(0, I) with the shape (H, W, C) of one input, float32 (n, *shape)."""
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


def rubbish_summary(probabilities: np.ndarray, class_names: Sequence[str], threshold: float = THRESHOLD) -> dict:
    """Of inputs that belong to no class, with the model's class `probabilities` (N, K):

    - ``rate``: percent classified as some class with probability > `threshold`;
    - ``confidence``: their mean probability of that class, percent (None without any);
    - ``shares``: per class, the percent of those false positives that went to it;
    - ``never``: the classes none of them went to.
    """
    top = probabilities.max(axis=1)
    fooled = top > threshold
    counts = np.bincount(probabilities.argmax(axis=1)[fooled], minlength=len(class_names))
    shares = 100.0 * counts / max(int(fooled.sum()), 1)
    return {
        "rate": Rate.of(fooled),
        "confidence": Mean.of(top[fooled]),
        "shares": {name: Rate(s, fooled.sum()) if fooled.any() else float(s)
                   for name, s in zip(class_names, shares, strict=True)},
        "never": [name for name, c in zip(class_names, counts, strict=True) if c == 0],
    }


def fooling_success(probabilities: np.ndarray, target: int, threshold: float = THRESHOLD) -> Rate:
    """Percent of the (N, K) `probabilities` that give class `target` at least `threshold`."""
    return Rate.of(probabilities[:, target] >= threshold)


def pooled(rates) -> Rate:
    """The success rate over all the trials of several rates (classes), each of its own trials."""
    rates = list(rates)
    n = sum(r.n for r in rates)
    return Rate(sum(float(r) * r.n for r in rates) / n if n else float("nan"), n)


def steps_toward_each_class(model, objective, params, starts: np.ndarray, num_classes: int, *, mesh=None) -> np.ndarray:
    """(classes, starts, ...): −sign(∇ₓJ(θ, x, c)) at every start x for every class c — a targeted
    FGSM step of size 1, minus its start. The direction does not depend on the step's size, so
    fooling images of any ε are ``starts + ε · steps[c]``."""
    x = np.concatenate([starts] * num_classes)
    targets = np.repeat(np.arange(num_classes, dtype=np.int32), len(starts))
    stepped = adversarial_examples(model, objective, params, x, targets, FGSM(eps=1.0, targeted=True), mesh=mesh)
    return (stepped - x).reshape(num_classes, *starts.shape)
