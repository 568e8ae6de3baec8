"""A.rubbish_cifar, A.rubbish_skew, A.fooling — Appendix A and Fig. 5 on CIFAR-10: the conv maxout
network of §4 on Gaussian rubbish, and fooling images made from it.

Paper: the conv maxout network classifies 93.4% of 1,000 draws of N(0, I₃₀₇₂) as some class with
probability > .5 (mean confidence 84.4%); 49.7% of these go to "frog", none to airplane,
automobile, horse, ship or truck. One gradient-sign step from a Gaussian draw toward a class fools
the network into that class (probability ≥ .5) for 75.3% of draws on average over the classes:
100% for frog and truck, 24.7% for airplane, the hardest (Fig. 5 shows airplane).

Protocol:
1. The network and its training are T1.convmaxout's: training ``model`` reuses that config's run
   (the same preprocessed space, GCN + ZCA, whose features have a standard deviation near .5).
2. Rubbish (A.rubbish_cifar): 1,000 draws of N(0, I) in the preprocessed space, the space the
   network reads. A draw is a false positive when some class gets probability > .5; the rate, the
   mean probability of those false positives, and (A.rubbish_skew, CIFAR part) the share of them
   each class takes.
3. Fooling (A.fooling): 1,000 other draws; toward each class c one targeted gradient-sign step
   x̃ = x − ε·sign(∇ₓJ(θ, x, c)) (the config's attack: FGSM, ``targeted``); success when p(c | x̃)
   ≥ .5. Per class and the mean over classes. The paper does not give ε: the config's (the §4 ε,
   .1, in the same space), with the success at ε/2, 2ε and 4ε beside it. The step's direction
   does not depend on ε, so it is computed once.
4. Fig. 5: the first 100 fooling images toward airplane, shown through the inverse of the ZCA step
   (contrast-normalized images, each scaled to its own range), framed yellow where they fool.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.data.preprocess import unwhiten
from fgsm_repro.data.sources import CLASS_NAMES
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import predict
from fgsm_repro.experiments.common import Context, Outcome, Trained, pyplot, save_figure, train
from fgsm_repro.rubbish import fooling_success, gaussian_inputs, pooled, rubbish_summary, steps_toward_each_class

CLAIMS = ("A.rubbish_cifar", "A.rubbish_skew", "A.fooling")
TRAININGS = ("model",)
RUBBISH_DRAWS = 1000  # the paper's
FOOLING_STARTS = 1000  # per class, the same starts for every class (the paper does not say how many)
STEP_SCALES = (0.5, 1.0, 2.0, 4.0)  # fooling steps measured, as multiples of the config's eps
FIGURE_CLASS = "airplane"  # Fig. 5's
FIGURE_IMAGES = 100
RUBBISH_STREAM, FOOLING_STREAM = 1, 2  # the draws of a seed: numpy default_rng([seed, stream])


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    if not (isinstance(cfg.attack, FGSM) and cfg.attack.targeted) or splits.whitening is None:
        raise ReproError(f"{cfg.name}: a_rubbish_cifar steps toward classes in the preprocessed space: it needs "
                         "attack: {name: fgsm, targeted: true, ...} and data.preprocessing: gcn_zca")
    trained, = train(cfg, "model", splits, [seed], ctx)
    classes = CLASS_NAMES["cifar10"]
    shape = splits.x_test.shape[1:]

    rubbish = rubbish_summary(_probabilities(trained, gaussian_inputs(RUBBISH_DRAWS, shape, [seed, RUBBISH_STREAM]),
                                             ctx), classes)
    starts = gaussian_inputs(FOOLING_STARTS, shape, [seed, FOOLING_STREAM])
    steps = steps_toward_each_class(trained.model, trained.objective, trained.params, starts, len(classes),
                                    mesh=ctx.mesh)
    sensitivity, images = [], None
    for scale in STEP_SCALES:
        eps = scale * cfg.attack.eps
        fooling = starts[None] + eps * steps  # (classes, starts, ...)
        probs = [_probabilities(trained, fooling[c], ctx) for c in range(len(classes))]
        success = {name: fooling_success(p, c) for c, (name, p) in enumerate(zip(classes, probs, strict=True))}
        sensitivity.append({"eps": eps, "mean_success": pooled(success.values()), **success})
        if scale == 1.0:
            target = classes.index(FIGURE_CLASS)
            images = (fooling[target][:FIGURE_IMAGES], probs[target][:FIGURE_IMAGES, target] >= 0.5)
    chosen = next(row for row in sensitivity if row["eps"] == cfg.attack.eps)
    figure = _figure(splits, *images, cfg.attack.eps, cfg, ctx)
    return Outcome(
        measured={
            "A.rubbish_cifar": {"rate": rubbish["rate"], "confidence": rubbish["confidence"],
                                "draws": RUBBISH_DRAWS},
            "A.rubbish_skew": {"cifar_share_frog": rubbish["shares"]["frog"], "cifar_shares": rubbish["shares"],
                               "cifar_classes_never": rubbish["never"]},
            "A.fooling": {"mean_success": chosen["mean_success"], "airplane_success": chosen["airplane"],
                          "per_class_success": {name: chosen[name] for name in classes}, "eps": cfg.attack.eps,
                          "starts": FOOLING_STARTS, "figure": figure},
        },
        tables={"rubbish_class_shares": [{"class": name, "share": share} for name, share in rubbish["shares"].items()],
                "fooling_step_sensitivity": sensitivity},
        figures={"A.fooling": figure},
    )


def _probabilities(trained: Trained, x: np.ndarray, ctx: Context) -> np.ndarray:
    logits = predict(trained.model, trained.objective, trained.params, x, mesh=ctx.mesh)[2]
    return np.asarray(trained.objective.probabilities(jnp.asarray(logits)))


def _figure(splits: Splits, images: np.ndarray, fooled: np.ndarray, eps: float, cfg: ExperimentConfig,
            ctx: Context) -> str:
    """Fig. 5: a grid of fooling images toward FIGURE_CLASS, framed yellow where they fool."""
    shown = unwhiten(splits.whitening, images)
    low = shown.min(axis=(1, 2, 3), keepdims=True)
    shown = (shown - low) / (shown.max(axis=(1, 2, 3), keepdims=True) - low)
    side, (h, w, _), pad = int(np.ceil(np.sqrt(len(shown)))), shown.shape[1:], 2
    canvas = np.ones((side * (h + 2 * pad), side * (w + 2 * pad), 3))
    for i, (image, hit) in enumerate(zip(shown, fooled, strict=True)):
        top, left = (i // side) * (h + 2 * pad), (i % side) * (w + 2 * pad)
        canvas[top:top + h + 2 * pad, left:left + w + 2 * pad] = (1.0, 0.85, 0.0) if hit else (1.0, 1.0, 1.0)
        canvas[top + pad:top + pad + h, left + pad:left + pad + w] = image
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 7.4))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    data = splits.info.label if splits.info.lossy else splits.info.name
    ax.set_title(f"Gaussian draws + one step toward '{FIGURE_CLASS}' (eps={eps:g}, preprocessed space)\n"
                 f"yellow: p({FIGURE_CLASS}) >= .5, {int(fooled.sum())} of {len(fooled)} — {data}", fontsize=9)
    return save_figure(fig, "A.fooling", cfg.profile, ctx)
