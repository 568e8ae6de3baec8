"""Datasets in the TFDS data dir: offline import, online download, loading into arrays.

Online and offline end in the same place: an ``array_record`` TFDS dataset at
``<data_dir>/<name>/<version>/`` read with ``tfds.builder_from_directory(...).as_data_source()``,
plus ``provenance.json`` beside it (source, file checksums, lossy flag, and the sha256 of the
decoded arrays, which is the dataset checksum carried into every result), and the decoded arrays
themselves (``arrays-<checksum>.npz``): decoding 70,000 PNGs through TFDS takes about 25 s, which
every ``fgsm-repro train`` or ``attack`` paid before its first step; loading the arrays takes
well under a second. They are checked against the checksum on every load and rebuilt from the
TFDS files when they do not match, so the TFDS dataset stays the one source of the data.

- Online: TFDS's DownloadManager fetches the official files (the URLs of TFDS's own builders),
  which then go through the same verification and storage as the offline import.
- Offline: the official files are read and verified (:mod:`fgsm_repro.data.sources`), written
  with ``tfds.dataset_builders.store_as_tfds_dataset`` into a staging folder inside the data
  dir, read back and checked, then moved into place with one rename: an import either
  completes or leaves the data dir as it was. A lossy source (JPEG) is stored under its own
  name (``cifar10_jpeg``) so it can never pass for the official dataset.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fgsm_repro.data.sources import CLASS_NAMES, IMAGE_SHAPE, SPLIT_SIZES, RawDataset, read_source
from fgsm_repro.errors import ReproError
from fgsm_repro.files import check_writable


@functools.cache
def _tfds():
    """TensorFlow Datasets, imported quietly: TensorFlow's and absl's start-up lines and TFDS's
    progress output mean nothing to a user here. oneDNN's kernels are off (they announce
    themselves on import); TensorFlow only stores and decodes images for fgsm-repro, no float math."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    tfds.disable_progress_bar()
    return tfds

# TFDS versions of the official builders; imports use the same so paths match.
TFDS_VERSIONS = {"mnist": "3.0.1", "cifar10": "3.0.2", "cifar10_jpeg": "3.0.2"}
LOSSY_NAME = {"cifar10": "cifar10_jpeg"}  # where a lossy copy of a dataset is stored
PROVENANCE_FILE = "provenance.json"
LOSSY_LABEL = "JPEG q75 mirror — not the paper's data"


def default_data_dir() -> Path:
    """TFDS's convention: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets").expanduser()


@dataclass(frozen=True)
class DatasetInfo:
    """What a result needs to say about the data it was computed on."""

    name: str  # TFDS name as stored: mnist, cifar10 or cifar10_jpeg
    version: str
    sha256: str  # of the decoded arrays (see content_sha256)
    lossy: bool
    source: str  # "tfds download" or the import's source format
    label: str  # human-readable, says "lossy" where it is

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # uint8 (N, H, W, C)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    info: DatasetInfo


def content_sha256(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """sha256 over the decoded pixels and labels of every split: the same for the same data
    whether it came through TFDS's download or an offline import."""
    h = hashlib.sha256()
    for split in sorted(splits):
        images, labels = splits[split]
        h.update(split.encode())
        h.update(np.ascontiguousarray(images, np.uint8).tobytes())
        h.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return h.hexdigest()


def dataset_dir(name: str, data_dir: Path) -> Path:
    if name not in TFDS_VERSIONS:
        raise ReproError(f"unknown dataset {name!r}; known: {', '.join(n for n in TFDS_VERSIONS if n in CLASS_NAMES)}")
    return Path(data_dir) / name / TFDS_VERSIONS[name]


def _is_prepared(path: Path) -> bool:
    return (path / "dataset_info.json").is_file()


# --------------------------------------------------------------------------------------
# Verification of what was read
# --------------------------------------------------------------------------------------

def verify(raw: RawDataset, expected_sizes: dict[str, int] | None = None) -> None:
    """Shapes, dtypes, label range and split sizes; raises ReproError on any mismatch."""
    sizes = SPLIT_SIZES[raw.name] if expected_sizes is None else expected_sizes
    shape = IMAGE_SHAPE[raw.name]
    if set(raw.splits) != {"train", "test"}:
        raise ReproError(f"{raw.name}: expected splits train and test, found {sorted(raw.splits)}")
    for split, (images, labels) in raw.splits.items():
        if images.dtype != np.uint8 or images.shape[1:] != shape:
            raise ReproError(f"{raw.name}/{split}: images of shape {images.shape[1:]} ({images.dtype}), "
                             f"expected {shape} uint8")
        if len(images) != len(labels):
            raise ReproError(f"{raw.name}/{split}: {len(images)} images but {len(labels)} labels")
        if len(labels) != sizes[split]:
            raise ReproError(f"{raw.name}/{split}: {len(labels)} examples, the official split has {sizes[split]}")
        if labels.min() < 0 or labels.max() >= len(CLASS_NAMES[raw.name]):
            raise ReproError(f"{raw.name}/{split}: labels outside 0..{len(CLASS_NAMES[raw.name]) - 1}")


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

def _tfds_features(name: str):
    tfds = _tfds()

    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=IMAGE_SHAPE[name]),
        "label": tfds.features.ClassLabel(names=CLASS_NAMES[name]),
    })


def _examples(images: np.ndarray, labels: np.ndarray):
    for i in range(len(labels)):
        yield i, {"image": images[i], "label": int(labels[i])}


def import_dataset(name: str, path: str | Path, data_dir: str | Path | None = None, *,
                   force: bool = False, expected_sizes: dict[str, int] | None = None,
                   source_label: str = "offline import") -> tuple[DatasetInfo, bool]:
    """Read, verify and store the official files at `path` as a TFDS dataset.

    Returns (info, changed): `changed` is False when the same data was already there
    (re-import is idempotent). A different dataset already in place is an error unless
    `force`. `expected_sizes` overrides the official split sizes (tests with tiny files).
    """
    data_dir = Path(data_dir or default_data_dir())
    check_writable(data_dir, "data dir")  # before reading and verifying, which take minutes
    tfds = _tfds()
    raw = read_source(name, path)
    verify(raw, expected_sizes)
    stored_name = LOSSY_NAME.get(name, name) if raw.lossy else name
    if raw.lossy and stored_name == name:
        raise ReproError(f"{path}: lossy (JPEG) {name} cannot be imported: only {list(LOSSY_NAME)} have a lossy slot")
    checksum = content_sha256(raw.splits)
    target = dataset_dir(stored_name, data_dir)
    if _is_prepared(target):
        existing = read_provenance(target)
        if existing.get("content_sha256") == checksum:
            return _info_from_provenance(stored_name, existing), False
        if not force:
            raise ReproError(f"{target} already holds a different {stored_name} "
                             f"(source: {existing.get('source', 'unknown')}); pass --force to replace it")

    provenance = {
        "name": stored_name,
        "version": TFDS_VERSIONS[stored_name],
        "source": f"{source_label} ({raw.source_format})",
        "source_path": str(Path(path).resolve()),
        "files": raw.files,
        "lossy": raw.lossy,
        "label": LOSSY_LABEL if raw.lossy else f"{name} (official, lossless)",
        "notes": raw.notes,
        "content_sha256": checksum,
        "split_sizes": {s: int(len(v[1])) for s, v in raw.splits.items()},
    }
    made = [p for p in (target.parent, data_dir, *data_dir.parents) if not p.exists()]  # deepest first
    staging = None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{stored_name}-", dir=data_dir))
        with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints its "preparing ..." lines
            tfds.dataset_builders.store_as_tfds_dataset(
                name=stored_name,
                version=TFDS_VERSIONS[stored_name],
                features=_tfds_features(name),
                split_datasets={s: _examples(*v) for s, v in raw.splits.items()},
                data_dir=staging,
                description=f"{provenance['label']}; imported by fgsm-repro from {raw.source_format}",
                file_format="array_record",
                disable_shuffling=True,  # keep the official order (train[:50000] is the recipe's split)
            )
        staged = dataset_dir(stored_name, staging)
        (staged / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
        # Read back what TFDS wrote before it replaces anything.
        read_back = _read_splits(staged)
        if content_sha256(read_back) != checksum:
            raise ReproError(f"{name}: the stored TFDS dataset does not read back identically; nothing written")
        _write_arrays(staged, checksum, read_back)
        target.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists():  # --force, or a half-prepared leftover of an interrupted download
            old = staging / "replaced"
            target.rename(old)
        try:
            staged.rename(target)  # the one step that makes the import visible
        except OSError:
            if old:  # back in place: the staging folder, and what is in it, is about to be deleted
                old.rename(target)
            raise
    except ReproError:
        raise
    except Exception as e:  # a full disk comes out of TFDS and array_record in many types
        raise ReproError(f"cannot store {stored_name} in {data_dir}: {_disk_problem(e)}; nothing was stored, "
                         "the data dir is as it was") from None
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # the folders this import made, if a failure left them empty
            with contextlib.suppress(OSError):
                folder.rmdir()
    _load_cached.cache_clear()
    return _info_from_provenance(stored_name, provenance), True


def _disk_problem(e: Exception) -> str:
    """What the disk said, in one line: TFDS and array_record wrap an OSError's text in their own
    (RuntimeError: Failed to finalize writing of split "train": write() failed: No space left on device; …)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = " ".join(str(e).split())
    codes = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)
    said = (os.strerror(code) for code in codes)
    return next((s for s in said if s in text), f"{type(e).__name__}: {text}")


# The official files, as TFDS's own builders download them. The online path downloads these
# with TFDS's DownloadManager and imports them like the offline path: TFDS's prepared `mnist`
# is shuffled, while the recipes need the official order (train[:50000] / train[50000:]).
DOWNLOAD_URLS = {
    "mnist": {f"{stem}.gz": f"https://storage.googleapis.com/cvdf-datasets/mnist/{stem}.gz"
              for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    "cifar10": {"cifar-10-binary.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"},
}


def _offline_hint(name: str, data_dir: Path, why: str) -> ReproError:
    return ReproError(f"TFDS could not download {name} into {data_dir} ({why}); without internet run "
                      f"`fgsm-repro data import {name} PATH` with the official files")


def _check_reachable(name: str, data_dir: Path) -> None:
    """Fail at once when the download host does not resolve (TFDS would retry for minutes)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy resolves names for us
    host = next(iter(DOWNLOAD_URLS[name].values())).split("/")[2]
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise _offline_hint(name, data_dir, f"cannot resolve {host}") from None


def _download(urls: dict[str, str], download_dir: Path) -> dict[str, Path]:
    tfds = _tfds()

    manager = tfds.download.DownloadManager(download_dir=download_dir, register_checksums=False,
                                            force_checksums_validation=False)
    return {name: Path(p) for name, p in manager.download(urls).items()}


def download_dataset(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """Online path: TFDS's DownloadManager fetches the official files, which are then verified
    and stored exactly as by the offline import (same order, same checksum)."""
    if name not in DOWNLOAD_URLS:
        raise ReproError(f"unknown dataset {name!r}; known: {', '.join(DOWNLOAD_URLS)}")
    data_dir = Path(data_dir or default_data_dir())
    target = dataset_dir(name, data_dir)
    if _is_prepared(target):
        return _info_from_provenance(name, read_provenance(target))
    check_writable(data_dir, "data dir")  # before the download
    _check_reachable(name, data_dir)
    try:
        paths = _download(DOWNLOAD_URLS[name], data_dir / "downloads")
    except Exception as e:  # network errors come in many types
        raise _offline_hint(name, data_dir, type(e).__name__) from None
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        for official_name, path in paths.items():  # give the downloads their official names
            (Path(tmp) / official_name).symlink_to(Path(path).resolve())
        source = Path(tmp) / next(iter(paths)) if name == "cifar10" else Path(tmp)
        info, _ = import_dataset(name, source, data_dir, source_label="tfds download")
    return info


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------

def read_provenance(path: Path) -> dict:
    try:
        return json.loads((path / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _info_from_provenance(name: str, p: dict) -> DatasetInfo:
    return DatasetInfo(name=name, version=TFDS_VERSIONS[name], sha256=p.get("content_sha256", "unknown"),
                       lossy=bool(p.get("lossy", False)), source=p.get("source", "unknown"),
                       label=p.get("label", name))


def _read_splits(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    tfds = _tfds()

    builder = tfds.builder_from_directory(str(path))
    out = {}
    for split, source in builder.as_data_source().items():
        records = source.__getitems__(list(range(len(source))))
        images = np.stack([r["image"] for r in records]).astype(np.uint8)
        labels = np.array([r["label"] for r in records], np.int64)
        out[split] = (images, labels)
    return out


def resolve_name(name: str, data_dir: Path) -> str:
    """The stored dataset to use for `name`: the official one, else its lossy copy."""
    if _is_prepared(dataset_dir(name, data_dir)):
        return name
    lossy = LOSSY_NAME.get(name)
    if lossy and _is_prepared(dataset_dir(lossy, data_dir)):
        return lossy
    hint = f" (or `fgsm-repro data prepare {name}` to download it through TFDS)"
    raise ReproError(f"dataset {name} not found in {data_dir}: run `fgsm-repro data import {name} PATH`{hint}")


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load all of `name` into arrays, once per process; verifies the content checksum."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    return _load_cached(resolve_name(name, data_dir), str(data_dir))


@functools.lru_cache(maxsize=4)
def _load_cached(stored_name: str, data_dir: str) -> Dataset:
    path = dataset_dir(stored_name, Path(data_dir))
    provenance = read_provenance(path)
    expected = provenance.get("content_sha256")
    splits = _read_arrays(path, expected) if expected else None
    if splits is None:  # no decoded copy yet, or a damaged one: decode the TFDS files
        try:
            splits = _read_splits(path)
        except Exception as e:  # TFDS/array_record errors on damaged files come in many types
            raise ReproError(f"{path}: cannot read the stored dataset ({type(e).__name__}: {e}); "
                             f"re-import it with `fgsm-repro data import --force`") from None
        checksum = content_sha256(splits)
        if expected is None:  # not stored by fgsm-repro: no checksum to hold a decoded copy to
            provenance = {"source": "tfds (no provenance.json)", **provenance, "content_sha256": checksum}
        elif expected != checksum:
            raise ReproError(f"{path}: content checksum {checksum[:12]}… does not match provenance.json "
                             f"({expected[:12]}…): the stored dataset is corrupted; re-import it")
        else:
            _write_arrays(path, checksum, splits)
    info = _info_from_provenance(stored_name, provenance)
    return Dataset(*splits["train"], *splits["test"], info=info)


# --------------------------------------------------------------------------------------
# The decoded arrays beside the TFDS files (see the module docstring)
# --------------------------------------------------------------------------------------

def _arrays_path(path: Path, checksum: str) -> Path:
    return path / f"arrays-{checksum[:16]}.npz"


def _read_arrays(path: Path, checksum: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The decoded arrays stored for `checksum`, or None if absent or not exactly them."""
    try:
        with np.load(_arrays_path(path, checksum), allow_pickle=False) as stored:
            splits = {split: (stored[f"{split}.images"], stored[f"{split}.labels"]) for split in ("train", "test")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
        return None
    # The checksum covers the bytes; dtypes and shapes are checked here.
    well_formed = all(images.dtype == np.uint8 and images.ndim == 4 and labels.dtype == np.int64
                      and labels.shape == images.shape[:1] for images, labels in splits.values())
    return splits if well_formed and content_sha256(splits) == checksum else None


def _write_arrays(path: Path, checksum: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Store the decoded arrays (atomically); a read-only data dir just goes without them."""
    arrays = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}.images"], arrays[f"{split}.labels"] = images, labels
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".arrays-", suffix=".npz")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # The permissions of the TFDS files beside it (mkstemp makes the file private).
        os.chmod(tmp, (path / "dataset_info.json").stat().st_mode & 0o777)
        os.replace(tmp, _arrays_path(path, checksum))
    except OSError:  # a full disk: go without the copy
        pass
    finally:  # nothing left behind by a failed or interrupted write (after os.replace, tmp is gone)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
