"""From a stored dataset to the arrays an experiment trains and tests on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgsm_repro.config import DataConfig
from fgsm_repro.data.store import DatasetInfo, load_dataset
from fgsm_repro.errors import ReproError


@dataclass(frozen=True)
class Splits:
    """float32 images in [0, 1] (N, H, W, C) and integer labels, per split.

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
    x_all = ds.train_images.astype(np.float32) / 255.0
    x_test = ds.test_images.astype(np.float32) / 255.0
    x_train, y_train = _select(x_all[:n_train], ds.train_labels[:n_train], cfg.classes)
    x_val, y_val = _select(x_all[n_train:], ds.train_labels[n_train:], cfg.classes)
    x_test, y_test = _select(x_test, ds.test_labels, cfg.classes)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, ds.info,
                  num_classes=2 if cfg.classes else 10)
