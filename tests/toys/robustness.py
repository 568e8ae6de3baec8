"""A toy experiment: the clean and adversarial test error of one trained model (with the config's
attack), a number of this project's own with no paper value (an X. claim)."""

from __future__ import annotations

from fgsm_repro.experiments.common import Outcome, clean_and_attacked, train

CLAIMS = ("X.pgd_robustness",)
TRAININGS = ("model",)


def run(cfg, splits, seed, ctx) -> Outcome:
    trained, = train(cfg, "model", splits, [seed], ctx)
    row, _ = clean_and_attacked(trained, splits, cfg.attack, ctx)
    return Outcome(measured={"X.pgd_robustness": {"clean_error": row["clean_error"], "error": row["error"]}})
