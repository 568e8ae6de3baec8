"""S8.* — §8: adversarial examples generalize across models, and to the same wrong class.

Paper: on FGSM examples (ε = .25) of the naive maxout network that it misclassifies, the shallow
RBF network predicts the maxout network's class 16.0% of the time and the shallow softmax network
54.6% of the time; where both the maxout and the other network are wrong, softmax matches the
maxout network's class 84.6% of the time, RBF 54.3%, and RBF matches softmax 53.6%. Models that
are close to linear learn similar functions, so a step along the same signs moves them alike.

Protocol:
1. The naive maxout network (training ``maxout``: t2_maxout240's), the softmax regression
   (``softmax``: t1_softmax's) and the RBF network (``rbf``: s7_rbf's), each as trained there.
2. FGSM with the config's attack (ε = .25, true labels, no clipping) on the maxout network, over
   the 10,000 test images; all three networks classify those examples.
3. M = the examples the maxout network gets wrong.
   - S8.agree_rbf / S8.agree_softmax: of M, the percent on which RBF / softmax predicts the maxout
     network's class;
   - S8.both_softmax / S8.both_rbf: of M where softmax / RBF is wrong too, the same;
   - S8.rbf_softmax: of M where both RBF and softmax are wrong, the percent on which they agree.
4. What unstated choices of the shallow models do to these numbers (never used to choose anything):
   the RBF network's precision tied across classes or normalised per class (trainings
   ``rbf_tied`` and ``rbf_normalised``: s7_rbf's ``tied`` and ``normalised``) in place of the
   per-class one, table ``rbf_forms``; and the softmax regression along t1_softmax's weight-decay
   and training-length sweep (training ``softmax_sweep``, retrained: a sweep keeps no
   checkpoints), table ``softmax_sweep`` and a figure that puts S8's agreement beside T1.softmax's
   and A.rubbish_softmaxreg's numbers against the weight norm. Their ranges are the record's
   ``sensitivity``.
"""

from __future__ import annotations

import numpy as np

from fgsm_repro import trainings
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import adversarial_examples, predict
from fgsm_repro.experiments import t1_softmax
from fgsm_repro.experiments.common import Context, Outcome, sensitivity, swept_range, train
from fgsm_repro.metrics import agreement, error_rate

CLAIMS = ("S8.agree_rbf", "S8.agree_softmax", "S8.both_softmax", "S8.both_rbf", "S8.rbf_softmax")
TRAININGS = ("maxout", "softmax", "rbf")  # and, optionally, "rbf_tied", "rbf_normalised", "softmax_sweep"
RBF_FORMS = {"rbf": "per_class", "rbf_tied": "tied", "rbf_normalised": "normalised"}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained = {name: train(cfg, name, splits, [seed], ctx)[0] for name in TRAININGS}
    maxout = trained["maxout"]
    x_adv = adversarial_examples(maxout.model, maxout.objective, maxout.params, splits.x_test, splits.y_test,
                                 cfg.attack, mesh=ctx.mesh)
    pred = {name: predict(t.model, t.objective, t.params, x_adv, mesh=ctx.mesh)[0] for name, t in trained.items()}
    y = splits.y_test
    errors = {f"error_{name}": error_rate(p, y) for name, p in pred.items()}
    measured = agreements(pred["maxout"], pred["softmax"], pred["rbf"], y)
    measured["S8.agree_rbf"] |= errors
    outcome = Outcome(measured=measured,
                      tables={"transferred_errors": [{"model": name, "error_on_maxout_fgsm": errors[f"error_{name}"]}
                                                     for name in TRAININGS]})
    forms = [{"precision": RBF_FORMS["rbf"], **_flat(measured, RBF_CLAIMS)}]
    for name in (n for n in RBF_FORMS if n != "rbf" and n in cfg.training_specs()):
        form = train(cfg, name, splits, [seed], ctx)[0]
        rbf_pred = predict(form.model, form.objective, form.params, x_adv, mesh=ctx.mesh)[0]
        forms.append({"precision": RBF_FORMS[name], **_flat(agreements(pred["maxout"], pred["softmax"], rbf_pred, y),
                                                             RBF_CLAIMS)})
    if len(forms) > 1:
        outcome.tables["rbf_forms"] = forms
        setting = "the RBF network's precision form (per class, tied, normalised: s7_rbf's)"
        outcome.sensitivity |= {claim: {"agreement": found} for claim in RBF_CLAIMS
                                if (found := swept_range(forms, claim, setting))}
    if "softmax_sweep" in cfg.training_specs():
        rows = _softmax_sweep(cfg, splits, seed, ctx, x_adv, pred["maxout"])
        outcome.tables["softmax_sweep"] = rows
        outcome.sensitivity |= t1_softmax.swept_ranges(rows, t1_softmax.S8_SWEPT)
        outcome.figures["S8.agree_softmax sensitivity"] = t1_softmax.weight_norm_figure(rows, None, cfg, ctx)
    return outcome


RBF_CLAIMS = ("S8.agree_rbf", "S8.both_rbf", "S8.rbf_softmax")


def agreements(maxout: np.ndarray, softmax: np.ndarray, rbf: np.ndarray, y: np.ndarray) -> dict[str, dict]:
    """S8's numbers from the three models' predictions on the maxout network's FGSM examples."""
    m = maxout != y
    softmax_wrong, rbf_wrong = softmax != y, rbf != y
    all_wrong = m & rbf_wrong & softmax_wrong
    return {
        "S8.agree_rbf": {"agreement": agreement(rbf, maxout, m), "examples": int(m.sum())},
        "S8.agree_softmax": {"agreement": agreement(softmax, maxout, m), "examples": int(m.sum())},
        "S8.both_softmax": {"agreement": agreement(softmax, maxout, m & softmax_wrong),
                            "examples": int((m & softmax_wrong).sum())},
        "S8.both_rbf": {"agreement": agreement(rbf, maxout, m & rbf_wrong), "examples": int((m & rbf_wrong).sum())},
        "S8.rbf_softmax": {"agreement": agreement(rbf, softmax, all_wrong), "examples": int(all_wrong.sum())},
    }


def _flat(measured: dict, claims) -> dict:
    return {claim: measured[claim]["agreement"] for claim in claims}


def _softmax_sweep(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context, x_adv: np.ndarray,
                   maxout_pred: np.ndarray) -> list[dict]:
    """t1_softmax's sweep of the softmax regression, with S8's agreement beside its own numbers."""
    t1 = trainings.reused_config(cfg, "softmax_sweep")
    y = splits.y_test
    m = maxout_pred != y
    rubbish = t1_softmax.rubbish_measure(splits, seed, ctx)

    def measure(model, objective, params) -> dict:
        pred = predict(model, objective, params, x_adv, mesh=ctx.mesh)[0]
        return {**rubbish(model, objective, params), "agree_softmax": agreement(pred, maxout_pred, m),
                "both_softmax": agreement(pred, maxout_pred, m & (pred != y))}

    return sensitivity(t1, splits, seed, ctx, extra=measure,
                       name=cfg.training_specs()["softmax_sweep"].reuse.training)
