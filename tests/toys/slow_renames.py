"""`python -m fgsm_repro.cli`, with the last step of chosen atomic writes slowed down.

The kill tests aim SIGKILL at the moment a small file (``run.json``, a results JSON, ``REPORT.md``)
is written: its temporary file complete, not yet renamed into place. On a fast disk that moment
lasts microseconds and a watcher polling the folder can miss it on every try. Here each
``os.replace`` onto a file named in ``FGSM_REPRO_TEST_SLOW_RENAMES`` (comma-separated names) waits
``FGSM_REPRO_TEST_RENAME_DELAY_S`` first, so the watcher sees the temporary file; the code that
writes and renames is the project's own, unchanged.
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path

SLOW = {n for n in os.environ.get("FGSM_REPRO_TEST_SLOW_RENAMES", "").split(",") if n}
DELAY_S = float(os.environ.get("FGSM_REPRO_TEST_RENAME_DELAY_S", "0.3"))
_replace = os.replace


def _slow_replace(src, dst, *args, **kwargs):
    if Path(dst).name in SLOW:
        time.sleep(DELAY_S)
    return _replace(src, dst, *args, **kwargs)


os.replace = _slow_replace
runpy.run_module("fgsm_repro.cli", run_name="__main__", alter_sys=True)
