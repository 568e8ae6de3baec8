"""A toy experiment, written as a user adds one: adversarial examples made on one model (the
`source` training, reused from another config's trained run) and evaluated on another (`target`)."""

from __future__ import annotations

from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Outcome, train

CLAIMS = ("X.toy_transfer",)
TRAININGS = ("source", "target")


def run(cfg, splits, seed, ctx) -> Outcome:
    source, = train(cfg, "source", splits, [seed], ctx)
    target, = train(cfg, "target", splits, [seed], ctx)
    x, y = splits.x_test, splits.y_test
    on_source, x_adv = attack_metrics(source.model, source.objective, source.params, x, y, cfg.attack, mesh=ctx.mesh)
    on_target = evaluate(target.model, target.objective, target.params, x_adv, y, mesh=ctx.mesh)
    clean = evaluate(target.model, target.objective, target.params, x, y, mesh=ctx.mesh)
    return Outcome(measured={"X.toy_transfer": {"error": on_target["error"], "error_on_source": on_source["error"],
                                               "clean_error": clean["error"]}})
