"""S9.ens_all, S9.ens_one — §9: ensembles are not resistant to adversarial examples.

Paper: "We tried ensembling 12 maxout networks ... an ensemble of 12 maxout networks has an error
rate of 91.1% on adversarial examples designed to perturb the entire ensemble ... If we instead
use adversarial examples designed to perturb only one member of the ensemble, the error rate
falls to 87.9%."

Protocol:
1. ``members`` (the config's ``options``) naive maxout networks: training ``member`` (t2_maxout240's
   naive recipe) with seeds s·members … s·members + members − 1 for the experiment's seed s, so
   that member 0 of seed 0 is t2_maxout240's own network. Each trains (and resumes) as a seed of
   that training: one after another on a CPU, vmapped together on accelerators.
2. The ensemble (:class:`fgsm_repro.models.MeanProbabilityEnsemble`) predicts the mean of the
   members' class probabilities; its cost is −log of that mean's probability of the label.
3. FGSM with the config's attack (ε = .25, true labels, no clipping, inference mode) on the 10,000
   test images, (S9.ens_all) against the ensemble — the gradient of its cost — and (S9.ens_one)
   against member 0 alone; both sets of examples are evaluated on the ensemble.
4. Appendix A's rubbish rate and share of "5" of each member, on a_rubbish_mnist's draws (table
   ``members``): A.rubbish_skew is a statistic of one network, and its spread over networks of
   one recipe (the record's ``sensitivity``, of kind ``seed``) says how far another seed moves it.

Usage from Python, on any list of trained parameters of one Flax model with softmax outputs::

    ensemble = MeanProbabilityEnsemble(model, len(params))
    x_adv = adversarial_examples(ensemble, SOFTMAX, stack_members(params), x, y, FGSM(eps=0.25))
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fgsm_repro import trainings
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments import t1_softmax
from fgsm_repro.experiments.common import Context, Outcome, experiment_options, swept_range, train_members
from fgsm_repro.models import MeanProbabilityEnsemble, stack_members
from fgsm_repro.objectives import SOFTMAX

CLAIMS = ("S9.ens_all", "S9.ens_one")
TRAININGS = ("member",)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    members: int = Field(12, ge=2)  # the paper's 12


def runs_per_seed(cfg: ExperimentConfig) -> dict[str, int]:
    """The members trained for each seed of the experiment (the time a run from scratch projects)."""
    return {"member": experiment_options(cfg, Options).members}


def reused_size(cfg: ExperimentConfig, name: str) -> int:
    """The members of the ensemble that training `name` of another experiment (a ``reuse`` of this
    experiment's ``member``) stands for: this experiment's ``options.members`` at that profile."""
    return experiment_options(trainings.reused_config(cfg, name), Options).members


def ensemble_of(cfg: ExperimentConfig, name: str, splits: Splits, seed: int, ctx: Context):
    """(ensemble, objective, stacked params, members) of seed `seed`, from training `name` of
    another experiment that reuses this one's ``member``: the same networks as this experiment's."""
    size = reused_size(cfg, name)
    members = train_members(cfg, name, splits, [seed * size + m for m in range(size)], ctx)
    return (MeanProbabilityEnsemble(members[0].model, size), SOFTMAX, stack_members([m.params for m in members]),
            members)


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    size = experiment_options(cfg, Options).members
    members = train_members(cfg, "member", splits, [seed * size + m for m in range(size)], ctx)
    x, y = splits.x_test, splits.y_test
    ensemble = MeanProbabilityEnsemble(members[0].model, size)
    params = stack_members([m.params for m in members])
    clean = evaluate(ensemble, SOFTMAX, params, x, y, mesh=ctx.mesh)
    against_all, _ = attack_metrics(ensemble, SOFTMAX, params, x, y, cfg.attack, mesh=ctx.mesh)
    one = members[0]
    own, x_one = attack_metrics(one.model, one.objective, one.params, x, y, cfg.attack, mesh=ctx.mesh)
    on_ensemble = evaluate(ensemble, SOFTMAX, params, x_one, y, mesh=ctx.mesh)
    member_clean = [evaluate(m.model, m.objective, m.params, x, y, mesh=ctx.mesh)["error"] for m in members]
    rubbish = t1_softmax.rubbish_measure(splits, seed, ctx, shares=True)
    member_rubbish = [rubbish(m.model, m.objective, m.params) for m in members]
    shares_of_5 = [r["rubbish_shares"]["5"] for r in member_rubbish]
    return Outcome(
        measured={
            "S9.ens_all": {"error": against_all["error"], "confidence_mistakes": against_all["confidence_mistakes"],
                           "clean_error_ensemble": clean["error"], "members": size,
                           "clean_error_members_mean": float(np.mean(member_clean))},
            "S9.ens_one": {"error": on_ensemble["error"], "confidence_mistakes": on_ensemble["confidence_mistakes"],
                           "error_on_the_member": own["error"]},
        },
        tables={"members": [{"seed": seed * size + i, "clean_error": e, "best_epoch": m.fit.best_epoch,
                             "rubbish_rate": r["rubbish_rate"], "rubbish_share_5": r["rubbish_shares"]["5"]}
                            for i, (m, e, r) in enumerate(zip(members, member_clean, member_rubbish, strict=True))]},
        # A.rubbish_skew is a statistic of one network: its spread over networks of one recipe.
        sensitivity={"A.rubbish_skew": {"mnist_share_5": swept_range(
            [{"share": s} for s in shares_of_5], "share",
            f"the seed ({size} naive maxouts of one recipe: s9_ensemble's members)", kind="seed")}},
    )
