"""Error rates and confidences, in percent, from predictions and labels (NumPy, host side).
Rates and means remember their sample (:mod:`fgsm_repro.sampling`) for their 95% interval."""

from __future__ import annotations

import numpy as np

from fgsm_repro.sampling import Mean, Rate


def error_rate(pred: np.ndarray, labels: np.ndarray) -> Rate:
    """Percentage of examples whose prediction differs from the label (NaN of none)."""
    rate = Rate.of(np.asarray(pred) != np.asarray(labels))
    return Rate(float("nan"), 0) if rate is None else rate


def mean_confidence(confidence: np.ndarray, mask: np.ndarray | None = None) -> Mean | None:
    """Mean of the predicted label's probability, in percent, over `mask` (None if empty)."""
    confidence = np.asarray(confidence, np.float64)
    if mask is not None:
        confidence = confidence[np.asarray(mask, bool)]
    return Mean.of(confidence)


def per_class_error(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Error rate per true label."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return {str(int(c)): error_rate(pred[labels == c], labels[labels == c]) for c in np.unique(labels)}


def summarize(pred: np.ndarray, confidence: np.ndarray, labels: np.ndarray) -> dict:
    """error, confidence over all examples and over mistakes, and the per-class error."""
    wrong = np.asarray(pred) != np.asarray(labels)
    return {
        "error": error_rate(pred, labels),
        "confidence_all": mean_confidence(confidence),
        "confidence_mistakes": mean_confidence(confidence, wrong),
        "per_class_error": per_class_error(pred, labels),
    }


def agreement(pred: np.ndarray, other: np.ndarray, mask: np.ndarray) -> float | None:
    """Percent of the examples in `mask` on which two models predict the same class (None if
    `mask` is empty): §8's measure of how adversarial examples generalize across models."""
    mask = np.asarray(mask, bool)
    return Rate.of(np.asarray(pred)[mask] == np.asarray(other)[mask])


def perturbation_norms(x: np.ndarray, x_adv: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Mean and median of the perturbation's L0 (features changed), L2 and L∞ norms over the
    examples in `mask` (all by default; None where it is empty), and how many those are."""
    delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    if mask is not None:
        delta = delta[np.asarray(mask, bool)]
    per_example = {"l0": (delta != 0).sum(1).astype(np.float64), "l2": np.sqrt(np.square(delta).sum(1)),
                   "linf": np.abs(delta).max(1, initial=0.0)}
    stats = {name: {"mean": float(v.mean()) if len(v) else None, "median": float(np.median(v)) if len(v) else None}
             for name, v in per_example.items()}
    return stats | {"examples": len(delta)}
