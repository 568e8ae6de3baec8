"""Orbax's own reports of the failures it also raises: kept off the terminal, where the failure
reaches the user as the one-line error it is turned into (:class:`fgsm_repro.train` checkpoints).
Installed by :meth:`fgsm_repro.runtime.Runtime.apply`; standard library only (cheap to import)."""

from __future__ import annotations

import logging
import sys

_installed = False


def quiet_orbax() -> None:
    """Orbax logs the failures it also raises (a full disk, a damaged checkpoint) and notes of its
    own; they reach the user as the one-line error they are turned into, not as lines before it.
    The same for what a failed restore leaves behind (:func:`orbax_leftover`). Once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    try:  # absl's own logger class names the caller (orbax), where a plain logger would name absl
        import absl.logging  # noqa: F401

        logging.getLogger("absl").addFilter(lambda record: not _in_orbax(record.pathname))
    except ImportError:  # no absl, no orbax logs
        pass
    # asyncio reports a task that failed and was never awaited when it is collected: orbax's writes
    # that a full disk failed, after the failure was raised.
    logging.getLogger("asyncio").addFilter(lambda record: not _orbax_task(record))
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if orbax_leftover(unraisable) else previous(unraisable)


def orbax_leftover(unraisable) -> bool:
    """Whether an exception Python could not raise (``sys.unraisablehook``) is what a failed orbax
    restore leaves behind: its abandoned coroutines raising as they are collected, or tensorstore's
    callbacks reporting to orbax's closed event loop."""
    if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
        return True
    code, tb = getattr(unraisable.object, "cr_code", None), unraisable.exc_traceback
    if code is not None and _in_orbax(code.co_filename):
        return True
    while tb is not None:
        if _in_orbax(tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return False


def _orbax_task(record: logging.LogRecord) -> bool:
    """Whether an asyncio log record reports one of orbax's tasks (its coroutine or traceback)."""
    if _in_orbax(record.getMessage()):
        return True
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if _in_orbax(tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return False


def _in_orbax(filename: str) -> bool:
    return "/orbax/" in filename.replace("\\", "/")
