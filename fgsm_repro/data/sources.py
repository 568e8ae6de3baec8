"""Readers for the official dataset files, for the offline import.

Accepted layouts (``PATH`` of ``fgsm-repro data import NAME PATH``):

- MNIST: a directory with the four IDX files, gzipped or raw
  (``train-images-idx3-ubyte[.gz]`` …); each is checked against the official MD5 of its
  decompressed bytes.
- CIFAR-10: the official python archive (``cifar-10-python.tar.gz`` or its extracted
  ``cifar-10-batches-py/``) or binary archive (``cifar-10-binary.tar.gz`` /
  ``cifar-10-batches-bin/``).
- Either dataset: an image folder ``{train,test}/<class>/*.{png,jpg,jpeg}``, as a directory
  or a ``.tar.gz``. JPEG files make the dataset lossy, which is recorded. Every image must be of
  the dataset's size and in a mode that converts exactly (L, RGB, palette, 1-bit; for MNIST, gray).

Every reader returns :class:`RawDataset`: uint8 images (N, H, W, C) and int64 labels per
split, plus what was read (file names, sizes, checksums). Problems raise ReproError.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgsm_repro.errors import ReproError

# MD5 of the decompressed official IDX files (yann.lecun.com; shared/data/README.md).
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# MD5 of the official CIFAR-10 archives (cs.toronto.edu/~kriz); recorded, not required,
# since a re-compressed archive holds the same pixels under another checksum.
CIFAR10_ARCHIVE_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
IMAGE_SHAPE = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
SPLIT_SIZES = {"mnist": {"train": 60_000, "test": 10_000}, "cifar10": {"train": 50_000, "test": 10_000}}

IMAGE_SUFFIXES = {".png": False, ".jpg": True, ".jpeg": True}  # suffix -> lossy
# Image modes that convert to L or RGB keeping every pixel; alpha, 16-bit and CMYK images would be
# changed by the conversion, silently.
EXACT_MODES = {"1", "L", "P", "RGB"}
# What PATH may be, for the errors that say it is none of them.
EXPECTED_SOURCE = {
    "mnist": "a folder with the MNIST IDX files, or an image folder (train/<class>/*.png, test/…) "
             "as a folder or .tar.gz",
    "cifar10": "a CIFAR-10 archive (cifar-10-python.tar.gz, cifar-10-binary.tar.gz), or an image folder "
               "(train/<class>/*.png, test/…) as a folder or .tar.gz",
}


@dataclass
class RawDataset:
    name: str
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images uint8 NHWC, labels int64)
    source_format: str
    lossy: bool
    files: list[dict] = field(default_factory=list)  # what was read, with checksums
    notes: list[str] = field(default_factory=list)


def _one_line(e: BaseException) -> str:
    """An exception's message on one line: some span several (tarfile's lists every method it tried)."""
    return " ".join(str(e).split()) or type(e).__name__


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ReproError(f"{path}: cannot read it ({e.strerror or _one_line(e)})") from None


def _file_record(path: Path, **extra) -> dict:
    data = _read_bytes(path)
    return {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), **extra}


# --------------------------------------------------------------------------------------
# MNIST IDX
# --------------------------------------------------------------------------------------

def parse_idx(raw: bytes, what: str) -> np.ndarray:
    """Parse an IDX file (uint8 payload) into an array; reject truncated or odd files."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ReproError(f"{what}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ReproError(f"{what}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ReproError(f"{what}: IDX payload is {len(raw) - header} bytes, header says "
                         f"{expected - header} (truncated or corrupted file)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_maybe_gzip(path: Path) -> bytes:
    data = _read_bytes(path)
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ReproError(f"{path}: corrupted or truncated gzip file ({_one_line(e)})") from None


def read_mnist_idx(directory: Path) -> RawDataset:
    arrays, files = {}, []
    for stem, md5 in MNIST_IDX_MD5.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ReproError(f"{directory}: missing {stem}[.gz] (expected the four official MNIST IDX files)")
        raw = _read_maybe_gzip(path)
        got = hashlib.md5(raw).hexdigest()
        if got != md5:
            raise ReproError(f"{path}: MD5 of the decompressed IDX is {got}, the official file's is {md5} "
                             "(corrupted or not the official MNIST)")
        arrays[stem] = parse_idx(raw, str(path))
        files.append(_file_record(path, decompressed_md5=got, official_md5_match=True))
    splits = {
        "train": (arrays["train-images-idx3-ubyte"][..., None],
                  arrays["train-labels-idx1-ubyte"].astype(np.int64)),
        "test": (arrays["t10k-images-idx3-ubyte"][..., None],
                 arrays["t10k-labels-idx1-ubyte"].astype(np.int64)),
    }
    return RawDataset("mnist", splits, "mnist-idx", lossy=False, files=files)


# --------------------------------------------------------------------------------------
# CIFAR-10 official archives
# --------------------------------------------------------------------------------------

CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz


def _open_tar(path: Path, name: str) -> tarfile.TarFile:
    """`path` opened as a tar(.gz|.bz2|.xz) archive, or one line saying why it is not one."""
    try:
        return tarfile.open(path, "r:*")
    except tarfile.ReadError:  # no method could open it (its message lists each, one a line)
        with open(path, "rb") as f:
            compressed = f.read(6).startswith(COMPRESSED_MAGIC)
        what = "a corrupted or truncated archive" if compressed else "not an archive (tar or tar.gz)"
        raise ReproError(f"{path}: {what}; expected {EXPECTED_SOURCE[name]}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        if isinstance(e, OSError) and e.errno:  # the file system's error, not the archive's
            raise ReproError(f"{path}: cannot read it ({e.strerror})") from None
        raise ReproError(f"{path}: corrupted or truncated archive ({_one_line(e)})") from None


def _iter_archive(path: Path, name: str) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) for each regular file of a directory tree or a tar(.gz) archive."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield p.relative_to(path).as_posix(), _read_bytes(p)
        return
    with _open_tar(path, name) as tar:
        try:
            for member in tar:
                if member.isfile():
                    yield member.name, tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ReproError(f"{path}: corrupted or truncated archive ({_one_line(e)})") from None


def _cifar_members(path: Path, folder: str, names: list[str]) -> dict[str, bytes]:
    wanted = {f"{folder}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    for member, data in _iter_archive(path, "cifar10"):
        key = member.lstrip("./")
        key = key if key.startswith(folder) else f"{folder}/{key}"
        if key in wanted:
            found[wanted[key]] = data
    missing = [n for n in names if n not in found]
    if missing:
        raise ReproError(f"{path}: missing {', '.join(missing)} in {folder}/ (not a complete CIFAR-10 archive)")
    return found


def _cifar_chw_to_hwc(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def read_cifar10_python(path: Path) -> RawDataset:
    members = _cifar_members(path, "cifar-10-batches-py", [*CIFAR_TRAIN_BATCHES, "test_batch"])

    def batch(name):
        try:
            d = pickle.loads(members[name], encoding="bytes")
            data, labels = np.asarray(d[b"data"], np.uint8), np.asarray(d[b"labels"], np.int64)
        except Exception as e:  # a damaged pickle can raise nearly anything
            raise ReproError(f"{path}: {name} is not a readable CIFAR-10 batch ({type(e).__name__})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ReproError(f"{path}: {name} has data of shape {data.shape}, expected (N, 3072)")
        return _cifar_chw_to_hwc(data), labels

    train = [batch(n) for n in CIFAR_TRAIN_BATCHES]
    splits = {"train": (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
              "test": batch("test_batch")}
    return RawDataset("cifar10", splits, "cifar10-python", lossy=False, files=[_archive_record(path)])


def read_cifar10_binary(path: Path) -> RawDataset:
    names = [f"{n}.bin" for n in [*CIFAR_TRAIN_BATCHES, "test_batch"]]
    members = _cifar_members(path, "cifar-10-batches-bin", names)

    def batch(name):
        raw = np.frombuffer(members[name], np.uint8)
        if raw.size % 3073:
            raise ReproError(f"{path}: {name} is {raw.size} bytes, not a multiple of 3073 (truncated)")
        records = raw.reshape(-1, 3073)
        return _cifar_chw_to_hwc(records[:, 1:]), records[:, 0].astype(np.int64)

    train = [batch(f"{n}.bin") for n in CIFAR_TRAIN_BATCHES]
    splits = {"train": (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
              "test": batch("test_batch.bin")}
    return RawDataset("cifar10", splits, "cifar10-binary", lossy=False, files=[_archive_record(path)])


def _archive_record(path: Path) -> dict:
    if path.is_dir():
        return {"file": path.name, "directory": True}
    rec = _file_record(path)
    official = CIFAR10_ARCHIVE_MD5.get(path.name)
    if official:
        rec["official_md5_match"] = hashlib.md5(path.read_bytes()).hexdigest() == official
    return rec


# --------------------------------------------------------------------------------------
# Image folders: split/class/*.png|jpg, as a directory or a .tar.gz
# --------------------------------------------------------------------------------------

def read_image_folder(name: str, path: Path) -> RawDataset:
    classes = {c: i for i, c in enumerate(CLASS_NAMES[name])}
    shape = IMAGE_SHAPE[name]
    items: dict[str, list[tuple[str, int, np.ndarray]]] = {"train": [], "test": []}
    lossy_files = 0
    for member, data in _iter_archive(path, name):
        parts = Path(member).parts
        suffix = Path(member).suffix.lower()
        if suffix not in IMAGE_SUFFIXES or len(parts) < 3:
            continue
        split, cls = parts[-3], parts[-2]
        if split not in items:
            continue
        if cls not in classes:
            raise ReproError(f"{path}: unknown class folder {cls!r} in {member} (expected {list(classes)})")
        items[split].append((member, classes[cls], _decode_image(data, shape, f"{path}: {member}")))
        lossy_files += IMAGE_SUFFIXES[suffix]
    splits = {}
    for split, rows in items.items():
        if not rows:
            raise ReproError(f"{path}: no images under {split}/<class>/ (expected {split}/<class>/*.png|jpg)")
        rows.sort(key=lambda r: (r[1], r[0]))  # by class, then file name: a fixed order
        splits[split] = (np.stack([r[2] for r in rows]), np.array([r[1] for r in rows], np.int64))
    rec = _archive_record(path)
    lossy = lossy_files > 0
    notes = [f"{lossy_files} of {sum(len(v) for v in items.values())} images are JPEG (lossy)"] if lossy else []
    return RawDataset(name, splits, "image-folder", lossy=lossy, files=[rec], notes=notes)


def _decode_image(data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """One image as uint8 `shape`; one line naming it (`where`) when it is unreadable, of another size,
    or of a mode that converting would change."""
    from PIL import Image

    height, width, channels = shape
    mode = "L" if channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns of huge images (refused below) and odd palettes
            im = Image.open(io.BytesIO(data))  # reads the header only
            if im.size != (width, height):  # before decoding: a huge image would take minutes and gigabytes
                raise ReproError(f"{where} is {im.size[0]}x{im.size[1]} pixels, expected {width}x{height}")
            if im.mode not in EXACT_MODES:
                raise ReproError(f"{where} has image mode {im.mode}, expected {mode} (converting would change "
                                 "its pixels)")
            img = im.convert(mode)
            if mode == "L" and im.mode in ("P", "RGB") and img.convert("RGB").tobytes() != im.convert("RGB").tobytes():
                raise ReproError(f"{where} is a colour image, expected grayscale ({mode})")
            return np.asarray(img).reshape(shape)
    except ReproError:
        raise
    except Exception as e:  # PIL refuses damaged or hostile files with many types (DecompressionBombError, …)
        raise ReproError(f"{where} is not a readable image ({type(e).__name__}: {_one_line(e)})") from None


# --------------------------------------------------------------------------------------

def read_source(name: str, path: str | Path) -> RawDataset:
    """Detect the layout of `path` and read it as dataset `name` ('mnist' or 'cifar10')."""
    path = Path(path)
    if name not in CLASS_NAMES:
        raise ReproError(f"unknown dataset {name!r}; importable: {', '.join(CLASS_NAMES)}")
    if not path.exists():
        raise ReproError(f"{path}: no such file or directory")
    if path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir():
        return read_image_folder(name, path)
    if name == "mnist":
        if path.is_dir() and any(path.glob("train-images-idx3-ubyte*")):
            return read_mnist_idx(path)
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return read_image_folder(name, path)
        raise ReproError(f"{path}: expected a directory with the MNIST IDX files or an image folder")
    # cifar10
    if path.is_dir():
        if (path / "cifar-10-batches-py").is_dir() or path.name == "cifar-10-batches-py":
            return read_cifar10_python(path)
        if (path / "cifar-10-batches-bin").is_dir() or path.name == "cifar-10-batches-bin":
            return read_cifar10_binary(path)
        raise ReproError(f"{path}: expected cifar-10-batches-py/, cifar-10-batches-bin/ or train/ and test/ folders")
    names = _tar_top_names(path, name)
    if "cifar-10-batches-py" in names:
        return read_cifar10_python(path)
    if "cifar-10-batches-bin" in names:
        return read_cifar10_binary(path)
    return read_image_folder(name, path)


def _tar_top_names(path: Path, name: str) -> set[str]:
    """The top folder of the archive's first member (skipping a bare "." entry, as `tar -C DIR .` writes)."""
    with _open_tar(path, name) as tar:
        try:
            for member in tar:
                parts = Path(member.name).parts
                if parts:
                    return {parts[0]}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ReproError(f"{path}: corrupted or truncated archive ({_one_line(e)})") from None
    return set()
