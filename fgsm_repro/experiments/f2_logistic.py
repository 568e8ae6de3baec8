"""F2 — §5 and Fig. 2: logistic regression on MNIST 3s versus 7s, and its exact FGSM.

Paper: a logistic regression model trained to tell 3s from 7s has 1.6% test error; the
fast gradient sign method with ε = .25 — which for this model is exactly
η = −ε·y·sign(w) — raises it to 99%. Fig. 2 shows the weights, their sign, and clean and
adversarial 3s and 7s.

Protocol:
1. y = −1 for 3 and +1 for 7; J = ζ(−y(wᵀx + b)). Trained (training ``model``) on the 3s and 7s
   of the first 50,000 training images, early stopping on those of the last 10,000, weight decay
   picked from the config's grid by validation error (the paper gives no recipe).
2. Test error on the 3s and 7s of the test set (F2.clean); FGSM ε = .25 computed by
   ``jax.grad`` (F2.adv). The run also checks that these examples equal the closed form
   x − ε·y·sign(w), and reports the largest difference.
3. F2.images: weights, sign(weights), clean and adversarial test 3s and 7s.
"""

from __future__ import annotations

import numpy as np

from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import predict
from fgsm_repro.experiments.common import (
    Context,
    Outcome,
    clean_and_attacked,
    pyplot,
    save_figure,
    train,
)

CLAIMS = ("F2.clean", "F2.adv", "F2.images")
TRAININGS = ("model",)
# What one `fgsm-repro train` / `attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {"model": {"clean": (("F2.clean", "error", "error"),), "attack": (("F2.adv", "error", "error"),)}}
EXAMPLES_PER_CLASS = 5


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    if not isinstance(cfg.attack, FGSM):
        raise ReproError(f"{cfg.name}: f2_logistic checks FGSM's closed form; its attack must be fgsm")
    trained, = train(cfg, "model", splits, [seed], ctx)
    row, x_adv = clean_and_attacked(trained, splits, cfg.attack, ctx)
    w = np.asarray(trained.params["Dense_0"]["kernel"])[:, 0].reshape(splits.x_test.shape[1:])

    # The closed form x − ε·y·sign(w) holds for the labels the attack used.
    y_used = splits.y_test if cfg.attack.labels == "true" else predict(
        trained.model, trained.objective, trained.params, splits.x_test, mesh=ctx.mesh)[0]
    step = (-cfg.attack.eps * y_used[:, None, None, None] * np.sign(w)[None]).astype(np.float32)
    closed_form = splits.x_test + step  # float32, as the attack computes it
    if cfg.attack.clip:
        closed_form = np.clip(closed_form, *cfg.attack.clip)
    gap = float(np.abs(x_adv - closed_form).max())

    figure = _figure(w, splits, x_adv, cfg, seed, ctx)
    common = {**trained.point, "best_epoch": trained.fit.best_epoch, "val_error": trained.fit.best_val_error}
    return Outcome(
        measured={
            "F2.clean": {"error": row["clean_error"], "confidence_all": row["clean_confidence"], **common},
            "F2.adv": {k: v for k, v in row.items() if not k.startswith("clean")}
            | {"closed_form_max_abs_diff": gap},
            "F2.images": {"figure": figure},
        },
        tables={"selection": trained.candidates},
        figures={"F2.images": figure},
    )


def _figure(w: np.ndarray, splits: Splits, x_adv: np.ndarray, cfg: ExperimentConfig, seed: int,
            ctx: Context) -> str:
    """Fig. 2 from this run; returns its path relative to the results dir."""
    plt = pyplot()
    picks = np.concatenate([np.flatnonzero(splits.y_test == label)[:EXAMPLES_PER_CLASS] for label in (-1, 1)])
    cols = len(picks)
    fig, axes = plt.subplots(3, cols, figsize=(1.3 * cols, 4.4))
    for ax in axes.ravel():
        ax.axis("off")
    lim = np.abs(w).max()
    axes[0, 0].imshow(w[..., 0], cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0, 0].set_title("(a) w", fontsize=8)
    axes[0, 1].imshow(np.sign(w[..., 0]), cmap="gray", vmin=-1, vmax=1)
    axes[0, 1].set_title("(b) sign(w)", fontsize=8)
    lo, hi = min(0.0, x_adv[picks].min()), max(1.0, x_adv[picks].max())
    for j, i in enumerate(picks):
        axes[1, j].imshow(splits.x_test[i, ..., 0], cmap="gray", vmin=lo, vmax=hi)
        axes[2, j].imshow(x_adv[i, ..., 0], cmap="gray", vmin=lo, vmax=hi)
    axes[1, 0].set_title("(c) clean 3s and 7s", fontsize=8, loc="left")
    axes[2, 0].set_title(f"(d) FGSM eps={cfg.attack.eps:g} (same gray scale)", fontsize=8, loc="left")
    fig.suptitle(f"Fig. 2 reproduced: logistic regression, MNIST 3 vs 7 [{cfg.profile} profile, seed {seed}]",
                 fontsize=9)
    return save_figure(fig, "F2.images", cfg.profile, ctx, dpi=110)
