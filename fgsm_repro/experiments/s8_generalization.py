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
"""

from __future__ import annotations

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import adversarial_examples, predict
from fgsm_repro.experiments.common import Context, Outcome, train
from fgsm_repro.metrics import agreement, error_rate

CLAIMS = ("S8.agree_rbf", "S8.agree_softmax", "S8.both_softmax", "S8.both_rbf", "S8.rbf_softmax")
TRAININGS = ("maxout", "softmax", "rbf")


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained = {name: train(cfg, name, splits, [seed], ctx)[0] for name in TRAININGS}
    maxout = trained["maxout"]
    x_adv = adversarial_examples(maxout.model, maxout.objective, maxout.params, splits.x_test, splits.y_test,
                                 cfg.attack, mesh=ctx.mesh)
    pred = {name: predict(t.model, t.objective, t.params, x_adv, mesh=ctx.mesh)[0] for name, t in trained.items()}
    y = splits.y_test
    wrong = {name: p != y for name, p in pred.items()}
    m = wrong["maxout"]
    all_wrong = m & wrong["rbf"] & wrong["softmax"]
    errors = {f"error_{name}": error_rate(p, y) for name, p in pred.items()}
    return Outcome(
        measured={
            "S8.agree_rbf": {"agreement": agreement(pred["rbf"], pred["maxout"], m), "examples": int(m.sum()),
                             **errors},
            "S8.agree_softmax": {"agreement": agreement(pred["softmax"], pred["maxout"], m), "examples": int(m.sum())},
            "S8.both_softmax": {"agreement": agreement(pred["softmax"], pred["maxout"], m & wrong["softmax"]),
                                "examples": int((m & wrong["softmax"]).sum())},
            "S8.both_rbf": {"agreement": agreement(pred["rbf"], pred["maxout"], m & wrong["rbf"]),
                            "examples": int((m & wrong["rbf"]).sum())},
            "S8.rbf_softmax": {"agreement": agreement(pred["rbf"], pred["softmax"], all_wrong),
                               "examples": int(all_wrong.sum())},
        },
        tables={"transferred_errors": [{"model": name, "error_on_maxout_fgsm": errors[f"error_{name}"]}
                                       for name in TRAININGS]},
    )
