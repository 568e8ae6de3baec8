"""T2.clean1600 and T2.adv1600 — §6: the larger maxout network, without and with adversarial
training.

Paper: with 1600 units per layer the naive network has 1.14% test error; adversarially
trained with early stopping on the *adversarial* validation error and then retrained on all
60,000 examples, five runs give 0.77, 0.77, 0.77, 0.77, 0.83% (mean 0.782%).

Protocol: the configured model and `train` section (stage 1 on the first 50k, early stopping on
the last 10k — on the FGSM validation error when ``early_stopping_on: adversarial_error`` —
then stage 2 or a fresh run on all 60k for the chosen number of epochs), once per seed; clean
test error, and FGSM ε = .25 error as an extra. The config's `claims` say which row it measures.
With ``seeds_together`` (default: on accelerators) the seeds train together in one vmapped program.
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Context, Outcome, Trained, train

CLAIMS = ("T2.clean1600", "T2.adv1600")
TRAININGS = ("model",)
# What one `fgsm-repro train` run measures of the paper (paper_rows; a config keeps its own claim).
PAPER_ROWS = {"model": {"clean": (("T2.clean1600", "error", "error"), ("T2.adv1600", "error", "error"))}}


def run_seeds(cfg: ExperimentConfig, splits: Splits, seeds: list[int], ctx: Context) -> list[Outcome]:
    """All seeds trained together (one vmapped program), then evaluated one by one."""
    return [_outcome(cfg, splits, trained, ctx) for trained in train(cfg, "model", splits, seeds, ctx)]


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    return run_seeds(cfg, splits, [seed], ctx)[0]


def _outcome(cfg: ExperimentConfig, splits: Splits, trained: Trained, ctx: Context) -> Outcome:
    model, objective, result = trained.model, trained.objective, trained.fit
    clean = evaluate(model, objective, result.params, splits.x_test, splits.y_test, mesh=ctx.mesh)
    adv, _ = attack_metrics(model, objective, result.params, splits.x_test, splits.y_test, cfg.attack,
                            mesh=ctx.mesh)
    row = {"error": clean["error"], "fgsm_error": adv["error"], "best_epoch": result.best_epoch,
           "best_val_error": result.best_val_error, "stage2_epochs": result.stage2_epochs,
           "retrain_epochs": result.retrain_epochs, "seconds_per_epoch": result.seconds_per_epoch}
    return Outcome(measured={claim: dict(row) for claim in cfg.claims})
