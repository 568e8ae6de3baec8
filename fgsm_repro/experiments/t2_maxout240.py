"""T1.maxout and the 240-unit rows of §6: a maxout network with and without adversarial training.

Paper: the maxout network of §4 (2×240 units, 5 pieces, dropout) misclassifies 89.4% of FGSM
examples (ε = .25) with 97.6% average confidence (T1.maxout); it has 0.94% test error, and
0.84% once trained with the adversarial objective J̃ = .5·J(x) + .5·J(x + .25·sign(∇ₓJ))
(T2.clean240, T2.adv240). §6 also reports, for the adversarially trained model, its FGSM error
(T2.adverr), transfer both ways (T2.transfer_a/b), its confidence on mistakes (T2.conf) and
more localized first-layer weights (F3.weights).

Protocol: both models follow the pylearn2 ``mnist_pi`` recipe of the `train` section (stage 1
with early stopping on the clean validation error, then stage 2 on all 60k): the trainings
``naive`` and ``adversarial``, which adds the adversarial objective. FGSM examples are generated
in inference mode (no dropout), with true labels and no clipping, on the 10k test images.
"""

from __future__ import annotations

import numpy as np

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Context, Outcome, pyplot, save_figure, train

CLAIMS = ("T1.maxout", "T2.clean240", "T2.adv240", "T2.adverr", "T2.transfer_a", "T2.transfer_b", "T2.conf",
          "F3.weights")
TRAININGS = ("naive", "adversarial")
# What one `fgsm-repro train` / `attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {
    "naive": {"clean": (("T2.clean240", "error", "error"),),
              "attack": (("T1.maxout", "error", "error"), ("T1.maxout", "confidence_mistakes", "confidence_mistakes"),
                         ("T2.adverr", "error_naive", "error"))},
    "adversarial": {"clean": (("T2.adv240", "error", "error"),),
                    "attack": (("T2.adverr", "error_adv_trained", "error"),
                               ("T2.conf", "confidence_mistakes", "confidence_mistakes"))},
}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained = {name: train(cfg, name, splits, [seed], ctx)[0] for name in TRAININGS}
    fits = {name: t.fit for name, t in trained.items()}
    params = {name: t.params for name, t in trained.items()}
    x, y = splits.x_test, splits.y_test
    clean = {name: evaluate(t.model, t.objective, t.params, x, y, mesh=ctx.mesh) for name, t in trained.items()}
    own, x_adv = {}, {}
    for name, t in trained.items():
        own[name], x_adv[name] = attack_metrics(t.model, t.objective, t.params, x, y, cfg.attack, mesh=ctx.mesh)

    def error_on(name: str, examples: np.ndarray) -> float:
        t = trained[name]
        return evaluate(t.model, t.objective, t.params, examples, y, mesh=ctx.mesh)["error"]

    training = {f"{name}_{k}": v for name, f in fits.items() for k, v in
                (("best_epoch", f.best_epoch), ("stage2_epochs", f.stage2_epochs), ("val_error", f.best_val_error))}
    figure = _figure(params, trained["naive"].model.pieces, cfg, seed, ctx)
    return Outcome(
        measured={
            "T1.maxout": {"error": own["naive"]["error"], "confidence_mistakes": own["naive"]["confidence_mistakes"],
                          "confidence_all": own["naive"]["confidence_all"]},
            "T2.clean240": {"error": clean["naive"]["error"], **training},
            "T2.adv240": {"error": clean["adversarial"]["error"]},
            "T2.adverr": {"error_naive": own["naive"]["error"], "error_adv_trained": own["adversarial"]["error"]},
            "T2.transfer_a": {"error": error_on("adversarial", x_adv["naive"])},
            "T2.transfer_b": {"error": error_on("naive", x_adv["adversarial"])},
            "T2.conf": {"confidence_mistakes": own["adversarial"]["confidence_mistakes"],
                        "confidence_all": own["adversarial"]["confidence_all"]},
            "F3.weights": {"figure": figure, **{f"top10_mass_{name}": localization(p) for name, p in params.items()}},
        },
        tables={"training": [{"model": name, "epochs_run": f.epochs_run, "best_epoch": f.best_epoch,
                              "best_val_error": f.best_val_error, "stage2_epochs": f.stage2_epochs,
                              "clean_test_error": clean[name]["error"], "fgsm_error": own[name]["error"],
                              "seconds_per_epoch": f.seconds_per_epoch}
                             for name, f in fits.items()]},
        figures={"F3.weights": figure},
    )


def localization(params, top: float = 0.10) -> float:
    """How localized the first-layer filters are, as a number for F3.weights: the share of each
    filter's |w| mass held by its top 10% of pixels, averaged over filters (in percent; 10% for
    a perfectly spread filter, up to 100% for one concentrated on few pixels)."""
    w = np.sort(np.abs(np.asarray(params["maxout0"]["kernel"])), axis=0)[::-1]  # (pixels, filters), descending
    k = max(1, int(round(top * w.shape[0])))
    return float(100.0 * np.mean(w[:k].sum(0) / np.maximum(w.sum(0), 1e-12)))


def _figure(params: dict, pieces: int, cfg: ExperimentConfig, seed: int, ctx: Context, units: int = 4) -> str:
    """Fig. 3: the first-layer weights (all pieces of the first `units` units) of both models."""
    plt = pyplot()
    fig, axes = plt.subplots(2 * units, pieces, figsize=(1.2 * pieces, 1.2 * units * 2))
    for row, name in enumerate(("naive", "adversarial")):
        kernel = np.asarray(params[name]["maxout0"]["kernel"])
        for u in range(units):
            for p in range(pieces):
                ax = axes[row * units + u, p]
                w = kernel[:, u * pieces + p].reshape(28, 28)
                lim = np.abs(w).max() or 1.0
                ax.imshow(w, cmap="gray", vmin=-lim, vmax=lim)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row * units + u, 0].set_ylabel(f"{name[:5]} u{u}", fontsize=7)
    fig.suptitle(f"Fig. 3 reproduced: first-layer maxout weights, naive (top) vs adversarially trained (bottom) "
                 f"[{cfg.profile} profile, seed {seed}]", fontsize=8)
    return save_figure(fig, "F3.weights", cfg.profile, ctx, dpi=100)
