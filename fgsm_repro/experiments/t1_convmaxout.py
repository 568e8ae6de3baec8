"""T1.convmaxout — §4: FGSM against the convolutional maxout network on CIFAR-10.

Paper: "Using ε = .1, we obtained an error rate of 87.15% and an average probability of 96.6%
assigned to the incorrect labels when using a convolutional maxout network on a preprocessed
version of the CIFAR-10 test set."

Protocol:
1. CIFAR-10 (or, where only it exists, the JPEG q75 mirror, which every number then names),
   preprocessed as the pylearn2 recipe does: global contrast normalization, then ZCA whitening
   fitted on the 50,000 training images (``data.preprocessing: gcn_zca``). The per-feature
   standard deviation of the training set is reported (the paper: about .5).
2. The conv maxout network of ``scripts/papers/maxout/cifar10.yaml`` trained with the recipe of
   the `train` section (training ``model``): random crops and flips, per-layer learning-rate
   scales and max-norms, the linearly decaying learning rate.
3. FGSM with ε = .1 **in the preprocessed space**, generated on the model itself with the true
   labels and no clipping (paper-targets §2): error and the mean probability of the wrong label on
   the misclassified examples; clean test error beside them.
4. The same attack from pixel space, through the preprocessing: its ε is the pixel-space size the
   preprocessed-space ε amounts to (per test image, the L∞ norm of the perturbation pulled back
   through the whitening and that image's contrast normalization; the median over images), run
   unclipped and clipped to [0, 1].
"""

from __future__ import annotations

import math

import flax.linen as nn
import numpy as np

from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits, load_dataset
from fgsm_repro.data.preprocess import Whitening, gcn_zca, unwhiten
from fgsm_repro.data.splits import first_per_class
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.experiments.common import Context, Outcome, train

CLAIMS = ("T1.convmaxout",)
TRAININGS = ("model",)
# What one `fgsm-repro train` / `attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {"model": {"clean": (("T1.convmaxout", "clean_error", "error"),),
                        "attack": (("T1.convmaxout", "error", "error"),
                                   ("T1.convmaxout", "wrong_label_probability", "confidence_mistakes"))}}


class FromPixels(nn.Module):
    """`inner` applied to preprocessed pixels: the model as a function of [0, 1] pixels. The
    whitening's mean and matrix are parameters (:func:`pixel_params`), not constants folded into
    the compiled attack."""

    inner: nn.Module
    scale: float  # the contrast normalization's

    @property
    def convolutional(self) -> bool:  # its programs are compiled as the inner model's: fgsm_repro.cpu_tuning
        return getattr(self.inner, "convolutional", False)

    @nn.compact
    def __call__(self, x, train: bool = False):
        features = math.prod(x.shape[1:])
        mean = self.param("zca_mean", nn.initializers.zeros, (features,))
        matrix = self.param("zca_matrix", nn.initializers.zeros, (features, features))
        return self.inner(gcn_zca(x, mean, matrix, self.scale), train)


def pixel_params(params, whitening: Whitening) -> dict:
    """The parameters of ``FromPixels(model, whitening.scale)`` for `model`'s `params`."""
    return {"inner": params, "zca_mean": whitening.mean, "zca_matrix": whitening.matrix}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    if splits.whitening is None or not isinstance(cfg.attack, FGSM):
        raise ReproError(f"{cfg.name}: t1_convmaxout attacks FGSM in the preprocessed space: it needs "
                         "data.preprocessing: gcn_zca and attack: {name: fgsm, ...}")
    trained, = train(cfg, "model", splits, [seed], ctx)
    model, objective, params = trained.model, trained.objective, trained.params
    x, y = splits.x_test, splits.y_test
    clean = evaluate(model, objective, params, x, y, mesh=ctx.mesh)
    adv, x_adv = attack_metrics(model, objective, params, x, y, cfg.attack, mesh=ctx.mesh)

    pixels = test_pixels(cfg, ctx, splits)
    eps_pixels = pixel_eps(splits.whitening, pixels, x_adv - x)
    pixel_model = FromPixels(model, splits.whitening.scale)
    from_pixel_params = pixel_params(params, splits.whitening)
    from_pixels = {}
    for clip in (None, (0.0, 1.0)):
        attack = cfg.attack.model_copy(update={"eps": eps_pixels, "clip": clip})
        from_pixels[clip] = attack_metrics(pixel_model, objective, from_pixel_params, pixels, y, attack,
                                           mesh=ctx.mesh)[0]
    row = {
        "error": adv["error"],
        "wrong_label_probability": adv["confidence_mistakes"],
        "confidence_all": adv["confidence_all"],
        "clean_error": clean["error"],
        "clean_confidence": clean["confidence_all"],
        "pixel_eps": eps_pixels,
        "pixel_error": from_pixels[None]["error"],
        "pixel_wrong_label_probability": from_pixels[None]["confidence_mistakes"],
        "pixel_error_clipped": from_pixels[(0.0, 1.0)]["error"],
        "feature_std": float(splits.x_train.reshape(len(splits.x_train), -1).std(axis=0).mean()),
        "best_epoch": trained.fit.best_epoch,
        "val_error": trained.fit.best_val_error,
        "seconds_per_epoch": trained.fit.seconds_per_epoch,
        "per_class_error": adv["per_class_error"],
    }
    return Outcome(measured={"T1.convmaxout": row},
                   tables={"training": [{k: r.get(k) for k in ("epoch", "loss", "val_error", "seconds")}
                                        for r in trained.fit.history]})


def test_pixels(cfg: ExperimentConfig, ctx: Context, splits: Splits) -> np.ndarray:
    """The test images as [0, 1] pixels, in the order and selection of ``splits.x_test``."""
    ds = load_dataset(cfg.data.dataset, ctx.data_dir)
    images, _ = first_per_class(ds.test_images, ds.test_labels, cfg.data.test_per_class)  # as make_splits selects
    pixels = images.astype(np.float32) / np.float32(255.0)
    if len(pixels) != len(splits.x_test):
        raise ReproError(f"{cfg.name}: the test pixels do not match the test split")
    return pixels


def pixel_eps(whitening: Whitening, pixels: np.ndarray, delta: np.ndarray) -> float:
    """The median over images of ‖δ_pixels‖∞ for the preprocessed-space perturbations `delta`:
    δ_pixels = (‖x − mean(x)‖ / scale) · δ · P⁻¹, the perturbation pulled back through the
    whitening P and the image's contrast normalization (its mean and norm held fixed)."""
    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    norms = np.linalg.norm(flat - flat.mean(axis=1, keepdims=True), axis=1) / whitening.scale
    unwhitened = unwhiten(whitening, delta, centred=True).reshape(len(delta), -1)
    return float(np.median(np.abs(unwhitened * norms[:, None]).max(axis=1)))

