"""From a stored dataset to the arrays an experiment trains and tests on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgsm_repro.config import DataConfig
from fgsm_repro.data import preprocess
from fgsm_repro.data.store import DatasetInfo, dataset_dir, default_data_dir, load_dataset, resolve_name
from fgsm_repro.errors import ReproError
from fgsm_repro.ops.host import host_aligned, host_empty


@dataclass(frozen=True)
class Splits:
    """float32 images (N, H, W, C) and integer labels, per split, in host memory that
    ``jax.device_put`` aliases rather than copies (:func:`fgsm_repro.ops.host.host_empty`): pixels
    in [0, 1], or with ``preprocessing: gcn_zca`` the preprocessed images (`whitening` maps pixels
    to them).

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
    whitening: preprocess.Whitening | None = None


def _select(x: np.ndarray, y: np.ndarray, classes: tuple[int, int] | None):
    if classes is None:
        return x, y.astype(np.int32)
    keep = np.isin(y, classes)
    return x[keep], np.where(y[keep] == classes[0], -1, 1).astype(np.int32)


def make_splits(cfg: DataConfig, data_dir: str | Path | None = None, *, batch_size: int | None = None) -> Splits:
    """Pixels / 255 (or preprocessed); the last `validation_size` training examples (or the last of
    each class) become the validation set, before selecting classes, so that a binary task's
    validation set comes from the same images. A training set smaller than `batch_size` is refused
    before the preprocessing."""
    ds = load_dataset(cfg.dataset, data_dir)
    n_train = len(ds.train_labels) - cfg.validation_size
    if n_train <= 0:
        raise ReproError(f"data.validation_size {cfg.validation_size} leaves no training examples "
                         f"({len(ds.train_labels)} in the official training set)")
    if batch_size is not None:
        held = ds.train_labels[_held_out(ds.train_labels, cfg.validation_size, cfg.validation)[0]]
        if cfg.classes is not None:
            held = held[np.isin(held, cfg.classes)]
        counts = np.unique(held, return_counts=True)[1]
        size = int(np.minimum(counts, cfg.train_per_class).sum() if cfg.train_per_class else counts.sum())
        if batch_size > size:
            raise ReproError(f"train.batch_size {batch_size} is larger than the training set ({size} examples)")
    whitening = None
    if cfg.preprocessing == "gcn_zca":
        root = Path(data_dir or default_data_dir()).resolve()
        whitening = preprocess.load_or_fit(dataset_dir(resolve_name(cfg.dataset, root), root), ds.info.sha256,
                                           ds.train_images)
        x_all = preprocess.apply_numpy(whitening, ds.train_images, host_empty(ds.train_images.shape, np.float32))
        x_test = preprocess.apply_numpy(whitening, ds.test_images, host_empty(ds.test_images.shape, np.float32))
    else:
        x_all, x_test = _unit_range(ds.train_images), _unit_range(ds.test_images)
    train, val = _held_out(ds.train_labels, cfg.validation_size, cfg.validation)
    x_train, y_train = _select(x_all[train], ds.train_labels[train], cfg.classes)
    x_val, y_val = _select(x_all[val], ds.train_labels[val], cfg.classes)
    x_test, y_test = _select(x_test, ds.test_labels, cfg.classes)
    x_train, y_train = first_per_class(x_train, y_train, cfg.train_per_class)
    x_test, y_test = first_per_class(x_test, y_test, cfg.test_per_class)
    arrays = (host_aligned(a) for a in (x_train, y_train, x_val, y_val, x_test, y_test))
    return Splits(*arrays, ds.info, num_classes=2 if cfg.classes else 10, whitening=whitening)


def first_per_class(x: np.ndarray, y: np.ndarray, n: int | None):
    """The first `n` examples of each label, in their order (all of them for None)."""
    if n is None:
        return x, y
    keep = np.zeros(len(y), bool)
    for label in np.unique(y):
        keep[np.flatnonzero(y == label)[:n]] = True
    return x[keep], y[keep]


def _held_out(labels: np.ndarray, size: int, how: str):
    """(training, validation) indices of the official training set: the last `size` examples held
    out (as slices: views, no copies), or the last size/10 of each class (as masks)."""
    if how == "last":
        return slice(0, len(labels) - size), slice(len(labels) - size, len(labels))
    held_out = np.zeros(len(labels), bool)
    per_class = size // 10
    for c in range(10):
        where = np.flatnonzero(labels == c)
        if len(where) <= per_class:
            raise ReproError(f"data.validation_size {size} leaves no training examples of class {c}")
        held_out[where[len(where) - per_class:]] = per_class > 0
    return ~held_out, held_out


def _unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels / 255 as float32, written straight into aligned memory (no second copy)."""
    return np.divide(images, np.float32(255.0), out=host_empty(images.shape, np.float32), dtype=np.float32)
