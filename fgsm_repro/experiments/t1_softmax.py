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

from fgsm_repro import trainings
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import (
    Context,
    Outcome,
    clean_and_attacked,
    sweep,
    train,
    weight_norms,
)

CLAIMS = ("T1.softmax",)
TRAININGS = ("model",)  # and, optionally, "sensitivity"


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained, = train(cfg, "model", splits, [seed], ctx)
    row, _ = clean_and_attacked(trained, splits, cfg.attack, ctx)
    row.update(**trained.point, best_epoch=trained.fit.best_epoch, val_error=trained.fit.best_val_error)
    return Outcome(
        measured={"T1.softmax": row},
        tables={"selection": trained.candidates, "sensitivity": _sensitivity(cfg, splits, seed, ctx)},
    )


def _sensitivity(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> list[dict]:
    """Clean and FGSM numbers along the `sensitivity` training (never used to choose anything)."""
    if "sensitivity" not in cfg.training_specs():
        return []
    x, y = splits.x_test, splits.y_test
    model, objective = trainings.build_model_of(cfg, "sensitivity")

    def measure(point, record, params) -> dict:
        adv, _ = attack_metrics(model, objective, params, x, y, cfg.attack, mesh=ctx.mesh)
        clean = evaluate(model, objective, params, x, y, mesh=ctx.mesh)
        return {"clean_error": clean["error"], "fgsm_error": adv["error"],
                "fgsm_confidence_mistakes": adv["confidence_mistakes"], "fgsm_confidence_all": adv["confidence_all"],
                **weight_norms(params)}

    return sweep(cfg, "sensitivity", splits, seed, ctx, measure)
