"""X.robust_eval, X.catastrophic_overfitting — beyond the paper: harnessing adversarial examples as
the field does it now, and how robust every MNIST model really is.

§6 trains on FGSM examples mixed with clean ones (the α-mix) and measures the result with FGSM.
The field since trains on the examples alone — PGD (Madry et al. 2018), FGSM from a random start
("fast is better than free", Wong, Rice & Kolter 2020), TRADES (Zhang et al. 2019) — and measures
with AutoAttack (Croce & Hein 2020). Here:

1. The models: those the other MNIST experiments train, each reused as trained there (the
   config's ``trainings`` that ``reuse``), s9_ensemble's ensemble, and the adversarial recipes
   trained here (the others: ``maxout_pgd``, ``maxout_fgsm_rs``, ``maxout_fgsm_zero``,
   ``maxout_trades`` in the shipped config). A user adds a model by adding a training.
2. X.robust_eval: each model's robust accuracy (percent right under the attack) clean and under
   every attack of ``options.attacks`` at every ε of ``options.eps``, on the first
   ``options.examples`` test images (``options.attack_examples`` gives an attack fewer: the first
   n, with the clean accuracy on those beside it), and its training cost: epochs and seconds of
   the training kept, as its history recorded them on the machine that trained it. A table, the
   anchors (AutoAttack's README: the authors' CNNs, for scale) and a figure of robust accuracy vs
   training seconds.
3. X.catastrophic_overfitting: along every training with ``train.robust_monitor``, the error under
   the monitor's attack on held-out images after each epoch (a figure), the largest rise from one
   epoch to the next, and the PGD-vs-FGSM gap of the final model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fgsm_repro.attacks.base import AttackSpec, parse_attack, parse_attacks
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments import s9_ensemble
from fgsm_repro.experiments.common import Context, Outcome, Trained, experiment_options, pyplot, save_figure, train

CLAIMS = ("X.robust_eval", "X.catastrophic_overfitting")
TRAININGS = ()  # whichever the config names
ENSEMBLE = "ensemble_member"  # the training whose seeds make s9_ensemble's ensemble

# Robust accuracy (%) at L∞ ε = .3 on MNIST of the models of the papers whose recipes are trained
# here: clean, as reported by their authors, and under AutoAttack. Source: the table "MNIST - Linf"
# of the README of github.com/fra31/auto-attack (commit 0185c79). Their models are CNNs, not the
# maxout MLP: a scale for the reader, never a target.
ANCHORS = (
    {"model": "Madry et al. 2018 (PGD training, CNN)", "recipe": "maxout_pgd", "clean": 98.53,
     "reported": 89.62, "autoattack": 88.43},
    {"model": "Wong et al. 2020 (FGSM + random start, CNN)", "recipe": "maxout_fgsm_rs", "clean": 98.50,
     "reported": 88.77, "autoattack": 82.88},
    {"model": "Zhang et al. 2019 (TRADES, CNN)", "recipe": "maxout_trades", "clean": 99.48,
     "reported": 95.60, "autoattack": 92.76},
)
ANCHOR_EPS = 0.3


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: int = Field(1000, ge=1)
    eps: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3], min_length=1)
    attacks: dict[str, AttackSpec]
    attack_examples: dict[str, int] = Field(default_factory=dict)  # label -> fewer examples (the first n)

    _specs = field_validator("attacks", mode="before")(parse_attacks)

    @field_validator("eps")
    @classmethod
    def _positive(cls, v):
        if any(e <= 0 for e in v):
            raise ValueError("every eps must be positive (the clean column is always there)")
        return v

    @field_validator("attack_examples")
    @classmethod
    def _known(cls, v, info):
        unknown = sorted(set(v) - set(info.data.get("attacks", {})))
        if unknown:
            raise ValueError(f"attack_examples names attacks not in attacks: {', '.join(unknown)}")
        if any(n < 1 for n in v.values()):
            raise ValueError("attack_examples: at least 1 example each")
        return v


def at_eps(attack: AttackSpec, eps: float) -> AttackSpec:
    """`attack` with radius `eps` (parsed again: AutoAttack passes its eps on to its stages)."""
    return parse_attack({**attack.model_dump(), "eps": eps})


def training_cost(fits: list[Trained]) -> dict[str, float]:
    """Epochs and seconds of the trainings kept, summed (an ensemble's members), from their history."""
    epochs = sum(t.fit.epochs_run + t.fit.stage2_epochs + t.fit.retrain_epochs for t in fits)
    seconds = sum(r["seconds"] / r.get("seeds_together", 1) for t in fits for r in t.fit.history if "seconds" in r)
    return {"epochs": epochs, "train_seconds": round(seconds, 1)}


def runs_per_seed(cfg: ExperimentConfig) -> dict[str, int]:
    """s9_ensemble's members, trained for each seed (the time a run from scratch projects)."""
    return {ENSEMBLE: s9_ensemble.reused_size(cfg, ENSEMBLE)} if ENSEMBLE in cfg.trainings else {}


def _models(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> dict[str, tuple]:
    """Name -> ((model, objective, params), the trainings it is made of)."""
    models = {}
    for name in cfg.trainings:
        if name == ENSEMBLE:
            ensemble, objective, params, members = s9_ensemble.ensemble_of(cfg, name, splits, seed, ctx)
            models["ensemble"] = ((ensemble, objective, params), members)
        else:
            t, = train(cfg, name, splits, [seed], ctx)
            models[name] = ((t.model, t.objective, t.params), [t])
    return models


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    options = experiment_options(cfg, Options)
    x, y = splits.x_test[:options.examples], splits.y_test[:options.examples]
    models = _models(cfg, splits, seed, ctx)
    rows, measured = [], {}
    for name, (model, fits) in models.items():
        row = {"model": name, "recipe": _recipe(cfg, name), **training_cost(fits),
               "clean": 100 - evaluate(*model, x, y, mesh=ctx.mesh)["error"]}
        for label, attack in options.attacks.items():
            n = min(options.attack_examples.get(label, len(y)), len(y))
            for eps in options.eps:
                metrics, _ = attack_metrics(*model, x[:n], y[:n], at_eps(attack, eps), mesh=ctx.mesh)
                row[f"{label}_eps_{eps:g}"] = 100 - metrics["error"]
            row[f"{label}_examples"] = n
            if n < len(y):  # its own clean column: an attack's accuracy is comparable only on its images
                row[f"{label}_clean"] = 100 - evaluate(*model, x[:n], y[:n], mesh=ctx.mesh)["error"]
        rows.append(row)
        measured |= {f"{name}_{k}": v for k, v in row.items() if k == "clean" or "_eps_" in k or k.endswith("_clean")}
        measured |= {f"{name}_train_seconds": row["train_seconds"], f"{name}_epochs": row["epochs"]}
    curves = {name: [r for r in fits[0].fit.history if r.get("robust_error") is not None]
              for name, (_, fits) in models.items() if len(fits) == 1}
    curves = {name: records for name, records in curves.items() if records}
    overfitting = [_overfitting_row(name, records, rows, options) for name, records in curves.items()]
    figures = {"X.robust_eval": _accuracy_vs_cost(rows, options, cfg, ctx),
               "X.catastrophic_overfitting": _monitor_curves(curves, cfg, ctx)}
    return Outcome(
        measured={"X.robust_eval": {"figure": figures["X.robust_eval"], "examples": len(y), **measured},
                  "X.catastrophic_overfitting": {
                      "figure": figures["X.catastrophic_overfitting"],
                      **{f"{r['model']}_{k}": r[k] for r in overfitting
                         for k in ("largest_rise", "final_robust_error")}}},
        tables={"robust_accuracy": rows, "anchors": [dict(a, eps=ANCHOR_EPS) for a in ANCHORS],
                "catastrophic_overfitting": overfitting},
        figures=figures,
    )


def _recipe(cfg: ExperimentConfig, name: str) -> str:
    """How training `name` was made, in a few words: where it is reused from, or its adversarial term."""
    spec = cfg.trainings.get(name)
    if spec is not None and spec.reuse:
        return f"{spec.reuse.config}:{spec.reuse.training}"
    if name == "ensemble":
        return "s9_ensemble"
    adversarial = cfg.train_of(name, {}).adversarial
    if adversarial is None:
        return "clean"
    if adversarial.objective == "trades":
        return f"TRADES beta={adversarial.beta:g}, {adversarial.attack.describe()}"
    return f"alpha={adversarial.alpha:g}, {adversarial.attack.describe() if adversarial.attack else 'FGSM'}"


def _overfitting_row(name: str, records: list[dict], rows: list[dict], options: Options) -> dict:
    errors = [r["robust_error"] for r in records]
    row = next(r for r in rows if r["model"] == name)
    eps = max(options.eps)
    gap = {f"{label}_eps_{eps:g}": row.get(f"{label}_eps_{eps:g}") for label in options.attacks}
    return {"model": name, "epochs": len(errors), "first_robust_error": errors[0], "final_robust_error": errors[-1],
            "lowest_robust_error": min(errors),
            "largest_rise": max((b - a for a, b in zip(errors, errors[1:], strict=False)), default=0.0),
            "collapsed_epochs": [r["epoch"] for r in records if r.get("collapsed")], **gap}


def _accuracy_vs_cost(rows: list[dict], options: Options, cfg: ExperimentConfig, ctx: Context) -> str:
    """The strongest attack's robust accuracy at every eps (one marker per eps, one colour per
    model, a line joining them) against the training seconds; the clean accuracy as a bar."""
    plt = pyplot()
    strongest = list(options.attacks)[-1]  # the config lists its attacks weakest first
    markers = dict(zip(sorted(options.eps), "os^vDp*h", strict=False))
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for i, row in enumerate(rows):
        seconds, color = max(row["train_seconds"], 1.0), f"C{i % 10}"
        accuracies = [row[f"{strongest}_eps_{eps:g}"] for eps in sorted(options.eps)]
        ax.plot([seconds] * len(accuracies), accuracies, color=color, lw=0.8, zorder=2)
        for eps, accuracy in zip(sorted(options.eps), accuracies, strict=True):
            ax.scatter(seconds, accuracy, color=color, marker=markers[eps], s=22, zorder=3)
        ax.scatter(seconds, row["clean"], color=color, marker="_", s=120, zorder=3)
        ax.annotate(row["model"], (seconds, accuracies[-1]), fontsize=7, rotation=90, xytext=(3, 6),
                    textcoords="offset points", va="bottom")
    for eps, marker in markers.items():
        ax.scatter([], [], color="black", marker=marker, s=22, label=f"eps={eps:g}")
    if ANCHOR_EPS in options.eps:
        for anchor in ANCHORS:
            ax.axhline(anchor["autoattack"], color="grey", lw=0.8, ls=":")
            ax.text(0.01, anchor["autoattack"], f"{anchor['model']}, eps={ANCHOR_EPS:g}",
                    transform=ax.get_yaxis_transform(), fontsize=6, va="bottom", color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (the training kept, on the machine that trained it)")
    ax.set_ylabel(f"robust accuracy under {strongest} (%)\n(bars: clean accuracy)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"Robust accuracy vs training cost, MNIST [{cfg.profile} profile]; dotted: the papers' CNNs "
                 "under AutoAttack", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, "X.robust_eval", cfg.profile, ctx)


def _monitor_curves(curves: dict[str, list[dict]], cfg: ExperimentConfig, ctx: Context) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, records in curves.items():
        ax.plot([r["epoch"] for r in records], [r["robust_error"] for r in records], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error under the monitor's attack, held-out images (%)")
    ax.set_ylim(0, 100)
    if curves:
        ax.legend(fontsize=7)
    ax.set_title(f"Catastrophic overfitting watched along the adversarial trainings [{cfg.profile} profile]",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, "X.catastrophic_overfitting", cfg.profile, ctx)
