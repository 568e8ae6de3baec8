"""`fgsm-repro data import` of bad files, into a bad data dir, onto a full disk: one line `error: …`,
exit 2, before the reading where it can be, and nothing left behind (a later import works).

Tiny synthetic inputs only: the official split sizes are patched down where a test must get past
the size check (`_tiny_sizes`).
"""

import errno
import io
import os
import signal
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from fgsm_repro.data import sources, store
from tests.helpers import run_cli

TINY = {"train": 20, "test": 10}
CIFAR_NAMES = sources.CLASS_NAMES["cifar10"]


def _image_folder(root: Path, name: str = "cifar10", seed: int = 0) -> Path:
    """train/ and test/ of TINY random images, one file each, in the class folders of `name`."""
    rng = np.random.default_rng(seed)
    shape = sources.IMAGE_SHAPE[name]
    for split, n in TINY.items():
        for i in range(n):
            folder = root / split / sources.CLASS_NAMES[name][i % 10]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8).squeeze()).save(folder / f"{i:04d}.png")
    return root


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels and holds none (PIL reads the size from the header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _refused(argv: list[str]) -> str:
    """`fgsm-repro ARGV` ends in one line `error: …` and exit 2; that line."""
    code, out, err = run_cli(argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    return err


def _no_reading(monkeypatch):
    def read(*_, **__):
        raise AssertionError("the files were read before the data dir was checked")

    monkeypatch.setattr(store, "read_source", read)


def _tiny_sizes(monkeypatch):
    """The official split sizes as TINY's, so that tiny inputs get past the size check to storing."""
    monkeypatch.setitem(sources.SPLIT_SIZES, "cifar10", TINY)


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --- images PIL refuses, or of another size or mode ------------------------------------------------

RGB = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
BAD_IMAGES = {  # case: (dataset, file bytes, what the error says)
    "decompression bomb (20000x20000 header)": ("cifar10", _png_header(20000, 20000), "DecompressionBombError"),
    "huge, under PIL's bomb limit (10000x10000 header)": ("cifar10", _png_header(10000, 10000),
                                                          "is 10000x10000 pixels, expected 32x32"),
    "wrong size": ("cifar10", _png(RGB[:31]), "is 32x31 pixels, expected 32x32"),
    "truncated": ("cifar10", _png(RGB)[:200], "not a readable image"),
    "not an image": ("cifar10", b"hello, not a PNG", "not a readable image"),
    "with alpha": ("cifar10", _png(np.dstack([RGB, RGB[..., :1]])), "has image mode RGBA"),
    "16-bit": ("mnist", _png(np.full((28, 28), 4000, np.uint16)), "has image mode I;16"),
    "colour for MNIST": ("mnist", _png(RGB[:28, :28]), "is a colour image"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
@pytest.mark.parametrize("packed", ["folder", "tar.gz"])
def test_an_image_pil_refuses_or_of_another_size_or_mode_is_one_line_naming_it(tmp_path, case, packed):
    name, data, says = BAD_IMAGES[case]
    source = _image_folder(tmp_path / "images", name)
    bad = source / "train" / sources.CLASS_NAMES[name][3] / "bad.png"
    bad.write_bytes(data)
    if packed == "tar.gz":
        with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as tar:
            tar.add(source, arcname=".")  # as `tar -C images -czf images.tar.gz .` packs it: "./" first
        source = tmp_path / "images.tar.gz"
    err = _refused(["data", "import", name, str(source), "--data-dir", str(tmp_path / "tfds")])
    assert "train/" in err and "/bad.png" in err and says in err, err
    assert not (tmp_path / "tfds").exists()


def test_an_image_folder_packed_with_a_leading_dot_entry_is_read(tmp_path):
    """`tar -C DIR -czf x.tar.gz .` puts a bare "." first: the layout is found past it."""
    source = _image_folder(tmp_path / "images")
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as tar:
        tar.add(source, arcname=".")
    raw = sources.read_source("cifar10", tmp_path / "images.tar.gz")
    assert {s: len(labels) for s, (_, labels) in raw.splits.items()} == TINY


# --- what is not an archive: one line saying what PATH should be -----------------------------------

NOT_ARCHIVES = {  # case: (dataset, file name, what it holds: text, nothing, or part of a .tar.gz)
    "text as cifar10": ("cifar10", "cifar-10-python.tar.gz", "text"),
    "empty file as cifar10": ("cifar10", "cifar-10-binary.tar.gz", "empty"),
    "text as an mnist .tar.gz": ("mnist", "mnist.tar.gz", "text"),
    "gzip cut in its header": ("cifar10", "images.tar.gz", 12),
    "gzip cut in the middle": ("cifar10", "images.tar.gz", 0.5),
}


@pytest.mark.parametrize("case", list(NOT_ARCHIVES))
def test_what_is_no_archive_or_a_damaged_one_is_one_line_saying_what_was_expected(tmp_path, case):
    """tarfile tries every compression and its error lists each attempt, one a line: five lines, once."""
    name, file_name, holds = NOT_ARCHIVES[case]
    path = tmp_path / file_name
    if holds in ("text", "empty"):
        path.write_bytes(b"not an archive\n" * 40 if holds == "text" else b"")
    else:
        with tarfile.open(path, "w:gz") as tar:
            tar.add(_image_folder(tmp_path / "images"), arcname=".")
        whole = path.read_bytes()
        path.write_bytes(whole[: holds if isinstance(holds, int) else int(len(whole) * holds)])
    err = _refused(["data", "import", name, str(path), "--data-dir", str(tmp_path / "tfds")])
    assert str(path) in err, err
    if holds in ("text", "empty"):
        expected = "CIFAR-10 archive" if name == "cifar10" else "MNIST IDX files"
        assert "not an archive" in err and expected in err and "image folder" in err, err
    else:
        assert "corrupted or truncated" in err, err
    assert not (tmp_path / "tfds").exists()


# --- the data dir: a folder (or creatable) and writable, checked before any reading -----------------

@pytest.mark.parametrize("where", ["is a file", "is below a file"])
@pytest.mark.parametrize("command", ["import", "prepare --from"])
def test_a_data_dir_that_is_a_file_is_refused_before_reading(tmp_path, monkeypatch, where, command):
    _no_reading(monkeypatch)
    (tmp_path / "file").write_text("mine\n")
    data_dir = tmp_path / "file" if where == "is a file" else tmp_path / "file" / "tfds"
    args = ["import", "cifar10", str(tmp_path)] if command == "import" else ["prepare", "cifar10", "--from",
                                                                              str(tmp_path)]
    err = _refused(["data", *args, "--data-dir", str(data_dir)])
    assert "data dir" in err and "is a file, not a folder" in err, err
    assert (tmp_path / "file").read_text() == "mine\n"


def _refuse_writes_in(monkeypatch, folder: Path):
    """The file system refuses new files in `folder`, as a read-only mount would (tests run as root,
    whom chmod does not stop): `files.check_writable`'s probe, and the import's own files, fail."""
    import tempfile

    def refusing(real):
        def make(*a, dir=None, **k):
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real(*a, dir=dir, **k)
        return make

    for name in ("TemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refusing(getattr(tempfile, name)))


@pytest.mark.parametrize("command", ["import", "prepare --from", "prepare (download)"])
def test_a_read_only_data_dir_is_refused_before_reading(tmp_path, monkeypatch, command):
    _no_reading(monkeypatch)
    monkeypatch.setattr(store, "_check_reachable", lambda *_: pytest.fail("the download began"))
    (tmp_path / "ro").mkdir()
    _refuse_writes_in(monkeypatch, tmp_path / "ro")
    args = {"import": ["import", "cifar10", str(tmp_path)],
            "prepare --from": ["prepare", "cifar10", "--from", str(tmp_path)],
            "prepare (download)": ["prepare", "cifar10"]}[command]
    err = _refused(["data", *args, "--data-dir", str(tmp_path / "ro")])
    assert f"data dir {tmp_path / 'ro'} is not writable: Read-only file system" in err, err
    assert _listing(tmp_path / "ro") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_data_dir_is_refused_for_real(tmp_path, monkeypatch):
    _no_reading(monkeypatch)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    err = _refused(["data", "import", "cifar10", str(tmp_path), "--data-dir", str(tmp_path / "ro")])
    assert "is not writable" in err


# --- a full disk while storing ---------------------------------------------------------------------

def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk(monkeypatch, at: str):
    """ENOSPC while the import stores: in TFDS's array_record writer (which reports it as the
    RuntimeError below, after writing part of its files), or when provenance.json is written."""
    if at == "tfds shards":
        tfds = store._tfds()
        real = tfds.dataset_builders.store_as_tfds_dataset

        def store_until_full(**kwargs):
            real(**kwargs)  # the files are there, as a part would be
            raise RuntimeError(f'Failed to finalize writing of split "train": write() failed: {_enospc().strerror}; '
                               f'writing {kwargs["data_dir"]}/cifar10/incomplete.X_3.0.2/cifar10-train.array_record'
                               '-00000-of-00001; at byte 20000; Failed to close chunk_writer')

        monkeypatch.setattr(tfds.dataset_builders, "store_as_tfds_dataset", store_until_full)
    else:
        real_write = Path.write_text

        def write_text(self, *args, **kwargs):
            if self.name == store.PROVENANCE_FILE:
                raise _enospc()
            return real_write(self, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.parametrize("at", ["tfds shards", "provenance.json"])
def test_a_full_disk_while_storing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, at):
    _tiny_sizes(monkeypatch)
    source = _image_folder(tmp_path / "images")
    data_dir = tmp_path / "new" / "tfds"  # neither exists yet: neither may be left behind
    argv = ["data", "import", "cifar10", str(source), "--data-dir", str(data_dir)]
    with monkeypatch.context() as m:
        _full_disk(m, at)
        err = _refused(argv)
    assert f"cannot store cifar10 in {data_dir}: No space left on device" in err, err
    assert not (tmp_path / "new").exists()
    code, out, err = run_cli(argv)  # the disk has room again
    assert code == 0 and "imported" in out, err
    assert _listing(data_dir)[0] == "cifar10" and not [p for p in _listing(data_dir) if "staging" in p]


def test_a_full_disk_while_replacing_keeps_the_previous_dataset(tmp_path, monkeypatch):
    _tiny_sizes(monkeypatch)
    data_dir = tmp_path / "tfds"
    code, _, err = run_cli(["data", "import", "cifar10", str(_image_folder(tmp_path / "old")), "--data-dir",
                            str(data_dir)])
    assert code == 0, err
    def contents():
        return {p: (data_dir / p).is_file() and (data_dir / p).read_bytes() for p in _listing(data_dir)}

    before = contents()
    with monkeypatch.context() as m:
        _full_disk(m, "tfds shards")
        err = _refused(["data", "import", "cifar10", str(_image_folder(tmp_path / "new", seed=1)), "--data-dir",
                        str(data_dir), "--force"])
    assert "No space left on device" in err
    assert contents() == before  # the previous dataset, byte for byte, and no staging folder


FSIZE_LIMIT = 20_000  # bytes: less than the tiny dataset's shards


@pytest.mark.slow  # a subprocess importing TensorFlow
def test_a_disk_refusing_writes_mid_store_for_real_is_one_line(tmp_path):
    """The disk refuses a write inside array_record's own (C++) writer: a file size limit makes
    write() fail there (EFBIG) as a full disk would (ENOSPC). All of stderr is one line."""
    import resource

    source = _image_folder(tmp_path / "images")
    data_dir = tmp_path / "tfds"
    script = (f"from fgsm_repro.data import sources; sources.SPLIT_SIZES['cifar10'] = {TINY!r}; "
              "from fgsm_repro.cli import main; main()")

    def limit_file_size():  # SIGXFSZ ignored: write() fails with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))

    proc = subprocess.run([sys.executable, "-c", script, "data", "import", "cifar10", str(source), "--data-dir",
                           str(data_dir)], capture_output=True, text=True, cwd=REPO, timeout=300,
                          preexec_fn=limit_file_size)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr == f"error: cannot store cifar10 in {data_dir}: File too large; nothing was stored, " \
                          "the data dir is as it was\n"
    assert not data_dir.exists()
