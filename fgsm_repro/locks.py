"""One process per run folder. Training into a folder, and writing its checkpoints, ``final/`` and
``run.json``, hold an exclusive ``flock`` that the operating system drops when the process ends
(exits, fails or is killed): nothing to clean up, and never a stale lock. A second process is
refused in one line (`fgsm-repro train`) or waits its turn (an experiment's trainings: it then
finds the training done and reuses it).

The lock file is ``.<folder>.lock`` beside the folder, not in it: ``--fresh`` removes the whole
folder while holding the lock, and a folder holds only what it always held.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from fgsm_repro.errors import ReproError

try:
    import fcntl
except ImportError:  # Windows: no locks (as for the temporary files of fgsm_repro.files)
    fcntl = None

BUSY_HINT = "wait for it or use another --run-dir"
_held: dict[Path, list[int]] = {}  # folder -> [lock file descriptor, times taken]: this process's locks
_waited: set[Path] = set()  # the folders this process said it waits for (once is enough)


def lock_path(folder: Path) -> Path:
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


def lock_folder(folder: str | Path, *, wait: bool, hint: str = BUSY_HINT) -> Callable[[], None]:
    """Take the lock of run folder `folder` and return the function that gives it back. Held by
    another process: a one-line :class:`ReproError` naming it (pid and host) and ending in `hint`,
    or with `wait`, a line on stderr and a wait until it is free. This process may take a lock it
    holds again (each taking is given back once); the lock of a folder holds the folders inside
    it (a training's checkpoints inside its run folder). Of several processes of one distributed run,
    which share their run folders, the one that writes the files takes it."""
    from fgsm_repro.processes import writes_files

    folder = Path(folder).resolve()
    if fcntl is None or not writes_files() or any(parent in _held for parent in folder.parents):
        return lambda: None  # (a folder inside one this process holds is held with it)
    if folder in _held:
        _held[folder][1] += 1
    else:
        _held[folder] = [_acquire(folder, wait, hint), 1]
    given_back = False

    def release() -> None:
        nonlocal given_back
        if given_back or folder not in _held:
            return
        given_back = True
        _held[folder][1] -= 1
        if _held[folder][1] == 0:
            os.close(_held.pop(folder)[0])  # the last descriptor of the lock file: the lock goes with it

    return release


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, wait: bool, hint: str = BUSY_HINT) -> Iterator[None]:
    release = lock_folder(folder, wait=wait, hint=hint)
    try:
        yield
    finally:
        release()


def _acquire(folder: Path, wait: bool, hint: str) -> int:
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes (O_CLOEXEC)
    except OSError as e:
        raise ReproError(f"cannot lock run folder {folder} ({path}): {e.strerror or type(e).__name__}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = f"run folder {folder} is in use by another fgsm-repro process ({_holder(fd)})"
            if not wait:
                raise ReproError(f"{busy}; {hint}") from None
            if folder not in _waited:
                _waited.add(folder)
                print(f"waiting: {busy}; continuing when it is done", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (ENOLCK): work as before locks existed
            pass
        with contextlib.suppress(OSError):  # who holds it, for the message of the next one (a full disk: unsaid)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        if holder := os.pread(fd, 300, 0).decode(errors="replace").strip():
            return holder
    return "pid unknown"
