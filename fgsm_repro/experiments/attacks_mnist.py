"""X.attacks, X.attack_curves — beyond the paper: the attacks that followed FGSM on the naive and
on the adversarially trained maxout network. §6 shows adversarial training against FGSM cuts the
FGSM error from 89.4% to 17.9%; it leaves open how much of that survives stronger attacks.

1. The networks are t2_maxout240's naive and adversarially trained 240-unit maxouts, reused as
   trained there (the config's ``trainings``).
2. Every attack of ``options.attacks`` (label -> attack settings) runs white-box on both networks,
   on the first ``options.examples`` test images, true labels, inference mode. Per attack and
   network: error, confidence on mistakes, for targeted attacks the rate of reaching the target
   (classified as it), the median L0 / L2 / L∞ size of the perturbations that
   turned a right answer wrong, and milliseconds per example, compilation included (like-for-like
   speed is `fgsm-repro bench`'s) (X.attacks, one table and a bar chart).
3. Curves (X.attack_curves): error vs ε for the L∞ attacks FGSM, BIM and PGD (their settings from
   ``options.attacks``, ε swept over ``options.curve_eps``), and error vs L2 budget read from the
   minimal perturbations of DeepFool-L2 and C&W (wrong at budget b: wrong clean, or fooled by a
   perturbation of L2 size ≤ b).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fgsm_repro.attacks.base import AttackSpec, parse_attacks
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate, predict
from fgsm_repro.experiments.common import Context, Outcome, experiment_options, pyplot, save_figure, train

CLAIMS = ("X.attacks", "X.attack_curves")
TRAININGS = ("naive", "adversarial")
LINF_CURVES = ("fgsm", "bim", "pgd")  # labels in options.attacks swept over curve_eps
L2_CURVES = ("deepfool_l2", "cw_l2")  # labels whose minimal L2 perturbations give the budget curves


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: int = Field(1000, ge=1)
    curve_eps: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.25])
    l2_budgets: list[float] = Field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])
    attacks: dict[str, AttackSpec]

    _specs = field_validator("attacks", mode="before")(parse_attacks)


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    options = experiment_options(cfg, Options)
    x, y = splits.x_test[:options.examples], splits.y_test[:options.examples]
    rows, curves, l2_curves, stages, measured = [], [], [], [], {}
    for name in TRAININGS:
        t, = train(cfg, name, splits, [seed], ctx)
        model = (t.model, t.objective, t.params)
        clean = evaluate(*model, x, y, mesh=ctx.mesh)
        clean_wrong = predict(*model, x, mesh=ctx.mesh)[0] != y
        minimal = {}
        for label, attack in options.attacks.items():
            m, x_adv = attack_metrics(*model, x, y, attack, mesh=ctx.mesh, norms=True)
            norms = m["norms"]
            rows.append({"network": name, "attack": label, "settings": attack.describe(), "error": m["error"],
                         "confidence_mistakes": m["confidence_mistakes"], "target_hit": m.get("target_hit"),
                         **{f"median_{k}": norms[k]["median"] for k in ("l0", "l2", "linf")},
                         "fooled": norms["examples"],
                         "ms_per_example_with_compile": 1000 * m["seconds_per_example"]})
            measured[f"{name}_{label}_error"] = m["error"]
            measured[f"{name}_{label}_median_l2"] = norms["l2"]["median"]
            if m.get("target_hit") is not None:
                measured[f"{name}_{label}_target_hit"] = m["target_hit"]
            if m.get("robust_after"):  # AutoAttack: the robust accuracy after each of its stages
                stages.append({"network": name, "attack": label,
                               **{f"robust_after_{stage}": rate for stage, rate in m["robust_after"].items()}})
            if label in L2_CURVES:
                minimal[label] = _minimal_l2(*model, x, y, x_adv, ctx)
        measured[f"{name}_clean_error"] = clean["error"]
        for label in (a for a in LINF_CURVES if a in options.attacks):
            row = {"network": name, "attack": label}
            for eps in options.curve_eps:
                attack = options.attacks[label].model_copy(update={"eps": eps})
                row[f"eps_{eps:g}"] = clean["error"] if eps == 0 else attack_metrics(*model, x, y, attack,
                                                                                      mesh=ctx.mesh)[0]["error"]
            curves.append(row)
        for label, sizes in minimal.items():
            l2_curves.append({"network": name, "attack": label,
                              **{f"l2_{b:g}": float(100 * np.mean(clean_wrong | (sizes <= b)))
                                 for b in options.l2_budgets}})
    survives = {f"{r['attack']}_adversarial_minus_naive": _error(rows, "adversarial", r["attack"]) - r["error"]
                for r in rows if r["network"] == "naive"}
    figures = {"X.attacks": _bars(rows, cfg, ctx), "X.attack_curves": _curves(curves, l2_curves, options, cfg, ctx)}
    return Outcome(
        measured={"X.attacks": {"figure": figures["X.attacks"], "examples": len(y), **measured, **survives},
                  "X.attack_curves": {"figure": figures["X.attack_curves"],
                                      **{f"{r['network']}_{r['attack']}_{k}": v for r in curves + l2_curves
                                         for k, v in r.items() if k not in ("network", "attack")}}},
        tables={"attacks": rows, "linf_curves": curves, "l2_budget_curves": l2_curves, "autoattack_stages": stages},
        figures=figures,
    )


def _error(rows: list[dict], network: str, attack: str) -> float:
    return next(r["error"] for r in rows if r["network"] == network and r["attack"] == attack)


def _minimal_l2(model, objective, params, x, y, x_adv, ctx: Context) -> np.ndarray:
    """Each example's L2 perturbation size if it turned a right answer wrong, else +inf."""
    fooled = (predict(model, objective, params, x, mesh=ctx.mesh)[0] == y) & (
        predict(model, objective, params, x_adv, mesh=ctx.mesh)[0] != y)
    sizes = np.linalg.norm((x_adv - x).reshape(len(x), -1).astype(np.float64), axis=1)
    return np.where(fooled, sizes, np.inf)


def _bars(rows: list[dict], cfg: ExperimentConfig, ctx: Context) -> str:
    plt = pyplot()
    labels = list(dict.fromkeys(r["attack"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.4
    for i, name in enumerate(TRAININGS):
        values = [_error(rows, name, a) for a in labels]
        ax.bar(np.arange(len(labels)) + (i - 0.5) * width, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test error, %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, title="maxout network", title_fontsize=8)
    ax.set_title(f"Attacks on the naive and the adversarially trained maxout ({cfg.profile} profile)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, "X.attacks", cfg.profile, ctx)


def _curves(curves: list[dict], l2_curves: list[dict], options: Options, cfg: ExperimentConfig, ctx: Context) -> str:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"naive": "-", "adversarial": "--"}
    colors = {a: f"C{i}" for i, a in enumerate(dict.fromkeys(r["attack"] for r in curves + l2_curves))}
    for ax, rows, xs, key in ((left, curves, options.curve_eps, "eps"), (right, l2_curves, options.l2_budgets, "l2")):
        for row in rows:  # one colour per attack, one line style per network
            ax.plot(xs, [row[f"{key}_{v:g}"] for v in xs], styles[row["network"]], color=colors[row["attack"]],
                    marker="o", ms=3, label=f"{row['attack']} ({row['network']})")
    left.set_xlabel("L∞ eps (pixels in [0, 1])")
    right.set_xlabel("L2 budget (minimal perturbations)")
    for ax in (left, right):
        ax.set_ylabel("test error, %")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    fig.suptitle(f"Robustness curves, naive (solid) vs adversarially trained (dashed) maxout ({cfg.profile} profile)",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, "X.attack_curves", cfg.profile, ctx)
