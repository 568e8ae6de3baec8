"""Ctrl-C: stop at once, say what is kept, exit 130.

Every file is written atomically and training resumes from its last checkpoint
(tests/test_kill.py), so nothing needs unwinding: an interrupt ends the process as a kill would,
with a message. A Python signal handler runs only between bytecodes of the main thread, which
can be inside one XLA computation for many seconds (a C&W batch); the `fgsm-repro` executable
therefore blocks SIGINT in every thread and takes it in a watcher thread (:func:`watch`), from
the first instant of the process on. Inside another program (the tests call
:func:`fgsm_repro.cli.main`), :func:`handler` is installed as an ordinary signal handler instead.
"""

from __future__ import annotations

import _signal  # the C modules behind signal and threading: they import in microseconds, not ~30 ms
import _thread
import os
import sys

RESUME_HINT = "interrupted: checkpoints written so far are kept; run the same command again to resume"
NOTHING_HALF_WRITTEN = "interrupted: no file is left half-written (every file is written atomically)"
_message = NOTHING_HALF_WRITTEN


def on_interrupt(message: str) -> None:
    """What Ctrl-C says from now on (commands that train say how to resume)."""
    global _message
    _message = message


def _stop() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[?25h")  # the progress display hides the cursor
    sys.stderr.write(f"\n{_message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)


def handler(signum, frame) -> None:
    """A SIGINT handler for :func:`signal.signal`."""
    _stop()


def _wait() -> None:
    _signal.sigwait({_signal.SIGINT})
    _stop()


def watch() -> None:
    """Take SIGINT in a watcher thread for the rest of the process: blocked here before any other
    thread exists (XLA's and orbax's inherit the mask), and waited for by the watcher."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT})
    _thread.start_new_thread(_wait, ())
