"""T1.softmax — §4: FGSM against a shallow softmax regression on MNIST.

Paper: "Using ε = .25, we cause a shallow softmax classifier to have an error rate of 99.9%
with an average confidence of 79.3% on the MNIST test set."

Protocol:
1. Softmax regression on pixels in [0, 1], trained on the first 50,000 training images (training
   ``model``); the paper gives no recipe, so the config's SGD settings are used, with early
   stopping on the last 10,000 and the weight decay picked from the config's grid by validation error.
2. FGSM with ε = .25 on the 10,000 test images, generated on the model itself with the true
   labels and no clipping (paper-targets §2); error and mean confidence, over all examples and
   over misclassified ones. The same attack clipped to [0, 1] is reported beside it.
3. The confidence of FGSM on a linear model grows with the weight norm, which training length
   and weight decay set: a small sweep (training ``sensitivity``) shows how far they move both numbers.
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.experiments.common import Context, Outcome, clean_and_attacked, sensitivity, train

CLAIMS = ("T1.softmax",)
TRAININGS = ("model",)  # and, optionally, "sensitivity"
# What one `fgsm-repro train` / `attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {"model": {"attack": (("T1.softmax", "error", "error"),
                                   ("T1.softmax", "confidence_mistakes", "confidence_mistakes"))}}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained, = train(cfg, "model", splits, [seed], ctx)
    row, _ = clean_and_attacked(trained, splits, cfg.attack, ctx)
    row.update(**trained.point, best_epoch=trained.fit.best_epoch, val_error=trained.fit.best_val_error)
    return Outcome(
        measured={"T1.softmax": row},
        tables={"selection": trained.candidates, "sensitivity": sensitivity(cfg, splits, seed, ctx)},
    )
