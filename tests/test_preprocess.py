"""The CIFAR-10 recipe's input pipeline: GCN + ZCA against NumPy references, the stored fit, the
per-class validation split, and the augmentation of the training batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.data import preprocess
from fgsm_repro.data.augment import random_crop_flip


def _images(n=400, shape=(4, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    # Correlated pixels, as in images: a few smooth components plus noise.
    basis = rng.normal(size=(6, int(np.prod(shape))))
    x = rng.normal(size=(n, 6)) @ basis + 0.3 * rng.normal(size=(n, basis.shape[1]))
    return (255 * (x - x.min()) / (x.max() - x.min())).astype(np.uint8).reshape(n, *shape)


def test_gcn_centres_each_image_and_scales_its_norm_to_55():
    x = _images().reshape(400, -1)
    g = preprocess.gcn(x)
    np.testing.assert_allclose(g.mean(1), 0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 55.0, rtol=1e-9)
    np.testing.assert_allclose(preprocess.gcn(x / 255.0), g, rtol=1e-9, atol=1e-9)  # the pixel scale does not matter
    assert np.all(preprocess.gcn(np.full((1, 12), 7.0)) == 0)  # a flat image stays zero, not NaN


def test_zca_is_the_inverse_square_root_of_the_regularized_covariance():
    x = _images()
    w = preprocess.fit_zca(x, bias=0.1)
    g = preprocess.gcn(x.reshape(len(x), -1))
    centred = g - g.mean(0)
    # Reference from the SVD of the data: C = V diag(s²/N) Vᵀ, P = V diag((s²/N + b)^-1/2) Vᵀ.
    _, s, vt = np.linalg.svd(centred, full_matrices=True)
    eig = np.zeros(vt.shape[0])
    eig[:len(s)] = s ** 2 / len(x)
    reference = (vt.T / np.sqrt(eig + 0.1)) @ vt
    np.testing.assert_allclose(w.matrix, reference, rtol=1e-4, atol=1e-4)
    white = centred @ w.matrix.astype(np.float64)
    covariance = centred.T @ centred / len(x)
    expected = covariance @ np.linalg.inv(covariance + 0.1 * np.eye(len(covariance)))  # λ/(λ + b) per component
    np.testing.assert_allclose(white.T @ white / len(x), expected, atol=1e-4)
    # Without the diagonal term: the identity on the images' subspace (GCN leaves every image with
    # mean zero, so the direction of constant images has variance zero and stays zero).
    nearly = preprocess.fit_zca(x, bias=1e-9)
    white = (g - g.mean(0)) @ nearly.matrix.astype(np.float64)
    d = white.shape[1]
    np.testing.assert_allclose(white.T @ white / len(x), np.eye(d) - np.ones((d, d)) / d, atol=2e-3)


def test_the_jax_map_is_the_host_map_and_differentiable():
    x = _images()
    w = preprocess.fit_zca(x)
    host = preprocess.apply_numpy(w, x)
    pixels = jnp.asarray(x / np.float32(255.0))
    np.testing.assert_allclose(np.asarray(w.apply(pixels)), host, rtol=1e-4, atol=1e-4)
    assert np.isfinite(np.asarray(jax.grad(lambda p: w.apply(p).sum())(pixels))).all()


def test_the_fit_is_stored_checked_and_refitted_when_damaged(tmp_path, monkeypatch):
    x = _images()
    first = preprocess.load_or_fit(tmp_path, "ab" * 32, x)
    stored = preprocess.stored_path(tmp_path, "ab" * 32, preprocess.GCN_SCALE, preprocess.ZCA_BIAS)
    assert stored.is_file()
    fits = []
    real_fit = preprocess.fit_zca
    monkeypatch.setattr(preprocess, "fit_zca", lambda *a: fits.append(1) or real_fit(*a))
    again = preprocess.load_or_fit(tmp_path, "ab" * 32, x)
    assert fits == [] and np.array_equal(again.matrix, first.matrix)  # read back, not refitted
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    stored.write_bytes(bytes(raw))
    rebuilt = preprocess.load_or_fit(tmp_path, "ab" * 32, x)
    assert fits == [1] and np.array_equal(rebuilt.matrix, first.matrix)
    preprocess.load_or_fit(tmp_path, "ab" * 32, _images(seed=1))  # other images: fitted again
    assert fits == [1, 1]


def test_crops_are_windows_of_the_padded_image_and_flips_mirror_exactly():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 8, 8, 3)), jnp.float32)
    key = jax.random.PRNGKey(3)
    out = np.asarray(random_crop_flip(key, x, pad=2))
    assert np.array_equal(out, np.asarray(random_crop_flip(key, x, pad=2)))  # same key, same batch
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    mirrored = 0
    for image, result in zip(padded, out, strict=True):
        windows = [image[i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        plain = any(np.array_equal(result, w) for w in windows)
        flipped = any(np.array_equal(result[:, ::-1], w) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 10 < mirrored < 54  # about half
    np.testing.assert_array_equal(np.asarray(random_crop_flip(key, x, pad=0, flip=False)), np.asarray(x))
    assert not np.array_equal(out, np.asarray(random_crop_flip(jax.random.PRNGKey(4), x, pad=2)))


def test_augmented_training_sees_other_batches_with_the_same_dropout():
    from fgsm_repro.config import TrainConfig
    from fgsm_repro.models import MaxoutMLP
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.train import init_state, make_optimizer, make_train_epoch

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 3), dtype=np.float32), rng.integers(0, 10, 64).astype(np.int32)
    model = MaxoutMLP(units=4, pieces=2)
    params = {}
    for augment in (None, {"crop_pad": 2}, {"crop_pad": 2}):
        cfg = TrainConfig(epochs=1, batch_size=16, optimizer={"learning_rate": 0.1}, augment=augment)
        tx = make_optimizer(cfg, 4)
        state, _ = make_train_epoch(model, SOFTMAX, tx, cfg)(init_state(model, tx, x, 0), jnp.asarray(x),
                                                             jnp.asarray(y))
        params.setdefault(str(augment), []).append(jax.tree.leaves(state.params))
    plain, (first, second) = params["None"][0], params["{'crop_pad': 2}"]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))  # repeatable
    assert not all(np.array_equal(a, b) for a, b in zip(plain, first, strict=True))


@pytest.mark.slow
@pytest.mark.cifar
def test_cifar_splits_are_whitened_and_the_validation_set_balanced(cifar_data_dir):
    from fgsm_repro.config import DataConfig
    from fgsm_repro.data.splits import make_splits

    splits = make_splits(DataConfig(dataset="cifar10", preprocessing="gcn_zca", validation="last_per_class"),
                         cifar_data_dir)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (40_000, 10_000, 10_000)
    assert np.array_equal(np.bincount(splits.y_val), [1000] * 10)
    std = splits.x_train.reshape(len(splits.x_train), -1).std(0).mean()
    assert 0.4 < std < 0.55  # the paper: about .5
    np.testing.assert_allclose(splits.x_train.reshape(40_000, -1).mean(0), 0, atol=0.05)
    assert splits.whitening is not None and splits.whitening.matrix.shape == (3072, 3072)


def test_the_pixel_model_is_the_model_on_preprocessed_pixels_and_pixel_eps_pulls_back():
    from fgsm_repro.experiments.t1_convmaxout import FromPixels, pixel_eps, pixel_params
    from fgsm_repro.models import MaxoutMLP

    x = _images(shape=(4, 4, 3))
    w = preprocess.fit_zca(x)
    pixels = (x / np.float32(255.0)).astype(np.float32)
    inner = MaxoutMLP(units=3, pieces=2)
    params = inner.init(jax.random.PRNGKey(0), jnp.asarray(pixels[:1]))["params"]
    composed = FromPixels(inner, w.scale).apply({"params": pixel_params(params, w)}, jnp.asarray(pixels))
    direct = inner.apply({"params": params}, jnp.asarray(preprocess.apply_numpy(w, pixels)))
    np.testing.assert_allclose(np.asarray(composed), np.asarray(direct), rtol=1e-4, atol=1e-4)
    # A preprocessed-space perturbation made from a pixel-space one of L∞ size .03 (through the
    # whitening and each image's contrast scaling) is pulled back to that size.
    delta_pixels = 0.03 * np.sign(np.random.default_rng(1).normal(size=(len(x), 48)))
    flat = pixels.reshape(len(x), -1).astype(np.float64)
    norms = np.linalg.norm(flat - flat.mean(1, keepdims=True), axis=1) / w.scale
    delta = (delta_pixels / norms[:, None]) @ w.matrix.astype(np.float64)
    assert pixel_eps(w, pixels, delta.reshape(x.shape)) == pytest.approx(0.03, rel=1e-4)


def test_unwhiten_inverts_the_zca_step():
    x = _images(shape=(4, 4, 3))
    w = preprocess.fit_zca(x)
    whitened = preprocess.apply_numpy(w, x)
    contrast_normalized = preprocess.gcn(x.reshape(len(x), -1), w.scale).reshape(x.shape)
    np.testing.assert_allclose(preprocess.unwhiten(w, whitened), contrast_normalized, atol=1e-3)
    delta = np.random.default_rng(2).normal(size=x.shape)
    np.testing.assert_allclose(preprocess.unwhiten(w, delta, centred=True).reshape(len(x), -1) @ w.matrix,
                               delta.reshape(len(x), -1), atol=1e-6)
