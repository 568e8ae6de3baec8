"""Offline import: official files accepted and verified, damaged ones rejected, nothing half-written."""

import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from fgsm_repro.data import import_dataset, load_dataset
from fgsm_repro.data.sources import parse_idx, read_source
from fgsm_repro.data.store import dataset_dir
from fgsm_repro.errors import ReproError

TINY = {"train": 20, "test": 10}
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_roundtrip_and_truncation():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(_idx(a), "x"), a)
    with pytest.raises(ReproError, match="truncated"):
        parse_idx(_idx(a)[:-1], "x")
    with pytest.raises(ReproError, match="magic"):
        parse_idx(b"\x01\x02\x03\x04", "x")


@pytest.fixture
def mnist_copy(tmp_path):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared MNIST copy not available")
    dst = tmp_path / "mnist-files"
    shutil.copytree(SHARED_DATA / "mnist", dst)
    return dst


def _assert_untouched(data_dir: Path):
    leftovers = [p.name for p in data_dir.iterdir()] if data_dir.exists() else []
    assert leftovers in ([], ["mnist"]) and not (data_dir / "mnist" / "3.0.1").exists(), leftovers


def test_truncated_gzip_is_rejected_and_nothing_written(mnist_copy, tmp_path):
    f = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ReproError, match="corrupted or truncated"):
        import_dataset("mnist", mnist_copy, tmp_path / "tfds")
    _assert_untouched(tmp_path / "tfds")


def test_changed_byte_fails_the_md5_check(mnist_copy, tmp_path):
    f = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    f.unlink()
    (mnist_copy / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))  # raw IDX files are accepted too
    with pytest.raises(ReproError, match="MD5"):
        import_dataset("mnist", mnist_copy, tmp_path / "tfds")
    _assert_untouched(tmp_path / "tfds")


def test_missing_file_and_missing_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ReproError, match="missing"):
        read_source("mnist", tmp_path / "empty")
    with pytest.raises(ReproError, match="fgsm-repro data import mnist"):
        load_dataset("mnist", tmp_path / "no-data-here")


@pytest.mark.mnist
def test_shared_mnist_matches_published_statistics(mnist_data_dir):
    ds = load_dataset("mnist", mnist_data_dir)
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
    x = ds.train_images.astype(np.float64) / 255
    assert x.mean() == pytest.approx(0.1307, abs=5e-5) and x.std() == pytest.approx(0.3081, abs=5e-5)
    counts = np.bincount(ds.train_labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert not ds.info.lossy and len(ds.info.sha256) == 64


@pytest.mark.mnist
@pytest.mark.parametrize("classes", [None, (3, 7)])
def test_splits_are_pixels_over_255_in_memory_that_device_put_aliases(mnist_data_dir, classes):
    import jax

    from fgsm_repro.config import DataConfig
    from fgsm_repro.data.splits import make_splits
    from fgsm_repro.evaluation import EVAL_BATCH

    ds = load_dataset("mnist", mnist_data_dir)
    splits = make_splits(DataConfig(classes=classes), mnist_data_dir)
    keep = np.isin(ds.test_labels, classes) if classes else slice(None)
    assert np.array_equal(splits.x_test, ds.test_images[keep].astype(np.float32) / 255.0)
    assert splits.x_test.dtype == np.float32 and splits.y_test.dtype == np.int32
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        batch = getattr(splits, name)[EVAL_BATCH:2 * EVAL_BATCH]
        assert jax.device_put(batch).unsafe_buffer_pointer() == batch.ctypes.data, f"{name} was copied"


@pytest.mark.mnist
def test_reimport_is_idempotent(mnist_data_dir):
    before = load_dataset("mnist", mnist_data_dir).info
    info, changed = import_dataset("mnist", SHARED_DATA / "mnist", mnist_data_dir)
    assert not changed and info.sha256 == before.sha256


# ---- CIFAR-10 layouts, on tiny synthetic files (expected_sizes overrides the official counts) ----

def _tiny_cifar(seed=0):
    rng = np.random.default_rng(seed)
    return {s: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10) for s, n in TINY.items()}


def _add(tar: tarfile.TarFile, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _python_archive(path: Path, splits):
    x, y = splits["train"]
    with tarfile.open(path, "w:gz") as tar:
        for i, part in enumerate(np.array_split(np.arange(len(y)), 5)):
            batch = {b"data": x[part].transpose(0, 3, 1, 2).reshape(len(part), -1), b"labels": y[part].tolist()}
            _add(tar, f"cifar-10-batches-py/data_batch_{i + 1}", pickle.dumps(batch))
        xt, yt = splits["test"]
        _add(tar, "cifar-10-batches-py/test_batch",
             pickle.dumps({b"data": xt.transpose(0, 3, 1, 2).reshape(len(yt), -1), b"labels": yt.tolist()}))


def _binary_archive(path: Path, splits):
    def records(x, y):
        return np.concatenate([y[:, None].astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(len(y), -1)], 1).tobytes()

    x, y = splits["train"]
    with tarfile.open(path, "w:gz") as tar:
        for i, part in enumerate(np.array_split(np.arange(len(y)), 5)):
            _add(tar, f"cifar-10-batches-bin/data_batch_{i + 1}.bin", records(x[part], y[part]))
        _add(tar, "cifar-10-batches-bin/test_batch.bin", records(*splits["test"]))


def _image_folder(root: Path, splits, fmt: str):
    for split, (x, y) in splits.items():
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            d = root / split / CIFAR_NAMES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:04d}.{fmt}", quality=75)


@pytest.mark.parametrize("layout", ["python", "binary"])
def test_cifar_archives_keep_pixels_and_order(tmp_path, layout):
    splits = _tiny_cifar()
    path = tmp_path / f"cifar-10-{layout}.tar.gz"
    (_python_archive if layout == "python" else _binary_archive)(path, splits)
    raw = read_source("cifar10", path)
    assert not raw.lossy
    for s in TINY:
        np.testing.assert_array_equal(raw.splits[s][0], splits[s][0])
        np.testing.assert_array_equal(raw.splits[s][1], splits[s][1])


def test_truncated_cifar_archive_is_rejected(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    _binary_archive(path, _tiny_cifar())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ReproError, match="corrupted or truncated|missing"):
        import_dataset("cifar10", path, tmp_path / "tfds", expected_sizes=TINY)


def test_lossless_png_folder_imports_as_cifar10(tmp_path):
    splits = _tiny_cifar(1)
    _image_folder(tmp_path / "png", splits, "png")
    info, changed = import_dataset("cifar10", tmp_path / "png", tmp_path / "tfds", expected_sizes=TINY)
    assert changed and info.name == "cifar10" and not info.lossy
    ds = load_dataset("cifar10", tmp_path / "tfds")
    order = np.lexsort((np.arange(TINY["test"]), splits["test"][1]))  # stored by class, then file name
    np.testing.assert_array_equal(ds.test_images, splits["test"][0][order])
    with pytest.raises(ReproError, match="official split has 50000"):
        import_dataset("cifar10", tmp_path / "png", tmp_path / "tfds")


def test_jpeg_tarball_is_stored_as_lossy_and_labelled(tmp_path):
    _image_folder(tmp_path / "jpg", _tiny_cifar(2), "jpg")
    tarball = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "jpg" / "train", arcname="train")
        tar.add(tmp_path / "jpg" / "test", arcname="test")
    info, _ = import_dataset("cifar10", tarball, tmp_path / "tfds", expected_sizes=TINY)
    assert info.name == "cifar10_jpeg" and info.lossy and "not the paper's data" in info.label
    assert not dataset_dir("cifar10", tmp_path / "tfds").exists()  # never stored as official CIFAR-10
    ds = load_dataset("cifar10", tmp_path / "tfds")  # falls back to the lossy copy, saying so
    assert ds.info.lossy and ds.info.name == "cifar10_jpeg"
    _, changed = import_dataset("cifar10", tarball, tmp_path / "tfds", expected_sizes=TINY)
    assert not changed


# ---- the online path (TFDS download), with TFDS's downloader replaced: no network here ----

@pytest.mark.slow  # a subprocess or a long training
@pytest.mark.mnist
def test_download_path_stores_what_the_offline_import_stores(tmp_path, monkeypatch, mnist_data_dir):
    from fgsm_repro.data import download_dataset, store

    def fake_download(urls, download_dir):  # serves the shared copies instead of the official URLs
        assert set(urls) == set(store.DOWNLOAD_URLS["mnist"])
        return {name: SHARED_DATA / "mnist" / name for name in urls}

    monkeypatch.setattr(store, "_check_reachable", lambda name, data_dir: None)
    monkeypatch.setattr(store, "_download", fake_download)
    info = download_dataset("mnist", tmp_path)
    assert info.source.startswith("tfds download") and not info.lossy
    assert info.sha256 == load_dataset("mnist", mnist_data_dir).info.sha256  # same order, same pixels
    assert [p.name for p in tmp_path.iterdir()] == ["mnist"]  # no staging or temp folders left


def test_download_without_network_fails_fast_naming_the_import(tmp_path, monkeypatch):
    import socket

    from fgsm_repro.data import download_dataset

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ReproError, match="fgsm-repro data import mnist PATH"):
        download_dataset("mnist", tmp_path)


# ---- the decoded arrays stored beside the TFDS files ----

def test_decoded_arrays_are_stored_checked_and_rebuilt(tmp_path, monkeypatch):
    from fgsm_repro.data import store

    _image_folder(tmp_path / "png", _tiny_cifar(3), "png")
    info, _ = import_dataset("cifar10", tmp_path / "png", tmp_path / "tfds", expected_sizes=TINY)
    path = dataset_dir("cifar10", tmp_path / "tfds")
    arrays = store._arrays_path(path, info.sha256)
    assert arrays.is_file()  # written by the import, from the read-back it verified
    decoded = store._read_splits(path)

    def load():
        store._load_cached.cache_clear()
        ds = load_dataset("cifar10", tmp_path / "tfds")
        assert ds.info == info
        for split in TINY:
            np.testing.assert_array_equal(getattr(ds, f"{split}_images"), decoded[split][0])
            np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), decoded[split][1])

    def tfds_unused(path):
        raise AssertionError("decoded the TFDS files although the stored arrays are valid")

    with monkeypatch.context() as m:
        m.setattr(store, "_read_splits", tfds_unused)
        load()

    # Damaged: a truncated file, then a well-formed file with one pixel changed. Both are
    # noticed, the data comes from the TFDS files, and a good copy replaces the bad one.
    good = arrays.read_bytes()
    arrays.write_bytes(good[: len(good) // 2])
    load()
    assert arrays.read_bytes() == good
    tampered = {k: v.copy() for k, v in np.load(arrays).items()}
    tampered["test.images"][0, 0, 0, 0] ^= 1
    np.savez(arrays, **tampered)
    load()
    assert arrays.read_bytes() == good
    # The same bytes in another shape, and a file that is not an .npz archive at all.
    reshaped = {k: v.reshape(len(v), -1) for k, v in np.load(arrays).items()}
    np.savez(arrays, **reshaped)
    load()
    assert arrays.read_bytes() == good
    with arrays.open("wb") as f:
        np.save(f, decoded["test"][0])
    load()
    assert arrays.read_bytes() == good

    # A data dir that cannot be written to: loading still works, without the copy.
    arrays.unlink()
    with monkeypatch.context() as m:
        m.setattr(store.tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(PermissionError("read-only")))
        load()
    assert not arrays.exists() and not list(path.glob(".arrays-*"))

    # A TFDS dataset fgsm-repro did not store (no provenance.json): checksummed as decoded, and
    # no copy is kept, as there is no recorded checksum to hold one to.
    (path / store.PROVENANCE_FILE).unlink()
    store._load_cached.cache_clear()
    unrecorded = load_dataset("cifar10", tmp_path / "tfds").info
    assert unrecorded.sha256 == info.sha256 and unrecorded.source == "tfds (no provenance.json)"
    assert not list(path.glob("*.npz"))
