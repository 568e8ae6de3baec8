"""S7.rbf — §7: a shallow RBF network resists FGSM, and is never confident where it fails.

Paper: "a shallow RBF network with p(y = 1 | x) = exp((x − µ)ᵀβ(x − µ)) ... using ε = .25 ...
has an error rate of 55.4% on adversarial examples, but its confidence on mistaken examples is
only 1.2%. Its average confidence on clean test examples is 60.6%." The RBF units respond only
near their centres: a small-norm step in many directions cannot push one far toward a class.

Protocol:
1. The RBF network of :class:`fgsm_repro.models.RBFNetwork` on pixels in [0, 1], trained on the
   first 50,000 training images (training ``model``) with the per-class binary cross-entropy of
   its independent outputs (objective ``rbf``); the paper gives no recipe, so the config's, with
   early stopping on the last 10,000 and the learning rate chosen on validation error.
2. FGSM with ε = .25 on the 10,000 test images, on the network itself (the gradient of its
   training cost), true labels, no clipping: error, and the mean probability of the predicted
   class on the mistakes; the mean probability of the predicted class on the clean test images.
   The clipped attack is reported beside it.
3. How far the unstated recipe moves these numbers: the same measures after 1, 5, 20 and 50 epochs
   at each learning rate of the grid (training ``sensitivity``; never used to choose anything).
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.experiments.common import Context, Outcome, clean_and_attacked, sensitivity, train

CLAIMS = ("S7.rbf",)
TRAININGS = ("model",)
# What one `fgsm-repro attack` run measures of the paper (paper_rows).
PAPER_ROWS = {"model": {"attack": (("S7.rbf", "error", "error"),
                                   ("S7.rbf", "confidence_mistakes", "confidence_mistakes"))}}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained, = train(cfg, "model", splits, [seed], ctx)
    row, _ = clean_and_attacked(trained, splits, cfg.attack, ctx)
    row.pop("weight_l1"), row.pop("weight_l2")
    row.update(confidence_clean=row.pop("clean_confidence"), **trained.point,
               best_epoch=trained.fit.best_epoch, val_error=trained.fit.best_val_error)
    return Outcome(measured={"S7.rbf": row},
                   tables={"selection": trained.candidates, "sensitivity": sensitivity(cfg, splits, seed, ctx)})
