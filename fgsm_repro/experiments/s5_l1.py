"""S5.l1 — §5: L1 weight decay on the first layer as a stand-in for adversarial training.

Paper: for logistic regression, adversarial training resembles L1 weight decay; on the maxout
network an L1 coefficient of .0025 on the first layer "was too large, and caused the model to
get stuck with over 5% error on the training set. Smaller coefficients of weight decay
permitted successful training but conferred no regularization benefit."

Protocol: the 240-unit maxout recipe, once per training (no L1, and L1 with each coefficient
on the first maxout layer); training error on the 50k training images (inference mode) at the
end of training, test error, FGSM ε = .25 error. The claim holds when the .0025 variant ends
above 5% training error.
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Context, Outcome, train

CLAIMS = ("S5.l1",)
STUCK_THRESHOLD = 5.0  # percent training error
PAPER_COEFFICIENT = 0.0025
TRAININGS = ()  # every training of the config: one per L1 coefficient (or none)


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    rows = []
    for name in cfg.training_specs():
        trained, = train(cfg, name, splits, [seed], ctx)
        model, objective, result, train_cfg = trained.model, trained.objective, trained.fit, cfg.train_of(name)
        adv, _ = attack_metrics(model, objective, result.params, splits.x_test, splits.y_test, cfg.attack,
                                mesh=ctx.mesh)
        rows.append({"variant": name, "l1_coefficient": train_cfg.l1.coefficient if train_cfg.l1 else 0.0,
                     "train_error": evaluate(model, objective, result.params, splits.x_train, splits.y_train,
                                             mesh=ctx.mesh)["error"],
                     "test_error": evaluate(model, objective, result.params, splits.x_test, splits.y_test,
                                            mesh=ctx.mesh)["error"],
                     "fgsm_error": adv["error"], "epochs_run": result.epochs_run})
    paper_rows = [r for r in rows if r["l1_coefficient"] == PAPER_COEFFICIENT]
    measured = {"S5.l1": {"train_error": paper_rows[0]["train_error"] if paper_rows else None,
                          "holds": bool(paper_rows and paper_rows[0]["train_error"] > STUCK_THRESHOLD)}}
    return Outcome(measured=measured, tables={"variants": rows})
