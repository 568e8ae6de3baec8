"""From a stored dataset to the arrays an experiment trains and tests on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgsm_repro.config import DataConfig
from fgsm_repro.data.store import DatasetInfo, load_dataset
from fgsm_repro.errors import ReproError
from fgsm_repro.ops.host import host_aligned, host_empty


@dataclass(frozen=True)
class Splits:
    """float32 images in [0, 1] (N, H, W, C) and integer labels, per split, in host memory that
    ``jax.device_put`` aliases rather than copies (:func:`fgsm_repro.ops.host.host_empty`).

    Binary tasks (``classes: [a, b]``) have labels -1 for `a` and +1 for `b`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DatasetInfo
    num_classes: int


def _select(x: np.ndarray, y: np.ndarray, classes: tuple[int, int] | None):
    if classes is None:
        return x, y.astype(np.int32)
    keep = np.isin(y, classes)
    return x[keep], np.where(y[keep] == classes[0], -1, 1).astype(np.int32)


def make_splits(cfg: DataConfig, data_dir: str | Path | None = None) -> Splits:
    """Pixels / 255; the last `validation_size` training examples become the validation set
    (before selecting classes, so a binary task's validation set comes from the same images)."""
    ds = load_dataset(cfg.dataset, data_dir)
    n_train = len(ds.train_labels) - cfg.validation_size
    if n_train <= 0:
        raise ReproError(f"data.validation_size {cfg.validation_size} leaves no training examples "
                         f"({len(ds.train_labels)} in the official training set)")
    x_all = _unit_range(ds.train_images)
    x_test = _unit_range(ds.test_images)
    x_train, y_train = _select(x_all[:n_train], ds.train_labels[:n_train], cfg.classes)
    x_val, y_val = _select(x_all[n_train:], ds.train_labels[n_train:], cfg.classes)
    x_test, y_test = _select(x_test, ds.test_labels, cfg.classes)
    arrays = (host_aligned(a) for a in (x_train, y_train, x_val, y_val, x_test, y_test))
    return Splits(*arrays, ds.info, num_classes=2 if cfg.classes else 10)


def _unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels / 255 as float32, written straight into aligned memory (no second copy)."""
    return np.divide(images, np.float32(255.0), out=host_empty(images.shape, np.float32), dtype=np.float32)
