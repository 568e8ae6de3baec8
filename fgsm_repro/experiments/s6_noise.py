"""S6.noise_sign and S6.noise_uniform — §6: training on random noise instead of FGSM.

Paper: a maxout network trained with noise added to the inputs — ±ε per pixel, or U(−ε, ε) —
in place of the adversarial perturbation (ε = .25) still misclassifies 86.2% (97.3% confidence)
and 90.4% (97.8%) of FGSM examples: noise of the same size is no substitute for adversarial
training.

Protocol: the 240-unit maxout recipe of configs/t2_maxout240.yaml with the objective
J̃ = .5·J(x) + .5·J(x + η), η the noise of the variant (drawn afresh every step); then FGSM
ε = .25 on the test set (inference mode, true labels, no clipping).
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Context, Outcome, train

CLAIMS = ("S6.noise_sign", "S6.noise_uniform")
CLAIM_OF_TRAINING = {"random_sign": "S6.noise_sign", "uniform": "S6.noise_uniform"}
TRAININGS = tuple(CLAIM_OF_TRAINING)
# What one `fgsm-repro attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {name: {"attack": ((claim, "error", "error"), (claim, "confidence_mistakes", "confidence_mistakes"))}
              for name, claim in CLAIM_OF_TRAINING.items()}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    measured, rows = {}, []
    for name in TRAININGS:
        trained, = train(cfg, name, splits, [seed], ctx)
        model, objective, result = trained.model, trained.objective, trained.fit
        clean = evaluate(model, objective, result.params, splits.x_test, splits.y_test, mesh=ctx.mesh)
        adv, _ = attack_metrics(model, objective, result.params, splits.x_test, splits.y_test, cfg.attack,
                                mesh=ctx.mesh)
        row = {"error": adv["error"], "confidence_mistakes": adv["confidence_mistakes"],
               "confidence_all": adv["confidence_all"], "clean_error": clean["error"],
               "best_epoch": result.best_epoch, "stage2_epochs": result.stage2_epochs}
        measured[CLAIM_OF_TRAINING[name]] = row
        rows.append({"variant": name, **row})
    return Outcome(measured=measured, tables={"variants": rows})
