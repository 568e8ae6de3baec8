"""F4.sweep — Fig. 4: a maxout network's logits are piecewise linear along the FGSM direction.

Paper (Fig. 4): "by tracing out different values of ε, we can see that adversarial examples
occur reliably for almost any sufficiently large value of ε provided that we move in the correct
direction"; the logits of the naive maxout network along x + ε·sign(∇ₓJ) for ε ∈ [−10, 10] on a
test "4" are piecewise linear, and the wrong classes stay the prediction over wide ranges of ε.

Protocol:
1. The naive maxout network of T1.maxout (training ``model`` reuses t2_maxout240's), in inference
   mode. The direction is sign(∇ₓJ(θ, x, y)) at ε = 0 with the config's labels (true), the
   config's FGSM at unit step without clipping, fixed along the sweep.
2. The figure: the ten logits along ε ∈ [−10, 10] (2,001 steps) for the first test "4", with
   the predicted class beneath.
3. The numbers behind it, over the first 1,000 test images, on 401 steps of ε ∈ [−10, 10]:
   - how many straight segments each logit curve needs (:func:`fgsm_repro.linearity.linear_pieces`,
     tolerance 1% of that curve's range); an image counts as piecewise linear when all ten of its
     curves need at most 10 segments;
   - the longest interval of ε ≥ 0 over which one wrong class is predicted.
   The behaviour holds when most images (over 50%) are piecewise linear in that sense and the
   median longest wrong-class run is wider than 1 (four FGSM steps of .25).
"""

from __future__ import annotations

import numpy as np

from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import adversarial_examples, predict
from fgsm_repro.experiments.common import Context, Outcome, Trained, pyplot, save_figure, train
from fgsm_repro.linearity import longest_wrong_run, pieces_per_curve

CLAIMS = ("F4.sweep",)
TRAININGS = ("model",)
EPS_RANGE = 10.0
FIGURE_STEPS, SWEEP_STEPS = 2001, 401
SWEEP_IMAGES = 1000
IMAGES_PER_BATCH = 10  # images whose whole lines are evaluated together (4,010 inputs)
RELATIVE_TOLERANCE = 0.01  # of a curve's range
MAX_PIECES = 10  # an image's curves are "piecewise linear" with at most this many segments each
MIN_WRONG_RUN = 1.0  # ε units: wider than four FGSM steps of .25
FIGURE_LABEL = 4


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained, = train(cfg, "model", splits, [seed], ctx)
    x, y = splits.x_test[:SWEEP_IMAGES], splits.y_test[:SWEEP_IMAGES]
    unit_step = _unit_step(cfg)
    directions = _directions(trained, x, y, unit_step, ctx)
    t = np.linspace(-EPS_RANGE, EPS_RANGE, SWEEP_STEPS)
    ahead = t >= 0
    pieces, runs = [], []
    for start in range(0, len(x), IMAGES_PER_BATCH):
        chunk = slice(start, start + IMAGES_PER_BATCH)
        for logits, label in zip(_logits_along(trained, x[chunk], directions[chunk], t, ctx), y[chunk], strict=True):
            pieces.append(pieces_per_curve(t, logits, RELATIVE_TOLERANCE))
            runs.append(longest_wrong_run(t[ahead], logits[ahead].argmax(1), int(label)))
    pieces, runs = np.array(pieces), np.array(runs)
    share_linear = 100.0 * float((pieces.max(1) <= MAX_PIECES).mean())
    median_run = float(np.median(runs))
    figure = _figure(trained, splits, cfg, ctx)
    return Outcome(
        measured={"F4.sweep": {
            "holds": bool(share_linear > 50.0 and median_run > MIN_WRONG_RUN),
            "share_piecewise_linear": share_linear,
            "median_pieces": float(np.median(pieces)),
            "median_longest_wrong_run": median_run,
            "images": len(x),
            "figure": figure,
        }},
        tables={"pieces_histogram": [{"pieces": int(k), "curves": int((pieces == k).sum())}
                                     for k in np.unique(pieces)]},
        figures={"F4.sweep": figure},
    )


def _directions(trained: Trained, x: np.ndarray, y: np.ndarray, unit_step: FGSM, ctx: Context) -> np.ndarray:
    """sign(∇ₓJ(θ, x, y)): the config's FGSM at ε = 1 (unclipped: a direction), minus its start."""
    stepped = adversarial_examples(trained.model, trained.objective, trained.params, x, y, unit_step, mesh=ctx.mesh)
    return stepped - x


def _unit_step(cfg: ExperimentConfig) -> FGSM:
    if not isinstance(cfg.attack, FGSM) or cfg.attack.targeted:
        raise ReproError(f"{cfg.name}: f4_sweep follows the FGSM direction: it needs attack: {{name: fgsm, ...}}")
    return cfg.attack.model_copy(update={"eps": 1.0, "clip": None})


def _logits_along(trained: Trained, x: np.ndarray, directions: np.ndarray, t: np.ndarray, ctx: Context) -> np.ndarray:
    """(images, steps, classes): the logits at x + t·direction for every image and step, in one
    batched evaluation."""
    steps = t.astype(np.float32).reshape(1, -1, *[1] * (x.ndim - 1))
    line = (x[:, None] + steps * directions[:, None]).reshape(-1, *x.shape[1:])
    logits = predict(trained.model, trained.objective, trained.params, line, mesh=ctx.mesh)[2]
    return logits.reshape(len(x), len(t), -1)


def _figure(trained: Trained, splits: Splits, cfg: ExperimentConfig, ctx: Context) -> str:
    i = int(np.flatnonzero(splits.y_test == FIGURE_LABEL)[0])
    x, y = splits.x_test[i:i + 1], splits.y_test[i:i + 1]
    t = np.linspace(-EPS_RANGE, EPS_RANGE, FIGURE_STEPS)
    logits = _logits_along(trained, x, _directions(trained, x, y, _unit_step(cfg), ctx), t, ctx)[0]
    plt = pyplot()
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(7, 4.6), height_ratios=(5, 1), sharex=True)
    for k in range(logits.shape[1]):
        ax.plot(t, logits[:, k], lw=1.2, label=str(k), color=plt.cm.tab10(k))
    ax.axvline(0, color="gray", lw=0.5)
    ax.set_ylabel("logit")
    ax.legend(ncol=5, fontsize=7, title="class", title_fontsize=7)
    ax.set_title(f"Fig. 4 reproduced: naive maxout logits along x + eps sign(grad_x J), test image {i} "
                 f"(a '{FIGURE_LABEL}') [{cfg.profile} profile]", fontsize=8)
    strip.scatter(t, logits.argmax(1), c=[plt.cm.tab10(k) for k in logits.argmax(1)], s=2)
    strip.set_yticks(range(logits.shape[1]))
    strip.tick_params(axis="y", labelsize=5)
    strip.set_ylabel("argmax", fontsize=7)
    strip.set_xlabel("eps")
    return save_figure(fig, "F4.sweep", cfg.profile, ctx)
