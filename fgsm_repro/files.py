"""The one way fgsm-repro writes a file: atomically, race-free, and failing in one line.

Every results file, the report, figures, run records and attack outputs go through
:func:`write_atomic`: the bytes go to a uniquely named temporary file in the target's folder,
are flushed and fsynced, and replace the target in one rename. Concurrent writers of one file
leave one complete version; a reader sees the old file or the new one, never a part; a full or
read-only disk leaves the previous file as it was and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from fgsm_repro.errors import ReproError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

TEMP_SUFFIX = ".tmp"
ORBAX_TEMP = ".orbax-checkpoint-tmp"  # orbax writes <name>.orbax-checkpoint-tmp[-<time>], then renames it
# A writer locks its temporary file right after creating it; one this old and unlocked is abandoned.
# One whose writer (named in the file's name) is a process of this host that has ended is
# abandoned at any age.
ABANDONED_AFTER_S = 2.0


def _problem(e: OSError) -> str:
    return e.strerror or type(e).__name__


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` (creating its folder) through a temporary file + fsync + rename.
    Raises a one-line :class:`ReproError` naming the path when the disk refuses.

    The temporary file is locked while it is written; temporary files of `path` left by a writer
    that was killed (their lock died with it) are removed."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer()}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            _lock(f.fileno(), blocking=True)  # held until closed: after the rename
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp makes the file private; results are read by others like any file written here.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
            tmp = None
        _sync_folder(path.parent)
    except OSError as e:
        raise ReproError(f"cannot write {path}: {_problem(e)}; the previous version, if any, is unchanged") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _remove_abandoned(path)
    return path


def _lock(fd: int, blocking: bool) -> bool:
    """An exclusive lock on `fd` (False: another process holds it). Without fcntl (Windows),
    always taken: abandoned temporary files are then left for the user to delete."""
    if fcntl is None:
        return blocking
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _writer() -> str:
    """This process, as a temporary file's name carries it: host and process ID."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _writer_ended(name: str) -> bool:
    """Whether the writer in a temporary file's `name` ("<host>-<pid>.<random>") is a process of
    this host that no longer runs (False when unsure: another host, or no writer in the name)."""
    host, _, pid = name.rpartition(".")[0].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


def _remove_abandoned(path: Path) -> None:
    """Delete the temporary files of `path` whose writer is gone (a kill mid-write): a live
    writer holds the lock on its own."""
    if fcntl is None:
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            young = time.time() - tmp.stat().st_mtime < ABANDONED_AFTER_S  # maybe created, not yet locked
            if young and not _writer_ended(tmp.name[len(path.name) + 2:-len(TEMP_SUFFIX)]):
                continue
            fd = os.open(tmp, os.O_RDONLY)
            try:
                if _lock(fd, blocking=False):
                    os.unlink(tmp)  # names are unique: this one is no other writer's
            finally:
                os.close(fd)


def write_json(path: str | Path, record: Any) -> Path:
    return write_atomic(path, json.dumps(record, indent=2) + "\n")


def save_figure_atomic(fig, path: str | Path, **savefig_kwargs) -> Path:
    """A Matplotlib figure as PNG, written atomically (rendered in memory first)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig_kwargs)
    return write_atomic(path, buffer.getvalue())


def check_writable(folder: str | Path, what: str) -> Path:
    """Make sure files can be written in `folder` before any work starts, without creating it: it,
    or the nearest folder above it that exists, must take a file. One line naming `what` and the
    folder when it cannot."""
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ReproError(f"{what} {folder} is not writable: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ReproError(f"{what} {folder} is not writable: {_problem(e)}") from None
    return folder


def check_output_file(path: str | Path, what: str) -> Path:
    """`path` can be written as a file: it is not a folder and its folder exists and is writable."""
    path = Path(path)
    if path.is_dir():
        raise ReproError(f"{what} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ReproError(f"{what} {path}: folder {path.parent} does not exist")
    check_writable(path.parent, what.rstrip(":") + " folder")
    return path


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the mask means setting it: once, and restored at once
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """The rename itself made durable (best effort: not every file system opens folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def disk_problem(e: BaseException) -> str | None:
    """What the disk said when a write failed ("No space left on device"), also when a library
    wraps it: orbax raises tensorstore's ``RESOURCE_EXHAUSTED: … [os_error_code='28']`` or the
    OSError itself. None: `e` is not a refusal of the disk."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return _problem(e)
        if code := re.search(r"os_error_code='?(\d+)", str(e)):
            return os.strerror(int(code.group(1)))
        e = e.__cause__ or e.__context__
    return None


def remove_orbax_temporaries(folder: str | Path, prefix: str = "", *, settle_s: float = 0.0) -> None:
    """Delete the folders of unfinished orbax writes in `folder` (of names starting with `prefix`):
    a write killed or refused by a full disk leaves one. Only for a run folder whose lock this
    process holds (:mod:`fgsm_repro.locks`): then no other process is writing there. `settle_s`:
    right after a failed write, whose background writes may still be finishing (and writing into
    what was removed), keep removing until none has reappeared for that long."""
    quiet_since = time.monotonic()
    give_up = quiet_since + 20 * settle_s
    while True:
        found = list(Path(folder).glob(f"{glob.escape(prefix)}*{ORBAX_TEMP}*"))
        for path in found:
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        now = time.monotonic()
        if found:
            quiet_since = now
        if now - quiet_since >= settle_s or now > give_up:
            return
        time.sleep(0.05)
