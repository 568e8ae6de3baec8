"""X.transfer_matrix, X.robustness — beyond the paper: black-box transfer between all the MNIST
models, and robustness curves.

The paper measures two cells of a transfer matrix (T2.transfer_a/b: FGSM examples of the naive
maxout network on the adversarially trained one and back) and one point of each model's
robustness curve (ε = .25). Here:

1. The models are those the other MNIST experiments train, each reused as trained there (the
   config's ``trainings``), and s9_ensemble's mean-probability ensemble of naive maxouts (its
   ``options.members`` seeds, reused through its ``member`` training).
2. Transfer (X.transfer_matrix): FGSM with the config's attack (ε = .25, true labels, no clipping,
   inference mode) on the 10,000 test images, made on each model (for the ensemble, on the whole
   ensemble), and classified by every model. Cell (source, target) = the target's error on the
   source's examples; the diagonal is each model's white-box error. A table and a heat map.
3. Robustness (X.robustness): each model's error under its own FGSM for ε = 0, .05, …, .3, in one
   figure, the values in a table.
"""

from __future__ import annotations

import numpy as np

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import adversarial_examples, evaluate
from fgsm_repro.experiments import s9_ensemble
from fgsm_repro.experiments.common import (
    Context,
    Outcome,
    pyplot,
    save_figure,
    train,
)

CLAIMS = ("X.transfer_matrix", "X.robustness")
TRAININGS = ("softmax", "maxout", "maxout_adversarial", "maxout_sign_noise", "maxout_uniform_noise", "rbf",
             "maxout_sigmoid", "ensemble_member")
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def runs_per_seed(cfg: ExperimentConfig) -> dict[str, int]:
    """s9_ensemble's members, trained for each seed (the time a run from scratch projects)."""
    return {"ensemble_member": s9_ensemble.reused_size(cfg, "ensemble_member")}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    models = {}
    for name in TRAININGS[:-1]:
        t, = train(cfg, name, splits, [seed], ctx)
        models[name] = (t.model, t.objective, t.params)
    models["ensemble"] = s9_ensemble.ensemble_of(cfg, "ensemble_member", splits, seed, ctx)[:3]  # s9_ensemble's
    x, y = splits.x_test, splits.y_test
    names = list(models)

    def error(target: str, examples: np.ndarray) -> float:
        return evaluate(*models[target], examples, y, mesh=ctx.mesh)["error"]

    matrix, curves = [], []
    for source in names:
        x_adv = adversarial_examples(*models[source], x, y, cfg.attack, mesh=ctx.mesh)
        matrix.append({"source": source, **{target: error(target, x_adv) for target in names}})
        row = {"model": source}
        for eps in EPSILONS:
            examples = x if eps == 0 else adversarial_examples(
                *models[source], x, y, cfg.attack.model_copy(update={"eps": eps}), mesh=ctx.mesh)
            row[f"eps_{eps:g}"] = error(source, examples)
        curves.append(row)
    figures = {"X.transfer_matrix": _heat_map(matrix, names, cfg, ctx), "X.robustness": _curves(curves, cfg, ctx)}
    off_diagonal = [r[t] for r in matrix for t in names if t != r["source"]]
    return Outcome(
        measured={
            "X.transfer_matrix": {"figure": figures["X.transfer_matrix"], "eps": cfg.attack.eps,
                                  "mean_transfer_error": float(np.mean(off_diagonal)),
                                  **{f"{r['source']}_to_{t}": r[t] for r in matrix for t in names}},
            "X.robustness": {"figure": figures["X.robustness"],
                             **{f"{r['model']}_eps_{eps:g}": r[f"eps_{eps:g}"] for r in curves for eps in EPSILONS}},
        },
        tables={"transfer_matrix": matrix, "robustness": curves},
        figures=figures,
    )


def _heat_map(matrix: list[dict], names: list[str], cfg: ExperimentConfig, ctx: Context) -> str:
    values = np.array([[row[t] for t in names] for row in matrix])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(values, cmap="magma", vmin=0, vmax=100)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if values[i, j] > 60 else "white")
    ax.set_xlabel("evaluated on (target)")
    ax.set_ylabel("FGSM made on (source)")
    fig.colorbar(image, ax=ax, label="error, %")
    ax.set_title(f"Transfer of FGSM (eps={cfg.attack.eps:g}) between MNIST models [{cfg.profile} profile]",
                 fontsize=9)
    return save_figure(fig, "X.transfer_matrix", cfg.profile, ctx)


def _curves(curves: list[dict], cfg: ExperimentConfig, ctx: Context) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in curves:
        ax.plot(EPSILONS, [row[f"eps_{eps:g}"] for eps in EPSILONS], marker="o", ms=3, label=row["model"])
    ax.set_xlabel("eps (FGSM on the model itself, pixels in [0, 1], no clipping)")
    ax.set_ylabel("test error, %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title(f"Robustness curves of the MNIST models [{cfg.profile} profile]", fontsize=9)
    return save_figure(fig, "X.robustness", cfg.profile, ctx)
