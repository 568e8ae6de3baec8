"""S9.mpdbm — §9: a generative model, the multi-prediction DBM, is not robust either.

Paper: "we generated adversarial examples on ... the multi-prediction deep Boltzmann machine
... The MP-DBM ... has an error rate of 0.88% on MNIST. ... the MP-DBM has an error rate of
97.5% on adversarial examples generated with ε = .25."

Protocol:
1. Training ``mpdbm``: the MNIST MP-DBM (:mod:`fgsm_repro.mpdbm`; 784 binary pixels, hidden layers
   of 2087 and 3200 sigmoid units, a 10-way label) trained by multi-prediction as pylearn2's
   ``scripts/papers/mpdbm/mpdbm.yaml`` does: pixels binarised by sampling anew every minibatch,
   each pixel and label a target with probability ½, 14 mean-field sweeps backpropagated, SGD with
   classical momentum and a linearly decaying learning rate, max column norms. Early stopping on
   the validation error of the classifier below.
2. Classification by the multi-inference trick (each pixel half observed, half inferred) on the
   real-valued test pixels: the clean test error; plain mean field's beside it.
3. FGSM (ε = .25, true labels, no clipping) through the whole inference: the gradient of
   −log c_y, with c the label the 14 sweeps of multi-inference infer, with respect to the pixels.
   Error and confidence on the mistakes. The paper does not say which inference it attacked nor
   whether it clipped: beside them, FGSM through plain mean field (classified by it), and the
   examples clipped to [0, 1].
4. Beyond the paper, transfer: FGSM made on t2_maxout240's naive network (training ``maxout``)
   and classified by the MP-DBM, beside that network's own error on them.
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Context, Outcome, train

CLAIMS = ("S9.mpdbm",)
TRAININGS = ("mpdbm", "maxout")
# What one `fgsm-repro train` / `attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {"mpdbm": {"clean": (("S9.mpdbm", "clean_error", "error"),),
                        "attack": (("S9.mpdbm", "error", "error"),)}}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    mpdbm, = train(cfg, "mpdbm", splits, [seed], ctx)
    maxout, = train(cfg, "maxout", splits, [seed], ctx)
    x, y = splits.x_test, splits.y_test
    clean = evaluate(mpdbm.model, mpdbm.objective, mpdbm.params, x, y, mesh=ctx.mesh)
    mean_field = mpdbm.model.clone(classifier="mean_field")
    clean_mean_field = evaluate(mean_field, mpdbm.objective, mpdbm.params, x, y, mesh=ctx.mesh)
    own, _ = attack_metrics(mpdbm.model, mpdbm.objective, mpdbm.params, x, y, cfg.attack, mesh=ctx.mesh)
    # The paper does not say which inference was attacked, nor whether the examples were clipped.
    through_mean_field, _ = attack_metrics(mean_field, mpdbm.objective, mpdbm.params, x, y, cfg.attack,
                                           mesh=ctx.mesh)
    clipped, _ = attack_metrics(mpdbm.model, mpdbm.objective, mpdbm.params, x, y,
                                cfg.attack.model_copy(update={"clip": (0.0, 1.0)}), mesh=ctx.mesh)
    on_maxout, x_maxout = attack_metrics(maxout.model, maxout.objective, maxout.params, x, y, cfg.attack,
                                         mesh=ctx.mesh)
    transferred = evaluate(mpdbm.model, mpdbm.objective, mpdbm.params, x_maxout, y, mesh=ctx.mesh)
    fit = mpdbm.fit
    return Outcome(
        measured={"S9.mpdbm": {
            "clean_error": clean["error"],
            "error": own["error"],
            "confidence_mistakes": own["confidence_mistakes"],
            "confidence_all": own["confidence_all"],
            "clean_error_mean_field": clean_mean_field["error"],
            "error_mean_field": through_mean_field["error"],
            "error_clipped": clipped["error"],
            "transfer_from_maxout_error": transferred["error"],
            "transfer_from_maxout_confidence_mistakes": transferred["confidence_mistakes"],
            "maxout_error": on_maxout["error"],
            "best_epoch": fit.best_epoch,
            "epochs_run": fit.epochs_run,
            "val_error": fit.best_val_error,
            "seconds_per_epoch": fit.seconds_per_epoch,
        }},
        tables={"training": [{k: r.get(k) for k in ("epoch", "loss", "val_error", "seconds")} for r in fit.history]},
    )
