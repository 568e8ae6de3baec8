"""The CIFAR-10 recipe's preprocessing: global contrast normalization, then ZCA whitening.

pylearn2 (``make_cifar10_gcn_whitened.py``, ``scripts/papers/maxout/cifar10.yaml``):

- GCN, per image: subtract the image's mean, divide by its L2 norm, multiply by `scale` (55); an
  image whose norm is below 1e-8 is left unscaled. Independent of the pixel scale.
- ZCA, fitted on the 50,000 official training images: with μ the mean and
  C = (X − μ)ᵀ(X − μ)/N + `bias`·I = V diag(λ) Vᵀ, the transform is x ↦ (x − μ)·P with
  P = V diag(λ^−½) Vᵀ (no component dropped).

The fit is stored beside the dataset (``zca-<dataset checksum>-<settings>.npz``), checked against
the checksum of its inputs on every load, and fitted again when it is missing or damaged, like the
decoded arrays. :func:`apply_numpy` preprocesses arrays on the host; :meth:`Whitening.apply` is
the same map in JAX, differentiable, for attacks that work in pixel space.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GCN_SCALE, ZCA_BIAS, MIN_NORM = 55.0, 0.1, 1e-8


def gcn(x: np.ndarray, scale: float = GCN_SCALE) -> np.ndarray:
    """Global contrast normalization of each row of `x` (one flattened image per row), float64."""
    x = np.asarray(x, np.float64)
    centred = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred ** 2).sum(axis=1, keepdims=True)) / scale
    return centred / np.where(norms < MIN_NORM, 1.0, norms)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a static part of jitted programs
class Whitening:
    """The fitted transform: GCN with `scale`, then (x − mean)·matrix."""

    mean: np.ndarray  # (D,) float32
    matrix: np.ndarray  # (D, D) float32, symmetric
    scale: float
    bias: float
    fitted_on: str  # sha256 of the training images it was fitted on

    def apply(self, x):
        """JAX: pixels (N, ...) in [0, 1] to the preprocessed space, same shape (differentiable)."""
        return gcn_zca(x, self.mean, self.matrix, self.scale)


def gcn_zca(x, mean, matrix, scale: float):
    """JAX: GCN with `scale`, then (x − mean)·matrix, on pixels (N, ...); `mean` and `matrix` may be
    traced arrays (a program that takes them as arguments is compiled once for any whitening)."""
    import jax.numpy as jnp

    flat = x.reshape(x.shape[0], -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = jnp.sqrt((centred ** 2).sum(axis=1, keepdims=True)) / scale
    normalized = centred / jnp.where(norms < MIN_NORM, 1.0, norms)
    return ((normalized - mean) @ matrix).reshape(x.shape)


def fit_zca(x: np.ndarray, scale: float = GCN_SCALE, bias: float = ZCA_BIAS) -> Whitening:
    """Fit GCN + ZCA on the images `x` (N, ...), in float64."""
    flat = gcn(np.asarray(x).reshape(len(x), -1), scale)
    mean = flat.mean(axis=0)
    flat -= mean
    covariance = flat.T @ flat / len(flat) + bias * np.eye(flat.shape[1])
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    matrix = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
    return Whitening(mean.astype(np.float32), matrix.astype(np.float32), scale, bias, _sha256(x))


def apply_numpy(w: Whitening, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Preprocess images `x` (N, ...) with `w` on the host (float32 result of x's shape, into `out`)."""
    flat = gcn(np.asarray(x).reshape(len(x), -1), w.scale).astype(np.float32)
    flat -= w.mean
    result = np.matmul(flat, w.matrix, out=None if out is None else out.reshape(len(x), -1))
    return result.reshape(x.shape)


def unwhiten(w: Whitening, x: np.ndarray, *, centred: bool = False) -> np.ndarray:
    """The inverse of the ZCA step (float64, x's shape): preprocessed inputs back to contrast-
    normalized images, x·P⁻¹ + mean; with `centred`, differences of inputs (no mean added)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    back = np.linalg.solve(w.matrix.astype(np.float64), flat.T).T  # P is symmetric: x·P⁻¹ = (P⁻¹·xᵀ)ᵀ
    return (back if centred else back + w.mean).reshape(np.shape(x))


def _sha256(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    return hashlib.sha256(str((x.dtype.str, x.shape)).encode() + x.tobytes()).hexdigest()


def stored_path(dataset_dir: Path, dataset_sha256: str, scale: float, bias: float) -> Path:
    settings = hashlib.sha256(json.dumps([scale, bias]).encode()).hexdigest()[:8]
    return Path(dataset_dir) / f"zca-{dataset_sha256[:16]}-{settings}.npz"


def load_or_fit(dataset_dir: Path, dataset_sha256: str, train_images: np.ndarray, scale: float = GCN_SCALE,
                bias: float = ZCA_BIAS) -> Whitening:
    """The whitening fitted on `train_images`, read from beside the dataset when it is stored there
    and was fitted on exactly these images; else fitted now and stored (a read-only data dir goes
    without the copy)."""
    path = stored_path(dataset_dir, dataset_sha256, scale, bias)
    stored = _read(path)
    if stored is not None and stored.fitted_on == _sha256(train_images) and (stored.scale, stored.bias) == (scale,
                                                                                                              bias):
        return stored
    whitening = fit_zca(train_images, scale, bias)
    _write(path, whitening)
    return whitening


def _read(path: Path) -> Whitening | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            mean, matrix, meta = f["mean"], f["matrix"], json.loads(str(f["meta"]))
            checksum = str(f["checksum"])
        scale, bias, fitted_on = float(meta["scale"]), float(meta["bias"]), str(meta["fitted_on"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None
    if hashlib.sha256(mean.tobytes() + matrix.tobytes()).hexdigest() != checksum:  # damaged
        return None
    return Whitening(mean, matrix, scale, bias, fitted_on)


def _write(path: Path, w: Whitening) -> None:
    """Atomically, through a temporary file beside it; nothing when the folder is read-only."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".zca-", suffix=".npz")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mean=w.mean, matrix=w.matrix, checksum=hashlib.sha256(w.mean.tobytes() + w.matrix.tobytes())
                     .hexdigest(), meta=json.dumps({"scale": w.scale, "bias": w.bias, "fitted_on": w.fitted_on}))
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
